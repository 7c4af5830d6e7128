/**
 * Copies a coordinator's SQLite store (`<dataDir>/braid.db`: builds, jobs,
 * build events, cache records, tokens) and its build contexts on disk
 * (`<dataDir>/contexts/sha256`) into a PostgreSQL store, for `braid store
 * migrate`. The source is read under an exclusive lock, so it is refused
 * while a coordinator (or `braid tokens`) has it open, and its contents
 * are never changed. Rows are copied as stored (the same bytes, ids, sequences and
 * times), in the order they were made, and the target is written in one
 * transaction that commits only after every table's rows are counted
 * there: a failure leaves the target as it was.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type pg from 'pg';
import { BraidError } from '../errors.js';
import { checkContextTar } from './context-check.js';
import { insertChunks, PgContextStore } from './pg-context-store.js';
import { PgBuildStore } from './pg-build-store.js';
import { inTransaction } from './pg-transaction.js';
import { SQLITE_SCHEMA_VERSION } from './sqlite-build-store.js';
import { StoreSchemaError } from './store-schema.js';

/** The tables copied, parents first; each read in the order its rows were made. */
const TABLES = [
  { table: 'builds', order: 'rowid' },
  { table: 'jobs', order: 'rowid' },
  { table: 'build_events', order: 'build_id, sequence' },
  {
    table: 'cache_records',
    order: 'lineage, platform, agent',
    // Appending: a record the target has keeps the newer of the two.
    onConflict: `ON CONFLICT (lineage, platform, agent) DO UPDATE
      SET engine_id = excluded.engine_id, finished_at = excluded.finished_at
      WHERE excluded.finished_at > cache_records.finished_at`,
    key: ['lineage', 'platform', 'agent'],
  },
  { table: 'tokens', order: 'rowid' },
] as const;

type TableName = (typeof TABLES)[number]['table'];

/** Rows per INSERT: well under PostgreSQL's 65,535 parameters for the widest table. */
const ROWS_PER_INSERT = 500;

export interface StoreCopyOptions {
  /** The coordinator's data dir: braid.db and contexts/ are read from it. */
  dataDir: string;
  /** The target's postgres:// URL (never printed: errors name it without the password). */
  url: string;
  /** Copy into a target that already holds builds, tokens or contexts. */
  append?: boolean;
}

export interface StoreCopySummary {
  /** The source database file. */
  source: string;
  /** The target's URL without its password. */
  target: string;
  /** Rows copied per table, in copy order. */
  rows: { table: TableName; rows: number }[];
  /** Build contexts copied, their bytes, and those the target held already (appending). */
  contexts: { copied: number; bytes: number; present: number };
}

/** The source or the target is not in a state to copy from or into. */
export class StoreCopyError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('failed_precondition', message, options);
  }
}

/** The coordinator database in a data dir. */
export function sqliteFileOf(dataDir: string): string {
  return join(dataDir, 'braid.db');
}

/** Copy the SQLite store and contexts of `dataDir` into the PostgreSQL store at `url`. */
export async function copyStore(options: StoreCopyOptions): Promise<StoreCopySummary> {
  const file = sqliteFileOf(options.dataDir);
  const source = lockSource(file);
  try {
    checkSourceSchema(source, file);
    const target = await PgBuildStore.open(options.url, { maxConnections: 2 });
    try {
      // The context tables are made by the context store, not by the schema migrations.
      await new PgContextStore(target.pool, Number.MAX_SAFE_INTEGER).init();
      return await copyInto(source, file, options, target);
    } finally {
      await target.close();
    }
  } finally {
    source.close();
  }
}

/**
 * The source under an exclusive lock, held until it is closed. A
 * coordinator holds the file open (shared) for its whole life, so taking
 * the lock fails at once while one runs; and one started meanwhile waits.
 */
function lockSource(file: string): Database.Database {
  if (!existsSync(file)) {
    throw new BraidError('not_found', `${file} does not exist`);
  }
  const db = new Database(file, { fileMustExist: true, timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
    return db;
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code === 'SQLITE_BUSY') {
      throw new StoreCopyError(
        `${file} is in use (a coordinator or braid tokens has it open): stop the coordinator, then migrate`,
        { cause: err },
      );
    }
    throw err;
  }
}

/** Refuses a source a newer braid migrated: its rows may hold what this one cannot place. */
function checkSourceSchema(source: Database.Database, file: string): void {
  if (!tableExists(source, 'schema_version')) return;
  const { current } = source
    .prepare('SELECT MAX(version) AS current FROM schema_version')
    .get() as {
    current: number | null;
  };
  if ((current ?? 0) > SQLITE_SCHEMA_VERSION) {
    throw new StoreSchemaError(
      `the store at ${file} has schema version ${current}, newer than this braid (${SQLITE_SCHEMA_VERSION}): upgrade braid`,
    );
  }
}

function tableExists(db: Database.Database, table: string): boolean {
  return (
    db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(table) !==
    undefined
  );
}

async function copyInto(
  source: Database.Database,
  file: string,
  options: StoreCopyOptions,
  target: PgBuildStore,
): Promise<StoreCopySummary> {
  return inTransaction(target.pool, async (client) => {
    const before = await countRows(client, [...TABLES.map((t) => t.table), 'contexts']);
    if (!options.append) refuseNonEmpty(before, target.where);
    const rows: StoreCopySummary['rows'] = [];
    for (const spec of TABLES) {
      const copied = await copyTable(source, client, spec, target.where);
      await verifyTable(client, spec, copied, before.get(spec.table) ?? 0, target.where);
      rows.push({ table: spec.table, rows: copied.count });
    }
    const contexts = await copyContexts(options.dataDir, client, target.where);
    return { source: file, target: target.where, rows, contexts };
  });
}

async function countRows(client: pg.PoolClient, tables: string[]): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const table of tables) {
    if (!(await targetHas(client, table))) continue;
    const { rows } = await client.query<{ n: string }>(`SELECT COUNT(*) AS n FROM ${table}`);
    counts.set(table, Number(rows[0]?.n ?? 0));
  }
  return counts;
}

function refuseNonEmpty(counts: Map<string, number>, where: string): void {
  const held = [...counts]
    .filter(([table, n]) => n > 0 && ['builds', 'tokens', 'contexts'].includes(table))
    .map(([table, n]) => `${n} ${n === 1 ? table.replace(/s$/, '') : table}`);
  if (held.length > 0) {
    throw new StoreCopyError(
      `the store at ${where} already holds ${held.join(', ')}: nothing was copied (pass --append to add to it)`,
    );
  }
}

async function targetHas(client: pg.PoolClient, table: string): Promise<boolean> {
  const { rows } = await client.query<{ found: string | null }>('SELECT to_regclass($1) AS found', [
    table,
  ]);
  return rows[0]?.found != null;
}

interface TargetColumn {
  name: string;
  boolean: boolean;
}

/** The target's columns of `table` that a copy writes (not the identity that orders them). */
async function targetColumns(client: pg.PoolClient, table: string): Promise<TargetColumn[]> {
  const { rows } = await client.query<{ column_name: string; data_type: string }>(
    `SELECT column_name, data_type FROM information_schema.columns
     WHERE table_schema = current_schema() AND table_name = $1 AND is_identity = 'NO'`,
    [table],
  );
  return rows.map((r) => ({ name: r.column_name, boolean: r.data_type === 'boolean' }));
}

interface Copied {
  count: number;
  /** The key of every row copied, for tables whose rows may meet one already there. */
  keys: string[][];
}

/**
 * The rows of one table, in batches. Every column of the source must have a
 * place in the target; a column only the target has takes its default,
 * which is what SQLite's own migrations give a row made before it.
 */
async function copyTable(
  source: Database.Database,
  client: pg.PoolClient,
  spec: (typeof TABLES)[number],
  where: string,
): Promise<Copied> {
  const key = 'key' in spec ? spec.key : undefined;
  const copied: Copied = { count: 0, keys: key ? key.map(() => []) : [] };
  if (!tableExists(source, spec.table)) return copied;
  const sourceColumns = (
    source.prepare(`PRAGMA table_info(${spec.table})`).all() as { name: string }[]
  ).map((c) => c.name);
  const targetByName = new Map(
    (await targetColumns(client, spec.table)).map((c) => [c.name, c] as const),
  );
  if (targetByName.size === 0) {
    const { n } = source.prepare(`SELECT COUNT(*) AS n FROM ${spec.table}`).get() as { n: number };
    if (n === 0) return copied;
    throw new StoreCopyError(
      `the store at ${where} has no ${spec.table} table for the ${n} rows of the source: this braid's PostgreSQL schema is older than its SQLite one`,
    );
  }
  const columns = sourceColumns.map((name) => {
    const column = targetByName.get(name);
    if (column === undefined) {
      throw new StoreCopyError(
        `column ${spec.table}.${name} of the source has no place in the store at ${where}`,
      );
    }
    return column;
  });
  const onConflict = 'onConflict' in spec ? spec.onConflict : '';
  let batch: unknown[][] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const values = batch.flat();
    const tuples = batch.map(
      (_, row) => `(${columns.map((__, col) => `$${row * columns.length + col + 1}`).join(', ')})`,
    );
    try {
      await client.query(
        `INSERT INTO ${spec.table} (${columns.map((c) => c.name).join(', ')}) VALUES ${tuples.join(', ')} ${onConflict}`,
        values,
      );
    } catch (err) {
      throw new StoreCopyError(
        `copying ${spec.table} into the store at ${where} failed: ${pgErrorLine(err)}: nothing was written`,
        { cause: err },
      );
    }
    copied.count += batch.length;
    batch = [];
  };
  const rows = source
    .prepare(`SELECT ${sourceColumns.join(', ')} FROM ${spec.table} ORDER BY ${spec.order}`)
    .raw()
    .iterate() as IterableIterator<unknown[]>;
  for (const row of rows) {
    batch.push(
      row.map((value, i) => (columns[i]!.boolean && value !== null ? value !== 0 : value)),
    );
    if (key) {
      key.forEach((name, k) => copied.keys[k]!.push(String(row[sourceColumns.indexOf(name)])));
    }
    if (batch.length === ROWS_PER_INSERT) await flush();
  }
  await flush();
  return copied;
}

/**
 * Every row copied is in the target: a plain table grew by exactly the
 * rows copied; a table whose rows may meet ones already there (appending)
 * holds every copied key.
 */
async function verifyTable(
  client: pg.PoolClient,
  spec: (typeof TABLES)[number],
  copied: Copied,
  before: number,
  where: string,
): Promise<void> {
  if (copied.count === 0) return;
  let found: number;
  let expected: number;
  if ('key' in spec) {
    const pairs = spec.key.map((name, k) => `${name} = any_key.k${k}`).join(' AND ');
    const unnest = spec.key.map((_, k) => `$${k + 1}::text[]`).join(', ');
    const aliases = spec.key.map((_, k) => `k${k}`).join(', ');
    const { rows } = await client.query<{ n: string }>(
      `SELECT COUNT(*) AS n FROM ${spec.table}
       JOIN unnest(${unnest}) AS any_key(${aliases}) ON ${pairs}`,
      copied.keys,
    );
    found = Number(rows[0]?.n ?? 0);
    expected = copied.count;
  } else {
    const { rows } = await client.query<{ n: string }>(`SELECT COUNT(*) AS n FROM ${spec.table}`);
    found = Number(rows[0]?.n ?? 0) - before;
    expected = copied.count;
  }
  if (found !== expected) {
    throw new StoreCopyError(
      `the store at ${where} counts ${found} of the ${expected} ${spec.table} rows copied: nothing was written`,
    );
  }
}

/**
 * The contexts on disk, each checked against its digest while it is read
 * and written in the chunks the PostgreSQL context store reads; a context
 * the target holds already (appending) is skipped, as an upload of it would be.
 */
async function copyContexts(
  dataDir: string,
  client: pg.PoolClient,
  where: string,
): Promise<StoreCopySummary['contexts']> {
  const dir = join(dataDir, 'contexts', 'sha256');
  const summary = { copied: 0, bytes: 0, present: 0 };
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => /^[a-f0-9]{64}$/.test(n)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return summary;
    throw err;
  }
  for (const hex of names) {
    const path = join(dir, hex);
    const digest = `sha256:${hex}`;
    const { size, mtimeMs } = await stat(path);
    const files = await contextFiles(path);
    const claimed = await client.query(
      `INSERT INTO contexts (digest, size_bytes, files, created_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (digest) DO NOTHING`,
      [digest, size, files, Math.floor(mtimeMs)],
    );
    if (claimed.rowCount === 0) {
      summary.present++;
      continue;
    }
    const written = await copyChunks(path, digest, client);
    if (written !== size) {
      throw new StoreCopyError(`context ${path} changed while it was copied: nothing was written`);
    }
    const { rows } = await client.query<{ n: string | null }>(
      'SELECT SUM(octet_length(bytes)) AS n FROM context_chunks WHERE digest = $1',
      [digest],
    );
    if (Number(rows[0]?.n ?? 0) !== size) {
      throw new StoreCopyError(
        `the store at ${where} holds ${rows[0]?.n ?? 0} of the ${size} bytes of context ${digest}: nothing was written`,
      );
    }
    summary.copied++;
    summary.bytes += size;
  }
  return summary;
}

/** The context's file list as the file store kept it, or read again from the tar. */
async function contextFiles(path: string): Promise<string> {
  try {
    return await readFile(`${path}.files`, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return [...(await checkContextTar(path)).files].sort().join('\n');
  }
}

/** Writes the file's chunks; returns its bytes, refusing a file whose bytes are not its digest. */
async function copyChunks(path: string, digest: string, client: pg.PoolClient): Promise<number> {
  const { bytes, sha256 } = await insertChunks(client, digest, path);
  if (sha256 !== digest) {
    throw new StoreCopyError(
      `context ${path} does not hash to its name (damaged on disk): remove it or restore it, then migrate; nothing was written`,
    );
  }
  return bytes;
}

/** A PostgreSQL error in one line, with its detail (which key) when it has one. */
function pgErrorLine(err: unknown): string {
  const message = (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
  const detail = (err as { detail?: unknown }).detail;
  return typeof detail === 'string' && detail !== '' ? `${message} (${detail})` : message;
}
