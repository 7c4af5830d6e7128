import { Command } from 'commander';
import { addClientOptions } from '../options.js';

export function cancelCommand(env: NodeJS.ProcessEnv): Command {
  return addClientOptions(new Command('cancel'))
    .description('cancel a build: its running jobs stop and no tag moves')
    .argument('<id>', 'build id')
    .option('--reason <text>', 'why, recorded with the build')
    .action(async (id: string, flags: Record<string, unknown>) => {
      const { runCancel } = await import('./cancel-run.js');
      await runCancel(id, flags, env);
    });
}
