import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { coordinatorSettings } from '../../config/settings.js';
import { TokenStore, type TokenRecord } from '../../coordinator/token-store.js';
import type { TokenKind } from '../../coordinator/token-format.js';
import { BraidError, UsageError } from '../../errors.js';
import { compile } from '../compile.js';
import { formatAge } from '../progress/format.js';
import { renderTable } from '../table.js';

interface Opened {
  store: TokenStore;
  dataDir: string;
}

/**
 * The coordinator's token store, from the same data dir it uses. Only
 * `create` may start a database in a fresh data dir; the others insist that
 * one exists, so a wrong --data-dir is named instead of showing nothing.
 */
function openStore(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  mayCreate: boolean,
): Opened {
  const { dataDir, config } = flags;
  const settings = compile(coordinatorSettings(env), { dataDir, config }, env);
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
  return { store: new TokenStore(file), dataDir: settings.dataDir };
}

function withStore<T>(opened: Opened, use: (store: TokenStore) => T): T {
  try {
    return use(opened.store);
  } finally {
    opened.store.close();
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
  const { record, token } = withStore(openStore(flags, env, true), (store) => {
    try {
      return store.create(kind, name);
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
  const records = withStore(openStore(flags, env, false), (store) => store.list());
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
  const { record, already } = withStore(openStore(flags, env, false), (store) => store.revoke(ref));
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
  const { record, token, replaced } = withStore(openStore(flags, env, false), (store) =>
    store.rotate(ref),
  );
  printSecret(
    flags.output,
    record,
    token,
    `rotated ${record.kind} token "${record.name}": ${replaced.id} is revoked, ${record.id} replaces it`,
  );
}
