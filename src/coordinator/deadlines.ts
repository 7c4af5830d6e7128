/**
 * Deadlines: a job of a previous coordinator run whose agent did not
 * reclaim it in time is re-queued (or fails); a job running longer than
 * jobTimeoutMs, or a build older than buildTimeoutMs, ends the build
 * TIMED_OUT naming the platform. The running jobs are indexed as they
 * move, and builds are checked oldest first until one is within its time,
 * so a check costs the jobs running and the builds late, not every build.
 */
import { BuildState } from '../gen/braid/v1/build_pb.js';
import { JobState } from '../gen/braid/v1/common_pb.js';
import { formatPlatform } from '../oci/platform.js';
import type { AgentRegistry } from './agent-registry.js';
import type { JobLifecycle, OrchestratorLimits } from './job-lifecycle.js';
import type { LiveBuilds } from './live-builds.js';
import type { JobRecord } from './store.js';
import { TERMINAL_JOB_STATES } from './transitions.js';

export interface DeadlineDeps {
  live: LiveBuilds;
  agents: AgentRegistry;
  lifecycle: JobLifecycle;
  clock: () => Date;
  limits: OrchestratorLimits;
}

export class Deadlines {
  /** Jobs of a previous coordinator run waiting for their agent, by deadline (ms). */
  private readonly orphans = new Map<string, number>();
  /** Jobs running now. */
  private readonly running = new Map<string, JobRecord>();

  constructor(private readonly deps: DeadlineDeps) {
    deps.live.onJobChange((before, after) => {
      if (before?.state === JobState.RUNNING) this.running.delete(before.id);
      if (after?.state === JobState.RUNNING) this.running.set(after.id, after);
      if (after === undefined && before !== undefined) this.orphans.delete(before.id);
    });
  }

  /** After a restart: the job's agent has until `deadlineMs` to reclaim it. */
  adoptOrphan(jobId: string, deadlineMs: number): void {
    this.orphans.set(jobId, deadlineMs);
  }

  /** Its agent reconnected and holds it. */
  reclaimed(jobId: string): void {
    this.orphans.delete(jobId);
  }

  /**
   * Its agent reconnected holding `held`: the orphans assigned to it that
   * it does not hold never reached it (the assignment was stored, then the
   * coordinator stopped before sending it), so they need not wait out the
   * grace. Returns them, no longer orphans.
   */
  notHeldBy(agent: string, held: ReadonlySet<string>): JobRecord[] {
    const lost: JobRecord[] = [];
    for (const jobId of this.orphans.keys()) {
      const job = this.deps.live.job(jobId);
      if (!job || job.agent !== agent || held.has(jobId)) continue;
      this.orphans.delete(jobId);
      if (!TERMINAL_JOB_STATES.has(job.state)) lost.push(job);
    }
    return lost;
  }

  get orphanCount(): number {
    return this.orphans.size;
  }

  check(): void {
    const { live, lifecycle, limits } = this.deps;
    const now = this.deps.clock().getTime();
    for (const [jobId, deadline] of this.orphans) {
      if (now < deadline) continue;
      this.orphans.delete(jobId);
      const job = live.job(jobId);
      if (!job || TERMINAL_JOB_STATES.has(job.state)) continue;
      if (this.deps.agents.all().some((a) => a.jobs.has(jobId))) continue;
      lifecycle.retryOrFail(
        job,
        `agent ${job.agent} did not reclaim it within ${limits.reattachGraceMs} ms of the coordinator's restart`,
      );
    }
    const late = new Map<string, JobRecord>();
    for (const job of this.running.values()) {
      if (job.startedAt && now - job.startedAt.getTime() > limits.jobTimeoutMs) {
        if (!late.has(job.buildId)) late.set(job.buildId, job);
      }
    }
    const lateBuilds: string[] = [];
    for (const build of live.oldestFirst()) {
      if (now - build.createdAt.getTime() <= limits.buildTimeoutMs) break;
      if (build.state !== BuildState.STITCHING) lateBuilds.push(build.id);
    }
    for (const [buildId, job] of late) {
      const build = live.build(buildId);
      if (!build || build.state === BuildState.STITCHING) continue;
      this.timeOut(
        buildId,
        `${formatPlatform(job.platform)} ran longer than the job timeout of ${limits.jobTimeoutMs} ms`,
      );
    }
    for (const buildId of lateBuilds) {
      if (!live.build(buildId)) continue;
      const names = live
        .jobsOf(buildId)
        .filter((j) => !TERMINAL_JOB_STATES.has(j.state))
        .map((j) => formatPlatform(j.platform))
        .join(', ');
      this.timeOut(
        buildId,
        `the build ran longer than its timeout of ${limits.buildTimeoutMs} ms (unfinished: ${names})`,
      );
    }
  }

  private timeOut(buildId: string, message: string): void {
    this.deps.lifecycle.endBuild(
      buildId,
      BuildState.TIMED_OUT,
      { state: JobState.FAILED, reason: 'timed out', error: `timed out: ${message}` },
      `${message}; no tag was moved`,
    );
  }
}
