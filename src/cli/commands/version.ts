import { Command } from 'commander';
import { addClientOptions } from '../options.js';

export function versionCommand(env: NodeJS.ProcessEnv): Command {
  return addClientOptions(new Command('version'))
    .description("print braid's version and, with a reachable coordinator, the coordinator's")
    .option('--client-only', 'do not contact the coordinator')
    .option('--output <format>', 'text|json', 'text')
    .action(async (flags: Record<string, unknown>) => {
      const { runVersion } = await import('./version-run.js');
      await runVersion(flags, env);
    });
}
