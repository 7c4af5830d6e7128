/**
 * Build contexts in PostgreSQL, so that every coordinator on one database
 * serves the contexts any of them received: the semantics of the file
 * store (context-store.ts) over a `pg` pool. A context is a row of
 * `contexts` (its size and file list) and its bytes in 1 MiB rows of
 * `context_chunks`. An upload is spooled to a temp file and checked there
 * first (size, sha256, tar entries), then written — row and chunks — in
 * one transaction: until it commits, no other connection sees any of it,
 * and a second upload of the same digest waits on the first's row, then
 * finds it and reports the context as already present.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, open as openFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type pg from 'pg';
import { BraidError } from '../errors.js';
import {
  checkOffset,
  digestHex,
  normaliseContextPath,
  receiveContext,
  tooLarge,
  type BuildContexts,
} from './contexts.js';

/** Bytes per row of context_chunks. Every coordinator on a database must agree. */
export const CONTEXT_CHUNK_BYTES = 1024 * 1024;

/** Bytes per piece of a stream from open(), as the file store reads them. */
const PIECE_BYTES = 256 * 1024;

/** Serialises init() across coordinators starting together ("bctx"). */
const TABLES_LOCK = 0x62637478;

const TABLES = [
  `CREATE TABLE IF NOT EXISTS contexts (
    digest TEXT PRIMARY KEY,
    size_bytes BIGINT NOT NULL,
    files TEXT NOT NULL,
    created_at BIGINT NOT NULL
  )`,
  'CREATE INDEX IF NOT EXISTS contexts_created ON contexts (created_at)',
  `CREATE TABLE IF NOT EXISTS context_chunks (
    digest TEXT NOT NULL REFERENCES contexts (digest) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    bytes BYTEA NOT NULL,
    PRIMARY KEY (digest, seq)
  )`,
];

export interface PgContextStoreOptions {
  /** Where uploads are spooled while they are checked (default the OS temp dir). */
  spoolDir?: string;
  /** Milliseconds since the epoch, for created_at (default Date.now). */
  now?: () => number;
}

export class PgContextStore implements BuildContexts {
  private readonly spoolDir: string;
  private readonly now: () => number;

  constructor(
    private readonly pool: pg.Pool,
    private readonly maxBytes: number,
    options: PgContextStoreOptions = {},
  ) {
    this.spoolDir = options.spoolDir ?? tmpdir();
    this.now = options.now ?? Date.now;
  }

  /** Creates the tables if missing; coordinators starting together take turns. */
  async init(): Promise<void> {
    await mkdir(this.spoolDir, { recursive: true, mode: 0o700 });
    await this.transaction(async (client) => {
      await client.query('SELECT pg_advisory_xact_lock($1)', [TABLES_LOCK]);
      for (const sql of TABLES) await client.query(sql);
    });
  }

  async size(digest: string): Promise<number | undefined> {
    digestHex(digest);
    const result = await this.pool.query<{ size_bytes: string }>(
      'SELECT size_bytes FROM contexts WHERE digest = $1',
      [digest],
    );
    const row = result.rows[0];
    return row === undefined ? undefined : Number(row.size_bytes);
  }

  /**
   * Store the bytes of `chunks` as context `digest`; returns true when it
   * was already present (the bytes are then not read) or another upload of
   * it committed first (this one's are dropped).
   */
  async put(
    digest: string,
    sizeBytes: number,
    chunks: AsyncIterable<Uint8Array>,
  ): Promise<boolean> {
    digestHex(digest);
    if (sizeBytes > this.maxBytes) throw tooLarge(sizeBytes, this.maxBytes);
    if ((await this.size(digest)) !== undefined) return true;
    const spool = join(this.spoolDir, `braid-context-${randomUUID()}`);
    try {
      const files = await receiveContext(spool, digest, sizeBytes, chunks);
      return await this.insert(digest, sizeBytes, files, spool);
    } finally {
      await rm(spool, { force: true });
    }
  }

  /** Writes a checked upload in one transaction; true when the digest was there first. */
  private insert(digest: string, sizeBytes: number, files: string[], spool: string) {
    return this.transaction(async (client) => {
      // Waits for an uncommitted upload of the same digest, then skips.
      const claimed = await client.query(
        `INSERT INTO contexts (digest, size_bytes, files, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (digest) DO NOTHING`,
        [digest, sizeBytes, files.join('\n'), this.now()],
      );
      if (claimed.rowCount === 0) return true;
      await insertChunks(client, digest, spool);
      return false;
    });
  }

  async hasFile(digest: string, path: string): Promise<boolean> {
    digestHex(digest);
    const result = await this.pool.query<{ found: boolean }>(
      `SELECT $2 = ANY (string_to_array(files, E'\\n')) AS found FROM contexts WHERE digest = $1`,
      [digest, normaliseContextPath(path)],
    );
    return result.rows[0]?.found === true;
  }

  /**
   * The context's bytes from `offset`, read one chunk row at a time as the
   * stream is consumed (each read borrows a pooled connection only for its
   * query), starting inside the chunk that holds `offset`.
   */
  async open(digest: string, offset = 0): Promise<Readable> {
    const size = await this.size(digest);
    if (size === undefined)
      throw new BraidError('not_found', `context ${digest} is not in the store`);
    checkOffset(digest, offset, size);
    const pool = this.pool;
    const chunks = Math.ceil(size / CONTEXT_CHUNK_BYTES);
    async function* read(): AsyncGenerator<Buffer> {
      let skip = offset % CONTEXT_CHUNK_BYTES;
      for (let seq = Math.floor(offset / CONTEXT_CHUNK_BYTES); seq < chunks; seq++) {
        // Text results (BYTEA as hex): pg decodes binary results as UTF-8 text.
        const result = await pool.query<{ bytes: Buffer }>(
          'SELECT substring(bytes FROM $3::integer) AS bytes FROM context_chunks WHERE digest = $1 AND seq = $2',
          [digest, seq, skip + 1],
        );
        const bytes = result.rows[0]?.bytes;
        if (bytes === undefined) {
          throw new BraidError(
            'not_found',
            `context ${digest} was removed from the store while it was read (chunk ${seq})`,
          );
        }
        for (let at = 0; at < bytes.length; at += PIECE_BYTES)
          yield bytes.subarray(at, at + PIECE_BYTES);
        skip = 0;
      }
    }
    // At most a piece or two waits in the stream: a slow reader holds one chunk.
    return Readable.from(read(), { highWaterMark: 2 });
  }

  /**
   * Deletes the contexts stored before `olderThan` whose digest is not in
   * `keep` (the contexts of builds not finished, at least); returns how
   * many. Nothing calls this yet: the leader is to call it periodically.
   */
  async prune(olderThan: Date, keep: ReadonlySet<string>): Promise<number> {
    const result = await this.pool.query(
      'DELETE FROM contexts WHERE created_at < $1 AND NOT (digest = ANY ($2::text[]))',
      [olderThan.getTime(), [...keep]],
    );
    return result.rowCount ?? 0;
  }

  private async transaction<T>(body: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken = false;
    try {
      await client.query('BEGIN');
      let value: T;
      try {
        value = await body(client);
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {
          broken = true;
        });
        throw err;
      }
      await client.query('COMMIT');
      return value;
    } catch (err) {
      if (!(err instanceof BraidError)) broken = true;
      throw err;
    } finally {
      client.release(broken);
    }
  }
}

/**
 * A file's bytes into `context_chunks` under `digest`, CONTEXT_CHUNK_BYTES
 * a row, through `client` (in its transaction); returns the file's size and
 * its sha256 as `sha256:<hex>`.
 */
export async function insertChunks(
  client: pg.PoolClient,
  digest: string,
  path: string,
): Promise<{ bytes: number; sha256: string }> {
  const file = await openFile(path, 'r');
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    const buffer = Buffer.allocUnsafe(CONTEXT_CHUNK_BYTES);
    for (let seq = 0; ; seq++) {
      let filled = 0;
      while (filled < buffer.length) {
        const { bytesRead } = await file.read(buffer, filled, buffer.length - filled, null);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      if (filled === 0) break;
      const chunk = buffer.subarray(0, filled);
      hash.update(chunk);
      bytes += filled;
      await client.query('INSERT INTO context_chunks (digest, seq, bytes) VALUES ($1, $2, $3)', [
        digest,
        seq,
        chunk,
      ]);
      if (filled < buffer.length) break;
    }
  } finally {
    await file.close();
  }
  return { bytes, sha256: `sha256:${hash.digest('hex')}` };
}
