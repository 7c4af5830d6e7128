/**
 * Plain progress for CI logs: one event a line, prefixed with the platform
 * (or `[build]`), no escape sequences. Lines are stable; scripts may grep them:
 *
 *   [build] queued
 *   [linux/arm64] scheduled on agent a2 (native): least loaded
 *   [linux/arm64] assigned to agent a2 (native)
 *   [linux/arm64] #5 [2/4] RUN make
 *   [linux/s390x] assigned to agent a1 (qemu, attempt 2)
 *   [linux/arm64] succeeded sha256:... (12.3s)
 *   [linux/s390x] failed (8.1s)
 *   [build] stitching index
 *   [build] succeeded sha256:...
 *
 * A line says a thing once: a message that only repeats the line's own words
 * (`running: running`) is left out, and a platform's or a build's error is
 * not printed here at all: the failure report after the stream says it, once,
 * with the failing platform's last log lines.
 */
import type {
  BuildEvent,
  BuildStateChanged,
  JobStateChanged,
  LogLine,
  SchedulingDecision,
} from '../../gen/braid/v1/build_pb.js';
import { BuildState } from '../../gen/braid/v1/build_pb.js';
import { JobState } from '../../gen/braid/v1/common_pb.js';
import { formatDuration, printableLines } from './format.js';
import { buildStateName, jobStateName, modeName, platformName } from './names.js';
import type { ProgressOutput, ProgressRenderer } from './renderer.js';
import { BuildTracker } from './tracker.js';

const BUILD_PREFIX = '[build]';

/**
 * `text: message`, without what `text` already says: a message that is only
 * one of `said` is left out, and one that starts with `SAID: ` loses that start.
 */
function withMessage(text: string, message: string, ...said: string[]): string {
  let first = printableLines(message)
    .find((l) => l.trim() !== '')
    ?.trim();
  for (const words of said) {
    if (first?.toLowerCase() === words) first = '';
    else if (first?.toLowerCase().startsWith(`${words}: `)) first = first.slice(words.length + 2);
  }
  return first ? `${text}: ${first}` : text;
}

function spaced(name: string): string {
  return name.replace(/-/g, ' ');
}

export class PlainRenderer implements ProgressRenderer {
  readonly tracker: BuildTracker;
  private readonly out: ProgressOutput;
  /**
   * `assigned` lines held back by platform: the coordinator reports a job
   * assigned just before the decision that placed it, and a reader expects
   * `scheduled` first. Held for one event at most.
   */
  private readonly heldAssignments = new Map<string, string>();

  constructor(options: { out: ProgressOutput; tracker?: BuildTracker }) {
    this.out = options.out;
    this.tracker = options.tracker ?? new BuildTracker();
  }

  event(event: BuildEvent): void {
    if (!this.tracker.apply(event)) return;
    const body = event.body;
    if (body.case === 'jobState' && body.value.state === JobState.ASSIGNED) {
      const platform = this.platformOf(body.value);
      this.release();
      this.heldAssignments.set(platform, this.jobStateLine(body.value));
      return;
    }
    const lines = this.lines(event);
    if (body.case === 'decision') {
      const platform = platformName(body.value.platform);
      const held = this.heldAssignments.get(platform);
      this.heldAssignments.delete(platform);
      if (held !== undefined) lines.push(held);
    }
    this.release();
    for (const line of lines) this.out.write(`${line}\n`);
  }

  finish(): void {
    this.release();
  }

  prompt(text: string | undefined): void {
    if (text !== undefined) this.say(text);
  }

  say(line: string): void {
    this.release();
    this.out.write(`${line}\n`);
  }

  /** Prints the `assigned` lines held back, in the order they came. */
  private release(): void {
    for (const line of this.heldAssignments.values()) this.out.write(`${line}\n`);
    this.heldAssignments.clear();
  }

  private platformOf(change: JobStateChanged): string {
    return platformName(change.platform) || this.tracker.platformOfJob(change.jobId);
  }

  /** The lines one event prints, once applied to the tracker. */
  private lines(event: BuildEvent): string[] {
    switch (event.body.case) {
      case 'buildState':
        return [this.buildStateLine(event.body.value)];
      case 'jobState':
        return [this.jobStateLine(event.body.value)];
      case 'log':
        return this.logLines(event.body.value);
      case 'decision':
        return [this.decisionLine(event.body.value)];
      default:
        return [];
    }
  }

  private prefix(platform: string, jobId: string): string {
    const name = platform || this.tracker.platformOfJob(jobId);
    return name ? `[${name}]` : BUILD_PREFIX;
  }

  private buildStateLine(change: BuildStateChanged): string {
    const state = spaced(buildStateName(change.state));
    switch (change.state) {
      case BuildState.STITCHING:
        return withMessage(`${BUILD_PREFIX} stitching index`, change.message);
      case BuildState.SUCCEEDED: {
        const digest = change.index?.digest || this.tracker.index?.digest;
        return `${BUILD_PREFIX} succeeded${digest ? ` ${digest}` : ''}`;
      }
      case BuildState.FAILED:
      case BuildState.TIMED_OUT:
        // The failure report says why, once, after the stream.
        return `${BUILD_PREFIX} ${state}`;
      case BuildState.RUNNING:
        return withMessage(`${BUILD_PREFIX} ${state}`, change.message, state, 'building');
      default:
        return withMessage(`${BUILD_PREFIX} ${state}`, change.message, state, `build ${state}`);
    }
  }

  private jobStateLine(change: JobStateChanged): string {
    const platform = this.platformOf(change);
    const prefix = this.prefix(platform, change.jobId);
    // The tracker has applied this event: it knows the agent even when the event omits it.
    const job = this.tracker.job(platform);
    const agent = change.agent || job?.agent || '';
    const mode = modeName(agent, change.agent ? change.emulated : (job?.emulated ?? false));
    const attempt = change.attempt > 1 ? `attempt ${change.attempt}` : '';
    const how = `(${[mode, attempt].filter(Boolean).join(', ')})`;
    const took = change.durationMs > 0n ? ` (${formatDuration(Number(change.durationMs))})` : '';
    switch (change.state) {
      case JobState.QUEUED:
        return withMessage(
          `${prefix} queued${attempt ? ` (${attempt})` : ''}`,
          change.message,
          'queued',
        );
      case JobState.ASSIGNED:
        // The coordinator's `assigned to a1 (native)` says what the line says.
        return withMessage(
          `${prefix} assigned to agent ${agent} ${how}`,
          /^assigned to /i.test(change.message) ? '' : change.message,
          'assigned',
        );
      case JobState.RUNNING:
        return withMessage(`${prefix} running on agent ${agent} ${how}`, change.message, 'running');
      case JobState.SUCCEEDED: {
        const digest = change.image?.digest ? ` ${change.image.digest}` : '';
        return `${prefix} succeeded${digest}${took}`;
      }
      case JobState.FAILED: {
        // The failure report says why, once, with this platform's last log lines.
        const ms = job?.durationMs;
        return `${prefix} failed${took || (ms === undefined ? '' : ` (${formatDuration(ms)})`)}`;
      }
      default: {
        const state = spaced(jobStateName(change.state));
        return withMessage(`${prefix} ${state}`, change.message, state);
      }
    }
  }

  private logLines(line: LogLine): string[] {
    const prefix = this.prefix(platformName(line.platform), line.jobId);
    const lines = printableLines(line.text).map((text) => `${prefix} ${text}`.trimEnd());
    if (line.droppedBefore > 0) {
      const s = line.droppedBefore === 1 ? '' : 's';
      lines.unshift(`${prefix} [${line.droppedBefore} log line${s} dropped]`);
    }
    return lines;
  }

  private decisionLine(decision: SchedulingDecision): string {
    const platform = platformName(decision.platform);
    const prefix = this.prefix(platform, '');
    const mode = modeName(decision.agent, decision.emulated);
    // The reason starts with the platform the prefix already names.
    return withMessage(
      `${prefix} scheduled on agent ${decision.agent} (${mode})`,
      decision.reason,
      platform,
    );
  }
}
