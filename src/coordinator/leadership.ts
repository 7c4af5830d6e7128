/**
 * Which of several coordinators on one PostgreSQL database leads: it
 * places jobs, runs deadlines and stitches; the others stand by.
 *
 * - The leader holds a session-level advisory lock on a connection of its
 *   own. A leader that dies (kill -9, host gone, its session cut) loses the
 *   lock at once, and a standby polling for it takes over.
 * - The leader also renews a lease in the `leadership` row, by the
 *   database's clock. A leader that is alive but stuck (SIGSTOP, a long
 *   pause) keeps its lock, so a standby that finds the lease expired ends
 *   the stuck leader's lock session (pg_terminate_backend) and takes the
 *   lock. A leader that cannot renew within its lease stops acting on its
 *   own, before any standby may take over.
 * - Each new leader raises the row's epoch. The store checks the epoch in
 *   every commit of the leader (pg-build-store.ts `fence`), so a deposed
 *   leader that wakes up moves no job, takes no result and moves no tag.
 */
import pg from 'pg';
import { abortableSleep } from '../abortable-sleep.js';
import { BraidError, errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import { redactedUrl } from '../pg-url.js';

/** The advisory lock the leader holds ("braidldr"). */
export const LEADER_LOCK = 0x62726169646c6472n;

export interface LeadershipSettings {
  /** How often a standby tries for the lock and the leader renews its lease. */
  pollMs: number;
  /** How long a lease lasts without renewal. */
  leaseMs: number;
}

export const DEFAULT_LEADERSHIP: LeadershipSettings = { pollMs: 1000, leaseMs: 5000 };

/** The term of a leader: its epoch, and a signal aborted when it ends. */
export interface Term {
  epoch: bigint;
  /** Aborted when leadership is lost (or resigned): stop acting at once. */
  lost: AbortSignal;
}

export class Leadership {
  private client: pg.Client | undefined;
  private term: { epoch: bigint; controller: AbortController } | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  /** Local time (ms) of the last lease renewal the database confirmed. */
  private renewedAt = 0;
  /** The leader's address as last read from the store ('' before any). */
  leaderSeen = '';
  /** Why the last try for the lock could not reach the store; undefined once it could. */
  unreachable: string | undefined;

  constructor(
    private readonly url: string,
    /** The address agents and clients reach this coordinator at (named to standbys' callers). */
    private readonly address: string,
    private readonly log: Logger,
    private readonly settings: LeadershipSettings = DEFAULT_LEADERSHIP,
  ) {}

  /**
   * Wait until this coordinator leads, then return its term. Polls every
   * pollMs; `signal` ends the wait (the promise then rejects).
   */
  async campaign(signal: AbortSignal): Promise<Term> {
    for (;;) {
      if (signal.aborted) throw new BraidError('cancelled', 'stopped before leading');
      try {
        const term = await this.tryLead();
        if (this.unreachable !== undefined) {
          this.log.info({ store: redactedUrl(this.url) }, 'leader election: the store is back');
        }
        this.unreachable = undefined;
        if (term) return term;
      } catch (err) {
        // Said once per outage, not once per poll.
        if (this.unreachable === undefined) {
          this.log.warn(
            { store: redactedUrl(this.url), err: errorLine(err) },
            'leader election: the store is unreachable; trying again every poll',
          );
        }
        this.unreachable = errorLine(err);
        await this.dropClient();
      }
      await abortableSleep(this.settings.pollMs, signal);
    }
  }

  /** The leader's address as the store names it ('' when none has led yet). */
  async leader(): Promise<string> {
    const client = new pg.Client({ connectionString: this.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ leader: string }>(
        'SELECT leader FROM leadership WHERE id = 1',
      );
      return rows[0]?.leader ?? '';
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** Give up leading (a stopping coordinator): the lock goes with the connection. */
  async resign(): Promise<void> {
    this.endTerm('resigned');
    await this.dropClient();
  }

  private async tryLead(): Promise<Term | undefined> {
    const client = await this.connection();
    const { rows } = await client.query<{ locked: boolean }>(
      'SELECT pg_try_advisory_lock($1) AS locked',
      [LEADER_LOCK.toString()],
    );
    if (!rows[0]?.locked) {
      await this.endStuckLeader(client);
      return undefined;
    }
    const taken = await client.query<{ epoch: string }>(
      `UPDATE leadership
         SET epoch = epoch + 1, leader = $1,
             lease_until_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $2
       WHERE id = 1
       RETURNING epoch`,
      [this.address, this.settings.leaseMs],
    );
    const epoch = BigInt(taken.rows[0]?.epoch ?? '0');
    this.leaderSeen = this.address;
    this.renewedAt = Date.now();
    const controller = new AbortController();
    this.term = { epoch, controller };
    this.renewTimer = setInterval(() => void this.renew(), this.settings.pollMs);
    this.renewTimer.unref();
    this.log.info({ epoch: epoch.toString(), address: this.address }, 'leading the farm');
    return { epoch, lost: controller.signal };
  }

  /** A lease the holder let expire: end the holder's lock session so the lock is free. */
  private async endStuckLeader(client: pg.Client): Promise<void> {
    const { rows } = await client.query<{ expired: boolean; leader: string }>(
      `SELECT lease_until_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS expired, leader
         FROM leadership WHERE id = 1`,
    );
    this.leaderSeen = rows[0]?.leader ?? '';
    if (!rows[0]?.expired) return;
    const ended = await client.query<{ pid: number }>(
      `SELECT pid, pg_terminate_backend(pid) FROM pg_locks
        WHERE locktype = 'advisory' AND granted
          AND ((classid::bigint << 32) | objid::bigint) = $1::bigint`,
      [LEADER_LOCK.toString()],
    );
    if (ended.rows.length > 0) {
      this.log.warn(
        { leader: rows[0].leader, sessions: ended.rows.map((r) => r.pid) },
        'the leader let its lease expire: ended its lock session to take over',
      );
    }
  }

  private async renew(): Promise<void> {
    const term = this.term;
    if (!term) return;
    // Stop acting before a standby may take over: the lease counts on the database's clock.
    if (Date.now() - this.renewedAt > this.settings.leaseMs - this.settings.pollMs) {
      this.endTerm('its lease could not be renewed in time');
      return;
    }
    try {
      const client = await this.connection();
      const { rowCount } = await client.query(
        `UPDATE leadership
           SET lease_until_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $2
         WHERE id = 1 AND epoch = $1`,
        [term.epoch.toString(), this.settings.leaseMs],
      );
      if (rowCount === 1) this.renewedAt = Date.now();
      else this.endTerm('another coordinator took over');
    } catch (err) {
      this.endTerm(`its lock session failed (${errorLine(err)})`);
    }
  }

  private endTerm(why: string): void {
    const term = this.term;
    if (!term) return;
    this.term = undefined;
    clearInterval(this.renewTimer);
    this.log.warn({ epoch: term.epoch.toString(), why }, 'no longer leading the farm');
    term.controller.abort(new BraidError('unavailable', `lost the leadership: ${why}`));
    // The lock must not outlive the term: a new campaign starts on a new connection.
    void this.dropClient();
  }

  private async connection(): Promise<pg.Client> {
    if (this.client) return this.client;
    const client = new pg.Client({
      connectionString: this.url,
      application_name: 'braid leader election',
    });
    client.on('error', (err) => {
      if (this.client === client) this.client = undefined;
      this.endTerm(`its lock session failed (${err.message})`);
    });
    client.on('end', () => {
      if (this.client === client) this.client = undefined;
      this.endTerm('its lock session ended');
    });
    await client.connect();
    this.client = client;
    return client;
  }

  private async dropClient(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }
}
