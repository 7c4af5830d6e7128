import { Command } from 'commander';
import { coordinatorSettings } from '../../config/settings.js';
import { startCoordinator } from '../../coordinator/coordinator.js';
import { createLogger } from '../../log.js';
import { formatGrpcAddress as formatAddress } from '../../rpc/address.js';
import { addLogOptions, compile } from '../options.js';
import { EXIT_INTERRUPTED } from '../exit.js';

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
      const config = compile(coordinatorSettings(env), flags, env);
      const log = createLogger({
        level: config.logLevel,
        format: config.logFormat,
        component: 'coordinator',
      });
      const coordinator = await startCoordinator(config, log);
      // First signal: drain within the grace period. Second: cancel now. Third: exit.
      let signals = 0;
      const onSignal = (signal: NodeJS.Signals) => {
        signals += 1;
        if (signals === 1) {
          void coordinator.stop(`${signal}`, config.shutdownGraceMs).then(() => process.exit(0));
        } else if (signals === 2) {
          log.warn({ signal }, 'second signal: cancelling running calls');
          void coordinator.stop(`${signal}`, 0).then(() => process.exit(0));
        } else {
          process.exit(EXIT_INTERRUPTED);
        }
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
      // The address line on stdout lets scripts learn the bound port (with :0).
      process.stdout.write(`listening ${formatAddress(coordinator.address)}\n`);
    });
}
