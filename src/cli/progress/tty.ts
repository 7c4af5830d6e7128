/**
 * Live progress for people at a terminal: a header and one line per
 * platform (state, agent, native/qemu, elapsed, current step), redrawn in
 * place at most every `minIntervalMs`. When the stream ends the live view
 * gives way to the final one, printed once: the header, the per-platform
 * table and, for a pushed index, each tag on a line of its own (live lines
 * are cut to the terminal's width; the final view never is).
 */
import type { BuildEvent } from '../../gen/braid/v1/build_pb.js';
import { BuildState } from '../../gen/braid/v1/build_pb.js';
import { JobState } from '../../gen/braid/v1/common_pb.js';
import { parseReference } from '../../oci/reference.js';
import { formatDuration, printableLines, truncate } from './format.js';
import { buildStateName, isJobEnded, jobStateName, modeName } from './names.js';
import { platformRowsFromTracker, renderPlatformTable } from './platform-table.js';
import type { Clock, ProgressOutput, ProgressRenderer } from './renderer.js';
import { BuildTracker, type JobProgress } from './tracker.js';

/** Starts calling `tick` every `intervalMs`; returns the function that stops it. */
export type Ticker = (tick: () => void, intervalMs: number) => () => void;

export interface TtyRendererOptions {
  out: ProgressOutput;
  clock?: Clock;
  /** Drives redraws between events (elapsed times move); default an unref'd setInterval. */
  ticker?: Ticker;
  /** Least time between two redraws (default 100: at most 10 frames a second). */
  minIntervalMs?: number;
  tracker?: BuildTracker;
}

const CLEAR_LINE = '\x1b[2K';
const CLEAR_BELOW = '\x1b[J';
const up = (lines: number) => `\x1b[${lines}A\r`;

const intervalTicker: Ticker = (tick, intervalMs) => {
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
};

function firstLine(text: string): string {
  return printableLines(text).find((l) => l.trim() !== '') ?? '';
}

/** A tag as given, with the `:latest` the coordinator moved when it named none. */
function taggedName(tag: string): string {
  try {
    const ref = parseReference(tag, { defaultTag: false });
    return ref.tag === undefined && ref.digest === undefined ? `${tag}:latest` : tag;
  } catch {
    return tag;
  }
}

export class TtyRenderer implements ProgressRenderer {
  readonly tracker: BuildTracker;
  private readonly out: ProgressOutput;
  private readonly clock: Clock;
  private readonly minIntervalMs: number;
  private readonly startedAtMs: number;
  private readonly stopTicker: () => void;
  private lastDrawMs = Number.NEGATIVE_INFINITY;
  private drawnLines = 0;
  private dirty = false;
  private finished = false;
  /** A question shown under the live view (Ctrl-C's), until taken away. */
  private question: string | undefined;

  constructor(options: TtyRendererOptions) {
    this.out = options.out;
    this.clock = options.clock ?? Date.now;
    this.minIntervalMs = options.minIntervalMs ?? 100;
    this.tracker = options.tracker ?? new BuildTracker();
    this.startedAtMs = this.clock();
    this.stopTicker = (options.ticker ?? intervalTicker)(() => this.tick(), this.minIntervalMs);
  }

  event(event: BuildEvent): void {
    if (this.finished || !this.tracker.apply(event)) return;
    this.dirty = true;
    this.drawIfDue();
  }

  /** Called by the ticker: elapsed times move even when no event arrives. */
  tick(): void {
    if (this.finished) return;
    if (this.dirty || !this.tracker.ended) this.drawIfDue();
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.stopTicker();
    const lines = this.finalView();
    // The live view gives way to the final one: the same rows, once, nothing cut.
    let text = this.drawnLines > 0 ? `${up(this.drawnLines)}${CLEAR_BELOW}` : '';
    for (const line of lines) text += `${line}\n`;
    this.drawnLines = 0;
    if (text) this.out.write(text);
  }

  prompt(text: string | undefined): void {
    this.question = text;
    if (this.finished) {
      if (text !== undefined) this.out.write(`${text}\n`);
      return;
    }
    this.draw();
  }

  say(line: string): void {
    if (this.finished || this.drawnLines === 0) {
      this.out.write(`${line}\n`);
      return;
    }
    // Above the live view: clear it, print the line, draw it again below.
    this.draw(`${up(this.drawnLines)}${CLEAR_BELOW}${line}\n`, true);
  }

  private drawIfDue(): void {
    if (this.clock() - this.lastDrawMs >= this.minIntervalMs) this.draw();
  }

  /** One frame; `before` is written first, and `cleared` says it erased the last frame. */
  private draw(before = '', cleared = false): void {
    // A terminal that reports no size (0, as a fresh pty does) is taken as 80 wide.
    const width = Math.max(20, (this.out.columns || 80) - 1);
    const frame = this.question === undefined ? this.frame() : [...this.frame(), this.question];
    const lines = frame.map((line) => truncate(line, width));
    if (cleared) this.drawnLines = 0;
    let text = before + (this.drawnLines > 0 ? up(this.drawnLines) : '');
    for (const line of lines) text += `${CLEAR_LINE}${line}\n`;
    if (lines.length < this.drawnLines) text += CLEAR_BELOW;
    this.out.write(text);
    this.drawnLines = lines.length;
    this.lastDrawMs = this.clock();
    this.dirty = false;
  }

  private frame(): string[] {
    const now = this.clock();
    const jobs = this.tracker.jobs;
    const cells = jobs.map((job) => this.jobCells(job, now));
    const widths = [0, 1, 2, 3, 4].map((i) =>
      Math.max(0, ...cells.map((c) => (c[i] ?? '').length)),
    );
    const jobLines = cells.map((c) =>
      ` => ${c.map((cell, i) => (i < widths.length ? cell.padEnd(widths[i] ?? 0) : cell)).join('  ')}`.trimEnd(),
    );
    return [this.header(now, jobs), ...jobLines];
  }

  /** The header, the platform table and, once the index is pushed, one line per tag. */
  private finalView(): string[] {
    const tracker = this.tracker;
    if (tracker.jobs.length === 0 && tracker.state === BuildState.UNSPECIFIED) return [];
    const now = this.clock();
    const rows = platformRowsFromTracker(tracker, now);
    const table = rows.length > 0 ? renderPlatformTable(rows).trimEnd().split('\n') : [];
    const tags =
      tracker.state === BuildState.SUCCEEDED
        ? tracker.tags.map((tag) => `tagged ${taggedName(tag)}`)
        : [];
    return [this.header(now, tracker.jobs), ...table, ...tags];
  }

  private header(now: number, jobs: readonly JobProgress[]): string {
    const tracker = this.tracker;
    const since = tracker.createdAtMs ?? this.startedAtMs;
    const until = tracker.ended ? (tracker.finishedAtMs ?? now) : now;
    const elapsed = formatDuration(until - since);
    const id = tracker.buildId ? ` ${tracker.buildId}` : '';
    const done = jobs.filter((j) => j.state === JobState.SUCCEEDED).length;
    const count = jobs.length > 0 ? ` (${done}/${jobs.length} platforms done)` : '';
    if (tracker.ended) {
      // Why it ended is said once, after the view: the tags, or braid's error line.
      const state = buildStateName(tracker.state).replace(/-/g, ' ');
      return `[+] Build${id} ${state} in ${elapsed}${count}`;
    }
    if (tracker.state === BuildState.STITCHING) {
      return `[+] Stitching index${id} ${elapsed}${count}`;
    }
    return `[+] Building${id} ${elapsed}${count}`;
  }

  private jobCells(job: JobProgress, now: number): string[] {
    let elapsedMs = job.durationMs;
    if (elapsedMs === undefined && job.startedAtMs !== undefined && !isJobEnded(job.state)) {
      elapsedMs = Math.max(0, now - job.startedAtMs);
    }
    let detail = job.step;
    if (job.state === JobState.SUCCEEDED) detail = job.image?.digest ?? '';
    else if (job.state === JobState.FAILED || job.state === JobState.CANCELLED) {
      detail = firstLine(job.message);
    }
    return [
      job.platform,
      jobStateName(job.state),
      job.agent || '-',
      modeName(job.agent, job.emulated),
      elapsedMs === undefined ? '-' : formatDuration(elapsedMs),
      detail,
    ];
  }
}
