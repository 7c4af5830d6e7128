import { Command } from 'commander';
import { addLogOptions } from '../options.js';

export function coordinatorCommand(env: NodeJS.ProcessEnv): Command {
  return addLogOptions(new Command('coordinator'))
    .description('run the coordinator: the gRPC server builds are submitted to and agents join')
    .option(
      '--listen <address>',
      'HOST:PORT or unix:/path to serve on (env BRAID_LISTEN; default 127.0.0.1:7465)',
    )
    .option('--data-dir <dir>', 'state directory (env BRAID_DATA_DIR)')
    .option('--insecure', 'allow plaintext gRPC on a non-loopback address (env BRAID_INSECURE)')
    .option(
      '--max-message-bytes <n>',
      'largest gRPC message accepted (env BRAID_MAX_MESSAGE_BYTES)',
    )
    .option(
      '--shutdown-grace-ms <ms>',
      'time running calls get on SIGTERM (env BRAID_SHUTDOWN_GRACE_MS)',
    )
    .option('--events-retained <n>', 'events kept for replay (env BRAID_EVENTS_RETAINED)')
    .action(async (flags: Record<string, unknown>) => {
      const { runCoordinator } = await import('./coordinator-run.js');
      await runCoordinator(flags, env);
    });
}
