import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { coordinatorSettings } from '../../config/settings.js';
import { TokenStore, type TokenAdmin, type TokenRecord } from '../../coordinator/token-store.js';
import type { TokenKind } from '../../coordinator/token-format.js';
import { BraidError, UsageError } from '../../errors.js';
import { compile } from '../compile.js';
import { formatAge } from '../progress/format.js';
import { renderTable } from '../table.js';

interface Opened {
  store: TokenAdmin;
}

/**
 * The coordinator's tokens, where it keeps them: in its PostgreSQL store
 * when one is configured (--store, BRAID_STORE or the config file), else
 * in its data dir. Only `create` may start a database in a fresh data dir;
 * the others insist that one exists, so a wrong --data-dir is named instead
 * of showing nothing.
 */
async function openStore(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  mayCreate: boolean,
): Promise<Opened> {
  const { dataDir, config, store } = flags;
  const settings = compile(coordinatorSettings(env), { dataDir, config, store }, env);
  if (settings.store) return { store: await openSharedTokens(settings.store) };
  const file = join(settings.dataDir, 'braid.db');
  if (!existsSync(file)) {
    if (!mayCreate) {
      throw new BraidError(
        'failed_precondition',
        `no coordinator database in ${settings.dataDir} (braid.db is missing): pass the coordinator's --data-dir`,
      );
    }
    mkdirSync(settings.dataDir, { recursive: true, mode: 0o700 });
    process.stderr.write(
      `note: ${file} did not exist; created it (start the coordinator with --data-dir ${settings.dataDir})\n`,
    );
  }
  return { store: new TokenStore(file) };
}

/** Tokens in a PostgreSQL store, its schema brought up to date first. */
async function openSharedTokens(url: string): Promise<TokenAdmin> {
  const { PgBuildStore } = await import('../../coordinator/pg-build-store.js');
  const { PgTokenAdmin } = await import('../../coordinator/pg-token-store.js');
  const store = await PgBuildStore.open(url, { maxConnections: 2 });
  const admin = new PgTokenAdmin(store.pool);
  return {
    create: (kind, name) => admin.create(kind, name),
    list: () => admin.list(),
    revoke: (ref) => admin.revoke(ref),
    rotate: (ref) => admin.rotate(ref),
    close: () => store.close(),
  };
}

async function withStore<T>(
  opened: Promise<Opened>,
  use: (store: TokenAdmin) => T | Promise<T>,
): Promise<T> {
  const { store } = await opened;
  try {
    return await use(store);
  } finally {
    await store.close();
  }
}

function recordJson(record: TokenRecord): Record<string, unknown> {
  return {
    id: record.id,
    name: record.name,
    kind: record.kind,
    hint: record.hint,
    state: record.revokedAt ? 'revoked' : 'active',
    createdAt: record.createdAt.toISOString(),
    lastUsedAt: record.lastUsedAt?.toISOString() ?? null,
    revokedAt: record.revokedAt?.toISOString() ?? null,
  };
}

function printSecret(output: unknown, record: TokenRecord, token: string, note: string): void {
  if (output === 'json') {
    process.stdout.write(`${JSON.stringify({ ...recordJson(record), token })}\n`);
    return;
  }
  // stdout carries the token alone, for `TOKEN=$(braid tokens create ...)`.
  process.stdout.write(`${token}\n`);
  process.stderr.write(`${note}; it is shown only this once\n`);
}

export async function runTokensCreate(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const kind = flags.kind as TokenKind;
  const name = typeof flags.name === 'string' ? flags.name : undefined;
  const { record, token } = await withStore(openStore(flags, env, true), async (store) => {
    try {
      return await store.create(kind, name);
    } catch (err) {
      // The store refuses a --name it cannot take as invalid_argument: bad usage here.
      if (err instanceof BraidError && err.code === 'invalid_argument') {
        throw new UsageError(err.message, { cause: err });
      }
      throw err;
    }
  });
  printSecret(flags.output, record, token, `created ${kind} token "${record.name}" (${record.id})`);
}

export async function runTokensList(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const records = await withStore(openStore(flags, env, false), (store) => store.list());
  if (flags.output === 'json') {
    for (const record of records) process.stdout.write(`${JSON.stringify(recordJson(record))}\n`);
    return;
  }
  const now = Date.now();
  const ago = (d: Date | undefined) => (d ? `${formatAge(now - d.getTime())} ago` : '-');
  process.stdout.write(
    renderTable(
      ['ID', 'NAME', 'KIND', 'TOKEN', 'STATE', 'CREATED', 'LAST USED'],
      records.map((r) => [
        r.id,
        r.name,
        r.kind,
        r.hint,
        r.revokedAt ? 'revoked' : 'active',
        ago(r.createdAt),
        ago(r.lastUsedAt),
      ]),
    ),
  );
}

export async function runTokensRevoke(
  ref: string,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { record, already } = await withStore(openStore(flags, env, false), (store) =>
    store.revoke(ref),
  );
  const what = `${record.kind} token "${record.name}" (${record.id})`;
  process.stdout.write(
    already
      ? `${what} was already revoked on ${record.revokedAt?.toISOString()}\n`
      : `revoked ${what}\n`,
  );
}

export async function runTokensRotate(
  ref: string,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { record, token, replaced } = await withStore(openStore(flags, env, false), (store) =>
    store.rotate(ref),
  );
  printSecret(
    flags.output,
    record,
    token,
    `rotated ${record.kind} token "${record.name}": ${replaced.id} is revoked, ${record.id} replaces it`,
  );
}
