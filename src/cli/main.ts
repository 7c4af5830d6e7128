/**
 * The `braid` command: one binary, subcommands.
 */
import { Command, CommanderError } from 'commander';
import { BRAID_VERSION } from '../version.js';
import { agentCommand } from './commands/agent.js';
import { agentsCommand } from './commands/agents.js';
import { buildCommand } from './commands/build.js';
import { buildsCommand } from './commands/builds.js';
import { cancelCommand } from './commands/cancel.js';
import { certsCommand } from './commands/certs.js';
import { coordinatorCommand } from './commands/coordinator.js';
import { logsCommand } from './commands/logs.js';
import { serveCommand } from './commands/serve.js';
import { statusCommand } from './commands/status.js';
import { tokensCommand } from './commands/tokens.js';
import { eventsCommand } from './commands/events.js';
import { farmCommand } from './commands/farm.js';
import { manifestCommand } from './commands/manifest.js';
import { versionCommand } from './commands/version.js';
import { EXIT_USAGE, reportAndExit } from './exit.js';

export async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const program = new Command('braid')
    .description('build native multi-architecture container images on a farm of real hosts')
    .version(BRAID_VERSION, '-V, --version', 'print the client version')
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({
      outputError: (text, write) => write(`braid: ${text.replace(/^error: /, '')}`),
    })
    .addCommand(buildCommand(env))
    .addCommand(buildsCommand(env))
    .addCommand(statusCommand(env))
    .addCommand(logsCommand(env))
    .addCommand(cancelCommand(env))
    .addCommand(agentsCommand(env))
    .addCommand(manifestCommand(env))
    .addCommand(serveCommand(env))
    .addCommand(coordinatorCommand(env))
    .addCommand(agentCommand(env))
    .addCommand(versionCommand(env))
    .addCommand(eventsCommand(env))
    .addCommand(tokensCommand(env))
    .addCommand(farmCommand(env))
    .addCommand(certsCommand());
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  for (const command of all(program)) command.exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and --version exit 0; every usage error exits 2.
      process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
    }
    reportAndExit(err);
  }
}
