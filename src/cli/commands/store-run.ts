import { existsSync } from 'node:fs';
import { coordinatorSettings } from '../../config/settings.js';
import { copyStore, sqliteFileOf, type StoreCopySummary } from '../../coordinator/store-copy.js';
import { UsageError } from '../../errors.js';
import { isPostgresUrl, redactedUrl } from '../../pg-url.js';
import { compile } from '../compile.js';

const LABELS: Record<StoreCopySummary['rows'][number]['table'], string> = {
  builds: 'builds',
  jobs: 'jobs',
  build_events: 'build events',
  cache_records: 'cache records',
  tokens: 'tokens',
};

/** The target: --to, else the coordinator's own store setting (BRAID_STORE, store: in the config). */
function targetOf(to: unknown, configured: string | undefined): string {
  if (typeof to === 'string') {
    if (!isPostgresUrl(to.trim())) {
      throw new UsageError(
        `--to: expected postgres://USER@HOST:PORT/DATABASE, got "${redactedUrl(to)}"`,
      );
    }
    return to.trim();
  }
  if (configured === undefined) {
    throw new UsageError(
      'braid store migrate needs the PostgreSQL store to copy into: pass --to postgres://USER@HOST:PORT/DATABASE or set BRAID_STORE',
    );
  }
  return configured;
}

export async function runStoreMigrate(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { dataDir, config } = flags;
  const settings = compile(coordinatorSettings(env), { dataDir, config }, env);
  const url = targetOf(flags.to, settings.store);
  const file = sqliteFileOf(settings.dataDir);
  if (!existsSync(file)) {
    throw new UsageError(
      `no coordinator database in ${settings.dataDir} (braid.db is missing): pass the coordinator's --data-dir`,
    );
  }
  const summary = await copyStore({
    dataDir: settings.dataDir,
    url,
    append: flags.append === true,
  });
  if (flags.output === 'json') {
    process.stdout.write(
      `${JSON.stringify({
        source: summary.source,
        target: summary.target,
        rows: Object.fromEntries(summary.rows.map((r) => [r.table, r.rows])),
        contexts: summary.contexts,
      })}\n`,
    );
    return;
  }
  const width = Math.max(...Object.values(LABELS).map((l) => l.length), 'contexts'.length);
  const lines = summary.rows.map((r) => `  ${LABELS[r.table].padEnd(width)}  ${r.rows}`);
  const { copied, bytes, present } = summary.contexts;
  lines.push(
    `  ${'contexts'.padEnd(width)}  ${copied} (${bytes} bytes)${present > 0 ? `, ${present} already there` : ''}`,
  );
  process.stdout.write(
    `copied ${summary.source} into ${summary.target}, every row counted there:\n${lines.join('\n')}\n`,
  );
}
