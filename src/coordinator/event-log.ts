/**
 * The coordinator's event log: a bounded window of sequenced events that
 * readers replay from any sequence and then follow live.
 */
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { EventSchema, Severity, type Event, type EventKind } from '../gen/braid/v1/system_pb.js';

export interface EventInput {
  kind: EventKind;
  message: string;
  /** Default: info. */
  severity?: Severity;
  buildId?: string;
  platform?: string;
  agent?: string;
}

/**
 * How grave a build's move to a state (`failed`, as buildStateName names it)
 * is: a build that failed or timed out is an error, a cancelled one a
 * warning (it delivered nothing), any other move is info.
 */
const BUILD_STATE_SEVERITY: ReadonlyMap<string, Severity> = new Map([
  ['failed', Severity.ERROR],
  ['timed_out', Severity.ERROR],
  ['cancelled', Severity.WARNING],
]);

export function buildStateSeverity(state: string): Severity {
  return BUILD_STATE_SEVERITY.get(state) ?? Severity.INFO;
}

export interface EventLogOptions {
  /** Events kept for replay; older ones are dropped. */
  retained: number;
  clock?: () => Date;
}

export class EventLog {
  private readonly events: Event[] = [];
  private nextSequence = 1n;
  private readonly waiters = new Set<() => void>();
  private readonly retained: number;
  private readonly clock: () => Date;

  constructor(options: EventLogOptions) {
    this.retained = options.retained;
    this.clock = options.clock ?? (() => new Date());
  }

  append(input: EventInput): Event {
    const event = create(EventSchema, {
      sequence: this.nextSequence++,
      time: timestampFromDate(this.clock()),
      kind: input.kind,
      severity: input.severity ?? Severity.INFO,
      message: input.message,
      buildId: input.buildId ?? '',
      platform: input.platform ?? '',
      agent: input.agent ?? '',
    });
    this.events.push(event);
    if (this.events.length > this.retained)
      this.events.splice(0, this.events.length - this.retained);
    for (const wake of this.waiters) wake();
    this.waiters.clear();
    return event;
  }

  /** The last sequence number handed out (0 before the first event). */
  get lastSequence(): bigint {
    return this.nextSequence - 1n;
  }

  /** Retained events with a sequence greater than `after`. */
  since(after: bigint): Event[] {
    const first = this.events[0];
    if (!first) return [];
    const start = Number(after - first.sequence + 1n);
    return this.events.slice(Math.max(0, start));
  }

  /**
   * Replay from `after`, then (with `follow`) wait for new events until
   * `signal` aborts. On abort it delivers what was already appended (so a
   * follower sees the stop event) and ends quietly.
   */
  async *read(after: bigint, follow: boolean, signal: AbortSignal): AsyncGenerator<Event> {
    let cursor = after;
    for (;;) {
      for (const event of this.since(cursor)) {
        cursor = event.sequence;
        yield event;
      }
      if (!follow || signal.aborted) return;
      await new Promise<void>((resolve) => {
        const wake = () => {
          signal.removeEventListener('abort', wake);
          this.waiters.delete(wake);
          resolve();
        };
        this.waiters.add(wake);
        signal.addEventListener('abort', wake, { once: true });
      });
    }
  }
}
