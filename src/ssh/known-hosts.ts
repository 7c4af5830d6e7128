/**
 * OpenSSH known_hosts files: parsing, and the verdict on a host key a
 * server offers. Plain and hashed (`|1|salt|hash`) host names, `[host]:port`
 * off port 22, `*`/`?` wildcards and `!` negation as sshd(8) describes them.
 * `@revoked` keys are refused; `@cert-authority` lines are ignored (host
 * certificates are not accepted, so list the host key itself).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServerHostKeyAlgorithm } from 'ssh2';
import { SshError } from './errors.js';
import { HOST_KEY_ALGORITHMS, algorithmsForKeyType, keyTypeOf } from './host-key.js';
import { hostPort } from './ssh-url.js';

export type KnownHostsMarker = 'revoked' | 'cert-authority';

export type KnownHostsNames =
  { kind: 'hashed'; salt: Buffer; hash: Buffer } | { kind: 'patterns'; patterns: string[] };

export interface KnownHostsEntry {
  file: string;
  /** 1-based line number, for messages. */
  line: number;
  marker: KnownHostsMarker | undefined;
  names: KnownHostsNames;
  keyType: string;
  /** The public key blob (the base64 field, decoded). */
  key: Buffer;
}

export type HostKeyVerdict =
  | { status: 'known'; entry: KnownHostsEntry }
  | { status: 'revoked'; entry: KnownHostsEntry }
  /** Keys of this type are known for the host, and the offered one is none of them. */
  | { status: 'changed'; entries: KnownHostsEntry[] }
  /** No key of this type is known for the host; `otherTypes` are the types that are. */
  | { status: 'unknown'; otherTypes: string[] };

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** The entries of one file; lines that do not parse are skipped, as ssh does. */
export function parseKnownHosts(text: string, file: string): KnownHostsEntry[] {
  const entries: KnownHostsEntry[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    const fields = raw.trim().split(/[ \t]+/);
    if (fields[0] === undefined || fields[0] === '' || fields[0].startsWith('#')) return;
    let marker: KnownHostsMarker | undefined;
    if (fields[0].startsWith('@')) {
      const name = fields.shift();
      if (name === '@revoked') marker = 'revoked';
      else if (name === '@cert-authority') marker = 'cert-authority';
      else return;
    }
    const [hostField, keyType, keyText] = fields;
    if (hostField === undefined || keyType === undefined || keyText === undefined) return;
    if (!BASE64.test(keyText)) return;
    const key = Buffer.from(keyText, 'base64');
    if (keyTypeOf(key) !== keyType) return;
    const names = parseNames(hostField);
    if (names === undefined) return;
    entries.push({ file, line: index + 1, marker, names, keyType, key });
  });
  return entries;
}

function parseNames(field: string): KnownHostsNames | undefined {
  if (field.startsWith('|')) {
    const match = /^\|1\|([A-Za-z0-9+/=]+)\|([A-Za-z0-9+/=]+)$/.exec(field);
    if (!match) return undefined;
    const salt = Buffer.from(match[1] ?? '', 'base64');
    const hash = Buffer.from(match[2] ?? '', 'base64');
    if (salt.length !== 20 || hash.length !== 20) return undefined;
    return { kind: 'hashed', salt, hash };
  }
  const patterns = field.split(',').filter((p) => p !== '' && p !== '!');
  return patterns.length > 0 ? { kind: 'patterns', patterns } : undefined;
}

/** `*` matches any run of characters, `?` one; case-insensitive, as OpenSSH's match_pattern. */
export function matchPattern(pattern: string, text: string): boolean {
  const p = pattern.toLowerCase();
  const t = text.toLowerCase();
  // Iterative wildcard match with one backtrack point: linear in practice, never exponential.
  let pi = 0;
  let ti = 0;
  let star = -1;
  let mark = 0;
  while (ti < t.length) {
    if (pi < p.length && (p[pi] === '?' || p[pi] === t[ti])) {
      pi++;
      ti++;
    } else if (pi < p.length && p[pi] === '*') {
      star = pi++;
      mark = ti;
    } else if (star !== -1) {
      pi = star + 1;
      ti = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.length && p[pi] === '*') pi++;
  return pi === p.length;
}

/** Whether an entry names `name` (`host`, or `[host]:port` off port 22). */
export function entryNamesHost(entry: KnownHostsEntry, name: string): boolean {
  const { names } = entry;
  if (names.kind === 'hashed') {
    const hash = createHmac('sha1', names.salt).update(name).digest();
    return timingSafeEqual(hash, names.hash);
  }
  let matched = false;
  for (const pattern of names.patterns) {
    if (pattern.startsWith('!')) {
      // A negated match rules the whole line out, whatever else matches.
      if (matchPattern(pattern.slice(1), name)) return false;
    } else if (matchPattern(pattern, name)) {
      matched = true;
    }
  }
  return matched;
}

/** The entries that speak about this host, in file order (cert-authority lines left out). */
function entriesFor(entries: readonly KnownHostsEntry[], host: string, port: number) {
  const name = hostPort(host.toLowerCase(), port);
  return entries.filter((e) => e.marker !== 'cert-authority' && entryNamesHost(e, name));
}

/** What the known hosts say of `key`, offered by `host` on `port`. */
export function checkHostKey(
  entries: readonly KnownHostsEntry[],
  host: string,
  port: number,
  key: Buffer,
): HostKeyVerdict {
  const relevant = entriesFor(entries, host, port);
  const revoked = relevant.find((e) => e.marker === 'revoked' && e.key.equals(key));
  if (revoked) return { status: 'revoked', entry: revoked };
  const plain = relevant.filter((e) => e.marker === undefined);
  const known = plain.find((e) => e.key.equals(key));
  if (known) return { status: 'known', entry: known };
  const type = keyTypeOf(key);
  const sameType = plain.filter((e) => e.keyType === type);
  if (sameType.length > 0) return { status: 'changed', entries: sameType };
  return { status: 'unknown', otherTypes: [...new Set(plain.map((e) => e.keyType))] };
}

/**
 * Host key algorithms to offer, those of keys already known for the host
 * first — as ssh does, so a host with several keys shows the one we know.
 */
export function hostKeyAlgorithms(
  entries: readonly KnownHostsEntry[],
  host: string,
  port: number,
): ServerHostKeyAlgorithm[] {
  const preferred = entriesFor(entries, host, port)
    .filter((e) => e.marker === undefined)
    .flatMap((e) => algorithmsForKeyType(e.keyType));
  return [...new Set([...preferred, ...HOST_KEY_ALGORITHMS])];
}

/**
 * Where host keys are looked up: the file the user named, else OpenSSH's
 * own `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`.
 */
export function knownHostsFiles(named: string | undefined, homeDir: string | undefined): string[] {
  if (named !== undefined) return [named];
  return [...(homeDir ? [join(homeDir, '.ssh', 'known_hosts')] : []), '/etc/ssh/ssh_known_hosts'];
}

/** The entries of every file; a file that does not exist has none. */
export async function readKnownHosts(files: readonly string[]): Promise<KnownHostsEntry[]> {
  const entries: KnownHostsEntry[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') continue;
      throw new SshError(
        'invalid_argument',
        `known hosts file ${file}`,
        `cannot read it (${code ?? 'unreadable'})`,
        {
          cause: err,
        },
      );
    }
    entries.push(...parseKnownHosts(text, file));
  }
  return entries;
}
