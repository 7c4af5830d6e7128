import { Command, Option } from 'commander';
import { addClientOptions } from '../options.js';

export function statusCommand(env: NodeJS.ProcessEnv): Command {
  return addClientOptions(new Command('status'))
    .description(
      "show a build: its state, tags, index and each platform's job; exits 1 when it failed, was cancelled or timed out",
    )
    .argument('<id>', 'build id')
    .addOption(
      new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'),
    )
    .action(async (id: string, flags: Record<string, unknown>) => {
      const { runStatus } = await import('./status-run.js');
      await runStatus(id, flags, env);
    });
}
