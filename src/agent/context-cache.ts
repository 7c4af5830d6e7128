/**
 * Build contexts an agent has fetched, cached on disk by digest so a
 * rebuild of the same context (another platform, a retry) fetches nothing.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { BraidError } from '../errors.js';

const DIGEST = /^sha256:([a-f0-9]{64})$/;

export type ContextFetcher = (digest: string) => AsyncIterable<Uint8Array>;

export class ContextCache {
  private readonly inFlight = new Map<string, Promise<string>>();

  constructor(
    private readonly dir: string,
    private readonly maxBytes: number,
  ) {}

  /** Path of the context's tar, fetched first when not cached. */
  async get(
    digest: string,
    fetch: ContextFetcher,
  ): Promise<{ path: string; fetchedBytes: number }> {
    const match = DIGEST.exec(digest);
    if (!match)
      throw new BraidError('invalid_argument', `context digest "${digest}" is not sha256:<64 hex>`);
    const path = join(this.dir, match[1] as string);
    try {
      await stat(path);
      const now = new Date();
      await utimes(path, now, now);
      return { path, fetchedBytes: 0 };
    } catch {
      // Not cached.
    }
    let pending = this.inFlight.get(digest);
    let fetchedBytes = 0;
    if (!pending) {
      pending = this.download(digest, path, fetch).then((bytes) => {
        fetchedBytes = bytes;
        return path;
      });
      this.inFlight.set(digest, pending);
      pending.finally(() => this.inFlight.delete(digest)).catch(() => undefined);
    }
    await pending;
    return { path, fetchedBytes };
  }

  private async download(digest: string, path: string, fetch: ContextFetcher): Promise<number> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const temp = join(this.dir, `.fetch-${randomUUID()}`);
    const out = createWriteStream(temp, { mode: 0o600 });
    const hash = createHash('sha256');
    let bytes = 0;
    try {
      for await (const chunk of fetch(digest)) {
        hash.update(chunk);
        bytes += chunk.length;
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
      }
      await new Promise<void>((resolve, reject) =>
        out.end((err?: Error | null) => (err ? reject(err) : resolve())),
      );
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== digest) {
        throw new BraidError('internal', `fetched context hashes to ${actual}, not ${digest}`);
      }
      await rename(temp, path);
    } catch (err) {
      out.destroy();
      await rm(temp, { force: true });
      throw err;
    }
    await this.evict(path);
    return bytes;
  }

  /** Keep the cache under its size: least recently used first. */
  private async evict(keep: string): Promise<void> {
    const names = (await readdir(this.dir)).filter((n) => /^[a-f0-9]{64}$/.test(n));
    const files = await Promise.all(
      names.map(async (name) => {
        const path = join(this.dir, name);
        const s = await stat(path);
        return { path, size: s.size, used: s.mtimeMs };
      }),
    );
    let total = files.reduce((sum, f) => sum + f.size, 0);
    for (const file of files.sort((a, b) => a.used - b.used)) {
      if (total <= this.maxBytes) break;
      if (file.path === keep) continue;
      await rm(file.path, { force: true });
      total -= file.size;
    }
  }
}
