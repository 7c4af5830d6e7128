import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { braid } from '../support/braid-cli.js';

describe('braid coordinator on a port already taken', () => {
  let taken: Server | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await new Promise<void>((resolve) => (taken ? taken.close(() => resolve()) : resolve()));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('exits 1 with one line, its store closed and nothing left running', async () => {
    taken = createServer();
    const port = await new Promise<number>((resolve) =>
      taken?.listen(0, '127.0.0.1', () => {
        const address = taken?.address();
        resolve(typeof address === 'object' && address ? address.port : 0);
      }),
    );
    dir = await mkdtemp(join(tmpdir(), 'braid-coord-taken-'));
    const dataDir = join(dir, 'data');
    const started = Date.now();
    // The timeout kills a process that would linger: its code would then be null.
    const result = await braid(
      ['coordinator', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir],
      { timeoutMs: 20_000 },
    );
    expect(result.code, result.stderr).toBe(1);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(result.stderr).toBe(
      `braid: cannot listen on 127.0.0.1:${port}: address already in use\n`,
    );
    expect(result.stdout).toBe('');
    // SQLite's write-ahead log and shared memory files go only when the store is closed.
    expect(existsSync(join(dataDir, 'braid.db'))).toBe(true);
    expect(existsSync(join(dataDir, 'braid.db-wal'))).toBe(false);
    expect(existsSync(join(dataDir, 'braid.db-shm'))).toBe(false);
  });
});
