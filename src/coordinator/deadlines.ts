/**
 * Deadlines: a job of a previous coordinator run whose agent did not
 * reclaim it in time is re-queued (or fails); a job running longer than
 * jobTimeoutMs, or a build older than buildTimeoutMs, ends the build
 * TIMED_OUT naming the platform.
 */
import { BuildState } from '../gen/braid/v1/build_pb.js';
import { JobState } from '../gen/braid/v1/common_pb.js';
import { formatPlatform } from '../oci/platform.js';
import type { AgentRegistry } from './agent-registry.js';
import type { JobLifecycle, OrchestratorLimits } from './job-lifecycle.js';
import type { BuildStore } from './store.js';
import { TERMINAL_JOB_STATES } from './transitions.js';

export interface DeadlineDeps {
  store: BuildStore;
  agents: AgentRegistry;
  lifecycle: JobLifecycle;
  clock: () => Date;
  limits: OrchestratorLimits;
}

export class Deadlines {
  /** Jobs of a previous coordinator run waiting for their agent, by deadline (ms). */
  private readonly orphans = new Map<string, number>();

  constructor(private readonly deps: DeadlineDeps) {}

  /** After a restart: the job's agent has until `deadlineMs` to reclaim it. */
  adoptOrphan(jobId: string, deadlineMs: number): void {
    this.orphans.set(jobId, deadlineMs);
  }

  /** Its agent reconnected and holds it. */
  reclaimed(jobId: string): void {
    this.orphans.delete(jobId);
  }

  get orphanCount(): number {
    return this.orphans.size;
  }

  check(): void {
    const { store, lifecycle, limits } = this.deps;
    const now = this.deps.clock().getTime();
    for (const [jobId, deadline] of this.orphans) {
      if (now < deadline) continue;
      this.orphans.delete(jobId);
      const job = store.getJob(jobId);
      if (!job || TERMINAL_JOB_STATES.has(job.state)) continue;
      if (this.deps.agents.all().some((a) => a.jobs.has(jobId))) continue;
      lifecycle.retryOrFail(
        job,
        `agent ${job.agent} did not reclaim it within ${limits.reattachGraceMs} ms of the coordinator's restart`,
      );
    }
    for (const build of store.unfinishedBuilds()) {
      if (build.state === BuildState.STITCHING) continue;
      const jobs = store.jobsOf(build.id);
      const late = jobs.find(
        (j) =>
          j.state === JobState.RUNNING &&
          j.startedAt &&
          now - j.startedAt.getTime() > limits.jobTimeoutMs,
      );
      const buildLate = now - build.createdAt.getTime() > limits.buildTimeoutMs;
      if (!late && !buildLate) continue;
      const pending = jobs.filter((j) => !TERMINAL_JOB_STATES.has(j.state));
      const names = pending.map((j) => formatPlatform(j.platform)).join(', ');
      const message = late
        ? `${formatPlatform(late.platform)} ran longer than the job timeout of ${limits.jobTimeoutMs} ms`
        : `the build ran longer than its timeout of ${limits.buildTimeoutMs} ms (unfinished: ${names})`;
      lifecycle.endBuild(
        build.id,
        BuildState.TIMED_OUT,
        { state: JobState.FAILED, reason: 'timed out', error: `timed out: ${message}` },
        `${message}; no tag was moved`,
      );
    }
  }
}
