/**
 * Builds as the store holds them, for a coordinator that does not lead
 * (a standby on a shared PostgreSQL store): GetBuild, ListBuilds and
 * WatchBuild answered from the store, a followed build reread for new
 * events when the leader notifies that it stored some (PostgreSQL
 * LISTEN/NOTIFY), or polled, until its final state is stored. The leader answers the same
 * calls from memory (orchestrator.ts); both implement BuildReads.
 */
import type { Build, BuildEvent, BuildState } from '../gen/braid/v1/build_pb.js';
import { abortableSleep } from '../abortable-sleep.js';
import { BraidError } from '../errors.js';
import { buildToProto, type BuildStore } from './store.js';
import type { Following } from './pg-notify.js';
import { TERMINAL_BUILD_STATES } from './transitions.js';

/** The read side of the build API. */
export interface BuildReads {
  getBuild(id: string): Promise<Build>;
  listBuilds(limit: number, states: readonly BuildState[]): Promise<Build[]>;
  watch(
    id: string,
    after: bigint,
    follow: boolean,
    signal: AbortSignal,
  ): AsyncGenerator<BuildEvent>;
}

/** Events read per store query while a watcher catches up. */
const PAGE = 500;

/** Wakes a watcher when events of its build are stored (pg-notify.ts BuildEventWakeups). */
export interface EventWakeups {
  follow(buildId: string): Following;
}

export class StoredBuilds implements BuildReads {
  constructor(
    private readonly store: BuildStore,
    options: {
      /**
       * How often a followed build is reread for new events: 250 ms
       * polling alone; 5 s as a fallback when `wakeups` are sent.
       */
      pollMs?: number;
      wakeups?: EventWakeups;
    } = {},
  ) {
    this.wakeups = options.wakeups;
    this.pollMs = options.pollMs ?? (options.wakeups ? 5000 : 250);
  }

  private readonly wakeups: EventWakeups | undefined;
  private readonly pollMs: number;

  async getBuild(id: string): Promise<Build> {
    const record = await this.store.getBuild(id);
    if (!record) throw new BraidError('not_found', `no build "${id}"`);
    return buildToProto(record, await this.store.jobsOf(id));
  }

  async listBuilds(limit: number, states: readonly BuildState[]): Promise<Build[]> {
    const records = await this.store.listBuilds(limit, states);
    return Promise.all(
      records.map(async (record) => buildToProto(record, await this.store.jobsOf(record.id))),
    );
  }

  async *watch(
    id: string,
    after: bigint,
    follow: boolean,
    signal: AbortSignal,
  ): AsyncGenerator<BuildEvent> {
    if (!(await this.store.getBuild(id))) throw new BraidError('not_found', `no build "${id}"`);
    // Followed before the first read: events stored from here on wake the wait below.
    const following = follow ? this.wakeups?.follow(id) : undefined;
    try {
      let cursor = after;
      for (;;) {
        const events = await this.store.eventsAfter(id, cursor, PAGE);
        for (const event of events) {
          cursor = event.sequence;
          yield event;
        }
        if (events.length === PAGE) continue;
        // A final state is stored with its event: once it is read, nothing follows it.
        const state = (await this.store.getBuild(id))?.state;
        if (!follow || state === undefined || TERMINAL_BUILD_STATES.has(state)) {
          if ((await this.store.eventsAfter(id, cursor, 1)).length === 0) return;
          continue;
        }
        await (following
          ? following.wait(this.pollMs, signal)
          : abortableSleep(this.pollMs, signal));
        if (signal.aborted) return;
      }
    } finally {
      following?.close();
    }
  }
}
