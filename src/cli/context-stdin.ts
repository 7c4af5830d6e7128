/**
 * Reads `-` as `docker build` does: stdin that starts as a tar (plain or
 * gzip) is the build context; anything else is a Dockerfile, with an empty
 * context. `-f -` reads only a Dockerfile. What arrives goes to files under
 * a work directory as it arrives (never whole in memory), and stops as soon
 * as it passes `maxBytes`.
 */
import { mkdir, open } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { BraidError, UsageError } from '../errors.js';
import { unpackTar } from './tar-unpack.js';

/** What `-` reads: a stream of bytes, with `isTTY` when it is a terminal. */
export type StdinSource = AsyncIterable<Buffer | string> & { isTTY?: boolean };

export interface StdinOptions {
  /** An empty directory the caller owns and removes. */
  workDir: string;
  maxBytes: number;
  /** The refusal when more than `maxBytes` arrive (`bytes`: how many so far). */
  tooLarge(bytes: number): BraidError;
}

/** The context `-` gave: `dir` holds an unpacked tar, or only the `Dockerfile` from stdin. */
export type StdinContext =
  { kind: 'tar'; dir: string; skipped: string[] } | { kind: 'dockerfile'; dir: string };

/** A tar header is one 512-byte block; docker peeks this much to tell a tar from a Dockerfile. */
const HEADER_BYTES = 512;

type Format = 'tar' | 'gzip' | 'bzip2' | 'xz' | 'zstd' | 'text';

/** `braid build -`: unpacks a tar from stdin, or keeps a Dockerfile with an empty context. */
export async function contextFromStdin(
  stdin: StdinSource,
  options: StdinOptions,
): Promise<StdinContext> {
  refuseTerminal(stdin, 'braid build -', 'a context tar or a Dockerfile');
  const { head, rest } = await peek(stdin, HEADER_BYTES);
  const format = detectFormat(head);
  const dir = path.join(options.workDir, 'context');
  await mkdir(dir);
  if (format === 'text') {
    await spool(join(head, rest), path.join(dir, 'Dockerfile'), options);
    return { kind: 'dockerfile', dir };
  }
  if (format !== 'tar' && format !== 'gzip') {
    throw new UsageError(
      `a ${format}-compressed build context on stdin is not supported: send a plain or gzip-compressed tar`,
    );
  }
  const raw = join(head, rest);
  const tarBytes = format === 'gzip' ? gunzip(raw) : raw;
  const { skipped } = await unpackTar(limit(tarBytes, options), dir, {
    what: 'the build context on stdin',
  });
  return { kind: 'tar', dir, skipped };
}

/** `-f -`: the Dockerfile on stdin, in a file of the work directory; returns its path. */
export async function dockerfileFromStdin(
  stdin: StdinSource,
  options: StdinOptions,
): Promise<string> {
  refuseTerminal(stdin, '-f -', 'a Dockerfile');
  const file = path.join(options.workDir, 'Dockerfile');
  await spool(stdin, file, options);
  return file;
}

function refuseTerminal(stdin: StdinSource, given: string, wanted: string): void {
  // Waiting for typed input would look like a hang; docker waits, braid says why.
  if (stdin.isTTY === true) {
    throw new UsageError(
      `${given} reads ${wanted} from stdin, which is a terminal: pipe or redirect it (< FILE)`,
    );
  }
}

/** Reads until `size` bytes (or the end) have arrived; `rest` yields everything after. */
async function peek(
  source: StdinSource,
  size: number,
): Promise<{ head: Buffer; rest: AsyncIterable<Buffer> }> {
  const iterator = source[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let length = 0;
  let done = false;
  while (length < size) {
    const next = await iterator.next();
    if (next.done === true) {
      done = true;
      break;
    }
    const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
    chunks.push(chunk);
    length += chunk.length;
  }
  const rest: AsyncIterable<Buffer> = {
    async *[Symbol.asyncIterator]() {
      if (done) return;
      for (;;) {
        const next = await iterator.next();
        if (next.done === true) return;
        yield typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
      }
    },
  };
  return { head: Buffer.concat(chunks), rest };
}

async function* join(head: Buffer, rest: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
  if (head.length > 0) yield head;
  yield* rest;
}

/** As docker's IsArchive: a compression's magic bytes, or a first block that is a tar header. */
export function detectFormat(head: Buffer): Format {
  const starts = (...bytes: number[]) => bytes.every((byte, i) => head[i] === byte);
  if (starts(0x1f, 0x8b, 0x08)) return 'gzip';
  if (starts(0x42, 0x5a, 0x68)) return 'bzip2';
  if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) return 'xz';
  if (starts(0x28, 0xb5, 0x2f, 0xfd)) return 'zstd';
  return isTarHeader(head) ? 'tar' : 'text';
}

/** A 512-byte block whose checksum field matches its bytes (signed or unsigned, as Go's reader accepts). */
function isTarHeader(head: Buffer): boolean {
  if (head.length < HEADER_BYTES) return false;
  const block = head.subarray(0, HEADER_BYTES);
  const field = block
    .subarray(148, 156)
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .trim();
  if (!/^[0-7]{1,7}$/.test(field)) return false;
  const stored = parseInt(field, 8);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < HEADER_BYTES; i++) {
    const byte = i >= 148 && i < 156 ? 0x20 : (block[i] as number);
    unsigned += byte;
    signed += byte > 127 ? byte - 256 : byte;
  }
  return stored === unsigned || stored === signed;
}

function gunzip(source: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
  const input = Readable.from(source);
  const inflate = createGunzip();
  input.on('error', (err) => inflate.destroy(err));
  return input.pipe(inflate);
}

/** Passes bytes through until more than `maxBytes` have gone by, then throws the refusal. */
async function* limit(source: AsyncIterable<Buffer>, options: StdinOptions): AsyncIterable<Buffer> {
  let bytes = 0;
  for await (const chunk of source) {
    bytes += chunk.length;
    if (bytes > options.maxBytes) throw options.tooLarge(bytes);
    yield chunk;
  }
}

/** Writes everything `source` gives into a new file, refusing more than `maxBytes`. */
async function spool(
  source: AsyncIterable<Buffer | string>,
  file: string,
  options: StdinOptions,
): Promise<void> {
  const handle = await open(file, 'wx', 0o600);
  try {
    let bytes = 0;
    for await (const chunk of source) {
      const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      bytes += data.length;
      if (bytes > options.maxBytes) throw options.tooLarge(bytes);
      await handle.write(data);
    }
  } finally {
    await handle.close();
  }
}
