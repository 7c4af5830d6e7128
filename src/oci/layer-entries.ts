/**
 * Reads one layer blob (gzip, zstd where Node has it, or plain tar) as a
 * stream into the list of its tar entries: what a runtime would unpack
 * (type, mode, owner, mtime, link target, device, xattrs) and the sha256 of
 * each file's content. Contents are hashed as they pass and never kept.
 */
import { createHash } from 'node:crypto';
import { Readable, pipeline } from 'node:stream';
import * as zlib from 'node:zlib';
import { extract as extractTar, type Header } from 'tar-stream';
import { BraidError, type ErrorCode } from '../errors.js';

export type FileType =
  'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'other';

/** One entry as the runtime unpacks it. Only fields that reach the filesystem are kept. */
export interface FileRecord {
  type: FileType;
  /** Permission, setuid, setgid and sticky bits (type bits some writers add are dropped). */
  mode: number;
  uid: number;
  gid: number;
  /** Content bytes; 0 for everything but regular files. */
  size: number;
  /** Seconds since the epoch as the archive says it: `1700000000`, or a pax `1700000000.5`. */
  mtime: string;
  /** Target of a symbolic or hard link. */
  linkname?: string;
  /** sha256 of the content: regular files, and hard links once their target is known. */
  digest?: string;
  /** `major:minor` of a character or block device. */
  device?: string;
  /** Extended attributes from pax `SCHILY.xattr.*` records. */
  xattrs?: Record<string, string>;
}

export interface LayerEntry {
  /** Archive path normalised: no `./`, no leading or doubled `/`; `` is the root. */
  path: string;
  record: FileRecord;
}

export interface LayerContents {
  /** In archive order, whiteout files (`.wh.*`) included as the entries they are. */
  entries: LayerEntry[];
  /** sha256 of the uncompressed tar: the layer's diff_id. */
  diffId: string;
  /** Uncompressed bytes read. */
  bytes: number;
}

/** Which layer of which image a read is for; named by every error. */
export interface LayerSource {
  /** The image as the user reads it, e.g. `127.0.0.1:5000/app@sha256:…`. */
  image: string;
  index: number;
  digest: string;
}

/** A layer could not be read: corrupt, too large, unreadable or cancelled. */
export class LayerReadError extends BraidError {
  readonly image: string;
  readonly layerIndex: number;
  readonly layerDigest: string;

  constructor(
    code: ErrorCode,
    source: LayerSource,
    problem: string,
    options?: { cause?: unknown },
  ) {
    super(code, `${source.image} layer ${source.index} (${source.digest}): ${problem}`, options);
    this.image = source.image;
    this.layerIndex = source.index;
    this.layerDigest = source.digest;
  }
}

export interface ReadLayerOptions {
  /** Uncompressed bytes the read may take; past them it fails with resource_exhausted. */
  maxBytes?: number;
  /** Says what the limit is, for the message (e.g. "maxImageBytes of 8 GiB for image a"). */
  limitText?: string;
  signal?: AbortSignal;
}

/** zlib's default 16 KiB output chunks cost a thread-pool round trip each. */
const INFLATE_CHUNK_BYTES = 256 * 1024;
const MODE_BITS = 0o7777;
const XATTR_PREFIX = 'SCHILY.xattr.';

/** A budget or a cancellation stopped the read; not an error of the layer's bytes. */
class ReadStopped extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** Read a layer blob stream to its entries; the stream is consumed or destroyed. */
export async function readLayerEntries(
  blob: NodeJS.ReadableStream,
  source: LayerSource,
  options: ReadLayerOptions = {},
): Promise<LayerContents> {
  const raw = blob instanceof Readable ? blob : new Readable().wrap(blob);
  const maxBytes = options.maxBytes ?? Infinity;
  const entries: LayerEntry[] = [];
  const tarHash = createHash('sha256');
  let bytes = 0;
  let stage = 'reading the tar';
  let blobError: unknown;
  raw.once('error', (err) => (blobError ??= err));
  const extract = extractTar();
  const onAbort = (): void => {
    raw.destroy(new ReadStopped('cancelled', 'cancelled'));
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    if (options.signal?.aborted) throw new ReadStopped('cancelled', 'cancelled');
    const { kind, stream } = await sniff(raw);
    const inflate = decompressor(kind, source);
    if (inflate) stage = `decompressing (${kind})`;
    const plain = inflate ? pipeline(stream, inflate, () => undefined) : stream;
    const feed = (async () => {
      try {
        for await (const chunk of plain) {
          const data = chunk as Buffer;
          bytes += data.length;
          if (bytes > maxBytes) {
            throw new ReadStopped(
              'resource_exhausted',
              `more than ${maxBytes} uncompressed bytes${options.limitText ? ` (${options.limitText})` : ''}`,
            );
          }
          tarHash.update(data);
          if (!extract.write(data)) await drained(extract);
        }
        stage = 'reading the tar';
        extract.end(undefined);
      } catch (err) {
        extract.destroy(err as Error);
        throw err;
      }
    })();
    // The feed's error also reaches the extract's iterator; this keeps it from being unhandled.
    feed.catch(() => undefined);
    const consume = (async () => {
      for await (const entry of extract) {
        const header = entry.header;
        let digest: string | undefined;
        if (header.type === 'file' || header.type === 'contiguous-file') {
          const hash = createHash('sha256');
          for await (const chunk of entry) hash.update(chunk as Buffer);
          digest = `sha256:${hash.digest('hex')}`;
        } else {
          // Nothing to keep, but the stream must be read for the next entry to come.
          for await (const chunk of entry) void chunk;
        }
        entries.push({ path: normalisePath(header.name), record: recordOf(header, digest) });
      }
    })();
    await Promise.all([feed, consume]);
  } catch (err) {
    raw.destroy();
    extract.destroy();
    if (err instanceof LayerReadError) throw err;
    const stopped =
      err instanceof ReadStopped
        ? err
        : blobError instanceof ReadStopped
          ? blobError
          : signalStop(options.signal);
    if (stopped) throw new LayerReadError(stopped.code, source, stopped.message, { cause: err });
    if (blobError !== undefined) {
      // The registry's stream failed (reset, digest mismatch): the bytes are not to blame.
      const code = blobError instanceof BraidError ? blobError.code : 'unavailable';
      throw new LayerReadError(code, source, `reading the blob: ${errorText(blobError)}`, {
        cause: blobError,
      });
    }
    throw new LayerReadError(
      'invalid_argument',
      source,
      `corrupt layer while ${stage}: ${errorText(err)}`,
      { cause: err },
    );
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
  }
  return { entries, diffId: `sha256:${tarHash.digest('hex')}`, bytes };
}

/** `./usr//bin/` -> `usr/bin`; the root is ``. */
export function normalisePath(name: string): string {
  return name
    .split('/')
    .filter((part) => part !== '' && part !== '.')
    .join('/');
}

function recordOf(header: Header, digest: string | undefined): FileRecord {
  const type = fileType(header.type);
  const record: FileRecord = {
    type,
    mode: (header.mode ?? 0) & MODE_BITS,
    uid: header.uid ?? 0,
    gid: header.gid ?? 0,
    size: type === 'file' ? (header.size ?? 0) : 0,
    mtime: mtimeOf(header),
  };
  if ((type === 'symlink' || type === 'hardlink') && header.linkname) {
    record.linkname = header.linkname;
  }
  if (digest) record.digest = digest;
  if (type === 'char' || type === 'block') {
    record.device = `${header.devmajor ?? 0}:${header.devminor ?? 0}`;
  }
  const pax = header.pax as Record<string, string> | null | undefined;
  if (pax) {
    const xattrs = Object.keys(pax)
      .filter((key) => key.startsWith(XATTR_PREFIX))
      .sort()
      .map((key) => [key.slice(XATTR_PREFIX.length), pax[key] ?? ''] as const);
    if (xattrs.length > 0) record.xattrs = Object.fromEntries(xattrs);
  }
  return record;
}

function fileType(type: Header['type']): FileType {
  switch (type) {
    case 'file':
    case 'contiguous-file':
      return 'file';
    case 'directory':
      return 'dir';
    case 'symlink':
      return 'symlink';
    case 'link':
      return 'hardlink';
    case 'character-device':
      return 'char';
    case 'block-device':
      return 'block';
    case 'fifo':
      return 'fifo';
    default:
      return 'other';
  }
}

/** A pax mtime (sub-second) wins over the header's whole seconds, as in Go's archive/tar. */
function mtimeOf(header: Header): string {
  const pax = (header.pax as Record<string, string> | null | undefined)?.mtime;
  if (pax && /^-?\d+(\.\d+)?$/.test(pax)) {
    return pax.includes('.') ? pax.replace(/\.?0+$/, '') : pax;
  }
  const date = header.mtime;
  return date ? String(Math.floor(date.getTime() / 1000)) : '0';
}

type Compression = 'gzip' | 'zstd' | 'tar';

/** Tells the compression by the first bytes, and hands back a stream that still starts with them. */
async function sniff(raw: Readable): Promise<{ kind: Compression; stream: Readable }> {
  const iterator = raw[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let head = Buffer.alloc(0);
  while (head.length < 4) {
    const next = await iterator.next();
    if (next.done) break;
    head = Buffer.concat([head, next.value]);
  }
  const kind: Compression =
    head[0] === 0x1f && head[1] === 0x8b
      ? 'gzip'
      : head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528
        ? 'zstd'
        : 'tar';
  const rest = async function* (): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      yield next.value;
    }
  };
  const stream = Readable.from(rest(), { objectMode: false });
  stream.once('close', () => {
    if (!raw.destroyed) raw.destroy();
  });
  return { kind, stream };
}

function decompressor(kind: Compression, source: LayerSource): NodeJS.ReadWriteStream | undefined {
  if (kind === 'gzip') return zlib.createGunzip({ chunkSize: INFLATE_CHUNK_BYTES });
  if (kind === 'tar') return undefined;
  const zstd = (zlib as { createZstdDecompress?: () => NodeJS.ReadWriteStream })
    .createZstdDecompress;
  if (!zstd) {
    throw new LayerReadError(
      'unimplemented',
      source,
      `the layer is zstd-compressed, which Node ${process.version} cannot decompress`,
    );
  }
  return zstd();
}

/** Waits for the reader to want more; listeners go once either event comes. */
function drained(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve, reject) => {
    const onDrain = (): void => {
      stream.off('close', onClose);
      resolve();
    };
    const onClose = (): void => {
      stream.off('drain', onDrain);
      reject(new Error('the tar reader closed'));
    };
    stream.once('drain', onDrain);
    stream.once('close', onClose);
  });
}

function signalStop(signal: AbortSignal | undefined): ReadStopped | undefined {
  return signal?.aborted ? new ReadStopped('cancelled', 'cancelled') : undefined;
}

function errorText(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split('\n')[0] ?? text;
}
