/**
 * Placement: every queued job the farm has room for goes to the agent the
 * scheduler picks, and the agent is sent what it needs to build it. A job
 * no connected agent can build waits a bounded time, then fails.
 */
import {
  AnnotationLevel,
  BuildState,
  CacheType,
  JobRole,
  PlacementReason,
} from '../gen/braid/v1/build_pb.js';
import { JobState } from '../gen/braid/v1/common_pb.js';
import { formatPlatform } from '../oci/platform.js';
import type { ImageReference } from '../oci/reference.js';
import { toProtoPlatform } from '../rpc/platform.js';
import type { AgentRegistry, AgentSession } from './agent-registry.js';
import { annotationsAt } from './build-annotations.js';
import type { BuildEvents } from './build-events.js';
import type { BuildSpecs } from './build-specs.js';
import type { JobLifecycle, OrchestratorLimits } from './job-lifecycle.js';
import { imageJobOf, isCheckJob } from './reproducibility-check.js';
import {
  schedule,
  type CacheAffinitySettings,
  type PendingJob,
  type PlacementBasis,
} from './scheduler.js';
import type { SecretVault } from './secret-vault.js';
import type { SshRelay } from './ssh-relay.js';
import type { BuildStore, JobRecord } from './store.js';

const PLACEMENT_REASONS: Record<PlacementBasis, PlacementReason> = {
  'only-capable': PlacementReason.ONLY_CAPABLE,
  'least-loaded': PlacementReason.LEAST_LOADED,
  'cache-affinity': PlacementReason.CACHE_AFFINITY,
};

export interface PlacementDeps {
  store: BuildStore;
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
  /** Queued jobs no connected agent can build, since when (ms). */
  private readonly unplaceable = new Map<string, number>();

  constructor(private readonly deps: PlacementDeps) {}

  /** Place every queued job the farm has room for. */
  scheduleQueued(): void {
    const { store, specs } = this.deps;
    const open = store.unfinishedBuilds().filter((b) => b.state !== BuildState.STITCHING);
    const pending: (PendingJob & { job: JobRecord; lineage: string })[] = [];
    let checksWaiting = false;
    for (const build of open) {
      const valid = specs.of(build.id);
      const lineage = specs.lineageOf(build.id, build.spec.target);
      const jobs = store.jobsOf(build.id);
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
    const { cacheAffinity, limits } = this.deps;
    const now = this.deps.clock();
    const affinity = cacheAffinity.enabled
      ? {
          ...cacheAffinity,
          now,
          records: store.cacheRecords(
            pending.map((p) => p.lineage),
            new Date(now.getTime() - cacheAffinity.maxAgeMs),
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
        const nowMs = this.deps.clock().getTime();
        const since = this.unplaceable.get(job.id);
        if (since === undefined) {
          this.unplaceable.set(job.id, nowMs);
          this.deps.events.log(
            job.buildId,
            `${placement.reason}; waiting up to ${limits.waitForAgentMs} ms for one to connect`,
          );
        } else if (nowMs - since > limits.waitForAgentMs) {
          this.unplaceable.delete(job.id);
          this.deps.lifecycle.failJob(
            job,
            `${placement.reason}; none connected within ${limits.waitForAgentMs} ms`,
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
    const { store, lifecycle } = this.deps;
    const build = store.getBuildRecord(job.buildId);
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
    store.atomically(() => {
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
    // Only once the move is stored does the agent hold the job.
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
}
