/**
 * Plain progress for CI logs: one event a line, prefixed with the platform
 * (or `[build]`), no escape sequences. Lines are stable; scripts may grep them:
 *
 *   [build] queued
 *   [linux/arm64] scheduled on agent a2 (native)
 *   [linux/arm64] assigned to agent a2 (native)
 *   [linux/arm64] #5 [2/4] RUN make
 *   [linux/s390x] assigned to agent a1 (qemu, attempt 2)
 *   [linux/arm64] succeeded sha256:... (12.3s)
 *   [linux/s390x] failed: exit code 2
 *   [build] stitching index
 *   [build] succeeded sha256:...
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

function withMessage(text: string, message: string): string {
  const first = printableLines(message).find((l) => l.trim() !== '');
  return first ? `${text}: ${first.trim()}` : text;
}

function spaced(name: string): string {
  return name.replace(/-/g, ' ');
}

export class PlainRenderer implements ProgressRenderer {
  readonly tracker: BuildTracker;
  private readonly out: ProgressOutput;

  constructor(options: { out: ProgressOutput; tracker?: BuildTracker }) {
    this.out = options.out;
    this.tracker = options.tracker ?? new BuildTracker();
  }

  event(event: BuildEvent): void {
    if (!this.tracker.apply(event)) return;
    for (const line of this.lines(event)) this.out.write(`${line}\n`);
  }

  finish(): void {}

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
    switch (change.state) {
      case BuildState.STITCHING:
        return withMessage(`${BUILD_PREFIX} stitching index`, change.message);
      case BuildState.SUCCEEDED: {
        const digest = change.index?.digest || this.tracker.index?.digest;
        return `${BUILD_PREFIX} succeeded${digest ? ` ${digest}` : ''}`;
      }
      default:
        return withMessage(
          `${BUILD_PREFIX} ${spaced(buildStateName(change.state))}`,
          change.message,
        );
    }
  }

  private jobStateLine(change: JobStateChanged): string {
    const platform = platformName(change.platform) || this.tracker.platformOfJob(change.jobId);
    const prefix = this.prefix(platform, change.jobId);
    // The tracker has applied this event: it knows the agent even when the event omits it.
    const job = this.tracker.job(platform);
    const agent = change.agent || job?.agent || '';
    const mode = modeName(agent, change.agent ? change.emulated : (job?.emulated ?? false));
    const attempt = change.attempt > 1 ? `attempt ${change.attempt}` : '';
    const how = `(${[mode, attempt].filter(Boolean).join(', ')})`;
    switch (change.state) {
      case JobState.QUEUED:
        return withMessage(`${prefix} queued${attempt ? ` (${attempt})` : ''}`, change.message);
      case JobState.ASSIGNED:
        return withMessage(`${prefix} assigned to agent ${agent} ${how}`, change.message);
      case JobState.RUNNING:
        return withMessage(`${prefix} running on agent ${agent} ${how}`, change.message);
      case JobState.SUCCEEDED: {
        const digest = change.image?.digest ? ` ${change.image.digest}` : '';
        const took =
          change.durationMs > 0n ? ` (${formatDuration(Number(change.durationMs))})` : '';
        return `${prefix} succeeded${digest}${took}`;
      }
      default:
        return withMessage(`${prefix} ${spaced(jobStateName(change.state))}`, change.message);
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
    const prefix = this.prefix(platformName(decision.platform), '');
    const mode = modeName(decision.agent, decision.emulated);
    return withMessage(`${prefix} scheduled on agent ${decision.agent} (${mode})`, decision.reason);
  }
}
