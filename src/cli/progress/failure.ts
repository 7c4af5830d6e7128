/**
 * What a user reads when a build did not succeed, each thing once: per
 * platform at fault its agent and last log lines (a cancel shows none: the
 * user asked for it), a pointer to `braid logs ID` for the rest, and last
 * the headline, which names the build, how it ended, the platforms and the
 * error. A platform's error is in its block only when the headline does not
 * already carry it (several platforms failed).
 */
import { BuildState } from '../../gen/braid/v1/build_pb.js';
import { JobState } from '../../gen/braid/v1/common_pb.js';
import { BraidError, type ErrorCode } from '../../errors.js';
import { formatDuration, printableLines } from './format.js';
import { buildStateName, modeName } from './names.js';
import type { BuildTracker, JobProgress } from './tracker.js';

export interface FailureReport {
  readonly buildId: string;
  /** FAILED, CANCELLED or TIMED_OUT. */
  readonly state: BuildState;
  /** The platforms at fault: failed jobs, else (cancelled, timed out) the unfinished ones. */
  readonly platforms: readonly string[];
  /** One line: `build b1 failed on linux/arm64: exit code 2`. */
  readonly headline: string;
  /** Per platform at fault: agent and last log lines; '' when there is nothing more. */
  readonly details: string;
}

export interface FailureReportOptions {
  /** Log lines shown per platform (default 10). */
  lines?: number;
  /** Ends the log lines with `all log lines: braid logs ID` (not for `braid logs` itself). */
  pointToLogs?: boolean;
}

function firstLine(text: string): string {
  return (
    printableLines(text)
      .find((l) => l.trim() !== '')
      ?.trim() ?? ''
  );
}

function culprits(tracker: BuildTracker): JobProgress[] {
  const failed = tracker.jobs.filter((job) => job.state === JobState.FAILED);
  if (failed.length > 0 || tracker.state === BuildState.FAILED) return failed;
  return tracker.jobs.filter((job) => job.state !== JobState.SUCCEEDED);
}

/** `  last 2 log lines:` and the lines, indented; nothing when `count` is 0. */
function tailBlock(noun: string, tail: readonly string[], count: number): string[] {
  if (count === 0) return [];
  const shown = tail.slice(-count);
  if (shown.length === 0) return [`  no ${noun}s received`];
  const s = shown.length === 1 ? '' : 's';
  return [`  last ${shown.length} ${noun}${s}:`, ...shown.map((line) => `    ${line}`)];
}

/** `cancelled: cancelled by user` -> `cancelled by user`: the headline already names the state. */
function withoutState(reason: string, state: string): string {
  return reason.toLowerCase().startsWith(`${state}: `) ? reason.slice(state.length + 2) : reason;
}

function jobBlock(job: JobProgress, count: number, withError: boolean): string[] {
  const how = [modeName(job.agent, job.emulated), job.attempt > 1 ? `attempt ${job.attempt}` : '']
    .filter((part) => part && part !== '-')
    .join(', ');
  const where = job.agent ? ` on agent ${job.agent}${how ? ` (${how})` : ''}` : '';
  const took = job.durationMs !== undefined ? ` after ${formatDuration(job.durationMs)}` : '';
  const verb =
    job.state === JobState.FAILED
      ? 'failed'
      : `was ${job.state === JobState.CANCELLED ? 'cancelled' : 'unfinished'}`;
  const error = withError ? firstLine(job.message) : '';
  const lines = [`${job.platform} ${verb}${where}${took}${error ? `: ${error}` : ''}`];
  if (job.droppedLines > 0)
    lines.push(`  (${job.droppedLines} log lines were dropped by the agent)`);
  return [...lines, ...tailBlock('log line', job.tail, count)];
}

/** The report for an ended, unsuccessful build; undefined while it runs or once it succeeded. */
export function failureReport(
  tracker: BuildTracker,
  options: FailureReportOptions = {},
): FailureReport | undefined {
  if (!tracker.ended || tracker.state === BuildState.SUCCEEDED) return undefined;
  const count = Math.max(0, options.lines ?? 10);
  const jobs = culprits(tracker);
  const platforms = jobs.map((job) => job.platform);
  const state = buildStateName(tracker.state).replace(/-/g, ' ');
  const build = tracker.buildId ? `build ${tracker.buildId}` : 'build';
  const list = platforms.join(', ');
  const failed = tracker.state === BuildState.FAILED;
  const where = platforms.length === 0 ? '' : failed ? ` on ${list}` : ` with ${list} unfinished`;
  // One failed platform: its own error reads best; several: each block says its own.
  const several = failed && jobs.length > 1;
  let reason = '';
  if (failed && jobs.length === 1) {
    reason = firstLine(jobs[0]?.message ?? '') || firstLine(tracker.message);
  } else if (!several) {
    reason = withoutState(firstLine(tracker.message), state) || firstLine(jobs[0]?.message ?? '');
  }
  const headline = `${build} ${state}${where}${reason ? `: ${reason}` : ''}`;
  // A cancel was asked for: log tails would only bury the one line that matters.
  const cancelled = tracker.state === BuildState.CANCELLED;
  const blocks = cancelled ? [] : jobs.map((job) => jobBlock(job, count, several));
  if (!cancelled && jobs.length === 0 && tracker.buildTail.length > 0) {
    blocks.push(tailBlock('build log line', tracker.buildTail, count));
  }
  if (options.pointToLogs && count > 0 && blocks.length > 0 && tracker.buildId) {
    blocks.push([`all log lines: braid logs ${tracker.buildId}`]);
  }
  const details = blocks.flat().join('\n');
  return {
    buildId: tracker.buildId,
    state: tracker.state,
    platforms,
    headline,
    details: details ? `${details}\n` : '',
  };
}

const CODES: Partial<Record<BuildState, ErrorCode>> = {
  [BuildState.CANCELLED]: 'cancelled',
  [BuildState.TIMED_OUT]: 'deadline_exceeded',
};

/** A build that ended without success; its message is the report's headline (exit 1). */
export class BuildFailedError extends BraidError {
  readonly buildId: string;
  readonly state: BuildState;
  readonly platforms: readonly string[];

  constructor(report: FailureReport) {
    super(CODES[report.state] ?? 'failed_precondition', report.headline);
    this.buildId = report.buildId;
    this.state = report.state;
    this.platforms = report.platforms;
  }
}
