/**
 * The builds in flight, in memory, and the store's only writer. Every
 * change is made here first, recorded as a store write, and committed with
 * the others of its atomic group in one transaction; a group that throws
 * leaves neither memory nor the store changed. The coordinator reads the
 * builds in flight from here, so placement and deadlines never scan the
 * store. A build leaves memory once its final state is stored; ended builds
 * are read from the store.
 */
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { BuildEventSchema, type BuildEvent } from '../gen/braid/v1/build_pb.js';
import { platformsEqual } from '../oci/platform.js';
import type { CacheRecord } from './scheduler.js';
import type {
  BuildPatch,
  BuildRecord,
  BuildStore,
  JobPatch,
  JobRecord,
  StoreWrite,
  UnfinishedBuild,
} from './store.js';
import type { EventBody } from './build-events.js';
import { TERMINAL_BUILD_STATES } from './transitions.js';

interface LiveBuild {
  record: BuildRecord;
  /** Its jobs' ids in the order they were created. */
  jobIds: string[];
  nextSequence: bigint;
}

interface Group {
  writes: StoreWrite[];
  /** Undo steps, run last to first when the group throws. */
  undo: (() => void)[];
  after: (() => void)[];
}

/** A job changed: `before` undefined when it was created, `after` undefined when it left memory. */
export type JobListener = (before: JobRecord | undefined, after: JobRecord | undefined) => void;

export class LiveBuilds {
  /** In creation order (oldest first). */
  private readonly builds = new Map<string, LiveBuild>();
  private readonly jobs = new Map<string, JobRecord>();
  /** Creation order of every job in memory: a re-queued job keeps its place. */
  private readonly ordinals = new Map<string, number>();
  private nextOrdinal = 0;
  /** Cache records by lineage (the scheduler's affinity reads them per job). */
  private readonly warm = new Map<string, CacheRecord[]>();
  private readonly listeners: JobListener[] = [];
  private group: Group | undefined;
  /** Deferred groups (log lines, steps) not yet committed: they go with the next commit. */
  private deferred: Group | undefined;
  /** The after-commit work of commits not yet acknowledged by an asynchronous store, in order. */
  private tail: Promise<void> = Promise.resolve();
  private inflight = 0;

  constructor(
    private readonly store: BuildStore,
    /** A commit an asynchronous store refused: memory is ahead of it now. */
    private readonly onStoreFailure: (err: unknown) => void = (err) => {
      throw err;
    },
  ) {}

  /** Load what a previous run left unfinished and the recent cache records. */
  async load(cacheSince: Date): Promise<UnfinishedBuild[]> {
    const unfinished = await this.store.unfinishedBuilds();
    for (const { build, jobs, lastSequence } of unfinished) {
      this.insert(build, jobs, lastSequence + 1n);
    }
    for (const record of await this.store.cacheRecords(cacheSince)) this.remember(record);
    return unfinished;
  }

  /**
   * Builds the store holds in flight that memory does not (stored by a
   * standby), taken in as load() takes them; `skip` names builds not to
   * take (ended here, their final state maybe not yet stored). Returns those taken.
   */
  async adopt(skip: ReadonlySet<string>): Promise<UnfinishedBuild[]> {
    const taken: UnfinishedBuild[] = [];
    for (const unfinished of await this.store.unfinishedBuilds()) {
      const { build, jobs, lastSequence } = unfinished;
      if (this.builds.has(build.id) || skip.has(build.id)) continue;
      this.insert(build, jobs, lastSequence + 1n);
      taken.push(unfinished);
    }
    return taken;
  }

  onJobChange(listener: JobListener): void {
    this.listeners.push(listener);
  }

  // --- reads -----------------------------------------------------------------

  build(id: string): BuildRecord | undefined {
    return this.builds.get(id)?.record;
  }

  job(id: string): JobRecord | undefined {
    return this.jobs.get(id);
  }

  jobsOf(buildId: string): JobRecord[] {
    const live = this.builds.get(buildId);
    return live ? live.jobIds.map((id) => this.jobs.get(id) as JobRecord) : [];
  }

  /** Builds in flight, oldest first. */
  *oldestFirst(): Generator<BuildRecord> {
    for (const live of this.builds.values()) yield live.record;
  }

  get size(): number {
    return this.builds.size;
  }

  /** Where a job stands in the queue: earlier builds first, then its build's order. */
  ordinal(jobId: string): number {
    return this.ordinals.get(jobId) ?? Number.MAX_SAFE_INTEGER;
  }

  /** Cache records of a lineage finished at or after `since`. */
  cacheRecords(lineage: string, since: Date): CacheRecord[] {
    return (this.warm.get(lineage) ?? []).filter((r) => r.finishedAt >= since);
  }

  // --- writes ----------------------------------------------------------------

  /**
   * Run `changes` as one atomic group: its writes commit in one transaction
   * when the outermost group ends. When it throws, every change made inside
   * is undone and nothing is written. Synchronous on purpose: nothing may
   * await between a job's move and its event.
   *
   * With `defer` (log lines, a job's current step: nothing anyone acts on),
   * the group's writes wait for the next commit or the end of this turn of
   * the event loop, so a burst of them costs one transaction. They still
   * commit in order and before any later group's writes.
   */
  atomically<T>(changes: () => T, options: { defer?: boolean } = {}): T {
    if (this.group) return changes();
    const group: Group = { writes: [], undo: [], after: [] };
    this.group = group;
    let result: T;
    try {
      result = changes();
    } catch (err) {
      this.group = undefined;
      rollBack(group);
      throw err;
    }
    this.group = undefined;
    if (options.defer) this.defer(group);
    else this.commit(group);
    return result;
  }

  /** Run `work` once everything written so far is stored (at once when it is). */
  afterCommit(work: () => void): void {
    if (this.group) this.group.after.push(work);
    else if (this.deferred) this.deferred.after.push(work);
    else if (this.inflight === 0) work();
    else void this.tail.then(work, () => undefined);
  }

  /** Resolves once every write so far is stored. */
  flushed(): Promise<void> {
    this.flushDeferred();
    return this.tail;
  }

  createBuild(build: BuildRecord, jobs: readonly JobRecord[]): void {
    this.atomically(() => {
      this.insert(build, jobs, 1n);
      this.record({ kind: 'createBuild', build, jobs }, () => this.remove(build.id));
    });
  }

  updateBuild(id: string, patch: BuildPatch): BuildRecord {
    const live = this.builds.get(id);
    if (!live) throw new Error(`build ${id} is not in flight`);
    const before = live.record;
    const after = { ...before, ...patch };
    this.atomically(() => {
      live.record = after;
      this.record({ kind: 'updateBuild', id, patch }, () => (live.record = before));
      // A build leaves memory once its final state is stored.
      if (TERMINAL_BUILD_STATES.has(after.state) && !TERMINAL_BUILD_STATES.has(before.state)) {
        (this.group as Group).after.push(() => {
          if (this.builds.get(id) === live) this.remove(id);
        });
      }
    });
    return after;
  }

  updateJob(id: string, patch: JobPatch): JobRecord {
    const before = this.jobs.get(id);
    if (!before) throw new Error(`job ${id} is not in flight`);
    const after = { ...before, ...patch };
    this.atomically(() => {
      this.jobs.set(id, after);
      this.tell(before, after);
      this.record({ kind: 'updateJob', id, patch }, () => {
        this.jobs.set(id, before);
        this.tell(after, before);
      });
    });
    return after;
  }

  /** Append an event to a build in flight (it gets the next sequence); undefined for an ended build. */
  appendEvent(buildId: string, body: EventBody, time: Date): BuildEvent | undefined {
    const live = this.builds.get(buildId);
    if (!live) return undefined;
    const sequence = live.nextSequence;
    const event = create(BuildEventSchema, { sequence, time: timestampFromDate(time), body });
    this.atomically(() => {
      live.nextSequence = sequence + 1n;
      this.record({ kind: 'appendEvent', buildId, event }, () => (live.nextSequence = sequence));
    });
    return event;
  }

  /** `record.agent` holds the lineage's cache for the platform; forget records before `forgetBefore`. */
  recordCache(record: CacheRecord, forgetBefore: Date): void {
    this.atomically(() => {
      const saved = new Map([...this.warm].map(([k, v]) => [k, v] as const));
      this.remember(record);
      for (const [lineage, records] of this.warm) {
        const kept = records.filter((r) => r.finishedAt >= forgetBefore);
        if (kept.length === 0) this.warm.delete(lineage);
        else if (kept.length < records.length) this.warm.set(lineage, kept);
      }
      this.record({ kind: 'recordCache', record, forgetBefore }, () => {
        this.warm.clear();
        for (const [k, v] of saved) this.warm.set(k, v);
      });
    });
  }

  // --- internals -------------------------------------------------------------

  private record(write: StoreWrite, undo: () => void): void {
    const group = this.group as Group;
    group.writes.push(write);
    group.undo.push(undo);
  }

  private defer(group: Group): void {
    if (!this.deferred) {
      this.deferred = { writes: [], undo: [], after: [] };
      setImmediate(() => this.flushDeferred());
    }
    this.deferred.writes.push(...group.writes);
    this.deferred.after.push(...group.after);
  }

  /** Commit the deferred groups now (their changes are in memory already: a failure is fatal). */
  private flushDeferred(): void {
    const deferred = this.deferred;
    if (!deferred) return;
    this.deferred = undefined;
    try {
      this.commit(deferred);
    } catch (err) {
      this.onStoreFailure(err);
    }
  }

  private commit(group: Group): void {
    // Deferred writes go first, in the same transaction: the store keeps memory's order.
    const deferred = this.deferred;
    if (deferred && deferred !== group) {
      this.deferred = undefined;
      group.writes.unshift(...deferred.writes);
      group.after.unshift(...deferred.after);
    }
    if (group.writes.length === 0) {
      for (const work of group.after) work();
      return;
    }
    const runAfter = () => {
      for (const work of group.after) work();
    };
    if (this.inflight === 0 && this.store.commitSync) {
      try {
        this.store.commitSync(group.writes);
      } catch (err) {
        rollBack(group);
        // The deferred writes it carried cannot be undone in memory.
        if (deferred && deferred !== group) this.onStoreFailure(err);
        throw err;
      }
      runAfter();
      return;
    }
    this.inflight += 1;
    // Handed to the store at once (it applies commits in the order of calls, and may send
    // those that wait together); only the work after each commit waits for the ones before.
    const stored = this.store.commit(group.writes);
    stored.catch(() => undefined);
    this.tail = this.tail
      .then(() => stored)
      .then(
        () => {
          this.inflight -= 1;
          runAfter();
        },
        (err: unknown) => {
          this.inflight -= 1;
          this.onStoreFailure(err);
        },
      );
  }

  private insert(build: BuildRecord, jobs: readonly JobRecord[], nextSequence: bigint): void {
    this.builds.set(build.id, { record: build, jobIds: jobs.map((j) => j.id), nextSequence });
    for (const job of jobs) {
      this.jobs.set(job.id, job);
      this.ordinals.set(job.id, this.nextOrdinal++);
      this.tell(undefined, job);
    }
  }

  private remove(buildId: string): void {
    const live = this.builds.get(buildId);
    if (!live) return;
    this.builds.delete(buildId);
    for (const id of live.jobIds) {
      const job = this.jobs.get(id);
      this.jobs.delete(id);
      this.ordinals.delete(id);
      if (job) this.tell(job, undefined);
    }
  }

  private remember(record: CacheRecord): void {
    const records = (this.warm.get(record.lineage) ?? []).filter(
      (r) => !(r.agent === record.agent && platformsEqual(r.platform, record.platform)),
    );
    records.push(record);
    this.warm.set(record.lineage, records);
  }

  private tell(before: JobRecord | undefined, after: JobRecord | undefined): void {
    for (const listener of this.listeners) listener(before, after);
  }
}

function rollBack(group: Group): void {
  for (const undo of group.undo.reverse()) undo();
  group.writes.length = 0;
  group.after.length = 0;
}
