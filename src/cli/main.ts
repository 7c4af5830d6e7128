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
import { storeCommand } from './commands/store.js';
import { eventsCommand } from './commands/events.js';
import { farmCommand } from './commands/farm.js';
import { manifestCommand } from './commands/manifest.js';
import { verifyCommand } from './commands/verify.js';
import { versionCommand } from './commands/version.js';
import { EXIT_USAGE, reportAndExit } from './exit.js';
import { endQuietlyOnClosedPipe } from './pipe.js';

/** Every top-level command, by the name it is called with. */
export const COMMANDS: Record<string, (env: NodeJS.ProcessEnv) => Command> = {
  build: buildCommand,
  builds: buildsCommand,
  status: statusCommand,
  logs: logsCommand,
  cancel: cancelCommand,
  agents: agentsCommand,
  manifest: manifestCommand,
  verify: verifyCommand,
  serve: serveCommand,
  coordinator: coordinatorCommand,
  agent: agentCommand,
  version: versionCommand,
  events: eventsCommand,
  tokens: tokensCommand,
  store: storeCommand,
  farm: farmCommand,
  certs: () => certsCommand(),
};

/**
 * The commands to build for `argv`: only the one it names, when it names
 * one (building all of them, with every option, costs each run ~10 ms);
 * otherwise all, for help, `--version` and suggestions after a typo.
 */
export function commandsFor(argv: readonly string[]): string[] {
  const first = argv.slice(2).find((arg) => !arg.startsWith('-'));
  return first !== undefined && Object.hasOwn(COMMANDS, first) ? [first] : Object.keys(COMMANDS);
}

export async function main(argv: string[], env: NodeJS.ProcessEnv): Promise<void> {
  // Every command, from `braid logs ID | head -1` to `braid --help | head -1`.
  endQuietlyOnClosedPipe([process.stdout, process.stderr], (code) => process.exit(code));
  const program = new Command('braid')
    .description('build native multi-architecture container images on a farm of real hosts')
    .version(BRAID_VERSION, '-V, --version', 'print the client version')
    .showSuggestionAfterError();
  for (const name of commandsFor(argv)) program.addCommand(COMMANDS[name]!(env));
  const all = (c: Command): Command[] => [c, ...c.commands.flatMap(all)];
  // Every command's usage errors read as braid's own: one line, `braid: ...`.
  for (const command of all(program)) {
    command.exitOverride().configureOutput({
      outputError: (text, write) => write(`braid: ${text.replace(/^error: /, '')}`),
    });
  }
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
