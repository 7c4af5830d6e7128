/**
 * The moves of jobs and builds: each move is checked against the
 * transition tables, persisted with its event in one store group, told to
 * the observer and logged once. Stopping a job on its agent, re-queueing
 * it after a loss and failing a build because of one job live here, once.
 */
import type { ImageDescriptor } from '../gen/braid/v1/common_pb.js';
import { BuildState, JobRole, PlacementReason } from '../gen/braid/v1/build_pb.js';
import { JobState } from '../gen/braid/v1/common_pb.js';
import type { Logger } from '../log.js';
import { formatPlatform } from '../oci/platform.js';
import { toProtoPlatform } from '../rpc/platform.js';
import type { AgentRegistry } from './agent-registry.js';
import type { BuildEvents } from './build-events.js';
import type { BuildObserver } from './metrics.js';
import { jobLabel } from './reproducibility-check.js';
import type { LiveBuilds } from './live-builds.js';
import type { BuildRecord, JobRecord } from './store.js';
import {
  buildStateName,
  checkBuildMove,
  checkJobMove,
  jobStateName,
  TERMINAL_BUILD_STATES,
  TERMINAL_JOB_STATES,
} from './transitions.js';

export interface OrchestratorLimits {
  /** Attempts per job when agents are lost (1 = never re-queue). */
  maxJobAttempts: number;
  jobTimeoutMs: number;
  buildTimeoutMs: number;
  /** After a restart, how long a running job's agent has to reconnect and claim it. */
  reattachGraceMs: number;
  /** How long a queued job waits for an agent that can build it (after a loss or restart). */
  waitForAgentMs: number;
  /** Stitches (verify, provenance, index push) run at once; the rest wait, oldest first. */
  maxConcurrentStitches: number;
}

export const DEFAULT_LIMITS: OrchestratorLimits = {
  maxJobAttempts: 2,
  jobTimeoutMs: 2 * 3_600_000,
  buildTimeoutMs: 4 * 3_600_000,
  reattachGraceMs: 30_000,
  waitForAgentMs: 5 * 60_000,
  maxConcurrentStitches: 16,
};

export interface JobLifecycleDeps {
  live: LiveBuilds;
  agents: AgentRegistry;
  events: BuildEvents;
  log: Logger;
  clock: () => Date;
  limits: OrchestratorLimits;
  observer?: BuildObserver | undefined;
  onBuildState?: ((buildId: string, state: string, message: string) => void) | undefined;
  /** A build reached a final state: drop what is kept for it in memory. */
  onBuildEnded: (buildId: string) => void;
}

/** The final states a job can be stopped in. */
export type StoppedState = JobState.FAILED | JobState.CANCELLED;

export class JobLifecycle {
  /** Loggers of builds in flight: every line names the build and its request id. */
  private readonly buildLogs = new Map<string, Logger>();

  constructor(private readonly deps: JobLifecycleDeps) {}

  moveJob(job: JobRecord, to: JobState, patch: Partial<JobRecord> = {}): void {
    checkJobMove(job.id, job.state, to);
    const now = { ...job, ...patch, state: to };
    this.deps.live.atomically(() => {
      this.deps.live.updateJob(job.id, { ...patch, state: to });
      this.deps.events.append(job.buildId, {
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
    });
    this.deps.observer?.jobMoved(job, now, this.deps.clock());
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

  moveBuild(build: BuildRecord, to: BuildState, message: string, index?: ImageDescriptor): void {
    checkBuildMove(build.id, build.state, to);
    const terminal = TERMINAL_BUILD_STATES.has(to);
    this.deps.live.atomically(() => {
      this.deps.live.updateBuild(build.id, {
        state: to,
        ...(terminal ? { finishedAt: this.deps.clock() } : {}),
        ...(index ? { index } : {}),
        ...(to === BuildState.FAILED || to === BuildState.CANCELLED || to === BuildState.TIMED_OUT
          ? { error: message }
          : {}),
      });
      this.deps.events.append(build.id, {
        case: 'buildState',
        value: { state: to, message, index },
      });
    });
    this.deps.onBuildState?.(build.id, buildStateName(to), message);
    this.deps.observer?.buildMoved(build, to, this.deps.clock());
    this.buildLog(build.id).info(
      { from: buildStateName(build.state), to: buildStateName(to), message },
      'build state',
    );
    if (terminal) {
      this.buildLogs.delete(build.id);
      this.deps.onBuildEnded(build.id);
    }
  }

  /** Move a build that has not ended yet; one that has is left as it is. */
  finishBuild(buildId: string, to: BuildState, message: string, index?: ImageDescriptor): void {
    const build = this.deps.live.build(buildId);
    if (!build || TERMINAL_BUILD_STATES.has(build.state)) return;
    this.moveBuild(build, to, message, index);
  }

  /** A build in QUEUED starts RUNNING when its first job does. */
  buildStarted(buildId: string): void {
    const build = this.deps.live.build(buildId);
    if (build?.state === BuildState.QUEUED) this.moveBuild(build, BuildState.RUNNING, 'building');
  }

  /**
   * Tell the job's agent to stop it and free its slot there: the agent's
   * late result, if any, is then ignored as not its own.
   */
  stopOnAgent(job: JobRecord, reason: string): void {
    if (!job.agent) return;
    const session = this.deps.agents.get(job.agent);
    session?.send({ case: 'cancel', value: { jobId: job.id, reason } });
    session?.jobs.delete(job.id);
  }

  /** Stop an unfinished job on its agent and move it to a final state. */
  stopJob(job: JobRecord, to: StoppedState, reason: string, error: string): void {
    this.stopOnAgent(job, reason);
    this.moveJob(job, to, {
      error,
      ...(to === JobState.FAILED && { finishedAt: this.deps.clock() }),
    });
  }

  /** After a lost agent: another attempt while attempts are left, else the job fails. */
  retryOrFail(job: JobRecord, why: string): void {
    if (job.attempt < this.deps.limits.maxJobAttempts) this.requeue(job, why);
    else this.failJob(job, `${why}; gave up after ${job.attempt} attempts`);
  }

  /** Put a job back in the queue for another agent; its late result, if any, is ignored. */
  requeue(job: JobRecord, why: string): void {
    this.deps.live.atomically(() => {
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
      this.deps.events.log(
        job.buildId,
        `${jobLabel(job)}: ${why}; re-queued (attempt ${job.attempt + 1} of ${this.deps.limits.maxJobAttempts})`,
      );
    });
  }

  /**
   * A job failed: without --keep-going the build fails and its other jobs
   * are stopped; with it, the build fails once every job has ended.
   */
  failJob(job: JobRecord, error: string): void {
    this.deps.live.atomically(() => {
      this.moveJob(job, JobState.FAILED, { error, finishedAt: this.deps.clock() });
      const build = this.deps.live.build(job.buildId);
      if (!build || TERMINAL_BUILD_STATES.has(build.state)) return;
      if (build.spec.keepGoing) {
        this.deps.events.log(
          job.buildId,
          `${jobLabel(job)} failed; the other platforms go on (--keep-going)`,
        );
        this.settleFailedBuild(job.buildId);
        return;
      }
      // One platform failed: stop the others, move no tag.
      for (const other of this.deps.live.jobsOf(job.buildId)) {
        if (other.id === job.id || TERMINAL_JOB_STATES.has(other.state)) continue;
        this.stopJob(
          other,
          JobState.CANCELLED,
          `${jobLabel(job)} failed`,
          `cancelled: ${jobLabel(job)} failed`,
        );
      }
      this.finishBuild(job.buildId, BuildState.FAILED, `${jobLabel(job)}: ${error}`);
    });
  }

  /** Stop every unfinished job of a build and end it in `to` (cancel, timeout). */
  endBuild(
    buildId: string,
    to: BuildState.CANCELLED | BuildState.TIMED_OUT,
    jobs: { state: StoppedState; reason: string; error: string },
    message: string,
  ): void {
    this.deps.live.atomically(() => {
      for (const job of this.deps.live.jobsOf(buildId)) {
        if (TERMINAL_JOB_STATES.has(job.state)) continue;
        this.stopJob(job, jobs.state, jobs.reason, jobs.error);
      }
      this.finishBuild(buildId, to, message);
    });
  }

  /** A build whose every job has ended, some not succeeded, fails naming them; no tag moves. */
  settleFailedBuild(buildId: string): void {
    const jobs = this.deps.live.jobsOf(buildId);
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

  /** The logger of a build's lines: they carry its id and request id. */
  buildLog(buildId: string): Logger {
    let log = this.buildLogs.get(buildId);
    if (!log) {
      const record = this.deps.live.build(buildId);
      log = this.deps.log.child({ buildId, requestId: record?.requestId || undefined });
      // Builds in flight only: a late report about an ended build gets a logger it does not keep.
      if (record && !TERMINAL_BUILD_STATES.has(record.state)) this.buildLogs.set(buildId, log);
    }
    return log;
  }
}
