/**
 * The build store in SQLite (WAL), the default: one file next to the
 * contexts. Specs and events are stored as protobuf bytes, so what is read
 * back is exactly what the API serves. Statements are prepared once.
 * better-sqlite3 is synchronous: a commit is done when `commit` returns,
 * and its promise only reports the outcome.
 */
import type Database from 'better-sqlite3';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { BuildEventSchema, BuildState, type BuildEvent } from '../gen/braid/v1/build_pb.js';
import type { CacheRecord } from './scheduler.js';
import { openDatabase } from './sqlite.js';
import { latestVersion, pendingMigrations, type Migration } from './store-schema.js';
import type { BuildRecord, BuildStore, JobRecord, StoreWrite, UnfinishedBuild } from './store.js';
import {
  buildColumns,
  buildFromRow,
  buildInsertValues,
  cacheFromRow,
  cacheInsertValues,
  jobColumns,
  jobFromRow,
  jobInsertValues,
  type BuildRow,
  type CacheRow,
  type JobRow,
} from './store-rows.js';
import { TERMINAL_BUILD_STATES } from './transitions.js';

/**
 * The schema's migrations, applied in order at start (store-schema.ts).
 * 1 to 5 are what coordinators before schema_version made, one
 * `CREATE TABLE IF NOT EXISTS` and added columns at a time: a database from
 * then has no schema_version (version 0) and any prefix of them, so they
 * stay idempotent. Later migrations run exactly once and need not be.
 */
const MIGRATIONS: readonly Migration<(db: Database.Database) => void>[] = [
  {
    version: 1,
    name: 'builds, jobs, build events and cache records',
    apply: (db) =>
      db.exec(`
CREATE TABLE IF NOT EXISTS builds (
  id TEXT PRIMARY KEY,
  spec BLOB NOT NULL,
  state INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  finished_at INTEGER,
  index_descriptor BLOB,
  error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS builds_created ON builds(created_at);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  build_id TEXT NOT NULL REFERENCES builds(id),
  platform TEXT NOT NULL,
  state INTEGER NOT NULL,
  agent TEXT NOT NULL DEFAULT '',
  emulated INTEGER NOT NULL DEFAULT 0,
  emulator TEXT NOT NULL DEFAULT '',
  current_step TEXT NOT NULL DEFAULT '',
  image BLOB,
  started_at INTEGER,
  finished_at INTEGER,
  duration_ms INTEGER NOT NULL DEFAULT 0,
  attempt INTEGER NOT NULL DEFAULT 1,
  error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_build ON jobs(build_id);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS cache_records (
  lineage TEXT NOT NULL,
  platform TEXT NOT NULL,
  agent TEXT NOT NULL,
  engine_id TEXT NOT NULL,
  finished_at INTEGER NOT NULL,
  PRIMARY KEY (lineage, platform, agent)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS build_events (
  build_id TEXT NOT NULL,
  sequence INTEGER NOT NULL,
  event BLOB NOT NULL,
  PRIMARY KEY (build_id, sequence)
) WITHOUT ROWID;
`),
  },
  {
    version: 2,
    name: 'request ids',
    apply: (db) => addColumn(db, 'builds', 'request_id', "TEXT NOT NULL DEFAULT ''"),
  },
  {
    version: 3,
    name: 'placement reasons',
    apply: (db) => {
      addColumn(db, 'jobs', 'placement_reason', 'INTEGER NOT NULL DEFAULT 0');
      addColumn(db, 'jobs', 'placement_detail', "TEXT NOT NULL DEFAULT ''");
    },
  },
  {
    version: 4,
    name: 'build facts and attestations',
    apply: (db) => {
      addColumn(db, 'jobs', 'facts', 'BLOB');
      addColumn(db, 'jobs', 'attestation', 'BLOB');
    },
  },
  {
    version: 5,
    name: 'job roles',
    apply: (db) => addColumn(db, 'jobs', 'role', 'INTEGER NOT NULL DEFAULT 0'),
  },
];

/** The schema version this braid writes and reads. */
export const SQLITE_SCHEMA_VERSION = latestVersion(MIGRATIONS);

export class SqliteBuildStore implements BuildStore {
  private readonly db: Database.Database;
  private readonly statements = new Map<string, Database.Statement>();

  constructor(file: string) {
    this.db = openDatabase(file);
    try {
      migrate(this.db, file);
    } catch (err) {
      this.db.close();
      throw err;
    }
  }

  isOpen(): boolean {
    return this.db.open;
  }

  close(): Promise<void> {
    this.statements.clear();
    if (this.db.open) this.db.close();
    return Promise.resolve();
  }

  commit(writes: readonly StoreWrite[]): Promise<void> {
    try {
      this.commitSync(writes);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** The same, done when it returns (it throws when the transaction failed). */
  commitSync(writes: readonly StoreWrite[]): void {
    this.db.transaction(() => {
      for (const write of writes) this.apply(write);
    })();
  }

  unfinishedBuilds(): Promise<UnfinishedBuild[]> {
    const terminal = [...TERMINAL_BUILD_STATES].join(',');
    const rows = this.statement(
      `SELECT * FROM builds WHERE state NOT IN (${terminal}) ORDER BY created_at, rowid`,
    ).all() as BuildRow[];
    return Promise.resolve(
      rows.map((row) => ({
        build: buildFromRow(row),
        jobs: this.jobRows(row.id),
        lastSequence: BigInt(
          (
            this.statement('SELECT MAX(sequence) AS last FROM build_events WHERE build_id = ?').get(
              row.id,
            ) as { last: number | null }
          ).last ?? 0,
        ),
      })),
    );
  }

  getBuild(id: string): Promise<BuildRecord | undefined> {
    const row = this.statement('SELECT * FROM builds WHERE id = ?').get(id) as BuildRow | undefined;
    return Promise.resolve(row ? buildFromRow(row) : undefined);
  }

  jobsOf(buildId: string): Promise<JobRecord[]> {
    return Promise.resolve(this.jobRows(buildId));
  }

  listBuilds(limit: number, states: readonly BuildState[]): Promise<BuildRecord[]> {
    const where = states.length ? `WHERE state IN (${states.map(() => '?').join(',')})` : '';
    const rows = this.statement(
      `SELECT * FROM builds ${where} ORDER BY created_at DESC, rowid DESC LIMIT ?`,
    ).all(...states, limit) as BuildRow[];
    return Promise.resolve(rows.map(buildFromRow));
  }

  eventsAfter(buildId: string, after: bigint, limit = 1000): Promise<BuildEvent[]> {
    const rows = this.statement(
      'SELECT event FROM build_events WHERE build_id = ? AND sequence > ? ORDER BY sequence LIMIT ?',
    ).all(buildId, Number(after), limit) as { event: Buffer }[];
    return Promise.resolve(rows.map((r) => fromBinary(BuildEventSchema, r.event)));
  }

  cacheRecords(since: Date): Promise<CacheRecord[]> {
    const rows = this.statement('SELECT * FROM cache_records WHERE finished_at >= ?').all(
      since.getTime(),
    ) as CacheRow[];
    return Promise.resolve(rows.map(cacheFromRow));
  }

  /** One write inside the open transaction (protected: tests die in the middle of a group). */
  protected apply(write: StoreWrite): void {
    switch (write.kind) {
      case 'createBuild': {
        const { build, jobs } = write;
        this.statement(
          'INSERT INTO builds (id, spec, state, created_at, error, request_id) VALUES (?, ?, ?, ?, ?, ?)',
        ).run(...buildInsertValues(build));
        const insertJob = this.statement(
          'INSERT INTO jobs (id, build_id, platform, state, attempt, role) VALUES (?, ?, ?, ?, ?, ?)',
        );
        for (const job of jobs) insertJob.run(...jobInsertValues(job, build.id));
        return;
      }
      case 'updateBuild':
        return this.update('builds', buildColumns(write.patch), write.id);
      case 'updateJob':
        return this.update('jobs', jobColumns(write.patch, 'integer'), write.id);
      case 'appendEvent':
        this.statement('INSERT INTO build_events (build_id, sequence, event) VALUES (?, ?, ?)').run(
          write.buildId,
          Number(write.event.sequence),
          Buffer.from(toBinary(BuildEventSchema, write.event)),
        );
        return;
      case 'recordCache': {
        const { record, forgetBefore } = write;
        this.statement(
          `INSERT INTO cache_records (lineage, platform, agent, engine_id, finished_at)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (lineage, platform, agent)
           DO UPDATE SET engine_id = excluded.engine_id, finished_at = excluded.finished_at`,
        ).run(...cacheInsertValues(record));
        this.statement('DELETE FROM cache_records WHERE finished_at < ?').run(
          forgetBefore.getTime(),
        );
        return;
      }
    }
  }

  private update(table: 'builds' | 'jobs', columns: Record<string, unknown>, id: string): void {
    const keys = Object.keys(columns);
    if (keys.length === 0) return;
    // One statement per set of columns: a handful of shapes, each prepared once.
    this.statement(
      `UPDATE ${table} SET ${keys.map((k) => `${k} = ?`).join(', ')} WHERE id = ?`,
    ).run(...Object.values(columns), id);
  }

  private jobRows(buildId: string): JobRecord[] {
    const rows = this.statement('SELECT * FROM jobs WHERE build_id = ? ORDER BY rowid').all(
      buildId,
    ) as JobRow[];
    return rows.map(jobFromRow);
  }

  private statement(sql: string): Database.Statement {
    let statement = this.statements.get(sql);
    if (statement === undefined) {
      statement = this.db.prepare(sql);
      this.statements.set(sql, statement);
    }
    return statement;
  }
}

/**
 * Bring the database to SQLITE_SCHEMA_VERSION in one transaction (taken
 * for writing at once, so two processes opening one file migrate one after
 * the other), or refuse one a newer braid migrated.
 */
function migrate(db: Database.Database, file: string): void {
  db.transaction(() => {
    db.exec(`CREATE TABLE IF NOT EXISTS schema_version (
  version INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  applied_at INTEGER NOT NULL
)`);
    const { current } = db.prepare('SELECT MAX(version) AS current FROM schema_version').get() as {
      current: number | null;
    };
    const record = db.prepare(
      'INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)',
    );
    for (const migration of pendingMigrations(MIGRATIONS, current ?? 0, file)) {
      migration.apply(db);
      record.run(migration.version, migration.name, Date.now());
    }
  }).immediate();
}

/** Add a column unless it is there (migrations 2 to 5 meet databases that have it). */
function addColumn(db: Database.Database, table: string, column: string, type: string): void {
  const columns = db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[];
  if (!columns.some((c) => c.name === column)) {
    db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`);
  }
}
