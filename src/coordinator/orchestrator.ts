/**
 * The build lifecycle: a submitted build becomes one job per platform, jobs
 * are placed on agents by the scheduler, results are collected, and when
 * every platform is pushed the images are verified and stitched into one
 * index — only then are tags moved.
 */
import { randomBytes } from 'node:crypto';
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import {
  AnnotationLevel,
  BuildEventSchema,
  BuildState,
  CacheType,
  JobRole,
  LogSource,
  PlacementReason,
  type Annotation,
  type Build,
  type BuildEvent,
  type BuildSpec,
} from '../gen/braid/v1/build_pb.js';
import type { JobLogChunk, JobResult, JobUpdate } from '../gen/braid/v1/agent_pb.js';
import {
  ImageDescriptorSchema,
  JobState,
  type ImageDescriptor,
} from '../gen/braid/v1/common_pb.js';
import { BraidError, errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import { formatPlatform, platformsEqual, type Platform } from '../oci/platform.js';
import { formatReference, parseReference, withTag, type ImageReference } from '../oci/reference.js';
import type { RegistryClient } from '../oci/registry.js';
import { buildIndex, publishIndex, resolveSources, type PublishOptions } from '../oci/stitch.js';
import { fromProtoPlatform, toProtoPlatform } from '../rpc/platform.js';
import type { AgentRegistry, AgentSession } from './agent-registry.js';
import type { ContextStore } from './context-store.js';
import type { BuildObserver } from './metrics.js';
import { requestIdFor } from '../rpc/request-id.js';
import { buildLineage } from './lineage.js';
import {
  DEFAULT_CACHE_AFFINITY,
  schedule,
  type CacheAffinitySettings,
  type PendingJob,
  type PlacementBasis,
} from './scheduler.js';
import { SecretVault, checkSecrets, type BuildSecretValue } from './secret-vault.js';
import type { CallIdentity } from '../rpc/service.js';
import type { SshJob, SshRelay } from './ssh-relay.js';
import {
  provenanceLine,
  provenanceMode,
  writeProvenance,
  type ProvenanceSettings,
} from './provenance-writer.js';
import {
  checkJobs,
  compareBuilds,
  imageJobOf,
  isCheckJob,
  jobLabel,
  NotReproducibleError,
} from './reproducibility-check.js';
import { validateSpec, type ValidSpec } from './spec-validation.js';
import {
  TERMINAL_BUILD_STATES,
  TERMINAL_JOB_STATES,
  type BuildRecord,
  type BuildStore,
  type JobRecord,
} from './store.js';
import { buildStateName, checkBuildMove, checkJobMove, jobStateName } from './transitions.js';

export interface OrchestratorDeps {
  store: BuildStore;
  contexts: ContextStore;
  agents: AgentRegistry;
  registry: RegistryClient;
  log: Logger;
  /** The arch guard, applied to every image before the stitch (undefined: off). */
  verifyImage?: PublishOptions['verifyImage'];
  clock?: () => Date;
  newId?: () => string;
  limits?: Partial<OrchestratorLimits>;
  /** Prefer the agent that still holds a build's cache (scheduler.ts); on by default. */
  cacheAffinity?: Partial<CacheAffinitySettings>;
  /** Farm-wide notices for the coordinator's event log. */
  onAgent?: (kind: 'connected' | 'disconnected', name: string, detail: string) => void;
  onBuildState?: (buildId: string, state: string, message: string) => void;
  /** Told of every build and job move (metrics.ts). */
  observer?: BuildObserver;
  /** Relays builds' SSH agent connections; told when a build ends. */
  sshRelay?: SshRelay;
  /** Names the builder in provenance; without it no provenance is written. */
  provenance?: ProvenanceSettings;
  /** Refuses tags the coordinator may not push to, before anything is stored (push-preflight.ts). */
  checkPush?: (tags: readonly ImageReference[]) => Promise<void>;
}

const MAX_LOG_LINE_CHARS = 4096;

export interface OrchestratorLimits {
  /** Attempts per job when agents are lost (1 = never re-queue). */
  maxJobAttempts: number;
  jobTimeoutMs: number;
  buildTimeoutMs: number;
  /** After a restart, how long a running job's agent has to reconnect and claim it. */
  reattachGraceMs: number;
  /** How long a queued job waits for an agent that can build it (after a loss or restart). */
  waitForAgentMs: number;
}

export const DEFAULT_LIMITS: OrchestratorLimits = {
  maxJobAttempts: 2,
  jobTimeoutMs: 2 * 3_600_000,
  buildTimeoutMs: 4 * 3_600_000,
  reattachGraceMs: 30_000,
  waitForAgentMs: 5 * 60_000,
};

type EventBody = MessageInitShape<typeof BuildEventSchema>['body'];

const PLACEMENT_REASONS: Record<PlacementBasis, PlacementReason> = {
  'only-capable': PlacementReason.ONLY_CAPABLE,
  'least-loaded': PlacementReason.LEAST_LOADED,
  'cache-affinity': PlacementReason.CACHE_AFFINITY,
};

/** The annotations of one level (and, for manifests and descriptors, one platform). */
function annotationsAt(
  annotations: readonly Annotation[],
  level: AnnotationLevel,
  platform?: Platform,
): Record<string, string> {
  const found: Record<string, string> = {};
  for (const annotation of annotations) {
    if (!annotation.levels.includes(level)) continue;
    if (annotation.platform && platform) {
      const wanted = fromProtoPlatform(annotation.platform);
      if (!platformsEqual(wanted, platform)) continue;
    }
    found[annotation.key] = annotation.value;
  }
  return found;
}

function newBuildId(): string {
  return `b${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
}

export class Orchestrator {
  private readonly clock: () => Date;
  private readonly newId: () => string;
  /** Wakes WatchBuild streams of a build. */
  private readonly watchers = new Map<string, Set<() => void>>();
  /** Parsed specs of builds in flight. */
  private readonly specs = new Map<string, ValidSpec>();
  private readonly limits: OrchestratorLimits;
  private readonly cacheAffinity: CacheAffinitySettings;
  /** Queued jobs no connected agent can build, since when (ms). */
  private readonly unplaceable = new Map<string, number>();
  /** Loggers of builds in flight: every line names the build and its request id. */
  private readonly buildLogs = new Map<string, Logger>();
  /** Jobs of a previous coordinator run waiting for their agent, by deadline (ms). */
  private readonly orphans = new Map<string, number>();
  /** Secret values of builds in flight: memory only (secret-vault.ts). */
  private readonly secrets = new SecretVault();

  constructor(private readonly deps: OrchestratorDeps) {
    this.limits = { ...DEFAULT_LIMITS, ...deps.limits };
    this.cacheAffinity = { ...DEFAULT_CACHE_AFFINITY, ...deps.cacheAffinity };
    this.clock = deps.clock ?? (() => new Date());
    this.newId = deps.newId ?? newBuildId;
  }

  /** Builds interrupted by a coordinator restart end here (recovery of running work is future work). */
  /**
   * After a restart: builds in flight carry on. Jobs that were assigned or
   * running wait `reattachGraceMs` for their agent to reconnect and claim
   * them (its hello lists the jobs it holds, and it re-sends results it
   * never had acknowledged), so finished work is not rebuilt; unclaimed
   * ones are re-queued. A build that was stitching stitches again.
   */
  recover(): void {
    const deadline = this.clock().getTime() + this.limits.reattachGraceMs;
    const unfinished = this.deps.store.unfinishedBuilds();
    for (const build of unfinished) {
      this.coordinatorLog(build.id, 'coordinator restarted; resuming the build');
      const jobs = this.deps.store.jobsOf(build.id);
      for (const job of jobs) {
        if (job.state === JobState.ASSIGNED || job.state === JobState.RUNNING) {
          this.orphans.set(job.id, deadline);
        }
      }
      if (build.state === BuildState.STITCHING) this.startStitch(build.id, jobs);
    }
    if (unfinished.length > 0) {
      this.deps.log.info(
        { builds: unfinished.length, orphans: this.orphans.size },
        'recovered builds in flight',
      );
    }
  }

  // --- builds ------------------------------------------------------------------

  async submit(
    spec: BuildSpec,
    sentRequestId = '',
    secrets: readonly BuildSecretValue[] = [],
    submitter?: CallIdentity,
  ): Promise<Build> {
    const valid = validateSpec(spec);
    const secretIds = checkSecrets(secrets);
    const requestId = requestIdFor(sentRequestId);
    if ((await this.deps.contexts.size(spec.contextDigest)) === undefined) {
      throw new BraidError(
        'failed_precondition',
        `context ${spec.contextDigest} has not been uploaded`,
      );
    }
    if (!(await this.deps.contexts.hasFile(spec.contextDigest, valid.dockerfile))) {
      throw new BraidError(
        'invalid_argument',
        `Dockerfile "${valid.dockerfile}" is not in context ${spec.contextDigest}`,
      );
    }
    const id = this.newId();
    const jobs: JobRecord[] = valid.platforms.map((platform, i) => ({
      id: `${id}-${i + 1}`,
      buildId: id,
      platform,
      state: JobState.QUEUED,
      agent: '',
      emulated: false,
      emulator: '',
      currentStep: '',
      durationMs: 0,
      attempt: 1,
      error: '',
    }));
    // --check-reproducible: a second build of every platform to compare with.
    if (spec.checkReproducible) jobs.push(...checkJobs(id, jobs));
    // A platform nobody can build fails the submit at once: nothing is stored.
    const placements = schedule(
      jobs.map((j) => ({ jobId: j.id, platform: j.platform, policy: valid.policy })),
      this.deps.agents.views(),
    );
    const impossible = placements.filter((p) => p.kind === 'impossible');
    if (impossible.length > 0) {
      throw new BraidError('failed_precondition', impossible.map((p) => p.reason).join('; '));
    }
    await this.deps.checkPush?.(valid.tags);
    // The cache refs too: a refused cache push would fail the stitch after every platform built.
    const cacheRefs = spec.cacheTo
      .filter((c) => c.type === CacheType.REGISTRY)
      .map((c) => parseReference(c.ref));
    if (cacheRefs.length > 0)
      await this.deps.checkPush?.(cacheRefs).catch((err: unknown) => {
        throw err instanceof BraidError
          ? new BraidError(err.code, `--cache-to: ${err.message}`, { cause: err })
          : err;
      });
    const record: BuildRecord = {
      id,
      // The ids are the coordinator's to set: they say which values it must hold.
      spec: { ...spec, dockerfile: valid.dockerfile, secretIds },
      state: BuildState.QUEUED,
      createdAt: this.clock(),
      error: '',
      requestId,
    };
    this.deps.store.createBuild(record, jobs);
    this.secrets.keep(id, secrets);
    // Before any job is placed: only the submitter may then serve its SSH agents.
    if (spec.sshIds.length > 0) this.deps.sshRelay?.expect(id, submitter);
    this.deps.observer?.jobsQueued(jobs, record.createdAt);
    this.specs.set(id, valid);
    this.event(id, {
      case: 'buildState',
      value: {
        state: BuildState.QUEUED,
        message: `build queued: ${valid.platforms.map(formatPlatform).join(', ')} -> ${valid.tags.map(formatReference).join(', ')}`,
      },
    });
    this.buildLog(id).info(
      { platforms: valid.platforms.map(formatPlatform), tags: spec.tags },
      'build submitted',
    );
    this.scheduleQueued();
    return this.getBuild(id);
  }

  getBuild(id: string): Build {
    const record = this.deps.store.getBuildRecord(id);
    if (!record) throw new BraidError('not_found', `no build "${id}"`);
    return this.deps.store.toProto(record);
  }

  listBuilds(limit: number, states: readonly BuildState[]): Build[] {
    return this.deps.store.listBuilds(limit, states).map((r) => this.deps.store.toProto(r));
  }

  cancel(id: string, reason: string): Build {
    const record = this.deps.store.getBuildRecord(id);
    if (!record) throw new BraidError('not_found', `no build "${id}"`);
    if (TERMINAL_BUILD_STATES.has(record.state) || record.state === BuildState.STITCHING) {
      return this.deps.store.toProto(record);
    }
    const why = reason || 'cancelled by user';
    for (const job of this.deps.store.jobsOf(id)) {
      if (TERMINAL_JOB_STATES.has(job.state)) continue;
      if (job.agent)
        this.deps.agents
          .get(job.agent)
          ?.send({ case: 'cancel', value: { jobId: job.id, reason: why } });
      this.moveJob(job, JobState.CANCELLED, { error: why });
    }
    this.finishBuild(id, BuildState.CANCELLED, `cancelled: ${why}; no tag was moved`);
    return this.getBuild(id);
  }

  /** Events of a build after `after`; with `follow`, until the build ends. */
  async *watch(
    id: string,
    after: bigint,
    follow: boolean,
    signal: AbortSignal,
  ): AsyncGenerator<BuildEvent> {
    if (!this.deps.store.getBuildRecord(id)) throw new BraidError('not_found', `no build "${id}"`);
    let cursor = after;
    for (;;) {
      // Register before reading, so an event appended in between still wakes us.
      let wake!: () => void;
      const woken = new Promise<void>((resolve) => (wake = resolve));
      const set = this.watchers.get(id) ?? new Set();
      set.add(wake);
      this.watchers.set(id, set);
      try {
        const events = this.deps.store.eventsAfter(id, cursor, 500);
        for (const event of events) {
          cursor = event.sequence;
          yield event;
        }
        if (events.length === 500) continue;
        const state = this.deps.store.getBuildRecord(id)?.state ?? BuildState.FAILED;
        if (!follow || TERMINAL_BUILD_STATES.has(state)) {
          if (this.deps.store.eventsAfter(id, cursor, 1).length === 0) return;
          continue;
        }
        if (signal.aborted) return;
        await new Promise<void>((resolve) => {
          const onAbort = () => resolve();
          signal.addEventListener('abort', onAbort, { once: true });
          void woken.then(() => {
            signal.removeEventListener('abort', onAbort);
            resolve();
          });
        });
        if (signal.aborted) return;
      } finally {
        set.delete(wake);
        if (set.size === 0) this.watchers.delete(id);
      }
    }
  }

  // --- agents ------------------------------------------------------------------

  agentConnected(session: AgentSession): void {
    this.deps.agents.add(session);
    this.deps.log.info(
      {
        agent: session.name,
        native: formatPlatform(fromProtoPlatform(session.hello.nativePlatform)),
        emulated: session.hello.emulatedPlatforms.map((e) =>
          formatPlatform(fromProtoPlatform(e.platform)),
        ),
        capacity: session.hello.capacity,
      },
      'agent connected',
    );
    this.deps.onAgent?.('connected', session.name, '');
    for (const jobId of session.hello.heldJobIds) {
      const job = this.deps.store.getJob(jobId);
      const live = job && (job.state === JobState.ASSIGNED || job.state === JobState.RUNNING);
      if (!live || job.agent !== session.name) continue;
      session.jobs.add(jobId);
      this.orphans.delete(jobId);
      this.coordinatorLog(
        job.buildId,
        `${formatPlatform(job.platform)}: agent ${session.name} reconnected and still holds the job`,
      );
    }
    this.scheduleQueued();
  }

  agentLost(session: AgentSession, reason: string): void {
    if (!this.deps.agents.remove(session.name, session)) return;
    this.deps.log.warn({ agent: session.name, reason, jobs: [...session.jobs] }, 'agent lost');
    this.deps.onAgent?.('disconnected', session.name, reason);
    for (const jobId of session.jobs) {
      const job = this.deps.store.getJob(jobId);
      if (!job || TERMINAL_JOB_STATES.has(job.state)) continue;
      const why = `agent ${session.name} was lost (${reason})`;
      if (job.attempt < this.limits.maxJobAttempts) this.requeue(job, why);
      else this.failJob(job, `${why}; gave up after ${job.attempt} attempts`);
    }
    this.scheduleQueued();
  }

  /** Put a job back in the queue for another agent; its late result, if any, is ignored. */
  private requeue(job: JobRecord, why: string): void {
    this.moveJob(job, JobState.QUEUED, {
      agent: '',
      emulated: false,
      emulator: '',
      currentStep: '',
      attempt: job.attempt + 1,
      error: `attempt ${job.attempt} ended: ${why}; re-queued`,
      placementReason: PlacementReason.UNSPECIFIED,
      placementDetail: '',
    });
    this.coordinatorLog(
      job.buildId,
      `${jobLabel(job)}: ${why}; re-queued (attempt ${job.attempt + 1} of ${this.limits.maxJobAttempts})`,
    );
  }

  /**
   * Enforce deadlines: a job running longer than jobTimeoutMs, or a build
   * older than buildTimeoutMs, ends the build TIMED_OUT naming the platform.
   */
  checkDeadlines(): void {
    const now = this.clock().getTime();
    for (const [jobId, deadline] of this.orphans) {
      if (now < deadline) continue;
      this.orphans.delete(jobId);
      const job = this.deps.store.getJob(jobId);
      if (!job || TERMINAL_JOB_STATES.has(job.state)) continue;
      if (this.deps.agents.all().some((a) => a.jobs.has(jobId))) continue;
      const why = `agent ${job.agent} did not reclaim it within ${this.limits.reattachGraceMs} ms of the coordinator's restart`;
      if (job.attempt < this.limits.maxJobAttempts) this.requeue(job, why);
      else this.failJob(job, `${why}; gave up after ${job.attempt} attempts`);
    }
    for (const build of this.deps.store.unfinishedBuilds()) {
      if (build.state === BuildState.STITCHING) continue;
      const jobs = this.deps.store.jobsOf(build.id);
      const late = jobs.find(
        (j) =>
          j.state === JobState.RUNNING &&
          j.startedAt &&
          now - j.startedAt.getTime() > this.limits.jobTimeoutMs,
      );
      const buildLate = now - build.createdAt.getTime() > this.limits.buildTimeoutMs;
      if (!late && !buildLate) continue;
      const pending = jobs.filter((j) => !TERMINAL_JOB_STATES.has(j.state));
      const names = pending.map((j) => formatPlatform(j.platform)).join(', ');
      const message = late
        ? `${formatPlatform(late.platform)} ran longer than the job timeout of ${this.limits.jobTimeoutMs} ms`
        : `the build ran longer than its timeout of ${this.limits.buildTimeoutMs} ms (unfinished: ${names})`;
      for (const job of pending) {
        if (job.agent) {
          const session = this.deps.agents.get(job.agent);
          session?.send({ case: 'cancel', value: { jobId: job.id, reason: 'timed out' } });
          session?.jobs.delete(job.id);
        }
        this.moveJob(job, JobState.FAILED, {
          error: `timed out: ${message}`,
          finishedAt: this.clock(),
        });
      }
      this.finishBuild(build.id, BuildState.TIMED_OUT, `${message}; no tag was moved`);
    }
    this.scheduleQueued();
  }

  jobUpdate(session: AgentSession, update: JobUpdate): void {
    const job = this.ownedJob(session, update.jobId);
    if (!job) {
      this.ignoredReport(session, update.jobId);
      return;
    }
    if (update.state === JobState.RUNNING && job.state === JobState.ASSIGNED) {
      this.moveJob(job, JobState.RUNNING, { startedAt: this.clock(), currentStep: update.step });
      const build = this.deps.store.getBuildRecord(job.buildId);
      if (build?.state === BuildState.QUEUED) this.moveBuild(build, BuildState.RUNNING, 'building');
    } else if (update.step) {
      this.deps.store.updateJob(job.id, { currentStep: update.step.slice(0, 200) });
    }
  }

  jobLog(session: AgentSession, chunk: JobLogChunk): void {
    const job = this.ownedJob(session, chunk.jobId);
    if (!job) {
      this.ignoredReport(session, chunk.jobId);
      return;
    }
    const platform = toProtoPlatform(job.platform);
    let dropped = chunk.dropped;
    for (const line of chunk.lines) {
      this.event(job.buildId, {
        case: 'log',
        value: {
          platform,
          jobId: job.id,
          source: chunk.source || LogSource.BUILD,
          text: line.slice(0, MAX_LOG_LINE_CHARS),
          droppedBefore: dropped,
        },
      });
      dropped = 0;
    }
  }

  jobResult(session: AgentSession, result: JobResult): void {
    // Stored or ignored as late, the agent may forget it now; another agent's job gets no answer.
    const named = this.deps.store.getJob(result.jobId);
    if (!named || named.agent === session.name || named.agent === '') {
      session.send({ case: 'ack', value: { jobId: result.jobId } });
    }
    const job = this.ownedJob(session, result.jobId);
    session.jobs.delete(result.jobId);
    if (!job) {
      this.ignoredReport(session, result.jobId);
      return;
    }
    if (result.error || !result.image) {
      this.failJob(job, result.error || 'agent reported no image');
    } else {
      const built = fromProtoPlatform(result.image.platform);
      if (!platformsEqual(built, job.platform)) {
        this.failJob(
          job,
          `agent ${session.name} built ${formatPlatform(built)}, not ${formatPlatform(job.platform)}`,
        );
      } else {
        this.moveJob(job, JobState.SUCCEEDED, {
          image: create(ImageDescriptorSchema, result.image),
          finishedAt: this.clock(),
          durationMs: Number(result.durationMs),
          currentStep: '',
          ...(result.facts && { facts: result.facts }),
        });
        this.recordCache(job, session);
        this.settleFailedBuild(job.buildId);
        this.maybeStitch(job.buildId);
      }
    }
    this.scheduleQueued();
  }

  // --- internals -----------------------------------------------------------------

  /**
   * The job a report names, when this very session runs it. A late report
   * (from a session that was lost, even one with the same agent name) or a
   * foreign one (another agent's job) is ignored: only the assigned session
   * speaks for a job.
   */
  private ownedJob(session: AgentSession, jobId: string): JobRecord | undefined {
    if (!session.jobs.has(jobId)) return undefined;
    const job = this.deps.store.getJob(jobId);
    if (!job || job.agent !== session.name || TERMINAL_JOB_STATES.has(job.state)) return undefined;
    return job;
  }

  /** A report about another agent's job is worth a warning; a late one about its own is not. */
  private ignoredReport(session: AgentSession, jobId: string): void {
    const job = this.deps.store.getJob(jobId);
    if (job && job.agent && job.agent !== session.name) {
      this.buildLog(job.buildId).warn(
        { agent: session.name, jobId, assignedTo: job.agent },
        "report ignored: the job is another agent's",
      );
    } else {
      this.deps.log.debug({ agent: session.name, jobId }, 'late report ignored');
    }
  }

  /** What the SSH relay needs of a job: its build, the build's SSH ids and the platform. */
  sshJob(jobId: string): SshJob | undefined {
    const job = this.deps.store.getJob(jobId);
    const build = job && this.deps.store.getBuildRecord(job.buildId);
    if (!job || !build || TERMINAL_BUILD_STATES.has(build.state)) return undefined;
    return {
      buildId: build.id,
      sshIds: build.spec.sshIds,
      platform: toProtoPlatform(job.platform),
    };
  }

  /** The context digest of a job's build (what its agent may fetch). */
  contextOfJob(jobId: string): string | undefined {
    const job = this.deps.store.getJob(jobId);
    return job ? this.deps.store.getBuildRecord(job.buildId)?.spec.contextDigest : undefined;
  }

  private specOf(buildId: string): ValidSpec {
    let valid = this.specs.get(buildId);
    if (!valid) {
      const record = this.deps.store.getBuildRecord(buildId);
      if (!record) throw new BraidError('not_found', `no build "${buildId}"`);
      valid = validateSpec(record.spec);
      this.specs.set(buildId, valid);
    }
    return valid;
  }

  /** The lineage of a build's cache (lineage.ts). */
  private lineageOf(buildId: string, target?: string): string {
    const valid = this.specOf(buildId);
    return buildLineage(
      valid.tags[0] as ImageReference,
      valid.dockerfile,
      target ?? this.deps.store.getBuildRecord(buildId)?.spec.target ?? '',
    );
  }

  /** The agent's engine now holds the cache of this job's lineage and platform. */
  private recordCache(job: JobRecord, session: AgentSession): void {
    if (!session.hello.engineId) return;
    const now = this.clock();
    this.deps.store.recordCache(
      {
        agent: session.name,
        engineId: session.hello.engineId,
        platform: job.platform,
        lineage: this.lineageOf(job.buildId),
        finishedAt: now,
      },
      new Date(now.getTime() - this.cacheAffinity.maxAgeMs),
    );
  }

  /** Place every queued job the farm has room for. */
  scheduleQueued(): void {
    const open = this.deps.store.unfinishedBuilds().filter((b) => b.state !== BuildState.STITCHING);
    const pending: (PendingJob & { job: JobRecord; lineage: string })[] = [];
    let checksWaiting = false;
    for (const build of open) {
      const valid = this.specOf(build.id);
      const lineage = this.lineageOf(build.id, build.spec.target);
      const jobs = this.deps.store.jobsOf(build.id);
      for (const job of jobs) {
        if (job.state !== JobState.QUEUED) continue;
        // A check job goes out once its image job has an agent, to another one if it can.
        const imageAgent = isCheckJob(job) ? imageJobOf(job, jobs)?.agent : undefined;
        if (imageAgent === '') {
          checksWaiting = true;
          continue;
        }
        pending.push({
          jobId: job.id,
          platform: job.platform,
          policy: valid.policy,
          lineage,
          job,
          ...(imageAgent !== undefined && { avoidAgent: imageAgent }),
        });
      }
    }
    if (pending.length === 0) return;
    const now = this.clock();
    const affinity = this.cacheAffinity.enabled
      ? {
          ...this.cacheAffinity,
          now,
          records: this.deps.store.cacheRecords(
            pending.map((p) => p.lineage),
            new Date(now.getTime() - this.cacheAffinity.maxAgeMs),
          ),
        }
      : undefined;
    const placements = schedule(pending, this.deps.agents.views(), { affinity });
    let assigned = false;
    for (const placement of placements) {
      const item = pending.find((p) => p.jobId === placement.jobId);
      if (!item) continue;
      const { job } = item;
      if (placement.kind === 'impossible') {
        // Mid-build, an agent that can build it may be reconnecting: wait, within a bound.
        const now = this.clock().getTime();
        const since = this.unplaceable.get(job.id);
        if (since === undefined) {
          this.unplaceable.set(job.id, now);
          this.coordinatorLog(
            job.buildId,
            `${placement.reason}; waiting up to ${this.limits.waitForAgentMs} ms for one to connect`,
          );
        } else if (now - since > this.limits.waitForAgentMs) {
          this.unplaceable.delete(job.id);
          this.failJob(
            job,
            `${placement.reason}; none connected within ${this.limits.waitForAgentMs} ms`,
          );
        }
        continue;
      }
      this.unplaceable.delete(job.id);
      if (placement.kind === 'wait') continue;
      const session = this.deps.agents.get(placement.agent);
      if (!session) continue;
      this.assign(job, session, placement.emulated, placement.handler ?? '', placement.reason, {
        basis: placement.basis,
        text: placement.basisText,
      });
      assigned = true;
    }
    // Check jobs whose image job was placed just now go out in the same turn.
    if (checksWaiting && assigned) this.scheduleQueued();
  }

  private assign(
    job: JobRecord,
    session: AgentSession,
    emulated: boolean,
    handler: string,
    reason: string,
    placed: { basis: PlacementBasis; text: string },
  ): void {
    const build = this.deps.store.getBuildRecord(job.buildId);
    if (!build) return;
    const secrets = build.spec.secretIds.length > 0 ? this.secrets.get(build.id) : [];
    if (secrets === undefined) {
      // Never a silent build without its secrets.
      this.failJob(
        job,
        `the build's secrets (${build.spec.secretIds.join(', ')}) are gone: the coordinator restarted, and it keeps secret values in memory only; resubmit the build`,
      );
      return;
    }
    if (build.spec.sshIds.length > 0 && this.deps.sshRelay?.expects(build.id) === false) {
      this.failJob(
        job,
        `the build forwards SSH agents (${build.spec.sshIds.join(', ')}) from the braid build that submitted it, which the coordinator no longer relays after its restart; resubmit the build`,
      );
      return;
    }
    const valid = this.specOf(job.buildId);
    const first = valid.tags[0] as ImageReference;
    const pushRepository = `${first.domain}/${first.repository}`;
    const platformSuffix = formatPlatform(job.platform).replace(/\//g, '-');
    // A reproducibility check builds from scratch: a cached step would prove nothing.
    const check = isCheckJob(job);
    const pushTags =
      build.spec.platformTags && !check
        ? valid.tags
            .filter((t) => t.domain === first.domain && t.repository === first.repository)
            .map((t) => `${t.tag ?? 'latest'}-${platformSuffix}`)
        : [];
    session.jobs.add(job.id);
    const placementReason = PLACEMENT_REASONS[placed.basis];
    this.moveJob(job, JobState.ASSIGNED, {
      agent: session.name,
      emulated,
      emulator: handler,
      placementReason,
      placementDetail: placed.text,
    });
    this.event(job.buildId, {
      case: 'decision',
      value: {
        platform: toProtoPlatform(job.platform),
        agent: session.name,
        emulated,
        reason,
        placementReason,
        role: job.role ?? JobRole.UNSPECIFIED,
      },
    });
    this.buildLog(job.buildId).info(
      {
        jobId: job.id,
        platform: formatPlatform(job.platform),
        agent: session.name,
        emulated,
        placement: placed.basis,
        reason,
      },
      `placed job ${job.id} on agent ${session.name}: ${placed.text}`,
    );
    session.send({
      case: 'assign',
      value: {
        jobId: job.id,
        buildId: job.buildId,
        platform: toProtoPlatform(job.platform),
        emulated,
        contextDigest: build.spec.contextDigest,
        dockerfile: valid.dockerfile,
        buildArgs: build.spec.buildArgs,
        target: build.spec.target,
        labels: build.spec.labels,
        noCache: build.spec.noCache || check,
        pull: build.spec.pull,
        pushRepository,
        pushTags,
        attempt: job.attempt,
        requestId: build.requestId,
        secrets: secrets.map((secret) => ({ id: secret.id, value: secret.value })),
        network: build.spec.network === 'default' ? '' : build.spec.network,
        addHosts: build.spec.addHosts,
        cacheFrom: build.spec.cacheFrom
          .filter((c) => c.type === CacheType.REGISTRY)
          .map((c) => c.ref),
        // A registry cache-to is kept as inline cache in the images braid pushes.
        inlineCache: build.spec.cacheTo.length > 0,
        sshIds: build.spec.sshIds,
        provenance: build.spec.provenance,
        ...(build.spec.sourceDateEpoch !== undefined && {
          sourceDateEpoch: build.spec.sourceDateEpoch,
        }),
        manifestAnnotations: annotationsAt(
          build.spec.annotations,
          AnnotationLevel.MANIFEST,
          job.platform,
        ),
      },
    });
  }

  private failJob(job: JobRecord, error: string): void {
    this.moveJob(job, JobState.FAILED, { error, finishedAt: this.clock() });
    const build = this.deps.store.getBuildRecord(job.buildId);
    if (!build || TERMINAL_BUILD_STATES.has(build.state)) return;
    if (build.spec.keepGoing) {
      // --keep-going: the others run to the end; the build fails once all have.
      this.coordinatorLog(
        job.buildId,
        `${jobLabel(job)} failed; the other platforms go on (--keep-going)`,
      );
      this.settleFailedBuild(job.buildId);
      return;
    }
    // One platform failed: stop the others, move no tag.
    for (const other of this.deps.store.jobsOf(job.buildId)) {
      if (other.id === job.id || TERMINAL_JOB_STATES.has(other.state)) continue;
      if (other.agent) {
        const session = this.deps.agents.get(other.agent);
        session?.send({
          case: 'cancel',
          value: { jobId: other.id, reason: `${jobLabel(job)} failed` },
        });
        session?.jobs.delete(other.id);
      }
      this.moveJob(other, JobState.CANCELLED, {
        error: `cancelled: ${jobLabel(job)} failed`,
      });
    }
    this.finishBuild(job.buildId, BuildState.FAILED, `${jobLabel(job)}: ${error}`);
  }

  /** A build whose every job has ended, some not succeeded, fails naming them; no tag moves. */
  private settleFailedBuild(buildId: string): void {
    const jobs = this.deps.store.jobsOf(buildId);
    if (!jobs.every((j) => TERMINAL_JOB_STATES.has(j.state))) return;
    const failed = jobs.filter((j) => j.state !== JobState.SUCCEEDED);
    if (failed.length === 0) return;
    const succeeded = jobs.length - failed.length;
    this.finishBuild(
      buildId,
      BuildState.FAILED,
      `${failed.map((j) => `${jobLabel(j)}: ${j.error || jobStateName(j.state)}`).join('; ')}` +
        (succeeded > 0 ? ` (${succeeded} of ${jobs.length} platforms succeeded)` : '') +
        '; no tag was moved',
    );
  }

  private maybeStitch(buildId: string): void {
    const jobs = this.deps.store.jobsOf(buildId);
    if (!jobs.every((j) => j.state === JobState.SUCCEEDED)) return;
    const build = this.deps.store.getBuildRecord(buildId);
    if (!build || build.state === BuildState.STITCHING || TERMINAL_BUILD_STATES.has(build.state))
      return;
    if (build.state === BuildState.QUEUED) this.moveBuild(build, BuildState.RUNNING, 'building');
    this.moveBuild(
      { ...build, state: BuildState.RUNNING },
      BuildState.STITCHING,
      'every platform pushed; verifying and stitching the index',
    );
    this.startStitch(buildId, jobs);
  }

  private startStitch(buildId: string, jobs: JobRecord[]): void {
    void this.stitch(buildId, jobs).catch((err: unknown) => {
      this.buildLog(buildId).error({ err: errorLine(err) }, 'stitch failed');
      const what = err instanceof NotReproducibleError ? err.message : `stitch: ${errorLine(err)}`;
      this.finishBuild(buildId, BuildState.FAILED, `${what}; no tag was moved`);
    });
  }

  private async stitch(buildId: string, allJobs: JobRecord[]): Promise<void> {
    const valid = this.specOf(buildId);
    const first = valid.tags[0] as ImageReference;
    // --check-reproducible: each platform's two images must be one before anything is pushed.
    const jobs = allJobs.filter((j) => !isCheckJob(j));
    if (jobs.length < allJobs.length)
      await compareBuilds(
        this.deps.registry,
        { domain: first.domain, repository: first.repository },
        allJobs,
        (line) => this.coordinatorLog(buildId, line),
      );
    const sources = jobs.map((j) => ({
      ref: { domain: first.domain, repository: first.repository, digest: j.image?.digest ?? '' },
      platform: j.platform,
    }));
    const annotations = this.deps.store.getBuildRecord(buildId)?.spec.annotations ?? [];
    const entries = (await resolveSources(this.deps.registry, sources)).map((entry) => {
      if (!entry.platform) return entry;
      const added = annotationsAt(annotations, AnnotationLevel.MANIFEST_DESCRIPTOR, entry.platform);
      return Object.keys(added).length === 0
        ? entry
        : {
            ...entry,
            descriptor: {
              ...entry.descriptor,
              annotations: { ...entry.descriptor.annotations, ...added },
            },
          };
    });
    const record = this.deps.store.getBuildRecord(buildId);
    if (record && this.deps.provenance && provenanceMode(record.spec)) {
      const repo = { domain: first.domain, repository: first.repository };
      const build = { ...record, platforms: valid.platforms, tags: valid.tags };
      for (const job of jobs) {
        // The job as stored now: its result's facts are on it.
        const stored = this.deps.store.getJob(job.id) ?? job;
        const entry = await writeProvenance(
          this.deps.registry,
          repo,
          build,
          stored,
          this.deps.provenance,
        );
        this.deps.store.updateJob(job.id, {
          attestation: create(ImageDescriptorSchema, {
            digest: entry.descriptor.digest,
            sizeBytes: BigInt(entry.descriptor.size),
            mediaType: entry.descriptor.mediaType,
          }),
        });
        this.coordinatorLog(buildId, provenanceLine(stored, entry));
        entries.push(entry);
      }
    }
    const plan = buildIndex(entries, {
      attestations: true,
      format: 'auto',
      annotations: annotationsAt(annotations, AnnotationLevel.INDEX),
    });
    // The arch guard runs before the first push (it remembers its passes).
    const publish: PublishOptions = {
      verifyImage: this.deps.verifyImage,
      onEvent: (e) => this.coordinatorLog(buildId, `${e.kind} ${e.detail}`),
    };
    // --cache-to type=registry: the same index, whose images carry inline
    // cache, under the cache ref — before the tags, so a refused cache push
    // moves no tag (unless ignore-error).
    for (const cache of this.deps.store.getBuildRecord(buildId)?.spec.cacheTo ?? []) {
      if (cache.type !== CacheType.REGISTRY) continue;
      try {
        await publishIndex(this.deps.registry, plan, [parseReference(cache.ref)], publish);
      } catch (err) {
        if (!cache.ignoreError)
          throw new BraidError('failed_precondition', `cache-to ${cache.ref}: ${errorLine(err)}`, {
            cause: err,
          });
        this.coordinatorLog(
          buildId,
          `cache-to ${cache.ref} failed (ignore-error): ${errorLine(err)}`,
        );
      }
    }
    await publishIndex(this.deps.registry, plan, valid.tags, publish);
    const index: ImageDescriptor = create(ImageDescriptorSchema, {
      digest: plan.digest,
      sizeBytes: BigInt(plan.bytes.length),
      mediaType: plan.mediaType,
    });
    this.finishBuild(
      buildId,
      BuildState.SUCCEEDED,
      `pushed ${plan.digest} to ${valid.tags.map((t) => formatReference(withTag(t, t.tag ?? 'latest'))).join(', ')}`,
      index,
    );
  }

  private coordinatorLog(buildId: string, text: string): void {
    this.event(buildId, { case: 'log', value: { source: LogSource.COORDINATOR, text } });
  }

  private moveJob(job: JobRecord, to: JobState, patch: Partial<JobRecord> = {}): void {
    checkJobMove(job.id, job.state, to);
    this.deps.store.updateJob(job.id, { ...patch, state: to });
    const now = { ...job, ...patch, state: to };
    this.event(job.buildId, {
      case: 'jobState',
      value: {
        jobId: job.id,
        platform: toProtoPlatform(job.platform),
        state: to,
        agent: now.agent,
        emulated: now.emulated,
        message:
          now.error ||
          (to === JobState.ASSIGNED
            ? `assigned to ${now.agent}${now.emulated ? ` (QEMU ${now.emulator})` : ' (native)'}`
            : jobStateName(to)),
        image: now.image,
        durationMs: BigInt(now.durationMs),
        attempt: now.attempt,
        role: job.role ?? JobRole.UNSPECIFIED,
      },
    });
    this.deps.observer?.jobMoved(job, now, this.clock());
    this.buildLog(job.buildId).info(
      {
        jobId: job.id,
        platform: formatPlatform(job.platform),
        agent: now.agent,
        from: jobStateName(job.state),
        to: jobStateName(to),
      },
      'job state',
    );
  }

  private moveBuild(
    build: BuildRecord,
    to: BuildState,
    message: string,
    index?: ImageDescriptor,
  ): void {
    checkBuildMove(build.id, build.state, to);
    const terminal = TERMINAL_BUILD_STATES.has(to);
    this.deps.store.updateBuild(build.id, {
      state: to,
      ...(terminal ? { finishedAt: this.clock() } : {}),
      ...(index ? { index } : {}),
      ...(to === BuildState.FAILED || to === BuildState.CANCELLED || to === BuildState.TIMED_OUT
        ? { error: message }
        : {}),
    });
    this.event(build.id, { case: 'buildState', value: { state: to, message, index } });
    this.deps.onBuildState?.(build.id, buildStateName(to), message);
    this.deps.observer?.buildMoved(build, to, this.clock());
    this.buildLog(build.id).info(
      { from: buildStateName(build.state), to: buildStateName(to), message },
      'build state',
    );
    if (terminal) {
      this.specs.delete(build.id);
      this.buildLogs.delete(build.id);
      this.secrets.forget(build.id);
      this.deps.sshRelay?.forget(build.id);
    }
  }

  /** The logger of a build's lines: they carry its id and request id. */
  private buildLog(buildId: string): Logger {
    let log = this.buildLogs.get(buildId);
    if (!log) {
      const record = this.deps.store.getBuildRecord(buildId);
      log = this.deps.log.child({ buildId, requestId: record?.requestId || undefined });
      // Builds in flight only: a late report about an ended build gets a logger it does not keep.
      if (record && !TERMINAL_BUILD_STATES.has(record.state)) this.buildLogs.set(buildId, log);
    }
    return log;
  }

  private finishBuild(
    buildId: string,
    to: BuildState,
    message: string,
    index?: ImageDescriptor,
  ): void {
    const build = this.deps.store.getBuildRecord(buildId);
    if (!build || TERMINAL_BUILD_STATES.has(build.state)) return;
    this.moveBuild(build, to, message, index);
  }

  private event(buildId: string, body: EventBody): void {
    this.deps.store.appendEvent(buildId, body, this.clock());
    const set = this.watchers.get(buildId);
    if (set) for (const wake of [...set]) wake();
  }
}
