/**
 * Progress output for a build's WatchBuild stream, chosen as buildx's
 * `--progress auto|tty|plain|json`: `auto` is `tty` when the terminal the
 * progress goes to (stderr) is a TTY, else `plain`.
 */
import type { BuildEvent } from '../../gen/braid/v1/build_pb.js';
import { UsageError } from '../../errors.js';
import { JsonRenderer } from './json.js';
import { PlainRenderer } from './plain.js';
import type { Clock, ProgressOutput, ProgressRenderer } from './renderer.js';
import type { BuildTracker } from './tracker.js';
import { TtyRenderer, type Ticker } from './tty.js';

export type ProgressMode = 'tty' | 'plain' | 'json';
export const PROGRESS_CHOICES = ['auto', 'tty', 'plain', 'json'] as const;
export type ProgressChoice = (typeof PROGRESS_CHOICES)[number];

/** `auto` -> `tty` on a terminal (and not TERM=dumb), else `plain`. */
export function resolveProgressMode(
  choice: string,
  terminal: { isTTY?: boolean },
  env: { TERM?: string | undefined } = {},
): ProgressMode {
  switch (choice) {
    case 'tty':
    case 'plain':
    case 'json':
      return choice;
    case 'auto':
      return terminal.isTTY === true && env.TERM !== 'dumb' ? 'tty' : 'plain';
    default:
      throw new UsageError(
        `--progress "${choice}": expected one of ${PROGRESS_CHOICES.join(', ')}`,
      );
  }
}

export interface ProgressRendererOptions {
  out: ProgressOutput;
  /** Shared state, e.g. seeded from GetBuild; a fresh tracker otherwise. */
  tracker?: BuildTracker;
  /** tty only. */
  clock?: Clock;
  /** tty only. */
  ticker?: Ticker;
  /** tty only: least time between redraws (default 100 ms). */
  minIntervalMs?: number;
}

export function createProgressRenderer(
  mode: ProgressMode,
  options: ProgressRendererOptions,
): ProgressRenderer {
  switch (mode) {
    case 'tty':
      return new TtyRenderer(options);
    case 'json':
      return new JsonRenderer(options);
    case 'plain':
      return new PlainRenderer(options);
  }
}

/**
 * Feeds a WatchBuild stream to a renderer until the stream ends, then
 * finishes it (also when the stream fails, so a TTY is left tidy).
 */
export async function renderBuildEvents(
  responses: AsyncIterable<{ event?: BuildEvent | undefined }>,
  renderer: ProgressRenderer,
): Promise<BuildTracker> {
  try {
    for await (const { event } of responses) if (event) renderer.event(event);
  } finally {
    renderer.finish();
  }
  return renderer.tracker;
}

export { failureReport, BuildFailedError, type FailureReport } from './failure.js';
export { eventJson, JsonRenderer, type JsonEvent } from './json.js';
export { PlainRenderer } from './plain.js';
export {
  platformRowsFromBuild,
  platformRowsFromTracker,
  renderPlatformTable,
} from './platform-table.js';
export type { Clock, ProgressOutput, ProgressRenderer } from './renderer.js';
export { BuildTracker, type JobProgress } from './tracker.js';
export { TtyRenderer, type Ticker, type TtyRendererOptions } from './tty.js';
