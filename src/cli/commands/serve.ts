import { Command } from 'commander';
import { addLogOptions } from '../options.js';
import { addAgentOptions } from './agent.js';

export function serveCommand(env: NodeJS.ProcessEnv): Command {
  return addAgentOptions(addLogOptions(new Command('serve')))
    .description(
      'one-box farm: a coordinator and a local agent for the local engine, in one process',
    )
    .option(
      '--listen <address>',
      'HOST:PORT or unix:/path to serve on (env BRAID_LISTEN; default 127.0.0.1:7465)',
    )
    .option('--data-dir <dir>', 'state directory (env BRAID_DATA_DIR)')
    .action(async (flags: Record<string, unknown>) => {
      const { runServe } = await import('./serve-run.js');
      await runServe(flags, env);
    });
}
