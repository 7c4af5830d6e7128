import { Command } from 'commander';
import { addLogOptions, typedFlags } from '../options.js';
import { addAgentOptions } from './agent.js';
import { addCoordinatorOptions } from './coordinator.js';

export function serveCommand(env: NodeJS.ProcessEnv): Command {
  return addCoordinatorOptions(addAgentOptions(addLogOptions(new Command('serve'))))
    .description(
      'one-box farm: a coordinator and a local agent for the local engine, in one process',
    )
    .action(async (_flags: Record<string, unknown>, command: Command) => {
      const { runServe } = await import('./serve-run.js');
      await runServe(typedFlags(command), env);
    });
}
