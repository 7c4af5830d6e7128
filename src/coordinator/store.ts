/**
 * The coordinator's durable state as an interface: builds, their jobs,
 * their event logs and the cache records, written in atomic groups and read
 * asynchronously, so that SQLite (sqlite-build-store.ts) and a networked
 * database sit behind the same calls. The builds in flight are kept in
 * memory by live-builds.ts, which is the store's only writer.
 */
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import {
  BuildSchema,
  BuildState,
  JobRole,
  JobSchema,
  PlacementReason,
  type Build,
  type BuildEvent,
  type BuildSpec,
  type Job,
} from '../gen/braid/v1/build_pb.js';
import { JobState, type ImageDescriptor } from '../gen/braid/v1/common_pb.js';
import type { BuildFacts } from '../gen/braid/v1/agent_pb.js';
import { toProtoPlatform } from '../rpc/platform.js';
import type { Platform } from '../oci/platform.js';
import type { CacheRecord } from './scheduler.js';
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

export type BuildPatch = Partial<Pick<BuildRecord, 'state' | 'finishedAt' | 'index' | 'error'>>;
export type JobPatch = Partial<Omit<JobRecord, 'id' | 'buildId' | 'platform' | 'role'>>;

/** One write of an atomic group (see BuildStore.commit). */
export type StoreWrite =
  | { kind: 'createBuild'; build: BuildRecord; jobs: readonly JobRecord[] }
  | { kind: 'updateBuild'; id: string; patch: BuildPatch }
  | { kind: 'updateJob'; id: string; patch: JobPatch }
  /** The event carries its sequence: the writer numbers a build's events. */
  | { kind: 'appendEvent'; buildId: string; event: BuildEvent }
  /** One record per lineage, platform and agent (the latest); older than `forgetBefore` go. */
  | { kind: 'recordCache'; record: CacheRecord; forgetBefore: Date };

/** A build in flight as a coordinator resumes it. */
export interface UnfinishedBuild {
  build: BuildRecord;
  jobs: JobRecord[];
  /** The sequence of its last stored event (0 when it has none). */
  lastSequence: bigint;
}

export interface BuildStore {
  /**
   * Store the writes as one transaction: all of them, in order, or none
   * (the promise then rejects). Commits are applied in the order of calls.
   */
  commit(writes: readonly StoreWrite[]): Promise<void>;
  /**
   * A store that commits synchronously (SQLite) offers this as well: the
   * same transaction, done when it returns, so the coordinator acts on a
   * stored move in the same turn.
   */
  commitSync?(writes: readonly StoreWrite[]): void;
  /** Builds not in a final state, oldest first, with their jobs (for a restart). */
  unfinishedBuilds(): Promise<UnfinishedBuild[]>;
  getBuild(id: string): Promise<BuildRecord | undefined>;
  /** A build's jobs in the order they were created. */
  jobsOf(buildId: string): Promise<JobRecord[]>;
  /** Newest first; `states` empty: every state. */
  listBuilds(limit: number, states: readonly BuildState[]): Promise<BuildRecord[]>;
  eventsAfter(buildId: string, after: bigint, limit?: number): Promise<BuildEvent[]>;
  /** Cache records finished at or after `since`. */
  cacheRecords(since: Date): Promise<CacheRecord[]>;
  /** Whether the store can be written (false once closed): the coordinator's readiness. */
  isOpen(): boolean;
  close(): Promise<void>;
}

// The terminal sets are the transition tables' (transitions.ts); re-exported for the store's users.
export { TERMINAL_BUILD_STATES, TERMINAL_JOB_STATES };

/** The API's view of a build, its jobs included. */
export function buildToProto(record: BuildRecord, jobs: readonly JobRecord[]): Build {
  return create(BuildSchema, {
    id: record.id,
    spec: record.spec,
    state: record.state,
    createdAt: timestampFromDate(record.createdAt),
    finishedAt: record.finishedAt ? timestampFromDate(record.finishedAt) : undefined,
    jobs: jobs.map((j) => jobToProto(j)),
    index: record.index,
    error: record.error,
    requestId: record.requestId,
  });
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

/** A job as a build's submit creates it: queued, attempt 1, no agent. */
export function queuedJob(
  id: string,
  buildId: string,
  platform: Platform,
  role?: JobRole,
): JobRecord {
  return {
    id,
    buildId,
    platform,
    state: JobState.QUEUED,
    agent: '',
    emulated: false,
    emulator: '',
    currentStep: '',
    durationMs: 0,
    attempt: 1,
    error: '',
    ...(role !== undefined && role !== JobRole.UNSPECIFIED && { role }),
  };
}
