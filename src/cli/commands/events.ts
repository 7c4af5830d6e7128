import { Command, Option } from 'commander';
import { addClientOptions } from '../options.js';

export function eventsCommand(env: NodeJS.ProcessEnv): Command {
  return addClientOptions(new Command('events'))
    .description("print the coordinator's event log; --follow keeps streaming new events")
    .option('--after <sequence>', 'only events after this sequence number', '0')
    .option('-f, --follow', 'keep the stream open and print new events')
    .option('--kind <kind...>', 'only these kinds (e.g. agent-connected build-state)')
    .addOption(
      new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'),
    )
    .action(async (flags: Record<string, unknown>) => {
      const { runEvents } = await import('./events-run.js');
      await runEvents(flags, env);
    });
}
