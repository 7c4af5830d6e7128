/**
 * One contract for every build-context store: the same cases run against
 * the file store (a temp data dir) and PostgreSQL (a real cluster this
 * suite starts, one database per test). Uploads are checked before they
 * become visible, dedupe by digest, read back from any offset — inside a
 * 1 MiB chunk, on a chunk boundary, at the end — and a second store on the
 * same place (another coordinator on the database, or the same data dir)
 * serves what the first received.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import pg from 'pg';
import { pack } from 'tar-stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BraidError } from '../../src/errors.js';
import { ContextStore } from '../../src/coordinator/context-store.js';
import type { BuildContexts } from '../../src/coordinator/contexts.js';
import { CONTEXT_CHUNK_BYTES, PgContextStore } from '../../src/coordinator/pg-context-store.js';
import { startPostgres, type PostgresCluster } from '../support/postgres.js';

const MiB = 1024 * 1024;
const MAX_BYTES = 8 * MiB;

type Entry = {
  name: string;
  type?: 'file' | 'symlink' | 'directory';
  body?: Buffer;
  linkname?: string;
};

/** A real tar of `entries`, as the CLI uploads it. */
async function tarOf(entries: Entry[]): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve) => tar.on('end', () => resolve()));
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const header = {
        name: e.name,
        type: e.type ?? 'file',
        linkname: e.linkname,
        mode: 0o644,
        mtime: new Date(0),
      };
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if ((e.type ?? 'file') === 'file') tar.entry(header, e.body ?? Buffer.alloc(0), cb);
      else tar.entry(header, cb);
    });
  }
  tar.finalize();
  await done;
  return Buffer.concat(chunks);
}

interface Context {
  bytes: Buffer;
  digest: string;
}

function contextOf(bytes: Buffer): Context {
  return { bytes, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` };
}

/** A context of about 2.5 MiB: three chunks, the last one partial. */
async function largeContext(): Promise<Context> {
  return contextOf(
    await tarOf([
      { name: 'Dockerfile', body: Buffer.from('FROM scratch\nCOPY app /app\n') },
      { name: 'app', type: 'directory' },
      { name: 'app/src/main.go', body: Buffer.from('package main\n') },
      { name: 'app/blob.bin', body: randomBytes(2.5 * MiB) },
      { name: 'app/link', type: 'symlink', linkname: 'src/main.go' },
    ]),
  );
}

/** A context of exactly two chunks: header, file, padding and end blocks fill 2 MiB. */
async function twoChunkContext(): Promise<Context> {
  const context = contextOf(
    await tarOf([{ name: 'Dockerfile', body: randomBytes(2 * MiB - 512 - 1024) }]),
  );
  expect(context.bytes.length).toBe(2 * CONTEXT_CHUNK_BYTES);
  return context;
}

async function smallContext(marker = 'small'): Promise<Context> {
  return contextOf(await tarOf([{ name: 'Dockerfile', body: Buffer.from(`FROM ${marker}\n`) }]));
}

/** The bytes as the CLI sends them: 64 KiB messages. */
async function* chunksOf(bytes: Buffer, pieceBytes = 64 * 1024): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < bytes.length; at += pieceBytes) {
    yield bytes.subarray(at, at + pieceBytes);
    await new Promise((r) => setImmediate(r));
  }
}

/** An upload that must not be read (the context is already there). */
async function* unread(): AsyncGenerator<Uint8Array> {
  yield await Promise.reject(new Error('the upload was read although the context was present'));
}

async function readAll(stream: Readable): Promise<{ bytes: Buffer; largestPiece: number }> {
  const pieces: Buffer[] = [];
  for await (const piece of stream) pieces.push(piece as Buffer);
  return {
    bytes: Buffer.concat(pieces),
    largestPiece: Math.max(0, ...pieces.map((p) => p.length)),
  };
}

async function refusal(promise: Promise<unknown>): Promise<BraidError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BraidError);
  return err as BraidError;
}

/** Where one test's contexts live; every store opened on it shares them. */
interface Place {
  open(maxBytes?: number): Promise<BuildContexts>;
  /** Everything the place holds: stored files or rows, and temp/spool files. */
  contents(): Promise<string[]>;
}

interface Kind {
  name: string;
  notFound: RegExp;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  place(): Promise<Place>;
  /** Closes what the test's stores opened. */
  closeStores(): Promise<void>;
}

const files = (): Kind => {
  let dir = '';
  let places = 0;
  return {
    name: 'the file store',
    notFound: /^context sha256:[a-f0-9]{64} is not on this coordinator$/,
    setup: async () => {
      dir = await mkdtemp(join(tmpdir(), 'braid-context-contract-'));
    },
    teardown: () => rm(dir, { recursive: true, force: true }),
    place: () => {
      const dataDir = join(dir, `data-${++places}`);
      return Promise.resolve({
        open: async (maxBytes = MAX_BYTES) => {
          const store = new ContextStore(dataDir, maxBytes);
          await store.init();
          return store;
        },
        contents: async () => (await readdir(join(dataDir, 'contexts', 'sha256'))).sort(),
      });
    },
    closeStores: () => Promise.resolve(),
  };
};

const postgres = (): Kind => {
  let cluster: PostgresCluster | undefined;
  let spoolRoot = '';
  let places = 0;
  let pools: pg.Pool[] = [];
  return {
    name: 'PostgreSQL',
    notFound: /^context sha256:[a-f0-9]{64} is not in the store$/,
    setup: async () => {
      cluster = await startPostgres();
      spoolRoot = await mkdtemp(join(tmpdir(), 'braid-context-spool-'));
    },
    teardown: async () => {
      await cluster?.stop();
      await rm(spoolRoot, { recursive: true, force: true });
    },
    place: async () => {
      const url = await cluster!.createDatabase();
      // Every store (coordinator) of a place spools into its own dir.
      const spoolDirs: string[] = [];
      const pool = (): pg.Pool => {
        const opened = new pg.Pool({ connectionString: url, max: 4 });
        pools.push(opened);
        return opened;
      };
      const inspector = pool();
      return {
        open: async (maxBytes = MAX_BYTES) => {
          const spoolDir = join(spoolRoot, `spool-${++places}`);
          spoolDirs.push(spoolDir);
          const store = new PgContextStore(pool(), maxBytes, { spoolDir });
          await store.init();
          return store;
        },
        contents: async () => {
          const rows = await inspector.query<{ digest: string; chunks: string }>(
            `SELECT c.digest, (SELECT count(*) FROM context_chunks k WHERE k.digest = c.digest) AS chunks
             FROM contexts c ORDER BY c.digest`,
          );
          const orphans = await inspector.query<{ n: string }>(
            'SELECT count(*) AS n FROM context_chunks k WHERE NOT EXISTS (SELECT 1 FROM contexts c WHERE c.digest = k.digest)',
          );
          const spooled = (await Promise.all(spoolDirs.map((d) => readdir(d)))).flat();
          return [
            ...rows.rows.map((r) => `${r.digest} in ${r.chunks} chunks`),
            ...(Number(orphans.rows[0]?.n) > 0 ? [`${orphans.rows[0]?.n} orphan chunks`] : []),
            ...spooled.map((f) => `spooled ${f}`),
          ];
        },
      };
    },
    closeStores: async () => {
      const closing = pools;
      pools = [];
      await Promise.all(closing.map((p) => p.end()));
    },
  };
};

describe.each([files(), postgres()])('build contexts in $name', (kind) => {
  beforeAll(() => kind.setup());
  afterAll(() => kind.teardown());
  afterEach(() => kind.closeStores());

  it('stores a context over several chunks and reads it back from any offset', async () => {
    const store = await (await kind.place()).open();
    const context = await largeContext();
    const size = context.bytes.length;
    expect(await store.size(context.digest)).toBeUndefined();
    expect(await store.put(context.digest, size, chunksOf(context.bytes))).toBe(false);
    expect(await store.size(context.digest)).toBe(size);
    for (const offset of [
      0,
      1, // inside the first chunk
      MiB + 123_457, // inside the second chunk
      MiB, // exactly a chunk boundary
      2 * MiB, // the last chunk, from its start
      size - 1, // the last byte
      size, // the end: nothing
    ]) {
      const { bytes, largestPiece } = await readAll(await store.open(context.digest, offset));
      expect(bytes.length, `from offset ${offset}`).toBe(size - offset);
      expect(bytes.equals(context.bytes.subarray(offset)), `from offset ${offset}`).toBe(true);
      // Read in bounded pieces, as the agent streams them.
      expect(largestPiece).toBeLessThanOrEqual(MiB);
    }
    expect((await readAll(await store.open(context.digest))).bytes.equals(context.bytes)).toBe(
      true,
    );
  });

  it('reads a context that ends exactly on a chunk boundary', async () => {
    const store = await (await kind.place()).open();
    const context = await twoChunkContext();
    expect(await store.put(context.digest, context.bytes.length, chunksOf(context.bytes))).toBe(
      false,
    );
    for (const offset of [0, MiB - 1, MiB, 2 * MiB - 1, 2 * MiB]) {
      const { bytes } = await readAll(await store.open(context.digest, offset));
      expect(bytes.equals(context.bytes.subarray(offset)), `from offset ${offset}`).toBe(true);
    }
  });

  it('answers hasFile from the tar listing: files and links, not directories', async () => {
    const store = await (await kind.place()).open();
    const context = await largeContext();
    await store.put(context.digest, context.bytes.length, chunksOf(context.bytes));
    expect(await store.hasFile(context.digest, 'Dockerfile')).toBe(true);
    expect(await store.hasFile(context.digest, './Dockerfile')).toBe(true);
    expect(await store.hasFile(context.digest, 'app//src/./main.go')).toBe(true);
    expect(await store.hasFile(context.digest, 'app/link')).toBe(true);
    expect(await store.hasFile(context.digest, 'app')).toBe(false);
    expect(await store.hasFile(context.digest, 'app/src/missing.go')).toBe(false);
    expect(await store.hasFile((await smallContext('other')).digest, 'Dockerfile')).toBe(false);
  });

  it('reports a second upload of the same digest as present, without reading it', async () => {
    const place = await kind.place();
    const store = await place.open();
    const context = await smallContext();
    expect(await store.put(context.digest, context.bytes.length, chunksOf(context.bytes))).toBe(
      false,
    );
    const before = await place.contents();
    expect(before).not.toEqual([]);
    expect(await store.put(context.digest, context.bytes.length, unread())).toBe(true);
    expect(await place.contents()).toEqual(before);
  });

  it('serves through a second store on the same place what the first received', async () => {
    const place = await kind.place();
    const first = await place.open();
    const second = await place.open();
    const large = await largeContext();
    const small = await smallContext();
    expect(await first.put(large.digest, large.bytes.length, chunksOf(large.bytes))).toBe(false);
    expect(await second.put(small.digest, small.bytes.length, chunksOf(small.bytes))).toBe(false);

    expect(await second.size(large.digest)).toBe(large.bytes.length);
    expect(await second.hasFile(large.digest, 'app/src/main.go')).toBe(true);
    const resumed = await readAll(await second.open(large.digest, MiB + 1));
    expect(resumed.bytes.equals(large.bytes.subarray(MiB + 1))).toBe(true);
    expect((await readAll(await first.open(small.digest))).bytes.equals(small.bytes)).toBe(true);
    // The second coordinator dedupes the first one's upload.
    expect(await second.put(large.digest, large.bytes.length, unread())).toBe(true);
  });

  it('keeps one copy when two stores receive the same context at once, and never serves it half-written', async () => {
    const place = await kind.place();
    const [a, b, reader] = await Promise.all([place.open(), place.open(), place.open()]);
    const context = await largeContext();
    let uploading = true;
    const watching = (async () => {
      while (uploading) {
        if ((await reader.size(context.digest)) !== undefined) {
          const { bytes } = await readAll(await reader.open(context.digest));
          expect(bytes.equals(context.bytes)).toBe(true);
        }
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    const results = await Promise.all([
      a.put(context.digest, context.bytes.length, chunksOf(context.bytes)),
      b.put(context.digest, context.bytes.length, chunksOf(context.bytes, 100_000)),
    ]).finally(() => {
      uploading = false;
    });
    await watching;
    // At least one upload stored it; every read saw the whole context.
    expect(results).toContain(false);
    for (const store of [a, b, reader]) {
      expect((await readAll(await store.open(context.digest))).bytes.equals(context.bytes)).toBe(
        true,
      );
    }
    const contents = await place.contents();
    expect(contents.filter((c) => c.includes(context.digest.slice(7)))).toHaveLength(
      kind.name === 'PostgreSQL' ? 1 : 2, // the row, or the file and its list
    );
    if (kind.name === 'PostgreSQL') expect(results.sort()).toEqual([false, true]);
  });

  describe('refuses, and keeps nothing of,', () => {
    const cases: [string, (c: Context) => [string, number, AsyncIterable<Uint8Array>], RegExp][] = [
      [
        'an upload that hashes to another digest',
        (c) => [`sha256:${'0'.repeat(64)}`, c.bytes.length, chunksOf(c.bytes)],
        /^context upload hashes to sha256:[a-f0-9]{64}, not the announced sha256:0{64}$/,
      ],
      [
        'an upload shorter than announced',
        (c) => [c.digest, c.bytes.length + 1, chunksOf(c.bytes)],
        /^context upload ended after \d+ of \d+ bytes$/,
      ],
      [
        'an upload longer than announced',
        (c) => [c.digest, c.bytes.length - 1, chunksOf(c.bytes)],
        /^context upload sent more than the announced \d+ bytes$/,
      ],
    ];
    it.each(cases)('%s', async (_name, upload, message) => {
      const place = await kind.place();
      const store = await place.open();
      const context = await largeContext();
      const [digest, size, chunks] = upload(context);
      const err = await refusal(store.put(digest, size, chunks));
      expect(err.code).toBe('invalid_argument');
      expect(err.message).toMatch(message);
      expect(await store.size(context.digest)).toBeUndefined();
      expect(await store.size(digest)).toBeUndefined();
      expect(await store.hasFile(context.digest, 'Dockerfile')).toBe(false);
      expect(await place.contents()).toEqual([]);
    });

    it('a tar with a symlink out of the context', async () => {
      const place = await kind.place();
      const store = await place.open();
      const context = contextOf(
        await tarOf([
          { name: 'Dockerfile', body: randomBytes(1.5 * MiB) },
          { name: 'escape', type: 'symlink', linkname: '../../etc/shadow' },
        ]),
      );
      const err = await refusal(
        store.put(context.digest, context.bytes.length, chunksOf(context.bytes)),
      );
      expect(err.code).toBe('invalid_argument');
      expect(err.message).toBe(
        'build context entry "escape" is a symlink to "../../etc/shadow", outside the context',
      );
      expect(await store.size(context.digest)).toBeUndefined();
      await expect(store.open(context.digest)).rejects.toMatchObject({ code: 'not_found' });
      expect(await place.contents()).toEqual([]);
    });

    it('bytes that are not a tar', async () => {
      const place = await kind.place();
      const store = await place.open();
      const context = contextOf(Buffer.from('this is not a tar archive, just text\n'.repeat(40)));
      const err = await refusal(
        store.put(context.digest, context.bytes.length, chunksOf(context.bytes)),
      );
      expect(err.code).toBe('invalid_argument');
      expect(err.message).toMatch(/^build context is not a readable tar: /);
      expect(await place.contents()).toEqual([]);
    });

    it('an upload whose client goes away half-way', async () => {
      const place = await kind.place();
      const store = await place.open();
      const context = await largeContext();
      async function* cut(): AsyncGenerator<Uint8Array> {
        yield context.bytes.subarray(0, MiB + 10);
        throw new Error('the client went away');
      }
      await expect(store.put(context.digest, context.bytes.length, cut())).rejects.toThrow(
        'the client went away',
      );
      expect(await store.size(context.digest)).toBeUndefined();
      expect(await place.contents()).toEqual([]);
      // And the next upload of it succeeds.
      expect(await store.put(context.digest, context.bytes.length, chunksOf(context.bytes))).toBe(
        false,
      );
    });

    it("a context over the coordinator's limit, before reading it", async () => {
      const place = await kind.place();
      const store = await place.open(2 * MiB);
      const context = await largeContext();
      const err = await refusal(store.put(context.digest, context.bytes.length, unread()));
      expect(err.code).toBe('invalid_argument');
      expect(err.message).toBe(
        `context of ${context.bytes.length} bytes exceeds the coordinator's limit of ${2 * MiB} bytes`,
      );
      expect(await place.contents()).toEqual([]);
    });
  });

  it('refuses a digest that is not sha256:<64 hex> in every call', async () => {
    const store = await (await kind.place()).open();
    for (const digest of ['sha256:abc', `md5:${'a'.repeat(64)}`, `sha256:${'A'.repeat(64)}`, '']) {
      const calls = [
        store.size(digest),
        store.put(digest, 10, unread()),
        store.hasFile(digest, 'Dockerfile'),
        store.open(digest, 0),
      ];
      for (const call of calls) {
        const err = await refusal(call);
        expect(err.code).toBe('invalid_argument');
        expect(err.message).toBe(`context digest "${digest}" is not sha256:<64 hex>`);
      }
    }
  });

  it('refuses to open a context it does not hold, or from past its end', async () => {
    const store = await (await kind.place()).open();
    const missing = await smallContext('missing');
    const notFound = await refusal(store.open(missing.digest, 0));
    expect(notFound.code).toBe('not_found');
    expect(notFound.message).toMatch(kind.notFound);

    const context = await largeContext();
    const size = context.bytes.length;
    await store.put(context.digest, size, chunksOf(context.bytes));
    const past = await refusal(store.open(context.digest, size + 1));
    expect(past.code).toBe('invalid_argument');
    expect(past.message).toBe(
      `offset ${size + 1} is past the end of context ${context.digest} (${size} bytes)`,
    );
    for (const offset of [-1, 0.5, Number.NaN]) {
      const bad = await refusal(store.open(context.digest, offset));
      expect(bad.code).toBe('invalid_argument');
      expect(bad.message).toBe(
        `offset ${offset} into context ${context.digest} is not a whole number of bytes`,
      );
    }
  });
});

describe('build contexts in PostgreSQL', () => {
  let cluster: PostgresCluster;
  let spoolDir: string;
  const pools: pg.Pool[] = [];

  beforeAll(async () => {
    cluster = await startPostgres();
    spoolDir = await mkdtemp(join(tmpdir(), 'braid-context-spool-'));
  });
  afterAll(async () => {
    await cluster?.stop();
    await rm(spoolDir, { recursive: true, force: true });
  });
  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => p.end()));
  });

  async function database(): Promise<pg.Pool> {
    const pool = new pg.Pool({ connectionString: await cluster.createDatabase(), max: 4 });
    pools.push(pool);
    return pool;
  }

  it('keeps a context as one row and its bytes in 1 MiB chunk rows', async () => {
    const pool = await database();
    const store = new PgContextStore(pool, MAX_BYTES, { spoolDir });
    await store.init();
    await store.init(); // idempotent: a second coordinator starting
    const context = await largeContext();
    await store.put(context.digest, context.bytes.length, chunksOf(context.bytes));
    const chunks = await pool.query<{ seq: number; length: number }>(
      'SELECT seq, length(bytes) AS length FROM context_chunks WHERE digest = $1 ORDER BY seq',
      [context.digest],
    );
    expect(chunks.rows).toEqual([
      { seq: 0, length: MiB },
      { seq: 1, length: MiB },
      { seq: 2, length: context.bytes.length - 2 * MiB },
    ]);
    const row = await pool.query<{ size_bytes: string; files: string }>(
      'SELECT size_bytes, files FROM contexts WHERE digest = $1',
      [context.digest],
    );
    expect(row.rows[0]?.size_bytes).toBe(String(context.bytes.length));
    expect(row.rows[0]?.files.split('\n')).toEqual([
      'Dockerfile',
      'app/blob.bin',
      'app/link',
      'app/src/main.go',
    ]);
  });

  it('creates its tables once when coordinators start together', async () => {
    const url = await cluster.createDatabase();
    const starting = Array.from({ length: 4 }, () => {
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      pools.push(pool);
      return new PgContextStore(pool, MAX_BYTES, { spoolDir }).init();
    });
    await Promise.all(starting);
  });

  it('reads chunk by chunk as the stream is consumed', async () => {
    const pool = await database();
    const store = new PgContextStore(pool, MAX_BYTES, { spoolDir });
    await store.init();
    const context = await largeContext();
    await store.put(context.digest, context.bytes.length, chunksOf(context.bytes));
    const stream = await store.open(context.digest, 0);
    const iterator = stream[Symbol.asyncIterator]();
    const first = await iterator.next();
    expect((first.value as Buffer).equals(context.bytes.subarray(0, 256 * 1024))).toBe(true);
    // Removed while read: the chunks not yet fetched are gone, and the reader is told.
    expect(await store.prune(new Date(Date.now() + 60_000), new Set())).toBe(1);
    let received = (first.value as Buffer).length;
    const err = await (async () => {
      for (;;) {
        const next = await iterator.next();
        if (next.done) return undefined;
        received += (next.value as Buffer).length;
      }
    })().catch((e: unknown) => e);
    // Only pieces of the first chunk arrived (some may be dropped with the error).
    expect(received).toBeLessThanOrEqual(MiB);
    expect(err).toBeInstanceOf(BraidError);
    expect((err as BraidError).code).toBe('not_found');
    expect((err as BraidError).message).toBe(
      `context ${context.digest} was removed from the store while it was read (chunk 1)`,
    );
    stream.destroy();
  });

  it('prunes contexts stored before the cut-off, except those it is told to keep', async () => {
    const pool = await database();
    let now = 1_000;
    const store = new PgContextStore(pool, MAX_BYTES, { spoolDir, now: () => now });
    await store.init();
    const old = await largeContext();
    const kept = await smallContext('kept');
    const recent = await smallContext('recent');
    await store.put(old.digest, old.bytes.length, chunksOf(old.bytes));
    await store.put(kept.digest, kept.bytes.length, chunksOf(kept.bytes));
    now = 5_000;
    await store.put(recent.digest, recent.bytes.length, chunksOf(recent.bytes));

    expect(await store.prune(new Date(3_000), new Set([kept.digest]))).toBe(1);
    expect(await store.size(old.digest)).toBeUndefined();
    expect(await store.hasFile(old.digest, 'Dockerfile')).toBe(false);
    expect(await store.size(kept.digest)).toBe(kept.bytes.length);
    expect(await store.size(recent.digest)).toBe(recent.bytes.length);
    const chunks = await pool.query<{ digest: string }>(
      'SELECT DISTINCT digest FROM context_chunks',
    );
    expect(chunks.rows.map((r) => r.digest).sort()).toEqual([kept.digest, recent.digest].sort());

    expect(await store.prune(new Date(3_000), new Set())).toBe(1);
    expect(await store.size(kept.digest)).toBeUndefined();
    // A pruned context can be uploaded again.
    expect(await store.put(old.digest, old.bytes.length, chunksOf(old.bytes))).toBe(false);
  });
});
