/**
 * A build's event log as the orchestrator writes it: append an event (the
 * live builds number it) and, once it is stored, wake the WatchBuild
 * streams of that build, which read the log from the store.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { BuildEventSchema, LogSource, type BuildEvent } from '../gen/braid/v1/build_pb.js';
import { BraidError } from '../errors.js';
import type { LiveBuilds } from './live-builds.js';
import type { BuildStore } from './store.js';

export type EventBody = MessageInitShape<typeof BuildEventSchema>['body'];

/** Events read per store query while a watcher catches up. */
const WATCH_PAGE = 500;

export class BuildEvents {
  /** Wakes WatchBuild streams of a build. */
  private readonly watchers = new Map<string, Set<() => void>>();

  constructor(
    private readonly live: LiveBuilds,
    private readonly store: BuildStore,
    private readonly clock: () => Date,
  ) {}

  append(buildId: string, body: EventBody): void {
    if (!this.live.appendEvent(buildId, body, this.clock())) return;
    if (!this.watchers.has(buildId)) return;
    // The watchers read the store: they are woken once the event is in it.
    this.live.afterCommit(() => {
      const set = this.watchers.get(buildId);
      if (set) for (const wake of [...set]) wake();
    });
  }

  /** A line of the coordinator's own in the build's log (on its own, stored with the next commit). */
  log(buildId: string, text: string): void {
    this.live.atomically(
      () => this.append(buildId, { case: 'log', value: { source: LogSource.COORDINATOR, text } }),
      { defer: true },
    );
  }

  /** Events of a build after `after`; with `follow`, until the build ends. */
  async *watch(
    id: string,
    after: bigint,
    follow: boolean,
    signal: AbortSignal,
  ): AsyncGenerator<BuildEvent> {
    if (!this.live.build(id) && !(await this.store.getBuild(id)))
      throw new BraidError('not_found', `no build "${id}"`);
    let cursor = after;
    for (;;) {
      // Register before reading, so an event appended in between still wakes us.
      let wake!: () => void;
      const woken = new Promise<void>((resolve) => (wake = resolve));
      const set = this.watchers.get(id) ?? new Set();
      set.add(wake);
      this.watchers.set(id, set);
      try {
        const events = await this.store.eventsAfter(id, cursor, WATCH_PAGE);
        for (const event of events) {
          cursor = event.sequence;
          yield event;
        }
        if (events.length === WATCH_PAGE) continue;
        // A build leaves memory once its final state and event are stored.
        const ended = this.live.build(id) === undefined;
        if (!follow || ended) {
          if ((await this.store.eventsAfter(id, cursor, 1)).length === 0) return;
          continue;
        }
        if (signal.aborted) return;
        await new Promise<void>((resolve) => {
          const onAbort = () => resolve();
          signal.addEventListener('abort', onAbort, { once: true });
          void woken.then(() => {
            signal.removeEventListener('abort', onAbort);
            resolve();
          });
        });
        if (signal.aborted) return;
      } finally {
        set.delete(wake);
        if (set.size === 0) this.watchers.delete(id);
      }
    }
  }
}
