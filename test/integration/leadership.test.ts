/**
 * Leader election on a real PostgreSQL: exactly one of several contenders
 * leads; a leader whose session dies is replaced at the next poll; a leader
 * that stops renewing (a paused process) is taken over from once its lease
 * expires; and the store refuses every write of a deposed leader's term.
 */
import { create } from '@bufbuild/protobuf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BuildSpecSchema, BuildState } from '../../src/gen/braid/v1/build_pb.js';
import { createLogger } from '../../src/log.js';
import { Leadership, type Term } from '../../src/coordinator/leadership.js';
import { FencedError, PgBuildStore } from '../../src/coordinator/pg-build-store.js';
import { queuedJob, type StoreWrite } from '../../src/coordinator/store.js';
import { startPostgres, type PostgresCluster } from '../support/postgres.js';

const log = createLogger({ level: 'silent', format: 'json', component: 'test' });
const FAST = { pollMs: 200, leaseMs: 1000 };

function build(id: string): StoreWrite {
  return {
    kind: 'createBuild',
    build: {
      id,
      spec: create(BuildSpecSchema, {}),
      state: BuildState.QUEUED,
      createdAt: new Date(),
      error: '',
      requestId: '',
    },
    jobs: [queuedJob(`${id}-1`, id, { os: 'linux', architecture: 'amd64' })],
  };
}

describe('leader election on PostgreSQL', () => {
  let postgres: PostgresCluster;
  const stops: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    postgres = await startPostgres();
  }, 120_000);

  afterAll(async () => {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await postgres?.stop();
  });

  async function contenders(n: number) {
    const url = await postgres.createDatabase();
    const store = await PgBuildStore.open(url);
    stops.push(() => store.close());
    const elections = Array.from({ length: n }, (_, i) => {
      const election = new Leadership(url, `127.0.0.1:${7465 + i}`, log, FAST);
      stops.push(() => election.resign());
      return election;
    });
    return { url, store, elections };
  }

  it('never lets two of contenders started at the same instant lead at once', async () => {
    const { elections } = await contenders(3);
    const stop = new AbortController();
    // A loaded machine may delay a renewal past the lease: the leader then steps down and
    // another is elected. What must never happen is two terms at once.
    const won: { i: number; term: Term; wonAt: number; lostAt?: number }[] = [];
    const campaign = async (e: Leadership, i: number): Promise<void> => {
      while (!stop.signal.aborted) {
        const term = await e.campaign(stop.signal).catch(() => undefined);
        if (!term) return;
        const entry: (typeof won)[number] = { i, term, wonAt: performance.now() };
        won.push(entry);
        await new Promise<void>((resolve) => {
          const done = () => {
            entry.lostAt = performance.now();
            resolve();
          };
          if (term.lost.aborted) done();
          else term.lost.addEventListener('abort', done, { once: true });
          stop.signal.addEventListener('abort', () => resolve(), { once: true });
        });
      }
    };
    const campaigns = elections.map((e, i) => campaign(e, i));
    await new Promise((r) => setTimeout(r, 1500));
    stop.abort();
    await Promise.all(campaigns);
    expect(won.length).toBeGreaterThanOrEqual(1);
    expect(won.map((w) => w.term.epoch)).toEqual(won.map((_, k) => BigInt(k + 1)));
    for (const [k, later] of won.entries()) {
      if (k === 0) continue;
      const earlier = won[k - 1];
      expect(earlier?.lostAt, 'the earlier term ended').toBeDefined();
      expect(earlier?.lostAt ?? Infinity).toBeLessThanOrEqual(later.wonAt);
    }
    const current = won[won.length - 1];
    const leader = `127.0.0.1:${7465 + (current?.i ?? 0)}`;
    expect(await elections[(current?.i ?? 0) === 0 ? 1 : 0]?.leader()).toBe(leader);
  });

  it('replaces a leader whose session ends, with a new epoch, and fences the old term', async () => {
    const { store, elections } = await contenders(2);
    const [first, second] = elections as [Leadership, Leadership];
    const stop = new AbortController();
    const term1 = await first.campaign(stop.signal);
    const oldTerm = store.fencedBy(term1.epoch);
    await oldTerm.commit([build('b1')]);
    await oldTerm.assertLeading();
    // A term this coordinator ended itself writes nothing more, before anyone else leads.
    const givenUp = store.fencedBy(term1.epoch);
    givenUp.retire();
    await expect(givenUp.commit([build('bx')])).rejects.toThrow('term (epoch 1) has ended');
    await expect(givenUp.assertLeading()).rejects.toBeInstanceOf(FencedError);
    expect(await store.getBuild('bx')).toBeUndefined();

    const waiting = second.campaign(stop.signal);
    const startedAt = Date.now();
    // The leader's session ends as a killed process's would: the lock goes with it.
    await first.resign();
    expect(term1.lost.aborted).toBe(true);
    const term2 = await waiting;
    const tookMs = Date.now() - startedAt;
    expect(term2.epoch).toBe(term1.epoch + 1n);
    expect(tookMs).toBeLessThan(5000);

    // The deposed term writes nothing and may move no tag.
    await expect(oldTerm.commit([build('b2')])).rejects.toBeInstanceOf(FencedError);
    await expect(oldTerm.assertLeading()).rejects.toThrow(
      /epoch 1, and another has led since \(epoch 2\)/,
    );
    expect(await store.getBuild('b2')).toBeUndefined();
    const newTerm = store.fencedBy(term2.epoch);
    await newTerm.commit([build('b3')]);
    expect((await store.getBuild('b3'))?.id).toBe('b3');
    stop.abort();
  });

  it('takes over from a leader that stops renewing its lease, and that leader stops acting', async () => {
    const { elections } = await contenders(2);
    const [stuck, standby] = elections as [Leadership, Leadership];
    const stop = new AbortController();
    const term1 = await stuck.campaign(stop.signal);
    // A paused process renews nothing: its timer is stopped, its lock session stays open.
    (stuck as unknown as { renewTimer?: NodeJS.Timeout }).renewTimer?.unref();
    clearInterval((stuck as unknown as { renewTimer?: NodeJS.Timeout }).renewTimer);
    const startedAt = Date.now();
    const term2 = await standby.campaign(stop.signal);
    const tookMs = Date.now() - startedAt;
    expect(term2.epoch).toBe(term1.epoch + 1n);
    // Not before the lease ran out, and soon after.
    expect(tookMs).toBeGreaterThanOrEqual(FAST.leaseMs - FAST.pollMs);
    expect(tookMs).toBeLessThan(FAST.leaseMs + 5 * FAST.pollMs + 2000);
    // Its lock session was ended: the stuck leader learns it lost.
    await expect.poll(() => term1.lost.aborted, { timeout: 5000, interval: 50 }).toBe(true);
    stop.abort();
  });
});
