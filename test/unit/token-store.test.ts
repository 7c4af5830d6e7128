import { readFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TokenStore } from '../../src/coordinator/token-store.js';
import { BraidError } from '../../src/errors.js';

describe('the token store', () => {
  let dir: string;
  let store: TokenStore;
  let now: number;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-tokens-'));
    now = Date.parse('2030-01-01T00:00:00Z');
    store = new TokenStore(join(dir, 'braid.db'), { clock: () => new Date(now) });
  });
  afterEach(async () => {
    store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps only the hash: the token is in no file of the database', async () => {
    const { record, token } = store.create('api', 'ci');
    expect(record).toMatchObject({ name: 'ci', kind: 'api' });
    expect(record.id).toMatch(/^tok_[0-9a-f]{12}$/);
    expect(record.hint).toBe(`${token.slice(0, 14)}…`);
    store.close();
    store = new TokenStore(join(dir, 'braid.db'));
    for (const file of ['braid.db', 'braid.db-wal']) {
      const bytes = await readFile(join(dir, file)).catch(() => Buffer.alloc(0));
      expect(bytes.includes(token.slice(10))).toBe(false);
    }
    expect(store.lookup(token)?.id).toBe(record.id);
    const other = `${token.slice(0, -1)}${token.endsWith('a') ? 'b' : 'a'}`;
    expect(store.lookup(other)).toBeUndefined();
  });

  it('creates the database owner-only', async () => {
    expect((await stat(join(dir, 'braid.db'))).mode & 0o777).toBe(0o600);
  });

  it('names tokens KIND-XXXXXX by default and refuses a second active token of a name', () => {
    const { record } = store.create('join');
    expect(record.name).toBe(`join-${record.id.slice(4, 10)}`);
    store.create('api', 'ci');
    expect(() => store.create('join', 'ci')).toThrow(/a token named "ci" exists/);
    expect(() => store.create('api', 'bad name')).toThrow(/token name "bad name"/);
    expect(() => store.create('api', 'tok_0123456789ab')).toThrow(/looks like a token id/);
  });

  it('revokes by name or id, once; the name is free again afterwards', () => {
    const { record, token } = store.create('api', 'ci');
    now += 1000;
    const first = store.revoke('ci');
    expect(first.already).toBe(false);
    expect(first.record.revokedAt?.getTime()).toBe(now);
    expect(store.revoke(record.id).already).toBe(true);
    expect(store.lookup(token)?.revokedAt).toBeDefined();
    const again = store.create('api', 'ci');
    expect(store.find('ci')?.id).toBe(again.record.id);
    expect(() => store.revoke('nobody')).toThrow(BraidError);
    expect(() => store.revoke('nobody')).toThrow('no token with id or name "nobody"');
  });

  it('rotates: same name and kind, new secret, the old one revoked', () => {
    const old = store.create('join', 'farm');
    const rotated = store.rotate('farm');
    expect(rotated.record).toMatchObject({ name: 'farm', kind: 'join' });
    expect(rotated.record.id).not.toBe(old.record.id);
    expect(rotated.token).not.toBe(old.token);
    expect(store.lookup(old.token)?.revokedAt).toBeDefined();
    expect(store.lookup(rotated.token)?.revokedAt).toBeUndefined();
    expect(() => store.rotate(old.record.id)).toThrow(/is revoked/);
    expect(store.activeCount('join')).toBe(1);
    expect(store.list().map((r) => [r.name, r.revokedAt ? 'revoked' : 'active'])).toEqual([
      ['farm', 'active'],
      ['farm', 'revoked'],
    ]);
  });

  it('notes the last use at most once a minute', () => {
    const { record } = store.create('api', 'ci');
    store.touch(record.id);
    const first = store.get(record.id)?.lastUsedAt?.getTime();
    expect(first).toBe(now);
    now += 30_000;
    store.touch(record.id);
    expect(store.get(record.id)?.lastUsedAt?.getTime()).toBe(first);
    now += 31_000;
    store.touch(record.id);
    expect(store.get(record.id)?.lastUsedAt?.getTime()).toBe(now);
  });
});
