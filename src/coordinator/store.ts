/**
 * The coordinator's durable state in SQLite (WAL): builds, their jobs and
 * their event log. Specs and events are stored as protobuf bytes, so what
 * is read back is exactly what the API serves.
 */
import type Database from 'better-sqlite3';
import { create, fromBinary, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import {
  BuildEventSchema,
  BuildSchema,
  BuildSpecSchema,
  BuildState,
  JobRole,
  JobSchema,
  PlacementReason,
  type Build,
  type BuildEvent,
  type BuildSpec,
  type Job,
} from '../gen/braid/v1/build_pb.js';
import {
  ImageDescriptorSchema,
  JobState,
  type ImageDescriptor,
} from '../gen/braid/v1/common_pb.js';
import { BuildFactsSchema, type BuildFacts } from '../gen/braid/v1/agent_pb.js';
import { toProtoPlatform } from '../rpc/platform.js';
import type { Platform } from '../oci/platform.js';
import type { CacheRecord } from './scheduler.js';
import { openDatabase } from './sqlite.js';
import { TERMINAL_BUILD_STATES, TERMINAL_JOB_STATES } from './transitions.js';

export interface JobRecord {
  id: string;
  buildId: string;
  platform: Platform;
  state: JobState;
  agent: string;
  emulated: boolean;
  emulator: string;
  currentStep: string;
  image?: ImageDescriptor;
  startedAt?: Date;
  finishedAt?: Date;
  durationMs: number;
  attempt: number;
  error: string;
  /** Why the scheduler chose its agent (unset while queued). */
  placementReason?: PlacementReason;
  placementDetail?: string;
  /** How its agent built it (for provenance), from its result. */
  facts?: BuildFacts;
  /** Its provenance attestation manifest in the index, once stitched. */
  attestation?: ImageDescriptor;
  /** REPRODUCIBILITY_CHECK: --check-reproducible's second build; unset: the platform's image. */
  role?: JobRole;
}

export interface BuildRecord {
  id: string;
  spec: BuildSpec;
  state: BuildState;
  createdAt: Date;
  finishedAt?: Date;
  index?: ImageDescriptor;
  error: string;
  /** Correlates the build's log lines from the CLI to the agents ('' for old builds). */
  requestId: string;
}

interface BuildRow {
  id: string;
  spec: Buffer;
  state: number;
  created_at: number;
  finished_at: number | null;
  index_descriptor: Buffer | null;
  error: string;
  request_id: string;
}

interface JobRow {
  id: string;
  build_id: string;
  platform: string;
  state: number;
  agent: string;
  emulated: number;
  emulator: string;
  current_step: string;
  image: Buffer | null;
  started_at: number | null;
  finished_at: number | null;
  duration_ms: number;
  attempt: number;
  error: string;
  placement_reason: number;
  placement_detail: string;
  facts: Buffer | null;
  attestation: Buffer | null;
  role: number;
}

const SCHEMA = `
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
`;

const toMs = (d: Date | undefined) => (d ? d.getTime() : null);
const fromMs = (ms: number | null) => (ms === null ? undefined : new Date(ms));

// The terminal sets are the transition tables' (transitions.ts); re-exported for the store's users.
export { TERMINAL_BUILD_STATES, TERMINAL_JOB_STATES };

export class BuildStore {
  private readonly db: Database.Database;
  private readonly nextSequence = new Map<string, bigint>();

  constructor(file: string) {
    this.db = openDatabase(file);
    this.db.exec(SCHEMA);
    addColumn(this.db, 'builds', 'request_id', "TEXT NOT NULL DEFAULT ''");
    addColumn(this.db, 'jobs', 'placement_reason', 'INTEGER NOT NULL DEFAULT 0');
    addColumn(this.db, 'jobs', 'placement_detail', "TEXT NOT NULL DEFAULT ''");
    addColumn(this.db, 'jobs', 'facts', 'BLOB');
    addColumn(this.db, 'jobs', 'attestation', 'BLOB');
    addColumn(this.db, 'jobs', 'role', 'INTEGER NOT NULL DEFAULT 0');
  }

  close(): void {
    this.db.close();
  }

  /**
   * Run `writes` as one SQLite transaction: every write inside commits
   * together, or none does when it throws. Re-entrant: a group inside a
   * group joins the outer one. Synchronous on purpose — nothing may await
   * between a job's move and its event.
   */
  atomically<T>(writes: () => T): T {
    if (this.db.inTransaction) return writes();
    try {
      return this.db.transaction(writes)();
    } catch (err) {
      // Sequences handed out inside the rolled-back group were never stored.
      this.nextSequence.clear();
      throw err;
    }
  }

  /** Whether the database is open (false once closed): the coordinator's readiness. */
  isOpen(): boolean {
    return this.db.open;
  }

  /** Jobs waiting for an agent, by platform (JSON as stored). */
  queuedJobsByPlatform(): { platform: Platform; count: number }[] {
    const rows = this.db
      .prepare('SELECT platform, COUNT(*) AS count FROM jobs WHERE state = ? GROUP BY platform')
      .all(JobState.QUEUED) as { platform: string; count: number }[];
    return rows.map((r) => ({ platform: JSON.parse(r.platform) as Platform, count: r.count }));
  }

  createBuild(build: BuildRecord, jobs: readonly JobRecord[]): void {
    const insertBuild = this.db.prepare(
      'INSERT INTO builds (id, spec, state, created_at, error, request_id) VALUES (?, ?, ?, ?, ?, ?)',
    );
    const insertJob = this.db.prepare(
      'INSERT INTO jobs (id, build_id, platform, state, attempt, role) VALUES (?, ?, ?, ?, ?, ?)',
    );
    this.db.transaction(() => {
      insertBuild.run(
        build.id,
        Buffer.from(toBinary(BuildSpecSchema, build.spec)),
        build.state,
        build.createdAt.getTime(),
        build.error,
        build.requestId,
      );
      for (const job of jobs) {
        insertJob.run(
          job.id,
          build.id,
          JSON.stringify(job.platform),
          job.state,
          job.attempt,
          job.role ?? JobRole.UNSPECIFIED,
        );
      }
    })();
  }

  updateBuild(
    id: string,
    patch: Partial<Pick<BuildRecord, 'state' | 'finishedAt' | 'index' | 'error'>>,
  ): void {
    const columns: Record<string, unknown> = {};
    if (patch.state !== undefined) columns.state = patch.state;
    if (patch.finishedAt !== undefined) columns.finished_at = toMs(patch.finishedAt);
    if (patch.index !== undefined) {
      columns.index_descriptor = Buffer.from(toBinary(ImageDescriptorSchema, patch.index));
    }
    if (patch.error !== undefined) columns.error = patch.error;
    const sets = Object.keys(columns).map((k) => `${k} = ?`);
    const values = Object.values(columns);
    if (sets.length === 0) return;
    this.db.prepare(`UPDATE builds SET ${sets.join(', ')} WHERE id = ?`).run(...values, id);
  }

  updateJob(id: string, patch: Partial<Omit<JobRecord, 'id' | 'buildId' | 'platform'>>): void {
    const columns: Record<string, unknown> = {};
    if (patch.state !== undefined) columns.state = patch.state;
    if (patch.agent !== undefined) columns.agent = patch.agent;
    if (patch.emulated !== undefined) columns.emulated = patch.emulated ? 1 : 0;
    if (patch.emulator !== undefined) columns.emulator = patch.emulator;
    if (patch.currentStep !== undefined) columns.current_step = patch.currentStep;
    if (patch.image !== undefined)
      columns.image = Buffer.from(toBinary(ImageDescriptorSchema, patch.image));
    if (patch.startedAt !== undefined) columns.started_at = toMs(patch.startedAt);
    if (patch.finishedAt !== undefined) columns.finished_at = toMs(patch.finishedAt);
    if (patch.durationMs !== undefined) columns.duration_ms = patch.durationMs;
    if (patch.attempt !== undefined) columns.attempt = patch.attempt;
    if (patch.error !== undefined) columns.error = patch.error;
    if (patch.placementReason !== undefined) columns.placement_reason = patch.placementReason;
    if (patch.placementDetail !== undefined) columns.placement_detail = patch.placementDetail;
    if (patch.facts !== undefined)
      columns.facts = Buffer.from(toBinary(BuildFactsSchema, patch.facts));
    if (patch.attestation !== undefined)
      columns.attestation = Buffer.from(toBinary(ImageDescriptorSchema, patch.attestation));
    const keys = Object.keys(columns);
    if (keys.length === 0) return;
    this.db
      .prepare(`UPDATE jobs SET ${keys.map((k) => `${k} = ?`).join(', ')} WHERE id = ?`)
      .run(...Object.values(columns), id);
  }

  /** Append an event (its sequence is assigned here) and return it. */
  appendEvent(
    buildId: string,
    body: MessageInitShape<typeof BuildEventSchema>['body'],
    time = new Date(),
  ): BuildEvent {
    let next = this.nextSequence.get(buildId);
    if (next === undefined) {
      const row = this.db
        .prepare('SELECT MAX(sequence) AS last FROM build_events WHERE build_id = ?')
        .get(buildId) as { last: number | null };
      next = BigInt((row.last ?? 0) + 1);
    }
    const event = create(BuildEventSchema, { sequence: next, time: timestampFromDate(time), body });
    this.db
      .prepare('INSERT INTO build_events (build_id, sequence, event) VALUES (?, ?, ?)')
      .run(buildId, Number(next), Buffer.from(toBinary(BuildEventSchema, event)));
    this.nextSequence.set(buildId, next + 1n);
    return event;
  }

  eventsAfter(buildId: string, after: bigint, limit = 1000): BuildEvent[] {
    const rows = this.db
      .prepare(
        'SELECT event FROM build_events WHERE build_id = ? AND sequence > ? ORDER BY sequence LIMIT ?',
      )
      .all(buildId, Number(after), limit) as { event: Buffer }[];
    return rows.map((r) => fromBinary(BuildEventSchema, r.event));
  }

  getBuildRecord(id: string): BuildRecord | undefined {
    const row = this.db.prepare('SELECT * FROM builds WHERE id = ?').get(id) as
      BuildRow | undefined;
    return row ? this.buildFromRow(row) : undefined;
  }

  jobsOf(buildId: string): JobRecord[] {
    const rows = this.db
      .prepare('SELECT * FROM jobs WHERE build_id = ? ORDER BY rowid')
      .all(buildId) as JobRow[];
    return rows.map((r) => this.jobFromRow(r));
  }

  getJob(id: string): JobRecord | undefined {
    const row = this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
    return row ? this.jobFromRow(row) : undefined;
  }

  /**
   * Remember that `record.agent` left a build cache of the lineage for the
   * platform on its engine (one row per lineage, platform and agent: the
   * latest), and forget records finished before `forgetBefore`.
   */
  recordCache(record: CacheRecord, forgetBefore: Date): void {
    this.db.transaction(() => {
      this.db
        .prepare(
          `INSERT INTO cache_records (lineage, platform, agent, engine_id, finished_at)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (lineage, platform, agent)
           DO UPDATE SET engine_id = excluded.engine_id, finished_at = excluded.finished_at`,
        )
        .run(
          record.lineage,
          JSON.stringify(record.platform),
          record.agent,
          record.engineId,
          record.finishedAt.getTime(),
        );
      this.db
        .prepare('DELETE FROM cache_records WHERE finished_at < ?')
        .run(forgetBefore.getTime());
    })();
  }

  /** Cache records of these lineages finished at or after `since`. */
  cacheRecords(lineages: readonly string[], since: Date): CacheRecord[] {
    const unique = [...new Set(lineages)];
    if (unique.length === 0) return [];
    const rows = this.db
      .prepare(
        `SELECT * FROM cache_records WHERE finished_at >= ? AND lineage IN (${unique.map(() => '?').join(',')})`,
      )
      .all(since.getTime(), ...unique) as {
      lineage: string;
      platform: string;
      agent: string;
      engine_id: string;
      finished_at: number;
    }[];
    return rows.map((r) => ({
      lineage: r.lineage,
      platform: JSON.parse(r.platform) as Platform,
      agent: r.agent,
      engineId: r.engine_id,
      finishedAt: new Date(r.finished_at),
    }));
  }

  /** Builds not yet in a final state (for recovery after a restart). */
  unfinishedBuilds(): BuildRecord[] {
    const terminal = [...TERMINAL_BUILD_STATES].join(',');
    const rows = this.db
      .prepare(`SELECT * FROM builds WHERE state NOT IN (${terminal}) ORDER BY created_at`)
      .all() as BuildRow[];
    return rows.map((r) => this.buildFromRow(r));
  }

  listBuilds(limit: number, states: readonly BuildState[]): BuildRecord[] {
    const where = states.length ? `WHERE state IN (${states.map(() => '?').join(',')})` : '';
    const rows = this.db
      .prepare(`SELECT * FROM builds ${where} ORDER BY created_at DESC, rowid DESC LIMIT ?`)
      .all(...states, limit) as BuildRow[];
    return rows.map((r) => this.buildFromRow(r));
  }

  /** The API's view of a build, jobs included. */
  toProto(record: BuildRecord): Build {
    return create(BuildSchema, {
      id: record.id,
      spec: record.spec,
      state: record.state,
      createdAt: timestampFromDate(record.createdAt),
      finishedAt: record.finishedAt ? timestampFromDate(record.finishedAt) : undefined,
      jobs: this.jobsOf(record.id).map((j) => jobToProto(j)),
      index: record.index,
      error: record.error,
      requestId: record.requestId,
    });
  }

  private buildFromRow(row: BuildRow): BuildRecord {
    return {
      id: row.id,
      spec: fromBinary(BuildSpecSchema, row.spec),
      state: row.state as BuildState,
      createdAt: new Date(row.created_at),
      finishedAt: fromMs(row.finished_at),
      index: row.index_descriptor
        ? fromBinary(ImageDescriptorSchema, row.index_descriptor)
        : undefined,
      error: row.error,
      requestId: row.request_id,
    };
  }

  private jobFromRow(row: JobRow): JobRecord {
    return {
      id: row.id,
      buildId: row.build_id,
      platform: JSON.parse(row.platform) as Platform,
      state: row.state as JobState,
      agent: row.agent,
      emulated: row.emulated === 1,
      emulator: row.emulator,
      currentStep: row.current_step,
      image: row.image ? fromBinary(ImageDescriptorSchema, row.image) : undefined,
      startedAt: fromMs(row.started_at),
      finishedAt: fromMs(row.finished_at),
      durationMs: row.duration_ms,
      attempt: row.attempt,
      error: row.error,
      placementReason: row.placement_reason as PlacementReason,
      placementDetail: row.placement_detail,
      facts: row.facts ? fromBinary(BuildFactsSchema, row.facts) : undefined,
      attestation: row.attestation ? fromBinary(ImageDescriptorSchema, row.attestation) : undefined,
      ...(row.role !== JobRole.UNSPECIFIED && { role: row.role as JobRole }),
    };
  }
}

/** Schema migration for databases made by an older coordinator: add a column once. */
function addColumn(db: Database.Database, table: string, column: string, type: string): void {
  const columns = db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[];
  if (!columns.some((c) => c.name === column)) {
    db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${type}`);
  }
}

export function jobToProto(job: JobRecord): Job {
  return create(JobSchema, {
    id: job.id,
    platform: toProtoPlatform(job.platform),
    state: job.state,
    agent: job.agent,
    emulated: job.emulated,
    emulator: job.emulator,
    currentStep: job.currentStep,
    image: job.image,
    startedAt: job.startedAt ? timestampFromDate(job.startedAt) : undefined,
    finishedAt: job.finishedAt ? timestampFromDate(job.finishedAt) : undefined,
    durationMs: BigInt(job.durationMs),
    attempt: job.attempt,
    error: job.error,
    placementReason: job.placementReason ?? PlacementReason.UNSPECIFIED,
    placementDetail: job.placementDetail ?? '',
    attestation: job.attestation,
    role: job.role ?? JobRole.UNSPECIFIED,
  });
}
