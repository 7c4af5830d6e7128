/**
 * Build contexts on disk, content-addressed by the sha256 of their tar.
 * An upload lands in a temp file and is renamed into place only when its
 * digest and size match what the client announced. Nothing here removes
 * a context: they stay until the data dir is cleaned by hand.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { BraidError } from '../errors.js';
import {
  checkOffset,
  digestHex,
  normaliseContextPath,
  receiveContext,
  tooLarge,
  type BuildContexts,
} from './contexts.js';

export class ContextStore implements BuildContexts {
  private readonly dir: string;

  constructor(
    dataDir: string,
    private readonly maxBytes: number,
  ) {
    this.dir = join(dataDir, 'contexts', 'sha256');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  private pathOf(digest: string): string {
    return join(this.dir, digestHex(digest));
  }

  /** Size of the stored context, or undefined. */
  async size(digest: string): Promise<number | undefined> {
    try {
      return (await stat(this.pathOf(digest))).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /**
   * Store the bytes of `chunks` as context `digest`; returns true when it
   * was already present (the bytes are then discarded unread past the header).
   */
  async put(
    digest: string,
    sizeBytes: number,
    chunks: AsyncIterable<Uint8Array>,
  ): Promise<boolean> {
    const target = this.pathOf(digest);
    if (sizeBytes > this.maxBytes) throw tooLarge(sizeBytes, this.maxBytes);
    if ((await this.size(digest)) !== undefined) return true;
    const temp = join(this.dir, `.upload-${randomUUID()}`);
    try {
      const files = await receiveContext(temp, digest, sizeBytes, chunks);
      await writeFile(`${target}.files`, files.join('\n'), { mode: 0o600 });
      await rename(temp, target);
      return false;
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
  }

  /** Whether the context holds a file (or link) at `path`. */
  async hasFile(digest: string, path: string): Promise<boolean> {
    const normalised = normaliseContextPath(path);
    try {
      const files = (await readFile(`${this.pathOf(digest)}.files`, 'utf8')).split('\n');
      return files.includes(normalised);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** The context's bytes from `offset`. */
  async open(digest: string, offset = 0): Promise<Readable> {
    const size = await this.size(digest);
    if (size === undefined)
      throw new BraidError('not_found', `context ${digest} is not on this coordinator`);
    checkOffset(digest, offset, size);
    return createReadStream(this.pathOf(digest), { start: offset, highWaterMark: 256 * 1024 });
  }
}
