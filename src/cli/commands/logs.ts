import { Command, Option } from 'commander';
import { addClientOptions } from '../options.js';

export function logsCommand(env: NodeJS.ProcessEnv): Command {
  return addClientOptions(new Command('logs'))
    .description(
      "print a build's events and logs; exits 1 when the build failed, was cancelled or timed out",
    )
    .argument('<id>', 'build id')
    .option('-f, --follow', 'keep streaming until the build ends')
    .option('--after <sequence>', 'only events after this sequence number', '0')
    .addOption(
      new Option('--progress <format>', 'output format')
        .choices(['plain', 'json'])
        .default('plain'),
    )
    .action(async (id: string, flags: Record<string, unknown>) => {
      const { runLogs } = await import('./logs-run.js');
      await runLogs(id, flags, env);
    });
}
