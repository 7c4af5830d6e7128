/**
 * Content digests: computing them, checking their form, and verifying bytes
 * as they stream past.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { BraidError } from '../errors.js';

const DIGEST = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

export function isValidDigest(text: string): boolean {
  return DIGEST.test(text);
}

function algorithmOf(digest: string): 'sha256' | 'sha512' {
  if (!isValidDigest(digest))
    throw new BraidError('invalid_argument', `invalid digest "${digest}"`);
  return digest.startsWith('sha512:') ? 'sha512' : 'sha256';
}

export function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** Digest of `bytes` with the algorithm `expected` uses. */
export function digestLike(expected: string, bytes: Uint8Array): string {
  const algorithm = algorithmOf(expected);
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** Thrown when bytes received do not hash to the digest they were asked for by. */
export class DigestMismatchError extends BraidError {
  constructor(what: string, expected: string, actual: string) {
    super('internal', `${what}: content digest ${actual} does not match ${expected}`);
  }
}

/**
 * A pass-through stream that hashes what flows and fails at the end when the
 * digest (or the expected size) does not match: nothing unverified is ever
 * reported as complete.
 */
export class VerifyingStream extends Transform {
  private readonly hash: Hash;
  private received = 0;

  constructor(
    private readonly expected: string,
    private readonly what: string,
    private readonly expectedSize?: number,
  ) {
    super();
    this.hash = createHash(algorithmOf(expected));
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.received += chunk.length;
    if (this.expectedSize !== undefined && this.received > this.expectedSize) {
      callback(
        new BraidError(
          'internal',
          `${this.what}: received more than the expected ${this.expectedSize} bytes`,
        ),
      );
      return;
    }
    this.hash.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    const actual = `${this.expected.split(':')[0]}:${this.hash.digest('hex')}`;
    if (actual !== this.expected) {
      callback(new DigestMismatchError(this.what, this.expected, actual));
      return;
    }
    if (this.expectedSize !== undefined && this.received !== this.expectedSize) {
      callback(
        new BraidError(
          'internal',
          `${this.what}: received ${this.received} bytes, expected ${this.expectedSize}`,
        ),
      );
      return;
    }
    callback();
  }
}
