import { Command, Option } from 'commander';
import { addClientOptions } from '../options.js';

export function agentsCommand(env: NodeJS.ProcessEnv): Command {
  return addClientOptions(new Command('agents'))
    .description('list the connected agents: platforms, load, last heartbeat, version')
    .addOption(
      new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'),
    )
    .action(async (flags: Record<string, unknown>) => {
      const { runAgents } = await import('./agents-run.js');
      await runAgents(flags, env);
    });
}
