/**
 * What a client knows about a build from its event stream: the build's state
 * and, per platform, the job's agent, mode, state, current step, timing,
 * result and a bounded tail of its log. Every renderer reads this; the
 * summary table and the failure report are made from it.
 */
import { timestampMs } from '@bufbuild/protobuf/wkt';
import {
  BuildState,
  LogSource,
  type Build,
  type BuildEvent,
  type BuildStateChanged,
  type JobStateChanged,
  type LogLine,
  type SchedulingDecision,
} from '../../gen/braid/v1/build_pb.js';
import { JobState, type ImageDescriptor } from '../../gen/braid/v1/common_pb.js';
import { printableLines } from './format.js';
import { isBuildEnded, isJobEnded, jobKey, platformName } from './names.js';

/** One platform's job as last reported. */
export interface JobProgress {
  /** `linux/arm64`: the key jobs are kept by (a retried job keeps its row). */
  readonly platform: string;
  jobId: string;
  state: JobState;
  /** Empty until the job is scheduled. */
  agent: string;
  emulated: boolean;
  attempt: number;
  /** The step running now: the latest build step header or agent activity. */
  step: string;
  /** The latest job state message (the error, for a failed job). */
  message: string;
  /** When the current attempt was assigned, from the event's time. */
  startedAtMs: number | undefined;
  finishedAtMs: number | undefined;
  /** As reported by the coordinator when the job ended, else measured from events. */
  durationMs: number | undefined;
  /** The pushed image, once the job succeeded. */
  image: ImageDescriptor | undefined;
  /** The last log lines of this platform, oldest first. */
  readonly tail: string[];
  /** Lines agents reported dropping under backpressure. */
  droppedLines: number;
}

export interface TrackerOptions {
  /** Log lines kept per platform for failure reports (default 100). */
  tailLines?: number;
}

// A step header in BuildKit's plain output: `#5 [2/4] RUN make`, not `#5 0.312 output`
// nor `#5 DONE 0.4s`.
const STEP_HEADER = /^#\d+ (?!\d+\.\d+ |DONE\b|CACHED\b|ERROR\b|CANCELED\b|sha256:|extracting\b)/;

function eventTimeMs(event: BuildEvent): number | undefined {
  return event.time ? timestampMs(event.time) : undefined;
}

export class BuildTracker {
  readonly buildId: string;
  state: BuildState = BuildState.UNSPECIFIED;
  /** The latest build state message (why it failed, was cancelled, ...). */
  message = '';
  /** The pushed index, once the build succeeded. */
  index: ImageDescriptor | undefined;
  /** Where the index goes, as submitted (known once seeded from the build). */
  tags: readonly string[] = [];
  createdAtMs: number | undefined;
  finishedAtMs: number | undefined;
  /** The highest sequence applied; resume a watch after it. */
  lastSequence = 0n;
  /** Build-wide log lines (coordinator, stitching), oldest first. */
  readonly buildTail: string[] = [];
  private readonly jobsByPlatform = new Map<string, JobProgress>();
  private readonly platformsByJobId = new Map<string, string>();
  private readonly tailLines: number;

  constructor(buildId = '', options: TrackerOptions = {}) {
    this.buildId = buildId;
    this.tailLines = Math.max(1, options.tailLines ?? 100);
  }

  /** Jobs in the order their platforms first appeared. */
  get jobs(): readonly JobProgress[] {
    return [...this.jobsByPlatform.values()];
  }

  job(platform: string): JobProgress | undefined {
    return this.jobsByPlatform.get(platform);
  }

  /** The platform of a job id seen so far ('' when unknown). */
  platformOfJob(jobId: string): string {
    return this.platformsByJobId.get(jobId) ?? '';
  }

  get ended(): boolean {
    return isBuildEnded(this.state);
  }

  /** Seeds the tracker from a GetBuild answer (e.g. before a watch resumed with --after). */
  applyBuild(build: Build): void {
    this.state = build.state;
    this.message = build.error;
    this.index = build.index;
    if (build.spec) this.tags = [...build.spec.tags];
    this.createdAtMs = build.createdAt ? timestampMs(build.createdAt) : this.createdAtMs;
    this.finishedAtMs = build.finishedAt ? timestampMs(build.finishedAt) : this.finishedAtMs;
    for (const job of build.jobs) {
      const entry = this.entry(jobKey(job.platform, job.role), job.id);
      entry.state = job.state;
      entry.agent = job.agent;
      entry.emulated = job.emulated;
      entry.attempt = job.attempt;
      entry.step = job.currentStep || entry.step;
      entry.message = job.error;
      entry.startedAtMs = job.startedAt ? timestampMs(job.startedAt) : undefined;
      entry.finishedAtMs = job.finishedAt ? timestampMs(job.finishedAt) : undefined;
      entry.durationMs = job.durationMs > 0n ? Number(job.durationMs) : undefined;
      entry.image = job.image;
    }
  }

  /**
   * Applies one event. Returns false for an event at or before the last
   * sequence applied (a replay after reconnecting), which callers skip.
   */
  apply(event: BuildEvent): boolean {
    if (event.sequence !== 0n && event.sequence <= this.lastSequence) return false;
    if (event.sequence > this.lastSequence) this.lastSequence = event.sequence;
    const timeMs = eventTimeMs(event);
    if (this.createdAtMs === undefined) this.createdAtMs = timeMs;
    switch (event.body.case) {
      case 'buildState':
        this.applyBuildState(event.body.value, timeMs);
        break;
      case 'jobState':
        this.applyJobState(event.body.value, timeMs);
        break;
      case 'log':
        this.applyLog(event.body.value);
        break;
      case 'decision':
        this.applyDecision(event.body.value);
        break;
      default:
        break;
    }
    return true;
  }

  private applyBuildState(change: BuildStateChanged, timeMs: number | undefined): void {
    this.state = change.state;
    this.message = change.message;
    if (change.index) this.index = change.index;
    if (isBuildEnded(change.state)) this.finishedAtMs = timeMs;
  }

  private applyJobState(change: JobStateChanged, timeMs: number | undefined): void {
    const job = this.entry(jobKey(change.platform, change.role), change.jobId);
    if (change.attempt > job.attempt && job.attempt > 0) {
      // A retry starts its clock, step and result afresh; its log tail continues.
      job.step = '';
      job.startedAtMs = undefined;
      job.finishedAtMs = undefined;
      job.durationMs = undefined;
      job.image = undefined;
    }
    if (change.jobId) job.jobId = change.jobId;
    if (change.attempt > 0) job.attempt = change.attempt;
    job.state = change.state;
    if (change.state === JobState.QUEUED && !change.agent) {
      // Re-queued (its agent left): no agent until the scheduler picks one again.
      job.agent = '';
      job.emulated = false;
    } else if (change.agent) {
      job.agent = change.agent;
      job.emulated = change.emulated;
    }
    job.message = change.message;
    if (change.image) job.image = change.image;
    const started = change.state === JobState.ASSIGNED || change.state === JobState.RUNNING;
    if (started && job.startedAtMs === undefined) job.startedAtMs = timeMs;
    if (isJobEnded(change.state)) {
      job.finishedAtMs = timeMs;
      if (change.durationMs > 0n) job.durationMs = Number(change.durationMs);
      else if (job.startedAtMs !== undefined && timeMs !== undefined) {
        job.durationMs = Math.max(0, timeMs - job.startedAtMs);
      }
    }
  }

  private applyLog(line: LogLine): void {
    // A job seen before knows its row (a reproducibility check has its own).
    const platform = this.platformOfJob(line.jobId) || platformName(line.platform);
    if (!platform) {
      this.keep(this.buildTail, printableLines(line.text));
      return;
    }
    const job = this.entry(platform, line.jobId);
    job.droppedLines += line.droppedBefore;
    const lines = printableLines(line.text);
    this.keep(job.tail, lines);
    if (line.source === LogSource.AGENT) {
      const last = lines.filter((l) => l.trim() !== '').pop();
      if (last) job.step = last.trim();
    } else if (line.source !== LogSource.COORDINATOR) {
      const header = lines.filter((l) => STEP_HEADER.test(l) || !l.startsWith('#')).pop();
      if (header && header.trim() !== '') job.step = header.trim();
    }
  }

  private applyDecision(decision: SchedulingDecision): void {
    const job = this.entry(jobKey(decision.platform, decision.role), '');
    job.agent = decision.agent;
    job.emulated = decision.emulated;
  }

  private keep(tail: string[], lines: readonly string[]): void {
    tail.push(...lines);
    if (tail.length > this.tailLines) tail.splice(0, tail.length - this.tailLines);
  }

  private entry(platform: string, jobId: string): JobProgress {
    const key = platform || this.platformOfJob(jobId) || jobId || 'unknown';
    if (jobId) this.platformsByJobId.set(jobId, key);
    let job = this.jobsByPlatform.get(key);
    if (!job) {
      job = {
        platform: key,
        jobId,
        state: JobState.QUEUED,
        agent: '',
        emulated: false,
        attempt: 0,
        step: '',
        message: '',
        startedAtMs: undefined,
        finishedAtMs: undefined,
        durationMs: undefined,
        image: undefined,
        tail: [],
        droppedLines: 0,
      };
      this.jobsByPlatform.set(key, job);
    }
    return job;
  }
}
