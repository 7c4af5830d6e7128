import { Command, Option } from 'commander';

/**
 * `braid tokens ...` administer the coordinator's tokens where it keeps
 * them: its data dir, or its PostgreSQL store (no RPC, so no token is
 * needed to make the first one); write access to that directory, or the
 * store's credentials, is the trust boundary.
 */
function addStoreOptions(command: Command): Command {
  return command
    .option('--data-dir <dir>', "the coordinator's state directory (env BRAID_DATA_DIR)")
    .option(
      '--store <url>',
      "the coordinator's PostgreSQL store, postgres://USER@HOST:PORT/DB (env BRAID_STORE); default: the data dir's SQLite",
    )
    .option(
      '--config <file>',
      "the coordinator's YAML config file, for its dataDir (env BRAID_CONFIG)",
    );
}

function outputOption(): Option {
  return new Option('--output <format>', 'output format').choices(['text', 'json']).default('text');
}

function createCommand(env: NodeJS.ProcessEnv): Command {
  return addStoreOptions(new Command('create'))
    .description('create a token and print it (only this once)')
    .addOption(
      new Option('--kind <kind>', 'api: CLI and CI; join: agents')
        .choices(['api', 'join'])
        .makeOptionMandatory(),
    )
    .option('--name <name>', 'a name to list, revoke and rotate it by (default: KIND-XXXXXX)')
    .addOption(outputOption())
    .action(async (flags: Record<string, unknown>) => {
      const { runTokensCreate } = await import('./tokens-run.js');
      await runTokensCreate(flags, env);
    });
}

function listCommand(env: NodeJS.ProcessEnv): Command {
  return addStoreOptions(new Command('list'))
    .description('list tokens: id, name, kind, hint, state, created, last used')
    .addOption(outputOption())
    .action(async (flags: Record<string, unknown>) => {
      const { runTokensList } = await import('./tokens-run.js');
      await runTokensList(flags, env);
    });
}

function revokeCommand(env: NodeJS.ProcessEnv): Command {
  return addStoreOptions(new Command('revoke'))
    .description('revoke a token by name or id: calls with it are refused at once')
    .argument('<token>', 'token name or id (tok_...)')
    .action(async (ref: string, flags: Record<string, unknown>) => {
      const { runTokensRevoke } = await import('./tokens-run.js');
      await runTokensRevoke(ref, flags, env);
    });
}

function rotateCommand(env: NodeJS.ProcessEnv): Command {
  return addStoreOptions(new Command('rotate'))
    .description(
      'replace a token with a new one of the same name and kind; the old one stops working',
    )
    .argument('<token>', 'token name or id (tok_...)')
    .addOption(outputOption())
    .action(async (ref: string, flags: Record<string, unknown>) => {
      const { runTokensRotate } = await import('./tokens-run.js');
      await runTokensRotate(ref, flags, env);
    });
}

export function tokensCommand(env: NodeJS.ProcessEnv): Command {
  return new Command('tokens')
    .description(
      "manage the coordinator's API and join tokens (on its host, or against its PostgreSQL store)",
    )
    .addCommand(createCommand(env))
    .addCommand(listCommand(env))
    .addCommand(revokeCommand(env))
    .addCommand(rotateCommand(env));
}
