/**
 * One contract for the token stores: the same cases run against SQLite
 * (the data dir's braid.db) and PostgreSQL (a real cluster this suite
 * starts, one database per test). On PostgreSQL, `braid tokens` writes
 * through PgTokenAdmin and each coordinator reads through its own
 * PgTokenBook: what one admin changes, two books (two coordinators) see
 * through notifications, and, with notifications cut, by rereading.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { PgBuildStore } from '../../src/coordinator/pg-build-store.js';
import { PgListener } from '../../src/coordinator/pg-notify.js';
import { PgTokenAdmin, PgTokenBook } from '../../src/coordinator/pg-token-store.js';
import { TokenStore, type TokenAdmin, type TokenBook } from '../../src/coordinator/token-store.js';
import { startPostgres, type PostgresCluster } from '../support/postgres.js';

/** One test's tokens: an admin (`braid tokens`) and the books of two coordinators. */
interface Place {
  admin: TokenAdmin;
  books: [TokenBook, TokenBook];
  /** Every byte the store holds, as text (to look for a secret in it). */
  contents(): Promise<string>;
  /** Until `check` holds for a book: at once on SQLite, after a notification on PostgreSQL. */
  eventually(check: () => boolean): Promise<void>;
  close(): Promise<void>;
}

interface Kind {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  place(clock: () => number, options?: { refreshMs?: number }): Promise<Place>;
  /** Cut every notification connection (PostgreSQL only). */
  cutNotifications?(): Promise<void>;
}

const log = createLogger({ level: 'silent', format: 'json', component: 'test' });

/** A call's failure as a rejection, whether the store throws or rejects. */
const attempt = <T>(call: () => T | Promise<T>): Promise<T> => Promise.resolve().then(call);

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sqlite = ((): Kind => {
  const dirs: string[] = [];
  return {
    name: 'SQLite',
    setup: async () => undefined,
    teardown: async () => {
      for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
    },
    async place(clock) {
      const dir = await mkdtemp(join(tmpdir(), 'braid-tokens-'));
      dirs.push(dir);
      const file = join(dir, 'braid.db');
      const options = { clock: () => new Date(clock()) };
      const stores = [0, 1, 2].map(() => new TokenStore(file, options));
      return {
        admin: stores[0]!,
        books: [stores[1]!, stores[2]!],
        contents: async () =>
          (
            await Promise.all(
              ['braid.db', 'braid.db-wal'].map((f) =>
                readFile(join(dir, f)).catch(() => Buffer.alloc(0)),
              ),
            )
          )
            .map((b) => b.toString('latin1'))
            .join(''),
        eventually: async (check) => expect(check()).toBe(true),
        close: async () => stores.forEach((s) => s.close()),
      };
    },
  };
})();

const postgres = ((): Kind => {
  let cluster: PostgresCluster;
  let url = '';
  return {
    name: 'PostgreSQL',
    async setup() {
      cluster = await startPostgres();
    },
    async teardown() {
      await cluster?.stop();
    },
    async place(clock, options = {}) {
      url = await cluster.createDatabase();
      const store = await PgBuildStore.open(url);
      const listeners = [0, 1].map(() => new PgListener(url, log));
      const books = await Promise.all(
        listeners.map((l) => PgTokenBook.open(store.pool, l, log, { clock, ...options })),
      );
      return {
        admin: new PgTokenAdmin(store.pool, { clock: () => new Date(clock()) }),
        books: [books[0]!, books[1]!],
        async contents() {
          const { rows } = await store.pool.query('SELECT * FROM tokens');
          return JSON.stringify(rows);
        },
        eventually: (check) => until(check, 'the coordinators see the change'),
        async close() {
          books.forEach((b) => b.close());
          await Promise.all(listeners.map((l) => l.close()));
          await store.close();
        },
      };
    },
    async cutNotifications() {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        const { rows } = await client.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE application_name = 'braid notifications'`,
        );
        expect(rows.length).toBe(2);
      } finally {
        await client.end();
      }
    },
  };
})();

describe.each([sqlite, postgres])('the $name token store', (kind) => {
  let now = Date.parse('2030-01-01T00:00:00Z');
  const clock = () => now;
  let place: Place | undefined;

  beforeAll(() => kind.setup(), 120_000);
  afterAll(() => kind.teardown());
  afterEach(async () => {
    await place?.close();
    place = undefined;
  });

  const open = async (options?: { refreshMs?: number }) => {
    place = await kind.place(clock, options);
    return place;
  };

  it('keeps only the hash, and every coordinator knows a new token', async () => {
    const { admin, books, contents, eventually } = await open();
    const { record, token } = await admin.create('api', 'ci');
    expect(record).toMatchObject({ name: 'ci', kind: 'api' });
    expect(record.id).toMatch(/^tok_[0-9a-f]{12}$/);
    expect(record.hint).toBe(`${token.slice(0, 14)}…`);
    expect(await contents()).not.toContain(token.slice(10));
    await eventually(() => books.every((b) => b.lookup(token)?.id === record.id));
    const other = `${token.slice(0, -1)}${token.endsWith('a') ? 'b' : 'a'}`;
    expect(books[0].lookup(other)).toBeUndefined();
    expect(books[1].get(record.id)?.name).toBe('ci');
    expect(books[0].activeCount('api')).toBe(1);
    expect(books[0].activeCount('join')).toBe(0);
  });

  it('names tokens KIND-XXXXXX by default and refuses a second active token of a name', async () => {
    const { admin } = await open();
    const { record } = await admin.create('join');
    expect(record.name).toBe(`join-${record.id.slice(4, 10)}`);
    await admin.create('api', 'ci');
    await expect(attempt(() => admin.create('join', 'ci'))).rejects.toThrow(
      /a token named "ci" exists \(tok_/,
    );
    await expect(attempt(() => admin.create('api', 'bad name'))).rejects.toThrow(
      /token name "bad name"/,
    );
    await expect(attempt(() => admin.create('api', 'tok_0123456789ab'))).rejects.toThrow(
      /looks like a token id/,
    );
    expect((await admin.list()).map((r) => r.name).sort()).toEqual(['ci', record.name].sort());
  });

  it('revokes by name or id, once, on every coordinator; the name is free again', async () => {
    const { admin, books, eventually } = await open();
    const { record, token } = await admin.create('api', 'ci');
    await eventually(() => books.every((b) => b.lookup(token) !== undefined));
    now += 1000;
    const first = await admin.revoke('ci');
    expect(first.already).toBe(false);
    expect(first.record.revokedAt?.getTime()).toBe(now);
    expect((await admin.revoke(record.id)).already).toBe(true);
    await eventually(() => books.every((b) => b.lookup(token)?.revokedAt?.getTime() === now));
    expect(books[1].activeCount('api')).toBe(0);
    const again = await admin.create('api', 'ci');
    expect((await admin.list())[0]?.id).toBe(again.record.id);
    await expect(attempt(() => admin.revoke('nobody'))).rejects.toThrow(
      'no token with id or name "nobody"',
    );
  });

  it('rotates: same name and kind, new secret, the old one revoked everywhere', async () => {
    const { admin, books, eventually } = await open();
    const old = await admin.create('join', 'farm');
    now += 1;
    const rotated = await admin.rotate('farm');
    expect(rotated.record).toMatchObject({ name: 'farm', kind: 'join' });
    expect(rotated.record.id).not.toBe(old.record.id);
    expect(rotated.token).not.toBe(old.token);
    expect(rotated.replaced.id).toBe(old.record.id);
    await eventually(() =>
      books.every(
        (b) =>
          b.lookup(old.token)?.revokedAt !== undefined &&
          b.lookup(rotated.token)?.revokedAt === undefined,
      ),
    );
    await expect(attempt(() => admin.rotate(old.record.id))).rejects.toThrow(/is revoked/);
    expect(books[0].activeCount('join')).toBe(1);
    expect((await admin.list()).map((r) => [r.name, r.revokedAt ? 'revoked' : 'active'])).toEqual([
      ['farm', 'active'],
      ['farm', 'revoked'],
    ]);
  });

  it('notes the last use at most once a minute', async () => {
    const { admin, books } = await open();
    const { record } = await admin.create('api', 'ci');
    const book = books[0];
    const lastUsed = async () => {
      const found = (await admin.list()).find((r) => r.id === record.id);
      return found?.lastUsedAt?.getTime();
    };
    // Writes of the PostgreSQL book are not awaited: read until they land.
    const settled = async (expected: number) => {
      const deadline = Date.now() + 10_000;
      while ((await lastUsed()) !== expected && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(await lastUsed()).toBe(expected);
    };
    const first = now;
    book.touch(record.id);
    await settled(first);
    now += 30_000;
    book.touch(record.id);
    await new Promise((r) => setTimeout(r, 100));
    expect(await lastUsed()).toBe(first);
    now += 31_000;
    book.touch(record.id);
    await settled(now);
  });

  // Only PostgreSQL notifies; SQLite's readers read the file itself.
  if (kind.cutNotifications)
    it('rereads the tokens when its notification connection comes back, and on its own timer', async () => {
      const { admin, books, eventually } = await open({ refreshMs: 1500 });
      const { token } = await admin.create('api', 'ci');
      await eventually(() => books.every((b) => b.lookup(token) !== undefined));
      await kind.cutNotifications!();
      // Revoked while the books may not be listening: each learns of it nonetheless.
      await admin.revoke('ci');
      await eventually(() => books.every((b) => b.lookup(token)?.revokedAt !== undefined));
    });
});
