import { Command, Option } from 'commander';
import { addClientOptions } from '../options.js';

export function buildsCommand(env: NodeJS.ProcessEnv): Command {
  return addClientOptions(new Command('builds'))
    .description('list builds, newest first')
    .option(
      '--state <state...>',
      'only builds in these states (queued running stitching succeeded failed cancelled timed-out)',
    )
    .option('--limit <n>', 'at most this many builds', '50')
    .addOption(
      new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'),
    )
    .action(async (flags: Record<string, unknown>) => {
      const { runBuilds } = await import('./builds-run.js');
      await runBuilds(flags, env);
    });
}
