/**
 * API and join tokens in the coordinator's database (`<dataDir>/braid.db`,
 * table `tokens`): only each token's sha256 is stored, with a name, a kind,
 * a hint and its times. Opened by the coordinator (to check callers) and by
 * `braid tokens` on the same host (to create, list, revoke and rotate);
 * WAL lets both use the file at once. On a PostgreSQL store the same table
 * lives there (pg-token-store.ts), so every coordinator honours every token.
 */
import { randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import { BraidError } from '../errors.js';
import { openDatabase } from './sqlite.js';
import { newToken, tokenHash, tokenHint, tokenKindOf, type TokenKind } from './token-format.js';

export interface TokenRecord {
  id: string;
  name: string;
  kind: TokenKind;
  /** `braid_api_k3xq…`: recognisable, useless as a credential. */
  hint: string;
  createdAt: Date;
  lastUsedAt?: Date;
  revokedAt?: Date;
}

/** What the coordinator asks of its tokens on every call: answered without waiting. */
export interface TokenBook {
  /** The record of a presented token, by its hash; undefined when unknown. */
  lookup(token: string): TokenRecord | undefined;
  get(id: string): TokenRecord | undefined;
  /** Note a use (written at most once a minute per token). */
  touch(id: string): void;
  /** Active tokens of a kind. */
  activeCount(kind: TokenKind): number;
  close(): void | Promise<void>;
}

type Awaitable<T> = T | Promise<T>;

/** What `braid tokens` does with a store's tokens. */
export interface TokenAdmin {
  /** A new token; the secret is returned here and never again. */
  create(kind: TokenKind, name?: string): Awaitable<{ record: TokenRecord; token: string }>;
  /** Every token, newest first, revoked ones included. */
  list(): Awaitable<TokenRecord[]>;
  /** Revoke at once (idempotent): `already` when it was revoked before. */
  revoke(ref: string): Awaitable<{ record: TokenRecord; already: boolean }>;
  /** A new secret under the same name and kind; the old one stops working now. */
  rotate(ref: string): Awaitable<{ record: TokenRecord; token: string; replaced: TokenRecord }>;
  close(): void | Promise<void>;
}

export interface TokenRow {
  id: string;
  name: string;
  kind: string;
  hint: string;
  created_at: number | string;
  last_used_at: number | string | null;
  revoked_at: number | string | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS tokens (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  kind TEXT NOT NULL CHECK (kind IN ('api', 'join')),
  hash TEXT NOT NULL UNIQUE,
  hint TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  last_used_at INTEGER,
  revoked_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_active_name ON tokens(name) WHERE revoked_at IS NULL;
`;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const ID = /^tok_[0-9a-f]{12}$/;

/** A token's last use is written at most this often (it is only informative). */
export const TOUCH_INTERVAL_MS = 60_000;

export interface TokenStoreOptions {
  clock?: () => Date;
  random?: (n: number) => Uint8Array;
}

/** Times may arrive as strings (PostgreSQL BIGINT). */
export function tokenFromRow(row: TokenRow): TokenRecord {
  const at = (ms: number | string) => new Date(Number(ms));
  return {
    id: row.id,
    name: row.name,
    kind: row.kind as TokenKind,
    hint: row.hint,
    createdAt: at(row.created_at),
    ...(row.last_used_at !== null ? { lastUsedAt: at(row.last_used_at) } : {}),
    ...(row.revoked_at !== null ? { revokedAt: at(row.revoked_at) } : {}),
  };
}

/** A new token's id, `tok_` and 12 hex digits. */
export function newTokenId(random: (n: number) => Uint8Array): string {
  return `tok_${Buffer.from(random(6)).toString('hex')}`;
}

/** A new secret of `kind`, with what is stored of it. */
export function mintToken(
  kind: TokenKind,
  random: (n: number) => Uint8Array,
): { token: string; hash: string; hint: string } {
  const token = newToken(kind, random);
  if (tokenKindOf(token) !== kind) throw new BraidError('internal', 'malformed new token');
  return { token, hash: tokenHash(token), hint: tokenHint(token) };
}

export function revokedTokenError(record: TokenRecord): BraidError {
  return new BraidError(
    'failed_precondition',
    `token "${record.name}" (${record.id}) is revoked: create a new one with braid tokens create`,
  );
}

export function tokenNameTaken(name: string, id: string): BraidError {
  return new BraidError(
    'already_exists',
    `a token named "${name}" exists (${id}): revoke or rotate it, or pick another name`,
  );
}

export function noSuchToken(ref: string): BraidError {
  return new BraidError('not_found', `no token with id or name "${ref}"`);
}

export class TokenStore implements TokenBook, TokenAdmin {
  private readonly db: Database.Database;
  private readonly clock: () => Date;
  private readonly random: (n: number) => Uint8Array;
  private readonly touched = new Map<string, number>();

  constructor(file: string, options: TokenStoreOptions = {}) {
    this.db = openDatabase(file);
    this.db.exec(SCHEMA);
    this.clock = options.clock ?? (() => new Date());
    this.random = options.random ?? randomBytes;
  }

  close(): void {
    this.db.close();
  }

  /** A new token; the secret is returned here and never again. */
  create(kind: TokenKind, name?: string): { record: TokenRecord; token: string } {
    const id = newTokenId(this.random);
    const chosen = name ?? `${kind}-${id.slice(4, 10)}`;
    checkTokenName(chosen);
    return this.db.transaction(() => {
      this.refuseActiveName(chosen);
      return this.insert(id, chosen, kind);
    })();
  }

  /** Every token, newest first, revoked ones included. */
  list(): TokenRecord[] {
    const rows = this.db
      .prepare('SELECT * FROM tokens ORDER BY created_at DESC, rowid DESC')
      .all() as TokenRow[];
    return rows.map(tokenFromRow);
  }

  /** By id, else the active token of that name, else the newest revoked one of that name. */
  find(ref: string): TokenRecord | undefined {
    const row = (this.db.prepare('SELECT * FROM tokens WHERE id = ?').get(ref) ??
      this.db
        .prepare(
          'SELECT * FROM tokens WHERE name = ? ORDER BY revoked_at IS NOT NULL, created_at DESC LIMIT 1',
        )
        .get(ref)) as TokenRow | undefined;
    return row ? tokenFromRow(row) : undefined;
  }

  get(id: string): TokenRecord | undefined {
    const row = this.db.prepare('SELECT * FROM tokens WHERE id = ?').get(id) as
      TokenRow | undefined;
    return row ? tokenFromRow(row) : undefined;
  }

  /** Revoke at once (idempotent): `already` when it was revoked before. */
  revoke(ref: string): { record: TokenRecord; already: boolean } {
    const record = this.mustFind(ref);
    if (record.revokedAt) return { record, already: true };
    const now = this.clock();
    this.db
      .prepare('UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL')
      .run(now.getTime(), record.id);
    return { record: { ...record, revokedAt: now }, already: false };
  }

  /** A new secret under the same name and kind; the old one stops working now. */
  rotate(ref: string): { record: TokenRecord; token: string; replaced: TokenRecord } {
    const old = this.mustFind(ref);
    if (old.revokedAt) throw revokedTokenError(old);
    const id = newTokenId(this.random);
    return this.db.transaction(() => {
      const now = this.clock();
      this.db.prepare('UPDATE tokens SET revoked_at = ? WHERE id = ?').run(now.getTime(), old.id);
      const created = this.insert(id, old.name, old.kind);
      return { ...created, replaced: { ...old, revokedAt: now } };
    })();
  }

  /** The record of a presented token, by its hash; undefined when unknown. */
  lookup(token: string): TokenRecord | undefined {
    const row = this.db.prepare('SELECT * FROM tokens WHERE hash = ?').get(tokenHash(token)) as
      TokenRow | undefined;
    return row ? tokenFromRow(row) : undefined;
  }

  /** Note a use (written at most once a minute per token). */
  touch(id: string): void {
    const now = this.clock().getTime();
    if (now - (this.touched.get(id) ?? 0) < TOUCH_INTERVAL_MS) return;
    this.touched.set(id, now);
    this.db.prepare('UPDATE tokens SET last_used_at = ? WHERE id = ?').run(now, id);
  }

  /** Active tokens of a kind. */
  activeCount(kind: TokenKind): number {
    const row = this.db
      .prepare('SELECT COUNT(*) AS n FROM tokens WHERE kind = ? AND revoked_at IS NULL')
      .get(kind) as { n: number };
    return row.n;
  }

  private insert(
    id: string,
    name: string,
    kind: TokenKind,
  ): { record: TokenRecord; token: string } {
    const { token, hash, hint } = mintToken(kind, this.random);
    const createdAt = this.clock();
    this.db
      .prepare(
        'INSERT INTO tokens (id, name, kind, hash, hint, created_at) VALUES (?, ?, ?, ?, ?, ?)',
      )
      .run(id, name, kind, hash, hint, createdAt.getTime());
    return { record: { id, name, kind, hint, createdAt }, token };
  }

  private refuseActiveName(name: string): void {
    const row = this.db
      .prepare('SELECT id FROM tokens WHERE name = ? AND revoked_at IS NULL')
      .get(name) as { id: string } | undefined;
    if (row) throw tokenNameTaken(name, row.id);
  }

  private mustFind(ref: string): TokenRecord {
    const record = this.find(ref);
    if (!record) throw noSuchToken(ref);
    return record;
  }
}

/** Refuses a name `braid tokens create --name` cannot take. */
export function checkTokenName(name: string): void {
  if (!NAME.test(name)) {
    throw new BraidError(
      'invalid_argument',
      `token name "${name}": expected letters, digits, ".", "_" or "-" (at most 63)`,
    );
  }
  if (ID.test(name)) {
    throw new BraidError('invalid_argument', `token name "${name}" looks like a token id`);
  }
}
