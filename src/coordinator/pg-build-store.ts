/**
 * The build store in PostgreSQL, for coordinators that share a database:
 * the same tables and semantics as sqlite-build-store.ts, over a `pg` pool.
 * Specs, descriptors and events are protobuf bytes (BYTEA), times are
 * milliseconds (BIGINT), and an identity column keeps the order builds and
 * jobs were created in, as SQLite's rowid does. A commit is one
 * transaction on one pooled connection; commits apply in the order of
 * calls. The password comes from the URL, PGPASSWORD or the password file
 * (PGPASSFILE, ~/.pgpass), as libpq takes it; the store is named by its
 * URL without the password (redactedUrl) everywhere.
 */
import pg from 'pg';
import { createHash } from 'node:crypto';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { BuildEventSchema, BuildState, type BuildEvent } from '../gen/braid/v1/build_pb.js';
import { BraidError } from '../errors.js';
import type { Logger } from '../log.js';
import { redactedUrl } from '../pg-url.js';
import type { CacheRecord } from './scheduler.js';
import { CHANNELS, type Channel } from './pg-notify.js';
import { inTransaction } from './pg-transaction.js';
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

export { redactedUrl };

export interface PgBuildStoreOptions {
  /** Connections in the pool (default 10). */
  maxConnections?: number;
  /** How long to wait for a connection before a call fails (default 10 s). */
  connectTimeoutMs?: number;
  /** Idle connections close after this (default 30 s). */
  idleTimeoutMs?: number;
  /** Shown in pg_stat_activity (default "braid"). */
  applicationName?: string;
  /** Where an idle connection's failure is reported (the pool replaces it). */
  log?: Pick<Logger, 'warn'>;
}

/** The store could not be reached or refused the connection. */
export class StoreUnavailableError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('unavailable', message, options);
  }
}

type Sql = { text: string; values?: unknown[] };

/** A NOTIFY sent with a commit. */
type Announce = { channel: Channel; payload: string };

/** A commit waiting for its turn. */
interface Queued {
  writes: readonly StoreWrite[];
  epoch: bigint | undefined;
  announce: Announce | undefined;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** At most this many commits go in one transaction. */
const MAX_GROUP = 256;

/**
 * The schema's migrations, applied in order at start, each once
 * (store-schema.ts). Version 1 is the schema SQLite reached at its version 5.
 */
const MIGRATIONS: readonly Migration<readonly string[]>[] = [
  {
    version: 1,
    name: 'builds, jobs, build events and cache records',
    apply: [
      `CREATE TABLE builds (
        id TEXT PRIMARY KEY,
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        spec BYTEA NOT NULL,
        state INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        finished_at BIGINT,
        index_descriptor BYTEA,
        error TEXT NOT NULL DEFAULT '',
        request_id TEXT NOT NULL DEFAULT ''
      )`,
      'CREATE INDEX builds_created ON builds (created_at, seq)',
      'CREATE INDEX builds_state ON builds (state)',
      `CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        build_id TEXT NOT NULL REFERENCES builds (id),
        platform TEXT NOT NULL,
        state INTEGER NOT NULL,
        agent TEXT NOT NULL DEFAULT '',
        emulated BOOLEAN NOT NULL DEFAULT FALSE,
        emulator TEXT NOT NULL DEFAULT '',
        current_step TEXT NOT NULL DEFAULT '',
        image BYTEA,
        started_at BIGINT,
        finished_at BIGINT,
        duration_ms BIGINT NOT NULL DEFAULT 0,
        attempt INTEGER NOT NULL DEFAULT 1,
        error TEXT NOT NULL DEFAULT '',
        placement_reason INTEGER NOT NULL DEFAULT 0,
        placement_detail TEXT NOT NULL DEFAULT '',
        facts BYTEA,
        attestation BYTEA,
        role INTEGER NOT NULL DEFAULT 0
      )`,
      'CREATE INDEX jobs_build ON jobs (build_id, seq)',
      'CREATE INDEX jobs_state ON jobs (state)',
      `CREATE TABLE build_events (
        build_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        event BYTEA NOT NULL,
        PRIMARY KEY (build_id, sequence)
      )`,
      `CREATE TABLE cache_records (
        lineage TEXT NOT NULL,
        platform TEXT NOT NULL,
        agent TEXT NOT NULL,
        engine_id TEXT NOT NULL,
        finished_at BIGINT NOT NULL,
        PRIMARY KEY (lineage, platform, agent)
      )`,
      'CREATE INDEX cache_records_finished ON cache_records (finished_at)',
    ],
  },
  {
    version: 2,
    name: 'leadership: the leading coordinator, its epoch and its lease',
    apply: [
      `CREATE TABLE leadership (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL,
        leader TEXT NOT NULL,
        lease_until_ms BIGINT NOT NULL
      )`,
      "INSERT INTO leadership (id, epoch, leader, lease_until_ms) VALUES (1, 0, '', 0)",
    ],
  },
  {
    version: 3,
    name: 'tokens: API and join tokens, shared by every coordinator',
    apply: [
      `CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('api', 'join')),
        hash TEXT NOT NULL UNIQUE,
        hint TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT,
        revoked_at BIGINT
      )`,
      'CREATE UNIQUE INDEX tokens_active_name ON tokens (name) WHERE revoked_at IS NULL',
    ],
  },
];

/** A commit of a coordinator that no longer leads: refused, nothing written. */
export class FencedError extends BraidError {
  /** `current` undefined: this coordinator ended its own term. */
  constructor(mine: bigint, current?: bigint) {
    super(
      'failed_precondition',
      current === undefined
        ? `this coordinator's term (epoch ${mine}) has ended: nothing was written`
        : `this coordinator led in epoch ${mine}, and another has led since (epoch ${current}): nothing was written`,
    );
  }
}

/** The schema version this braid writes and reads. */
export const PG_SCHEMA_VERSION = latestVersion(MIGRATIONS);

/** Held (per transaction) while migrating: coordinators starting at once migrate one at a time. */
const MIGRATION_LOCK = 0x62726169; // "brai"

/** States a build can still leave, so the unfinished ones are read through the state index. */
const UNFINISHED_STATES = Object.values(BuildState).filter(
  (s): s is BuildState => typeof s === 'number' && !TERMINAL_BUILD_STATES.has(s),
);

const BUILD_COLUMNS =
  'id, spec, state, created_at, finished_at, index_descriptor, error, request_id';
const JOB_COLUMNS =
  'id, build_id, platform, state, agent, emulated, emulator, current_step, image, started_at, ' +
  'finished_at, duration_ms, attempt, error, placement_reason, placement_detail, facts, ' +
  'attestation, role';

export class PgBuildStore implements BuildStore {
  private open = true;

  /**
   * Commits in the order of calls. One transaction is in flight at a time;
   * the commits called meanwhile wait, and go together in the next one
   * (group commit): a busy leader pays one round of transactions for many
   * commits instead of one each. They succeed or fail together.
   */
  private waiting: Queued[] = [];
  private tail: Promise<void> = Promise.resolve();
  private inFlight = false;

  private constructor(
    /** Its connection pool (the shared context store uses it too). */
    readonly pool: pg.Pool,
    /** The URL without its password. */
    readonly where: string,
  ) {}

  /** Connect, bring the schema to PG_SCHEMA_VERSION (or refuse a newer one), and return the store. */
  static async open(url: string, options: PgBuildStoreOptions = {}): Promise<PgBuildStore> {
    const where = redactedUrl(url);
    const pool = new pg.Pool({
      connectionString: url,
      max: options.maxConnections ?? 10,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 10_000,
      idleTimeoutMillis: options.idleTimeoutMs ?? 30_000,
      application_name: options.applicationName ?? 'braid',
    });
    // An idle connection that fails is dropped and replaced by the pool;
    // without a listener its error would end the process.
    pool.on('error', (err) => {
      options.log?.warn({ store: where, err: err.message }, 'store connection failed while idle');
    });
    const store = new PgBuildStore(pool, where);
    try {
      await store.migrate();
    } catch (err) {
      await pool.end().catch(() => undefined);
      if (err instanceof BraidError) throw err;
      throw new StoreUnavailableError(`cannot open the store at ${where}: ${firstLine(err)}`, {
        cause: err,
      });
    }
    return store;
  }

  /**
   * The store as the leader of `epoch` writes it (leadership.ts): each of
   * its commits is refused (FencedError) once another term has begun, and
   * `assertLeading` says whether it still leads (asked before a tag moves).
   * Reads are the store's own.
   */
  fencedBy(epoch: bigint): BuildStore & { assertLeading(): Promise<void>; retire(): void } {
    // Once the term has ended here, its writes stop here too: even before another
    // coordinator raises the epoch (a term given up after a failed write).
    let retired = false;
    const ended = () => new FencedError(epoch);
    return {
      commit: (writes) => (retired ? Promise.reject(ended()) : this.commitIn(writes, epoch)),
      retire: () => {
        retired = true;
      },
      unfinishedBuilds: () => this.unfinishedBuilds(),
      getBuild: (id) => this.getBuild(id),
      jobsOf: (buildId) => this.jobsOf(buildId),
      listBuilds: (limit, states) => this.listBuilds(limit, states),
      eventsAfter: (buildId, after, limit) => this.eventsAfter(buildId, after, limit),
      cacheRecords: (since) => this.cacheRecords(since),
      isOpen: () => this.isOpen(),
      close: () => this.close(),
      assertLeading: async () => {
        if (retired) throw ended();
        const current = await this.currentEpoch();
        if (current !== epoch) throw new FencedError(epoch, current);
      },
    };
  }

  private async currentEpoch(): Promise<bigint> {
    const { rows } = await this.pool.query<{ epoch: string }>(
      'SELECT epoch FROM leadership WHERE id = 1',
    );
    return BigInt(rows[0]?.epoch ?? '0');
  }

  /** The schema version the database is at. */
  async schemaVersion(): Promise<number> {
    const { rows } = await this.pool.query<{ current: number | null }>(
      'SELECT MAX(version) AS current FROM schema_version',
    );
    return rows[0]?.current ?? 0;
  }

  isOpen(): boolean {
    return this.open;
  }

  /** Waits for the commits under way, then closes every connection. */
  async close(): Promise<void> {
    if (!this.open) return;
    this.open = false;
    // Commits called before the close are still written.
    while (this.inFlight || this.waiting.length > 0) await this.tail.catch(() => undefined);
    await this.pool.end();
  }

  commit(writes: readonly StoreWrite[]): Promise<void> {
    return this.commitIn(writes, undefined);
  }

  /**
   * A commit of a coordinator that does not lead (a submission through a
   * standby), with `NOTIFY channel, payload` in the same transaction: the
   * leader hears of it once it is stored.
   */
  commitAnnounced(writes: readonly StoreWrite[], channel: Channel, payload: string): Promise<void> {
    return this.commitIn(writes, undefined, { channel, payload });
  }

  private commitIn(
    writes: readonly StoreWrite[],
    epoch: bigint | undefined,
    announce?: Announce,
  ): Promise<void> {
    if (!this.open) return Promise.reject(new Error(`the store at ${this.where} is closed`));
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ writes, epoch, announce, resolve, reject });
      this.pump();
    });
  }

  /** The next group: the commits waiting, in order, that share the first one's epoch. */
  private pump(): void {
    if (this.inFlight || this.waiting.length === 0) return;
    const epoch = this.waiting[0]?.epoch;
    let n = 0;
    while (n < this.waiting.length && n < MAX_GROUP && this.waiting[n]?.epoch === epoch) n++;
    const group = this.waiting.splice(0, n);
    this.inFlight = true;
    const announces = (q: Queued) => (q.announce ? [q.announce] : []);
    const run = this.transaction(
      group.flatMap((q) => q.writes),
      epoch,
      group.flatMap(announces),
    ).then(
      () => group.forEach((q) => q.resolve()),
      async (err: unknown) => {
        // The store unreachable, or the term over: every commit of the group fails alike.
        if (group.length === 1 || err instanceof BraidError) {
          group.forEach((q) => q.reject(err));
          return;
        }
        // One commit refused (a constraint): it alone fails; the group was rolled back,
        // so each is tried again on its own, in order.
        for (const q of group) {
          await this.transaction(q.writes, epoch, announces(q)).then(q.resolve, q.reject);
        }
      },
    );
    this.tail = run.finally(() => {
      this.inFlight = false;
      this.pump();
    });
  }

  async unfinishedBuilds(): Promise<UnfinishedBuild[]> {
    const builds = await this.rows<BuildRow>(
      `SELECT ${BUILD_COLUMNS} FROM builds WHERE state = ANY($1::int[]) ORDER BY created_at, seq`,
      [UNFINISHED_STATES],
    );
    if (builds.length === 0) return [];
    const ids = builds.map((b) => b.id);
    const jobs = await this.rows<JobRow>(
      `SELECT ${JOB_COLUMNS} FROM jobs WHERE build_id = ANY($1::text[]) ORDER BY seq`,
      [ids],
    );
    const last = await this.rows<{ build_id: string; last: string }>(
      `SELECT build_id, MAX(sequence) AS last FROM build_events
       WHERE build_id = ANY($1::text[]) GROUP BY build_id`,
      [ids],
    );
    const jobsByBuild = new Map<string, JobRecord[]>(ids.map((id) => [id, []]));
    for (const row of jobs) jobsByBuild.get(row.build_id)?.push(jobFromRow(row));
    const lastByBuild = new Map(last.map((r) => [r.build_id, BigInt(r.last)]));
    return builds.map((row) => ({
      build: buildFromRow(row),
      jobs: jobsByBuild.get(row.id) ?? [],
      lastSequence: lastByBuild.get(row.id) ?? 0n,
    }));
  }

  async getBuild(id: string): Promise<BuildRecord | undefined> {
    const [row] = await this.rows<BuildRow>(`SELECT ${BUILD_COLUMNS} FROM builds WHERE id = $1`, [
      id,
    ]);
    return row ? buildFromRow(row) : undefined;
  }

  async jobsOf(buildId: string): Promise<JobRecord[]> {
    const rows = await this.rows<JobRow>(
      `SELECT ${JOB_COLUMNS} FROM jobs WHERE build_id = $1 ORDER BY seq`,
      [buildId],
    );
    return rows.map(jobFromRow);
  }

  async listBuilds(limit: number, states: readonly BuildState[]): Promise<BuildRecord[]> {
    const rows = states.length
      ? await this.rows<BuildRow>(
          `SELECT ${BUILD_COLUMNS} FROM builds WHERE state = ANY($1::int[])
           ORDER BY created_at DESC, seq DESC LIMIT $2`,
          [[...states], limit],
        )
      : await this.rows<BuildRow>(
          `SELECT ${BUILD_COLUMNS} FROM builds ORDER BY created_at DESC, seq DESC LIMIT $1`,
          [limit],
        );
    return rows.map(buildFromRow);
  }

  async eventsAfter(buildId: string, after: bigint, limit = 1000): Promise<BuildEvent[]> {
    const rows = await this.rows<{ event: Buffer }>(
      `SELECT event FROM build_events WHERE build_id = $1 AND sequence > $2
       ORDER BY sequence LIMIT $3`,
      [buildId, after, limit],
    );
    return rows.map((r) => fromBinary(BuildEventSchema, r.event));
  }

  async cacheRecords(since: Date): Promise<CacheRecord[]> {
    const rows = await this.rows<CacheRow>(
      'SELECT lineage, platform, agent, engine_id, finished_at FROM cache_records WHERE finished_at >= $1',
      [since.getTime()],
    );
    return rows.map(cacheFromRow);
  }

  // --- internals -------------------------------------------------------------

  /** All of `writes` on one connection in one transaction, or none of them. */
  private async transaction(
    writes: readonly StoreWrite[],
    epoch: bigint | undefined,
    announces: readonly Announce[],
  ): Promise<void> {
    await inTransaction(this.pool, async (client) => {
      if (epoch !== undefined) {
        // Held until the commit: a takeover (which raises the epoch) waits for it, or fences it.
        const { rows } = await client.query<{ epoch: string }>(
          'SELECT epoch FROM leadership WHERE id = 1 FOR SHARE',
        );
        const current = BigInt(rows[0]?.epoch ?? '0');
        if (current !== epoch) throw new FencedError(epoch, current);
      }
      // Events (most of a busy leader's writes: log lines) go in one statement after the
      // rest: they reference no other row, and the transaction is one either way.
      const events: Extract<StoreWrite, { kind: 'appendEvent' }>[] = [];
      for (const write of writes) {
        if (write.kind === 'appendEvent') events.push(write);
        else for (const sql of statementsOf(write)) await client.query(named(sql));
      }
      if (events.length === 1) {
        for (const sql of statementsOf(events[0]!)) await client.query(named(sql));
      } else if (events.length > 1) {
        await client.query(
          named({
            text: `INSERT INTO build_events (build_id, sequence, event)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])`,
            values: [
              events.map((e) => e.buildId),
              events.map((e) => e.event.sequence.toString()),
              events.map((e) => Buffer.from(toBinary(BuildEventSchema, e.event))),
            ],
          }),
        );
      }
      // Standbys following these builds are woken at the commit (pg-notify.ts), not by polling.
      const followed = [...new Set(events.map((e) => e.buildId))];
      if (followed.length > 0) {
        await client.query(
          named({
            text: 'SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id',
            values: [CHANNELS.buildEvents, followed],
          }),
        );
      }
      for (const { channel, payload } of announces) {
        await client.query('SELECT pg_notify($1, $2)', [channel, payload]);
      }
    }).catch((err: unknown) => {
      throw unreachableAs(err, this.where);
    });
  }

  private async rows<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<R[]> {
    try {
      const result = await this.pool.query<R>(named({ text, values }));
      return result.rows;
    } catch (err) {
      throw unreachableAs(err, this.where);
    }
  }

  private async migrate(): Promise<void> {
    await inTransaction(this.pool, async (client) => {
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await client.query(`CREATE TABLE IF NOT EXISTS schema_version (
        version INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        applied_at BIGINT NOT NULL
      )`);
      const { rows } = await client.query<{ current: number | null }>(
        'SELECT MAX(version) AS current FROM schema_version',
      );
      for (const migration of pendingMigrations(MIGRATIONS, rows[0]?.current ?? 0, this.where)) {
        for (const statement of migration.apply) await client.query(statement);
        await client.query(
          'INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)',
          [migration.version, migration.name, Date.now()],
        );
      }
    });
  }
}

const names = new Map<string, string>();

/** A statement prepared once per connection, named by its text. */
function named(sql: Sql): pg.QueryConfig {
  let name = names.get(sql.text);
  if (name === undefined) {
    name = `braid_${createHash('sha1').update(sql.text).digest('hex').slice(0, 16)}`;
    names.set(sql.text, name);
  }
  return { name, text: sql.text, values: sql.values };
}

/** The statements of one write, in order. */
function statementsOf(write: StoreWrite): Sql[] {
  switch (write.kind) {
    case 'createBuild': {
      const { build, jobs } = write;
      return [
        {
          text: `INSERT INTO builds (id, spec, state, created_at, error, request_id)
                 VALUES ($1, $2, $3, $4, $5, $6)`,
          values: buildInsertValues(build),
        },
        ...jobs.map((job) => ({
          text: `INSERT INTO jobs (id, build_id, platform, state, attempt, role)
                 VALUES ($1, $2, $3, $4, $5, $6)`,
          values: jobInsertValues(job, build.id),
        })),
      ];
    }
    case 'updateBuild':
      return update('builds', buildColumns(write.patch), write.id);
    case 'updateJob':
      return update('jobs', jobColumns(write.patch, 'boolean'), write.id);
    case 'appendEvent':
      return [
        {
          text: 'INSERT INTO build_events (build_id, sequence, event) VALUES ($1, $2, $3)',
          values: [
            write.buildId,
            write.event.sequence,
            Buffer.from(toBinary(BuildEventSchema, write.event)),
          ],
        },
      ];
    case 'recordCache': {
      const { record, forgetBefore } = write;
      return [
        {
          text: `INSERT INTO cache_records (lineage, platform, agent, engine_id, finished_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (lineage, platform, agent)
                 DO UPDATE SET engine_id = excluded.engine_id, finished_at = excluded.finished_at`,
          values: cacheInsertValues(record),
        },
        {
          text: 'DELETE FROM cache_records WHERE finished_at < $1',
          values: [forgetBefore.getTime()],
        },
      ];
    }
  }
}

function update(table: 'builds' | 'jobs', columns: Record<string, unknown>, id: string): Sql[] {
  const keys = Object.keys(columns);
  if (keys.length === 0) return [];
  // One statement per set of columns: a handful of shapes, each prepared once per connection.
  return [
    {
      text: `UPDATE ${table} SET ${keys.map((k, i) => `${k} = $${i + 1}`).join(', ')} WHERE id = $${keys.length + 1}`,
      values: [...Object.values(columns), id],
    },
  ];
}

/** SQLSTATE classes and codes of a database that cannot be reached or is going away. */
const UNREACHABLE_SQLSTATE = /^(08|57P0[1-3]|53300)/;
/** Node's errors of a connection that failed or could not be made. */
const UNREACHABLE_ERRNO = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENOTFOUND',
]);

/**
 * A failure to reach the store as StoreUnavailableError (UNAVAILABLE: the
 * caller may try again, and a client resumes); anything else as it was.
 */
export function unreachableAs(err: unknown, where: string): unknown {
  if (err instanceof BraidError) return err;
  const code = (err as { code?: unknown }).code;
  const message = firstLine(err);
  const unreachable =
    (typeof code === 'string' &&
      (UNREACHABLE_SQLSTATE.test(code) || UNREACHABLE_ERRNO.has(code))) ||
    // pg's own: a connection ended under a query, or none free within the connect timeout.
    /^Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/i.test(
      message,
    );
  return unreachable
    ? new StoreUnavailableError(`the store at ${where} is unreachable: ${message}`, { cause: err })
    : err;
}

function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n')[0] ?? message;
}
