/**
 * PostgreSQL notifications for a coordinator (LISTEN/NOTIFY) on one
 * connection of their own, which is kept: when it fails (the database
 * restarted, the network cut) it is opened again with capped, jittered
 * backoff. Notifications sent while it was down are lost, so every
 * subscriber is also told when the connection is back, and rereads what it
 * follows then.
 */
import pg from 'pg';
import { abortableSleep } from '../abortable-sleep.js';
import { errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import { backoffDelayMs, type RetryPolicy } from '../oci/retry.js';
import { redactedUrl } from '../pg-url.js';
import { CHANNELS, type Channel } from './pg-channels.js';

export { CHANNELS, type Channel };

export interface Subscriber {
  /** A notification on the channel. */
  notified(payload: string): void;
  /** The connection is (again) listening: notifications may have been missed. */
  resumed(): void;
}

const RECONNECT: RetryPolicy = { maxAttempts: Infinity, baseDelayMs: 250, maxDelayMs: 5_000 };

export class PgListener {
  private readonly subscribers = new Map<Channel, Set<Subscriber>>();
  private readonly closing = new AbortController();
  private client: pg.Client | undefined;
  private running: Promise<void> | undefined;
  private listening = false;

  constructor(
    private readonly url: string,
    private readonly log: Pick<Logger, 'warn' | 'info'>,
    private readonly random: () => number = Math.random,
  ) {}

  /** Whether notifications are being received now. */
  get connected(): boolean {
    return this.listening;
  }

  /** Follow `channel` until the returned function is called. */
  subscribe(channel: Channel, subscriber: Subscriber): () => void {
    let set = this.subscribers.get(channel);
    if (!set) {
      set = new Set();
      this.subscribers.set(channel, set);
      // A channel first followed while connected is listened to now; otherwise on connect.
      if (this.client && this.listening) {
        this.client.query(`LISTEN ${channel}`).catch(() => this.client?.end());
      }
    }
    set.add(subscriber);
    this.running ??= this.keepConnected();
    return () => set.delete(subscriber);
  }

  async close(): Promise<void> {
    this.closing.abort();
    await this.client?.end().catch(() => undefined);
    await this.running;
  }

  private async keepConnected(): Promise<void> {
    let failures = 0;
    while (!this.closing.signal.aborted) {
      const ended = await this.connectOnce().then(
        () => undefined,
        (err: unknown) => err,
      );
      if (this.closing.signal.aborted) return;
      failures = ended === undefined ? 0 : failures + 1;
      this.log.warn(
        { store: redactedUrl(this.url), err: ended ? errorLine(ended) : 'connection ended' },
        'store notifications: connection lost; reconnecting',
      );
      await abortableSleep(
        backoffDelayMs(RECONNECT, Math.max(1, failures), this.random),
        this.closing.signal,
      );
    }
  }

  /** One connection's life: resolves when it ends after listening, rejects when it never did. */
  private async connectOnce(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.url,
      application_name: 'braid notifications',
    });
    const ended = new Promise<void>((resolve) => {
      client.on('end', () => resolve());
      client.on('error', () => void client.end().catch(() => undefined));
    });
    client.on('notification', (message) => {
      for (const subscriber of this.subscribers.get(message.channel as Channel) ?? []) {
        subscriber.notified(message.payload ?? '');
      }
    });
    this.client = client;
    try {
      await client.connect();
      for (const channel of this.subscribers.keys()) await client.query(`LISTEN ${channel}`);
    } catch (err) {
      this.client = undefined;
      await client.end().catch(() => undefined);
      throw err;
    }
    if (this.closing.signal.aborted) {
      await client.end().catch(() => undefined);
      return;
    }
    this.listening = true;
    for (const set of this.subscribers.values()) for (const s of set) s.resumed();
    await ended;
    this.listening = false;
    if (this.client === client) this.client = undefined;
  }
}

/** One watcher's interest in a build: notifications since its last wait are not lost. */
export interface Following {
  /** Until events were stored since the last wait (maybe already), `ms` pass, or `signal` aborts. */
  wait(ms: number, signal: AbortSignal): Promise<void>;
  close(): void;
}

/**
 * Wakes a standby's watchers when the leader stores events of the build
 * they follow (or when notifications resume, as some may have been
 * missed); otherwise a watcher rereads after its timeout anyway.
 */
export class BuildEventWakeups {
  private readonly followers = new Map<string, Set<Follower>>();
  private readonly unsubscribe: () => void;

  constructor(listener: PgListener) {
    this.unsubscribe = listener.subscribe(CHANNELS.buildEvents, {
      notified: (buildId) => this.followers.get(buildId)?.forEach((f) => f.wake()),
      resumed: () => this.followers.forEach((set) => set.forEach((f) => f.wake())),
    });
  }

  follow(buildId: string): Following {
    const follower = new Follower(() => {
      const set = this.followers.get(buildId);
      set?.delete(follower);
      if (set?.size === 0) this.followers.delete(buildId);
    });
    let set = this.followers.get(buildId);
    if (!set) this.followers.set(buildId, (set = new Set()));
    set.add(follower);
    return follower;
  }

  close(): void {
    this.unsubscribe();
  }
}

class Follower implements Following {
  private pending = false;
  private resolve: (() => void) | undefined;

  constructor(readonly close: () => void) {}

  wake(): void {
    this.pending = true;
    this.resolve?.();
  }

  async wait(ms: number, signal: AbortSignal): Promise<void> {
    if (!this.pending) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          signal.removeEventListener('abort', done);
          this.resolve = undefined;
          resolve();
        };
        const timer = setTimeout(done, ms);
        signal.addEventListener('abort', done, { once: true });
        this.resolve = done;
        if (signal.aborted) done();
      });
    }
    this.pending = false;
  }
}
