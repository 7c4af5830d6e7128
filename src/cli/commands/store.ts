import { Command, Option } from 'commander';

/**
 * `braid store migrate`: copy a coordinator's SQLite store into PostgreSQL,
 * on the coordinator's host with the coordinator stopped (it opens the data
 * dir directly, as `braid tokens` does).
 */
function migrateCommand(env: NodeJS.ProcessEnv): Command {
  return new Command('migrate')
    .description(
      'copy the SQLite store of a stopped coordinator (builds, jobs, events, cache records, tokens, contexts) into a PostgreSQL store',
    )
    .option('--data-dir <dir>', "the coordinator's state directory (env BRAID_DATA_DIR)")
    .option(
      '--config <file>',
      "the coordinator's YAML config file, for its dataDir and store (env BRAID_CONFIG)",
    )
    .option(
      '--to <url>',
      'the PostgreSQL store: postgres://USER@HOST:PORT/DB (env BRAID_STORE, or store: in the config file)',
    )
    .option('--append', 'copy into a store that already holds builds, tokens or contexts')
    .addOption(
      new Option('--output <format>', 'output format').choices(['text', 'json']).default('text'),
    )
    .action(async (flags: Record<string, unknown>) => {
      const { runStoreMigrate } = await import('./store-run.js');
      await runStoreMigrate(flags, env);
    });
}

export function storeCommand(env: NodeJS.ProcessEnv): Command {
  return new Command('store')
    .description("the coordinator's store (run on the coordinator's host)")
    .addCommand(migrateCommand(env));
}
