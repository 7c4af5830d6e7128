/**
 * Placement: every queued job the farm has room for goes to the agent the
 * scheduler picks, and the agent is sent what it needs to build it. A job
 * no connected agent can build waits a bounded time, then fails.
 */
import { AnnotationLevel, CacheType, JobRole, PlacementReason } from '../gen/braid/v1/build_pb.js';
import { JobState } from '../gen/braid/v1/common_pb.js';
import { formatPlatform, type Platform } from '../oci/platform.js';
import type { ImageReference } from '../oci/reference.js';
import { toProtoPlatform } from '../rpc/platform.js';
import type { AgentRegistry, AgentSession } from './agent-registry.js';
import { annotationsAt } from './build-annotations.js';
import type { BuildEvents } from './build-events.js';
import type { BuildSpecs } from './build-specs.js';
import type { JobLifecycle, OrchestratorLimits } from './job-lifecycle.js';
import { imageJobOf, isCheckJob } from './reproducibility-check.js';
import { JobQueue, type JobClass } from './job-queue.js';
import type { LiveBuilds } from './live-builds.js';
import { placeJob, type CacheAffinitySettings, type PlacementBasis } from './scheduler.js';
import type { SecretVault } from './secret-vault.js';
import type { SshRelay } from './ssh-relay.js';
import type { JobRecord } from './store.js';

const PLACEMENT_REASONS: Record<PlacementBasis, PlacementReason> = {
  'only-capable': PlacementReason.ONLY_CAPABLE,
  'least-loaded': PlacementReason.LEAST_LOADED,
  'cache-affinity': PlacementReason.CACHE_AFFINITY,
};

export interface PlacementDeps {
  live: LiveBuilds;
  agents: AgentRegistry;
  events: BuildEvents;
  lifecycle: JobLifecycle;
  specs: BuildSpecs;
  secrets: SecretVault;
  sshRelay?: SshRelay | undefined;
  clock: () => Date;
  limits: OrchestratorLimits;
  cacheAffinity: CacheAffinitySettings;
}

export class Placement {
  private readonly queue = new JobQueue();

  constructor(private readonly deps: PlacementDeps) {
    // The queue follows the jobs' moves: nothing is scanned to find what waits.
    deps.live.onJobChange((before, after) => {
      const wasQueued = before?.state === JobState.QUEUED;
      const isQueued = after?.state === JobState.QUEUED;
      if (wasQueued && !isQueued) this.queue.remove(before.id, deps.live.ordinal(before.id));
      if (isQueued && !wasQueued) {
        this.queue.add(
          after.id,
          deps.live.ordinal(after.id),
          after.platform,
          deps.specs.of(after.buildId).policy,
          after.role,
        );
      }
    });
  }

  /** Jobs waiting for an agent, by platform. */
  queuedByPlatform(): { platform: Platform; count: number }[] {
    return this.queue.countsByPlatform();
  }

  /**
   * Place every queued job the farm has room for, oldest first. Each class
   * of jobs (platform, policy, role) is looked at from its head: once its
   * head must wait, so does the rest of it in this pass.
   */
  scheduleQueued(): void {
    if (this.queue.size === 0) return;
    const { live, cacheAffinity, limits } = this.deps;
    const views = this.deps.agents.views();
    const running = new Map(views.map((v) => [v.name, v.running] as const));
    const now = this.deps.clock();
    const done = new Set<JobClass>();
    for (;;) {
      // The class whose next placeable job is the oldest.
      let next: { jobClass: JobClass; job: JobRecord; avoidAgent?: string } | undefined;
      let nextOrdinal = Number.POSITIVE_INFINITY;
      for (const jobClass of this.queue.nonEmpty()) {
        if (done.has(jobClass)) continue;
        const head = this.headOf(jobClass);
        if (head === undefined) continue;
        const ordinal = live.ordinal(head.job.id);
        if (ordinal < nextOrdinal) {
          next = { jobClass, ...head };
          nextOrdinal = ordinal;
        }
      }
      if (next === undefined) return;
      const { jobClass, job } = next;
      const lineage = this.deps.specs.lineageOf(job.buildId);
      const affinity = cacheAffinity.enabled
        ? {
            ...cacheAffinity,
            now,
            records: live.cacheRecords(lineage, new Date(now.getTime() - cacheAffinity.maxAgeMs)),
          }
        : undefined;
      const placement = placeJob(
        {
          jobId: job.id,
          platform: job.platform,
          policy: jobClass.policy,
          lineage,
          ...(next.avoidAgent !== undefined && { avoidAgent: next.avoidAgent }),
        },
        views,
        running,
        affinity,
      );
      if (placement.kind === 'impossible') {
        // Mid-build, an agent that can build it may be reconnecting: wait, within a bound.
        done.add(jobClass);
        this.waitForCapableAgent(jobClass, placement.reason, limits.waitForAgentMs);
        continue;
      }
      jobClass.unplaceableSince.clear();
      if (placement.kind === 'wait') {
        done.add(jobClass);
        continue;
      }
      const session = this.deps.agents.get(placement.agent);
      if (!session) {
        done.add(jobClass);
        continue;
      }
      running.set(placement.agent, (running.get(placement.agent) ?? 0) + 1);
      this.assign(job, session, placement.emulated, placement.handler ?? '', placement.reason, {
        basis: placement.basis,
        text: placement.basisText,
      });
      // A job that could not be handed out (its secrets are gone) failed and left the queue;
      // one still queued would be picked again and again.
      if (this.queue.has(job.id)) done.add(jobClass);
    }
  }

  /** The next job of a class that may be placed now, and the agent it should avoid. */
  private headOf(jobClass: JobClass): { job: JobRecord; avoidAgent?: string } | undefined {
    const { live } = this.deps;
    for (const entry of jobClass.entries) {
      const job = live.job(entry.jobId);
      if (job === undefined) continue;
      if (!jobClass.check) return { job };
      // A check job goes out once its image job has an agent, to another one if it can.
      const imageAgent = imageJobOf(job, live.jobsOf(job.buildId))?.agent;
      if (imageAgent === '') continue;
      return { job, ...(imageAgent !== undefined && { avoidAgent: imageAgent }) };
    }
    return undefined;
  }

  /**
   * No connected agent can build the class: each of its jobs waits up to
   * `waitMs` from when this was first seen (the build's log says so), then fails.
   */
  private waitForCapableAgent(jobClass: JobClass, reason: string, waitMs: number): void {
    const nowMs = this.deps.clock().getTime();
    const expired: JobRecord[] = [];
    for (const { jobId } of jobClass.entries) {
      const job = this.deps.live.job(jobId);
      if (job === undefined) continue;
      const since = jobClass.unplaceableSince.get(jobId);
      if (since === undefined) {
        jobClass.unplaceableSince.set(jobId, nowMs);
        this.deps.events.log(
          job.buildId,
          `${reason}; waiting up to ${waitMs} ms for one to connect`,
        );
      } else if (nowMs - since > waitMs) {
        expired.push(job);
      }
    }
    for (const job of expired) {
      // An earlier failure in this loop may have ended the job's build already.
      const now = this.deps.live.job(job.id);
      if (now?.state !== JobState.QUEUED) continue;
      this.deps.lifecycle.failJob(now, `${reason}; none connected within ${waitMs} ms`);
    }
  }

  private assign(
    job: JobRecord,
    session: AgentSession,
    emulated: boolean,
    handler: string,
    reason: string,
    placed: { basis: PlacementBasis; text: string },
  ): void {
    const { live, lifecycle } = this.deps;
    const build = live.build(job.buildId);
    if (!build) return;
    const secrets = build.spec.secretIds.length > 0 ? this.deps.secrets.get(build.id) : [];
    if (secrets === undefined) {
      // Never a silent build without its secrets.
      lifecycle.failJob(
        job,
        `the build's secrets (${build.spec.secretIds.join(', ')}) are gone: the coordinator restarted, and it keeps secret values in memory only; resubmit the build`,
      );
      return;
    }
    if (build.spec.sshIds.length > 0 && this.deps.sshRelay?.expects(build.id) === false) {
      lifecycle.failJob(
        job,
        `the build forwards SSH agents (${build.spec.sshIds.join(', ')}) from the braid build that submitted it, which the coordinator no longer relays after its restart; resubmit the build`,
      );
      return;
    }
    const valid = this.deps.specs.of(job.buildId);
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
    const placementReason = PLACEMENT_REASONS[placed.basis];
    live.atomically(() => {
      lifecycle.moveJob(job, JobState.ASSIGNED, {
        agent: session.name,
        emulated,
        emulator: handler,
        placementReason,
        placementDetail: placed.text,
      });
      this.deps.events.append(job.buildId, {
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
    });
    // The agent's slot is taken now; it hears of the job once the move is stored.
    session.jobs.add(job.id);
    lifecycle.buildLog(job.buildId).info(
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
    const assignment = {
      case: 'assign' as const,
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
    };
    live.afterCommit(() => {
      // Stopped or re-queued before its move was stored: it is no longer this agent's.
      if (session.jobs.has(job.id)) session.send(assignment);
    });
  }
}
