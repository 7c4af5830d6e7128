/**
 * Who we log in as: the key files the user named, else ssh-agent (when
 * SSH_AUTH_SOCK is set) and the default keys ~/.ssh/id_ed25519, id_ecdsa,
 * id_rsa that exist. A named key that cannot be used is an error naming the
 * file; key material and passphrases never reach a message or a log.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ssh2, { type AnyAuthMethod, type ParsedKey } from 'ssh2';
import type { Logger } from '../log.js';
import { SshError } from './errors.js';
import { fingerprintOf } from './host-key.js';

export type Identity =
  | { kind: 'key'; file: string; key: ParsedKey; keyType: string; fingerprint: string }
  | { kind: 'agent'; socket: string };

export interface IdentitySettings {
  /** Private key files to use, and only those; none means ssh-agent and the default keys. */
  keyFiles: readonly string[];
  /** Passphrase of encrypted keys. */
  passphrase?: string | undefined;
  /** ssh-agent's socket (SSH_AUTH_SOCK). */
  agentSocket?: string | undefined;
  /** Where `.ssh/id_*` are looked for. */
  homeDir?: string | undefined;
}

export const DEFAULT_KEY_NAMES = ['id_ed25519', 'id_ecdsa', 'id_rsa'] as const;

export function loadIdentities(settings: IdentitySettings, log?: Logger): Identity[] {
  if (settings.keyFiles.length > 0) {
    return settings.keyFiles.map((file) => readKey(file, settings.passphrase, true) as Identity);
  }
  const identities: Identity[] = [];
  if (settings.agentSocket) identities.push({ kind: 'agent', socket: settings.agentSocket });
  if (settings.homeDir) {
    for (const name of DEFAULT_KEY_NAMES) {
      const file = join(settings.homeDir, '.ssh', name);
      try {
        const identity = readKey(file, settings.passphrase, false);
        if (identity) identities.push(identity);
      } catch (err) {
        // A default key we cannot use is passed over, as ssh does without a terminal.
        log?.warn({ key: file, err: (err as Error).message }, 'default ssh key skipped');
      }
    }
  }
  if (identities.length === 0) {
    throw new SshError(
      'invalid_argument',
      'ssh login',
      'no identity to log in with: pass --ssh-key FILE, start ssh-agent (SSH_AUTH_SOCK), ' +
        `or create one of ${DEFAULT_KEY_NAMES.map((n) => `~/.ssh/${n}`).join(', ')}`,
    );
  }
  return identities;
}

/** The key in `file`; undefined when `required` is false and the file does not exist. */
function readKey(
  file: string,
  passphrase: string | undefined,
  required: boolean,
): Identity | undefined {
  const subject = `ssh key ${file}`;
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    if (!required && code === 'ENOENT') return undefined;
    throw new SshError('invalid_argument', subject, `cannot read it (${code})`, { cause: err });
  }
  const parsed = ssh2.utils.parseKey(data, passphrase);
  if (parsed instanceof Error) {
    const encrypted = /no passphrase given/.test(parsed.message);
    throw new SshError(
      'invalid_argument',
      subject,
      encrypted
        ? 'the key is encrypted and no passphrase was given (set BRAID_SSH_KEY_PASSPHRASE)'
        : `not a usable private key (${parsed.message})`,
    );
  }
  const key = Array.isArray(parsed) ? (parsed[0] as ParsedKey | undefined) : parsed;
  if (key === undefined || !key.isPrivateKey()) {
    throw new SshError(
      'invalid_argument',
      subject,
      'holds no private key (name the private key file, not the .pub)',
    );
  }
  return {
    kind: 'key',
    file,
    key,
    keyType: key.type,
    fingerprint: fingerprintOf(key.getPublicSSH()),
  };
}

/** For messages and logs: the file or socket and the public fingerprint, nothing secret. */
export function describeIdentity(identity: Identity): string {
  return identity.kind === 'key'
    ? `key ${identity.file} (${identity.keyType} ${identity.fingerprint})`
    : `ssh-agent at ${identity.socket}`;
}

/** ssh2's auth methods: each identity in turn, then give up. */
export function authMethods(identities: readonly Identity[], user: string): AnyAuthMethod[] {
  return identities.map((identity) =>
    identity.kind === 'agent'
      ? { type: 'agent', username: user, agent: identity.socket }
      : { type: 'publickey', username: user, key: identity.key },
  );
}
