/**
 * The shape of braid's tokens: `braid_api_<secret>` for the CLI and CI,
 * `braid_join_<secret>` for agents, where the secret is 32 random bytes in
 * lower-case base32 (52 characters). Only a token's sha256 is ever stored;
 * a short hint (prefix and the secret's first 4 characters) identifies it
 * in listings and logs.
 */
import { createHash, randomBytes } from 'node:crypto';

export const TOKEN_KINDS = ['api', 'join'] as const;
export type TokenKind = (typeof TOKEN_KINDS)[number];

const SECRET_BYTES = 32;
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const TOKEN = /^braid_(api|join)_([a-z2-7]{52})$/;

/** RFC 4648 base32, lower case, no padding. */
function base32(bytes: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

export function newToken(kind: TokenKind, random: (n: number) => Uint8Array = randomBytes): string {
  return `braid_${kind}_${base32(random(SECRET_BYTES))}`;
}

/** The kind of a well-formed token; undefined for anything else. */
export function tokenKindOf(text: string): TokenKind | undefined {
  return TOKEN.exec(text)?.[1] as TokenKind | undefined;
}

/** What is stored and looked up: the token's sha256, hex. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Enough to recognise a token, far too little to use it: `braid_api_k3xq…`. */
export function tokenHint(token: string): string {
  const match = TOKEN.exec(token);
  return match ? `braid_${match[1]}_${match[2]?.slice(0, 4)}…` : 'braid_…';
}
