/** What every progress renderer is: fed a build's events in order, finished once. */
import type { BuildEvent } from '../../gen/braid/v1/build_pb.js';
import type { BuildTracker } from './tracker.js';

/** Where progress goes: process.stderr or stdout, or a capture in tests. */
export interface ProgressOutput {
  write(text: string): unknown;
  /** Terminal width; live lines are cut to it so they never wrap. */
  columns?: number;
}

/** Milliseconds since the epoch, like Date.now. */
export type Clock = () => number;

export interface ProgressRenderer {
  /** The state built from the events so far (summary, failure report, metadata). */
  readonly tracker: BuildTracker;
  /** Renders one event; events at or before the last sequence seen are skipped. */
  event(event: BuildEvent): void;
  /**
   * The stream ended: on a TTY the live view gives way to the final one
   * (header, table, tags), printed once. Idempotent.
   */
  finish(): void;
  /** A question under the live view until replaced; undefined takes it away (json: nothing). */
  prompt(text: string | undefined): void;
  /** One line of braid's own that stays, above any live view (json: nothing). */
  say(line: string): void;
}
