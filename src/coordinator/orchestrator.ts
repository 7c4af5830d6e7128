/**
 * The build lifecycle's front door: a submitted build becomes one job per
 * platform, agents connect, report and are lost, builds are cancelled, and
 * each of these is handed to the module whose job it is — the moves of jobs
 * and builds (job-lifecycle.ts), placement (placement.ts), deadlines
 * (deadlines.ts), the stitch (stitch-step.ts) and the event log
 * (build-events.ts).
 */
import { randomBytes } from 'node:crypto';
import { create } from '@bufbuild/protobuf';
import {
  BuildState,
  LogSource,
  type Build,
  type BuildEvent,
  type BuildSpec,
} from '../gen/braid/v1/build_pb.js';
import type { JobLogChunk, JobResult, JobUpdate } from '../gen/braid/v1/agent_pb.js';
import { ImageDescriptorSchema, JobState } from '../gen/braid/v1/common_pb.js';
import { BraidError } from '../errors.js';
import type { Logger } from '../log.js';
import { formatPlatform, platformsEqual, type Platform } from '../oci/platform.js';
import type { ImageReference } from '../oci/reference.js';
import type { RegistryClient } from '../oci/registry.js';
import type { PublishOptions } from '../oci/stitch.js';
import { fromProtoPlatform, toProtoPlatform } from '../rpc/platform.js';
import type { CallIdentity } from '../rpc/service.js';
import type { AgentRegistry, AgentSession } from './agent-registry.js';
import { BuildEvents } from './build-events.js';
import { BuildSpecs } from './build-specs.js';
import type { BuildContexts } from './contexts.js';
import { Deadlines } from './deadlines.js';
import { DEFAULT_LIMITS, JobLifecycle, type OrchestratorLimits } from './job-lifecycle.js';
import type { BuildObserver } from './metrics.js';
import { Placement } from './placement.js';
import type { ProvenanceSettings } from './provenance-writer.js';
import { prepareSubmission } from './submission.js';
import {
  anyCapable,
  DEFAULT_CACHE_AFFINITY,
  schedule,
  type CacheAffinitySettings,
} from './scheduler.js';
import { SecretVault, type BuildSecretValue } from './secret-vault.js';
import type { SshJob, SshRelay } from './ssh-relay.js';
import { StitchStep } from './stitch-step.js';
import { LiveBuilds } from './live-builds.js';
import { buildToProto, type BuildStore, type JobRecord } from './store.js';
import { TERMINAL_BUILD_STATES, TERMINAL_JOB_STATES } from './transitions.js';

export { DEFAULT_LIMITS, type OrchestratorLimits } from './job-lifecycle.js';

export interface OrchestratorDeps {
  store: BuildStore;
  /** A commit an asynchronous store refused (memory is then ahead of it): the coordinator stops. */
  onStoreFailure?: (err: unknown) => void;
  contexts: BuildContexts;
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
  /** Throws when this coordinator may no longer move tags (a deposed leader). */
  beforeTagMove?: () => Promise<void>;
  /** Refuses tags the coordinator may not push to, before anything is stored (push-preflight.ts). */
  checkPush?: (tags: readonly ImageReference[]) => Promise<void>;
}

const MAX_LOG_LINE_CHARS = 4096;

export function newBuildId(): string {
  return `b${Date.now().toString(36)}${randomBytes(4).toString('hex')}`;
}

export class Orchestrator {
  private readonly clock: () => Date;
  private readonly newId: () => string;
  private readonly limits: OrchestratorLimits;
  private readonly cacheAffinity: CacheAffinitySettings;
  /** Secret values of builds in flight: memory only (secret-vault.ts). */
  private readonly secrets = new SecretVault();
  private readonly specs: BuildSpecs;
  private readonly events: BuildEvents;
  private readonly lifecycle: JobLifecycle;
  private readonly placement: Placement;
  private readonly deadlines: Deadlines;
  private readonly stitching: StitchStep;
  /** The builds in flight, in memory; the store's only writer. */
  readonly live: LiveBuilds;
  /** Builds ended since the last adoption sweep began (not to be taken in again). */
  private readonly ended = new Set<string>();
  private adopting: Promise<number> | undefined;
  private adoptAgain = false;
  /** Set by the first sweep: only a leader on a shared store remembers ended builds. */
  private adoptsStored = false;

  constructor(private readonly deps: OrchestratorDeps) {
    this.limits = { ...DEFAULT_LIMITS, ...deps.limits };
    this.cacheAffinity = { ...DEFAULT_CACHE_AFFINITY, ...deps.cacheAffinity };
    this.clock = deps.clock ?? (() => new Date());
    this.newId = deps.newId ?? newBuildId;
    const { store, agents } = deps;
    const clock = this.clock;
    const limits = this.limits;
    const live = new LiveBuilds(store, deps.onStoreFailure);
    this.live = live;
    this.specs = new BuildSpecs(live);
    this.events = new BuildEvents(live, store, clock);
    this.lifecycle = new JobLifecycle({
      live,
      agents,
      events: this.events,
      log: deps.log,
      clock,
      limits,
      observer: deps.observer,
      onBuildState: deps.onBuildState,
      onBuildEnded: (buildId) => {
        if (this.adoptsStored) this.ended.add(buildId);
        this.specs.forget(buildId);
        this.secrets.forget(buildId);
        this.deps.sshRelay?.forget(buildId);
      },
    });
    this.placement = new Placement({
      live,
      agents,
      events: this.events,
      lifecycle: this.lifecycle,
      specs: this.specs,
      secrets: this.secrets,
      sshRelay: deps.sshRelay,
      clock,
      limits,
      cacheAffinity: this.cacheAffinity,
    });
    this.deadlines = new Deadlines({ live, agents, lifecycle: this.lifecycle, clock, limits });
    this.stitching = new StitchStep({
      live,
      registry: deps.registry,
      events: this.events,
      lifecycle: this.lifecycle,
      specs: this.specs,
      verifyImage: deps.verifyImage,
      provenance: deps.provenance,
      maxConcurrent: limits.maxConcurrentStitches,
      beforeTagMove: deps.beforeTagMove,
    });
  }

  /**
   * After a restart: builds in flight carry on. Jobs that were assigned or
   * running wait `reattachGraceMs` for their agent to reconnect and claim
   * them (its hello lists the jobs it holds, and it re-sends results it
   * never had acknowledged), so finished work is not rebuilt; unclaimed
   * ones are re-queued. A build that was stitching stitches again.
   */
  async recover(): Promise<void> {
    const now = this.clock().getTime();
    const deadline = now + this.limits.reattachGraceMs;
    const unfinished = await this.live.load(new Date(now - this.cacheAffinity.maxAgeMs));
    for (const { build, jobs } of unfinished) {
      this.events.log(build.id, 'coordinator restarted; resuming the build');
      for (const job of jobs) {
        if (job.state === JobState.ASSIGNED || job.state === JobState.RUNNING) {
          this.deadlines.adoptOrphan(job.id, deadline);
        }
      }
      if (build.state === BuildState.STITCHING) this.stitching.start(build.id, jobs);
    }
    if (unfinished.length > 0) {
      this.deps.log.info(
        { builds: unfinished.length, orphans: this.deadlines.orphanCount },
        'recovered builds in flight',
      );
    }
  }

  /**
   * Takes in the builds a standby stored (submitToStore) that this leader
   * does not hold yet; called when notified of one, and now and then in
   * case a notification was lost. Sweeps run one at a time.
   */
  adoptStored(): Promise<number> {
    this.adoptsStored = true;
    if (this.adopting) {
      this.adoptAgain = true;
      return this.adopting;
    }
    this.adopting = (async () => {
      let taken = 0;
      try {
        do {
          this.adoptAgain = false;
          // What ended before this point is stored as ended; what ends from now is skipped.
          await this.live.flushed();
          this.ended.clear();
          const adopted = await this.live.adopt(this.ended);
          for (const { build, jobs } of adopted) {
            this.deps.observer?.jobsQueued(jobs, build.createdAt);
            this.lifecycle.buildLog(build.id).info('build submitted through a standby');
          }
          taken += adopted.length;
          if (adopted.length > 0) this.scheduleQueued();
        } while (this.adoptAgain);
        return taken;
      } finally {
        this.adopting = undefined;
      }
    })();
    return this.adopting;
  }

  // --- builds ------------------------------------------------------------------

  async submit(
    spec: BuildSpec,
    sentRequestId = '',
    secrets: readonly BuildSecretValue[] = [],
    submitter?: CallIdentity,
  ): Promise<Build> {
    const { valid, record, jobs, queued } = await prepareSubmission(spec, sentRequestId, secrets, {
      contexts: this.deps.contexts,
      checkPush: this.deps.checkPush,
      newId: this.newId,
      clock: this.clock,
      // A platform nobody can build fails the submit at once: nothing is stored.
      refuseUnbuildable: (all, checked) => {
        const views = this.deps.agents.views();
        const unbuildable = all.filter((j) => !anyCapable(views, j.platform, checked.policy));
        const impossible = schedule(
          unbuildable.map((j) => ({ jobId: j.id, platform: j.platform, policy: checked.policy })),
          views,
        ).filter((p) => p.kind === 'impossible');
        if (impossible.length > 0) {
          throw new BraidError('failed_precondition', impossible.map((p) => p.reason).join('; '));
        }
      },
    });
    const id = record.id;
    // Its jobs join the queue under the build's policy.
    this.specs.remember(id, valid);
    // The build, its jobs and its first event are stored together.
    this.live.atomically(() => {
      this.live.createBuild(record, jobs);
      this.events.append(id, {
        case: 'buildState',
        value: { state: BuildState.QUEUED, message: queued },
      });
    });
    this.secrets.keep(id, secrets);
    // Before any job is placed: only the submitter may then serve its SSH agents.
    if (spec.sshIds.length > 0) this.deps.sshRelay?.expect(id, submitter);
    this.deps.observer?.jobsQueued(jobs, record.createdAt);
    this.lifecycle
      .buildLog(id)
      .info({ platforms: valid.platforms.map(formatPlatform), tags: spec.tags }, 'build submitted');
    this.scheduleQueued();
    // The submitter hears of the build once it is stored.
    await this.live.flushed();
    return this.getBuild(id);
  }

  /** A build in flight from memory, an ended one from the store. */
  async getBuild(id: string): Promise<Build> {
    const record = this.live.build(id);
    if (record) return buildToProto(record, this.live.jobsOf(id));
    const stored = await this.deps.store.getBuild(id);
    if (!stored) throw new BraidError('not_found', `no build "${id}"`);
    return buildToProto(stored, await this.deps.store.jobsOf(id));
  }

  async listBuilds(limit: number, states: readonly BuildState[]): Promise<Build[]> {
    const records = await this.deps.store.listBuilds(limit, states);
    return Promise.all(records.map((r) => this.getBuild(r.id)));
  }

  async cancel(id: string, reason: string): Promise<Build> {
    const record = this.live.build(id);
    if (
      !record ||
      TERMINAL_BUILD_STATES.has(record.state) ||
      record.state === BuildState.STITCHING
    ) {
      return this.getBuild(id);
    }
    const why = reason || 'cancelled by user';
    this.lifecycle.endBuild(
      id,
      BuildState.CANCELLED,
      { state: JobState.CANCELLED, reason: why, error: why },
      `cancelled: ${why}; no tag was moved`,
    );
    // The cancelled jobs' slots are free again.
    this.scheduleQueued();
    return this.getBuild(id);
  }

  /** Events of a build after `after`; with `follow`, until the build ends. */
  watch(
    id: string,
    after: bigint,
    follow: boolean,
    signal: AbortSignal,
  ): AsyncGenerator<BuildEvent> {
    return this.events.watch(id, after, follow, signal);
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
      const job = this.live.job(jobId);
      const live = job && (job.state === JobState.ASSIGNED || job.state === JobState.RUNNING);
      if (!live || job.agent !== session.name) continue;
      session.jobs.add(jobId);
      this.deadlines.reclaimed(jobId);
      this.events.log(
        job.buildId,
        `${formatPlatform(job.platform)}: agent ${session.name} reconnected and still holds the job`,
      );
    }
    for (const job of this.deadlines.notHeldBy(session.name, new Set(session.hello.heldJobIds))) {
      this.lifecycle.retryOrFail(
        job,
        `agent ${session.name} reconnected without it (the assignment never reached it)`,
      );
    }
    this.scheduleQueued();
  }

  agentLost(session: AgentSession, reason: string): void {
    if (!this.deps.agents.remove(session.name, session)) return;
    this.deps.log.warn({ agent: session.name, reason, jobs: [...session.jobs] }, 'agent lost');
    this.deps.onAgent?.('disconnected', session.name, reason);
    for (const jobId of session.jobs) {
      const job = this.live.job(jobId);
      if (!job || TERMINAL_JOB_STATES.has(job.state)) continue;
      this.lifecycle.retryOrFail(job, `agent ${session.name} was lost (${reason})`);
    }
    this.scheduleQueued();
  }

  /**
   * Enforce deadlines: a job running longer than jobTimeoutMs, or a build
   * older than buildTimeoutMs, ends the build TIMED_OUT naming the platform.
   */
  checkDeadlines(): void {
    this.deadlines.check();
    this.scheduleQueued();
  }

  jobUpdate(session: AgentSession, update: JobUpdate): void {
    const job = this.ownedJob(session, update.jobId);
    if (!job) {
      this.ignoredReport(session, update.jobId);
      return;
    }
    if (update.state === JobState.RUNNING && job.state === JobState.ASSIGNED) {
      // The job's move and the build's move it causes commit together.
      this.live.atomically(() => {
        this.lifecycle.moveJob(job, JobState.RUNNING, {
          startedAt: this.clock(),
          currentStep: update.step,
        });
        this.lifecycle.buildStarted(job.buildId);
      });
    } else if (update.step) {
      this.live.atomically(
        () => this.live.updateJob(job.id, { currentStep: update.step.slice(0, 200) }),
        { defer: true },
      );
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
    this.live.atomically(
      () => {
        for (const line of chunk.lines) {
          this.events.append(job.buildId, {
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
      },
      { defer: true },
    );
  }

  jobResult(session: AgentSession, result: JobResult): void {
    // Stored or ignored as late, the agent may forget it: once what it changed is stored
    // (until then a coordinator that dies leaves the agent holding it, to report again).
    // Another agent's job gets no answer.
    const named = this.live.job(result.jobId);
    const ack = !named || named.agent === session.name || named.agent === '';
    try {
      this.takeResult(session, result);
    } finally {
      if (ack) {
        this.live.afterCommit(() => session.send({ case: 'ack', value: { jobId: result.jobId } }));
      }
    }
  }

  private takeResult(session: AgentSession, result: JobResult): void {
    const job = this.ownedJob(session, result.jobId);
    session.jobs.delete(result.jobId);
    if (!job) {
      this.ignoredReport(session, result.jobId);
      return;
    }
    if (result.error || !result.image) {
      this.lifecycle.failJob(job, result.error || 'agent reported no image');
    } else {
      const built = fromProtoPlatform(result.image.platform);
      if (!platformsEqual(built, job.platform)) {
        this.lifecycle.failJob(
          job,
          `agent ${session.name} built ${formatPlatform(built)}, not ${formatPlatform(job.platform)}`,
        );
      } else {
        const image = result.image;
        this.live.atomically(() => {
          this.lifecycle.moveJob(job, JobState.SUCCEEDED, {
            image: create(ImageDescriptorSchema, image),
            finishedAt: this.clock(),
            durationMs: Number(result.durationMs),
            currentStep: '',
            ...(result.facts && { facts: result.facts }),
          });
          this.recordCache(job, session);
          this.lifecycle.settleFailedBuild(job.buildId);
          this.stitching.maybeStitch(job.buildId);
        });
      }
    }
    this.scheduleQueued();
  }

  /** Place every queued job the farm has room for. */
  scheduleQueued(): void {
    this.placement.scheduleQueued();
  }

  /** What the SSH relay needs of a job: its build, the build's SSH ids and the platform. */
  sshJob(jobId: string): SshJob | undefined {
    const job = this.live.job(jobId);
    const build = job && this.live.build(job.buildId);
    if (!job || !build || TERMINAL_BUILD_STATES.has(build.state)) return undefined;
    return {
      buildId: build.id,
      sshIds: build.spec.sshIds,
      platform: toProtoPlatform(job.platform),
    };
  }

  /** The context digest of a job's build in flight (what its agent may fetch). */
  contextOfJob(jobId: string): string | undefined {
    const job = this.live.job(jobId);
    return job ? this.live.build(job.buildId)?.spec.contextDigest : undefined;
  }

  /** Jobs waiting for an agent, by platform (the coordinator's metrics). */
  queuedJobsByPlatform(): { platform: Platform; count: number }[] {
    return this.placement.queuedByPlatform();
  }

  // --- internals -----------------------------------------------------------------

  /**
   * The job a report names, when this very session runs it. A late report
   * (from a session that was lost, even one with the same agent name) or a
   * foreign one (another agent's job) is ignored: only the assigned session
   * speaks for a job.
   */
  private ownedJob(session: AgentSession, jobId: string): JobRecord | undefined {
    // A lost session is fenced off even while it still lists the job.
    if (this.deps.agents.get(session.name) !== session || !session.jobs.has(jobId))
      return undefined;
    const job = this.live.job(jobId);
    if (!job || job.agent !== session.name || TERMINAL_JOB_STATES.has(job.state)) return undefined;
    return job;
  }

  /** A report about another agent's job is worth a warning; a late one about its own is not. */
  private ignoredReport(session: AgentSession, jobId: string): void {
    const job = this.live.job(jobId);
    if (job && job.agent && job.agent !== session.name) {
      this.lifecycle
        .buildLog(job.buildId)
        .warn(
          { agent: session.name, jobId, assignedTo: job.agent },
          "report ignored: the job is another agent's",
        );
    } else {
      this.deps.log.debug({ agent: session.name, jobId }, 'late report ignored');
    }
  }

  /** The agent's engine now holds the cache of this job's lineage and platform. */
  private recordCache(job: JobRecord, session: AgentSession): void {
    if (!session.hello.engineId) return;
    const now = this.clock();
    this.live.recordCache(
      {
        agent: session.name,
        engineId: session.hello.engineId,
        platform: job.platform,
        lineage: this.specs.lineageOf(job.buildId),
        finishedAt: now,
      },
      new Date(now.getTime() - this.cacheAffinity.maxAgeMs),
    );
  }
}
