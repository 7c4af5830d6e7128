/**
 * Build contexts on disk, content-addressed by the sha256 of their tar.
 * An upload lands in a temp file and is renamed into place only when its
 * digest and size match what the client announced.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { BraidError } from '../errors.js';
import { checkContextTar } from './context-check.js';

const DIGEST = /^sha256:([a-f0-9]{64})$/;

export class ContextStore {
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
    const match = DIGEST.exec(digest);
    if (!match)
      throw new BraidError('invalid_argument', `context digest "${digest}" is not sha256:<64 hex>`);
    return join(this.dir, match[1] as string);
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
    if (sizeBytes > this.maxBytes) {
      throw new BraidError(
        'invalid_argument',
        `context of ${sizeBytes} bytes exceeds the coordinator's limit of ${this.maxBytes} bytes`,
      );
    }
    if ((await this.size(digest)) !== undefined) return true;
    const temp = join(this.dir, `.upload-${randomUUID()}`);
    const out = createWriteStream(temp, { mode: 0o600 });
    const hash = createHash('sha256');
    let received = 0;
    try {
      for await (const chunk of chunks) {
        received += chunk.length;
        if (received > sizeBytes) {
          throw new BraidError(
            'invalid_argument',
            `context upload sent more than the announced ${sizeBytes} bytes`,
          );
        }
        hash.update(chunk);
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
      }
      await new Promise<void>((resolve, reject) =>
        out.end((err?: Error | null) => (err ? reject(err) : resolve())),
      );
      if (received !== sizeBytes) {
        throw new BraidError(
          'invalid_argument',
          `context upload ended after ${received} of ${sizeBytes} bytes`,
        );
      }
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== digest) {
        throw new BraidError(
          'invalid_argument',
          `context upload hashes to ${actual}, not the announced ${digest}`,
        );
      }
      // Untrusted bytes: only a context whose every entry stays inside is kept.
      const listing = await checkContextTar(temp);
      await writeFile(`${target}.files`, [...listing.files].sort().join('\n'), { mode: 0o600 });
      await rename(temp, target);
      return false;
    } catch (err) {
      out.destroy();
      await rm(temp, { force: true });
      throw err;
    }
  }

  /** Whether the context holds a file (or link) at `path`. */
  async hasFile(digest: string, path: string): Promise<boolean> {
    const normalised = path
      .split('/')
      .filter((p) => p !== '' && p !== '.')
      .join('/');
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
    if (offset > size)
      throw new BraidError(
        'invalid_argument',
        `offset ${offset} is past the end of context ${digest} (${size} bytes)`,
      );
    return createReadStream(this.pathOf(digest), { start: offset, highWaterMark: 256 * 1024 });
  }
}
