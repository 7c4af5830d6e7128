/**
 * Tokens on a PostgreSQL store: the `tokens` table of the store's schema
 * (pg-build-store.ts, migration 3), with the semantics of the SQLite token
 * store (token-store.ts). `braid tokens` changes them through PgTokenAdmin,
 * which notifies every coordinator in the same transaction; each
 * coordinator checks callers against PgTokenBook, all tokens held in
 * memory (a farm has tens or hundreds) and reread when notified, when its
 * notification connection comes back, and every `refreshMs` in any case.
 * A revocation therefore takes effect on every coordinator within
 * milliseconds, and within `refreshMs` even while notifications are down.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import { CHANNELS, type PgListener } from './pg-notify.js';
import { inTransaction } from './pg-transaction.js';
import { tokenHash, type TokenKind } from './token-format.js';
import {
  checkTokenName,
  mintToken,
  newTokenId,
  noSuchToken,
  revokedTokenError,
  tokenFromRow,
  tokenNameTaken,
  TOUCH_INTERVAL_MS,
  type TokenAdmin,
  type TokenBook,
  type TokenRecord,
  type TokenRow,
} from './token-store.js';

/** PostgreSQL's unique_violation. */
const UNIQUE_VIOLATION = '23505';

export class PgTokenAdmin implements TokenAdmin {
  constructor(
    private readonly pool: pg.Pool,
    private readonly options: {
      clock?: () => Date;
      random?: (n: number) => Uint8Array;
    } = {},
  ) {}

  async close(): Promise<void> {}

  async create(kind: TokenKind, name?: string): Promise<{ record: TokenRecord; token: string }> {
    const id = newTokenId(this.random);
    const chosen = name ?? `${kind}-${id.slice(4, 10)}`;
    checkTokenName(chosen);
    return inTransaction(this.pool, (client) => this.insert(client, id, chosen, kind));
  }

  async list(): Promise<TokenRecord[]> {
    const { rows } = await this.pool.query<TokenRow>(
      'SELECT * FROM tokens ORDER BY created_at DESC, id DESC',
    );
    return rows.map(tokenFromRow);
  }

  async revoke(ref: string): Promise<{ record: TokenRecord; already: boolean }> {
    const record = await this.mustFind(ref);
    if (record.revokedAt) return { record, already: true };
    const now = this.now();
    await inTransaction(this.pool, async (client) => {
      await client.query('UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL', [
        now.getTime(),
        record.id,
      ]);
      await client.query('SELECT pg_notify($1, $2)', [CHANNELS.tokens, record.id]);
    });
    return { record: { ...record, revokedAt: now }, already: false };
  }

  async rotate(
    ref: string,
  ): Promise<{ record: TokenRecord; token: string; replaced: TokenRecord }> {
    const old = await this.mustFind(ref);
    if (old.revokedAt) throw revokedTokenError(old);
    const id = newTokenId(this.random);
    return inTransaction(this.pool, async (client) => {
      const now = this.now();
      const { rowCount } = await client.query(
        'UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL',
        [now.getTime(), old.id],
      );
      // Revoked by someone else since it was read: rotating it now would revive its name.
      if (rowCount !== 1) throw revokedTokenError(old);
      const created = await this.insert(client, id, old.name, old.kind);
      return { ...created, replaced: { ...old, revokedAt: now } };
    });
  }

  /** By id, else the active token of that name, else the newest revoked one of that name. */
  private async mustFind(ref: string): Promise<TokenRecord> {
    const { rows } = await this.pool.query<TokenRow>(
      `SELECT * FROM tokens WHERE id = $1 OR name = $1
        ORDER BY id = $1 DESC, revoked_at IS NOT NULL, created_at DESC LIMIT 1`,
      [ref],
    );
    if (!rows[0]) throw noSuchToken(ref);
    return tokenFromRow(rows[0]);
  }

  private async insert(
    client: pg.PoolClient,
    id: string,
    name: string,
    kind: TokenKind,
  ): Promise<{ record: TokenRecord; token: string }> {
    const { token, hash, hint } = mintToken(kind, this.random);
    const createdAt = this.now();
    try {
      await client.query(
        'INSERT INTO tokens (id, name, kind, hash, hint, created_at) VALUES ($1, $2, $3, $4, $5, $6)',
        [id, name, kind, hash, hint, createdAt.getTime()],
      );
    } catch (err) {
      if ((err as { code?: string }).code !== UNIQUE_VIOLATION) throw err;
      const { rows } = await this.pool.query<{ id: string }>(
        'SELECT id FROM tokens WHERE name = $1 AND revoked_at IS NULL',
        [name],
      );
      throw tokenNameTaken(name, rows[0]?.id ?? 'another token');
    }
    await client.query('SELECT pg_notify($1, $2)', [CHANNELS.tokens, id]);
    return { record: { id, name, kind, hint, createdAt }, token };
  }

  private get random(): (n: number) => Uint8Array {
    return this.options.random ?? randomBytes;
  }

  private now(): Date {
    return this.options.clock?.() ?? new Date();
  }
}

export interface PgTokenBookOptions {
  /** Reread every token this often even without a notification (default 30 s). */
  refreshMs?: number;
  clock?: () => number;
}

export class PgTokenBook implements TokenBook {
  private byHash = new Map<string, TokenRecord>();
  private byId = new Map<string, TokenRecord>();
  private readonly touched = new Map<string, number>();
  private reloading: Promise<void> | undefined;
  private again = false;
  private readonly timer: NodeJS.Timeout;
  private readonly unsubscribe: () => void;
  private readonly clock: () => number;

  private constructor(
    private readonly pool: pg.Pool,
    listener: PgListener,
    private readonly log: Pick<Logger, 'warn'>,
    options: PgTokenBookOptions,
  ) {
    this.clock = options.clock ?? Date.now;
    const reread = () => void this.reload().catch(() => undefined);
    this.unsubscribe = listener.subscribe(CHANNELS.tokens, { notified: reread, resumed: reread });
    this.timer = setInterval(reread, options.refreshMs ?? 30_000);
    this.timer.unref();
  }

  /** Every token read once before the first call is checked. */
  static async open(
    pool: pg.Pool,
    listener: PgListener,
    log: Pick<Logger, 'warn'>,
    options: PgTokenBookOptions = {},
  ): Promise<PgTokenBook> {
    const book = new PgTokenBook(pool, listener, log, options);
    try {
      await book.reload();
    } catch (err) {
      book.close();
      throw err;
    }
    return book;
  }

  close(): void {
    clearInterval(this.timer);
    this.unsubscribe();
  }

  lookup(token: string): TokenRecord | undefined {
    return this.byHash.get(tokenHash(token));
  }

  get(id: string): TokenRecord | undefined {
    return this.byId.get(id);
  }

  activeCount(kind: TokenKind): number {
    let n = 0;
    for (const record of this.byId.values()) if (record.kind === kind && !record.revokedAt) n++;
    return n;
  }

  touch(id: string): void {
    const now = this.clock();
    if (now - (this.touched.get(id) ?? 0) < TOUCH_INTERVAL_MS) return;
    this.touched.set(id, now);
    // Only informative: a store that cannot take it now loses one "last used".
    this.pool
      .query('UPDATE tokens SET last_used_at = $1 WHERE id = $2', [now, id])
      .catch((err: unknown) =>
        this.log.warn({ err: errorLine(err), token: id }, "could not note a token's last use"),
      );
  }

  /** Reread every token; calls while one runs are folded into one more read after it. */
  async reload(): Promise<void> {
    if (this.reloading) {
      this.again = true;
      return this.reloading;
    }
    this.reloading = (async () => {
      try {
        do {
          this.again = false;
          const { rows } = await this.pool.query<TokenRow & { hash: string }>(
            'SELECT * FROM tokens',
          );
          this.byHash = new Map(rows.map((row) => [row.hash, tokenFromRow(row)]));
          this.byId = new Map([...this.byHash.values()].map((r) => [r.id, r]));
        } while (this.again);
      } catch (err) {
        this.log.warn(
          { err: errorLine(err) },
          'could not reread the tokens; keeping the last read',
        );
        throw err;
      } finally {
        this.reloading = undefined;
      }
    })();
    return this.reloading;
  }
}
