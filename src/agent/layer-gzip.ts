/**
 * One image layer stored as a gzip file on disk, hashed on both sides as it
 * streams: sha256 of the uncompressed tar (the config's diff_id) and of the
 * gzip bytes (the blob digest). Never a whole layer in memory.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { Readable, Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import { BraidError } from '../errors.js';
import { clampTarTimes } from '../oci/tar-clamp.js';

export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';

export interface StoredLayer {
  /** The gzip file. */
  file: string;
  /** sha256 of the gzip bytes: the blob's digest. */
  digest: string;
  /** Bytes of the gzip file. */
  size: number;
  /** sha256 of the uncompressed tar as stored (after any clamping): the config's diff_id. */
  diffId: string;
  /** sha256 of the uncompressed tar as it arrived, before any clamping. */
  sourceDiffId: string;
  uncompressedSize: number;
  /** True when the layer arrived gzipped and its bytes were kept as they were. */
  keptCompression: boolean;
}

export interface StoreLayerOptions {
  /** zlib level, 1 (fast) to 9 (small); default 6, as gzip(1). */
  level?: number;
  /**
   * SOURCE_DATE_EPOCH in seconds: file times later than it are clamped to it
   * (src/oci/tar-clamp.ts), and a gzipped layer is re-compressed so its
   * bytes depend only on its content.
   */
  sourceDateEpoch?: number;
}

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/**
 * Writes `source` (an uncompressed layer tar, or one already gzipped) to
 * `file` as gzip. The gzip stream is deterministic: zlib writes no file name
 * and a zero mtime, so the same tar at the same level gives the same digest.
 */
export async function storeLayer(
  source: AsyncIterable<Buffer>,
  file: string,
  options: StoreLayerOptions = {},
): Promise<StoredLayer> {
  const { head, rest } = await peek(source, ZSTD_MAGIC.length);
  if (startsWith(head, ZSTD_MAGIC)) {
    throw new BraidError('unimplemented', 'zstd-compressed layers are not supported');
  }
  const epoch = options.sourceDateEpoch;
  if (epoch !== undefined) {
    const source = new HashTap();
    const uncompressed = new HashTap();
    const compressed = new HashTap();
    await pipeline([
      rest,
      ...(startsWith(head, GZIP_MAGIC) ? [createGunzip()] : []),
      source,
      clampTarTimes(epoch),
      uncompressed,
      createGzip({ level: options.level ?? 6 }),
      compressed,
      createWriteStream(file),
    ]);
    return {
      file,
      digest: compressed.digest(),
      size: compressed.bytes,
      diffId: uncompressed.digest(),
      sourceDiffId: source.digest(),
      uncompressedSize: uncompressed.bytes,
      keptCompression: false,
    };
  }
  if (startsWith(head, GZIP_MAGIC)) {
    const compressed = new HashTap();
    await pipeline(rest, compressed, createWriteStream(file));
    const uncompressed = new HashTap();
    await pipeline(createReadStream(file), createGunzip(), uncompressed, discard());
    const diffId = uncompressed.digest();
    return {
      file,
      digest: compressed.digest(),
      size: compressed.bytes,
      diffId,
      sourceDiffId: diffId,
      uncompressedSize: uncompressed.bytes,
      keptCompression: true,
    };
  }
  const uncompressed = new HashTap();
  const compressed = new HashTap();
  await pipeline(
    rest,
    uncompressed,
    createGzip({ level: options.level ?? 6 }),
    compressed,
    createWriteStream(file),
  );
  const diffId = uncompressed.digest();
  return {
    file,
    digest: compressed.digest(),
    size: compressed.bytes,
    diffId,
    sourceDiffId: diffId,
    uncompressedSize: uncompressed.bytes,
    keptCompression: false,
  };
}

/** Passes bytes through, hashing and counting them. */
class HashTap extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    callback(null, chunk);
  }

  digest(): string {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

function discard(): Writable {
  return new Writable({ write: (_chunk, _encoding, callback) => callback() });
}

function startsWith(bytes: Buffer, magic: readonly number[]): boolean {
  return bytes.length >= magic.length && magic.every((byte, i) => bytes[i] === byte);
}

/** The first `count` bytes (fewer if the source is shorter) and a stream of all of it. */
async function peek(
  source: AsyncIterable<Buffer>,
  count: number,
): Promise<{ head: Buffer; rest: Readable }> {
  const iterator = source[Symbol.asyncIterator]();
  const seen: Buffer[] = [];
  let seenBytes = 0;
  let ended = false;
  while (seenBytes < count) {
    const next = await iterator.next();
    if (next.done) {
      ended = true;
      break;
    }
    seen.push(next.value);
    seenBytes += next.value.length;
  }
  const head = Buffer.concat(seen);
  async function* all(): AsyncGenerator<Buffer> {
    try {
      if (head.length > 0) yield head;
      while (!ended) {
        const next = await iterator.next();
        if (next.done) return;
        yield next.value;
      }
    } finally {
      // Stopped early (an error downstream): let the source clean up.
      await iterator.return?.();
    }
  }
  return { head, rest: Readable.from(all(), { objectMode: false }) };
}
