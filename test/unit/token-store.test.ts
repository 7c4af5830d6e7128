import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TokenStore } from '../../src/coordinator/token-store.js';

// What every token store does is in test/integration/token-store-contract.test.ts.
describe('the SQLite token store', () => {
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

  it('creates the database owner-only', async () => {
    expect((await stat(join(dir, 'braid.db'))).mode & 0o777).toBe(0o600);
  });

  it('finds by id, else the active token of a name, else the newest revoked one', () => {
    const first = store.create('api', 'ci');
    store.revoke('ci');
    now += 1000;
    const second = store.create('api', 'ci');
    expect(store.find(first.record.id)?.id).toBe(first.record.id);
    expect(store.find('ci')?.id).toBe(second.record.id);
    store.revoke('ci');
    expect(store.find('ci')?.id).toBe(second.record.id);
    expect(store.find('nobody')).toBeUndefined();
  });
});
