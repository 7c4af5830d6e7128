/**
 * Build contexts as the coordinator uses them: tars uploaded by the CLI,
 * content-addressed by the sha256 of their bytes, checked before they are
 * kept, and read back by agents from an offset. Two stores implement it:
 * on the coordinator's disk (context-store.ts) and in PostgreSQL, shared
 * by every coordinator on the database (pg-context-store.ts).
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { BraidError } from '../errors.js';
import { checkContextTar } from './context-check.js';

export interface BuildContexts {
  /** Create what the store needs (a directory, tables) if missing. */
  init(): Promise<void>;
  /** Size in bytes of the stored context, or undefined when it is not stored. */
  size(digest: string): Promise<number | undefined>;
  /**
   * Store the bytes of `chunks` as context `digest` once they hash to
   * `digest`, count `sizeBytes` and form a tar whose every entry stays
   * inside (context-check.ts); nothing is visible before that. Returns true
   * when the context was already stored. Refuses (invalid_argument) a bad
   * digest, a size over the coordinator's limit and any mismatch.
   */
  put(digest: string, sizeBytes: number, chunks: AsyncIterable<Uint8Array>): Promise<boolean>;
  /** Whether the stored context holds a file (or link) at `path`. */
  hasFile(digest: string, path: string): Promise<boolean>;
  /**
   * The context's bytes from `offset`: not_found when it is not stored,
   * invalid_argument for an offset past its end.
   */
  open(digest: string, offset?: number): Promise<Readable>;
}

const DIGEST = /^sha256:([a-f0-9]{64})$/;

/** The hex of a `sha256:<64 hex>` digest; refuses anything else (invalid_argument). */
export function digestHex(digest: string): string {
  const match = DIGEST.exec(digest);
  if (!match)
    throw new BraidError('invalid_argument', `context digest "${digest}" is not sha256:<64 hex>`);
  return match[1] as string;
}

/** Refuses an offset that is not a whole number of bytes within `size`. */
export function checkOffset(digest: string, offset: number, size: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0)
    throw new BraidError(
      'invalid_argument',
      `offset ${offset} into context ${digest} is not a whole number of bytes`,
    );
  if (offset > size)
    throw new BraidError(
      'invalid_argument',
      `offset ${offset} is past the end of context ${digest} (${size} bytes)`,
    );
}

/** A context path as the file lists hold it: no empty or "." parts. */
export function normaliseContextPath(path: string): string {
  return path
    .split('/')
    .filter((p) => p !== '' && p !== '.')
    .join('/');
}

/** The refusal of an announced size over the coordinator's limit. */
export function tooLarge(sizeBytes: number, maxBytes: number): BraidError {
  return new BraidError(
    'invalid_argument',
    `context of ${sizeBytes} bytes exceeds the coordinator's limit of ${maxBytes} bytes`,
  );
}

/**
 * Write an upload into `file` (a temp file the caller removes on failure)
 * and check it: no more than `sizeBytes` are accepted, the bytes must count
 * `sizeBytes` and hash to `digest`, and the tar must pass checkContextTar.
 * Returns the context's files (normalised paths), sorted.
 */
export async function receiveContext(
  file: string,
  digest: string,
  sizeBytes: number,
  chunks: AsyncIterable<Uint8Array>,
): Promise<string[]> {
  const out = createWriteStream(file, { mode: 0o600 });
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
  } catch (err) {
    out.destroy();
    throw err;
  }
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
  const listing = await checkContextTar(file);
  return [...listing.files].sort();
}
