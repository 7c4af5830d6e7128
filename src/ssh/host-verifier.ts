/**
 * The host key policy: a key is accepted only when a known_hosts file lists
 * it for the host. Anything else — an unknown host, a changed key, a
 * revoked key — is refused with one line naming the host, the key type, its
 * SHA256 fingerprint and what to do. Nothing is ever added on its own.
 */
import { SshError } from './errors.js';
import { fingerprintOf, keyTypeOf, keyscanType } from './host-key.js';
import { checkHostKey, type HostKeyVerdict, type KnownHostsEntry } from './known-hosts.js';
import { DEFAULT_SSH_PORT, hostPort, type SshTarget } from './ssh-url.js';

export interface HostVerifier {
  /** For ssh2's `hostVerifier`: true accepts the key. */
  verify(key: Buffer): boolean;
  /** Why the last key was refused, once verify returned false. */
  refusal(): SshError | undefined;
  /** The fingerprint of the accepted key, once verify returned true. */
  accepted(): string | undefined;
}

export function createHostVerifier(
  target: SshTarget,
  entries: readonly KnownHostsEntry[],
  files: readonly string[],
): HostVerifier {
  let refused: SshError | undefined;
  let accepted: string | undefined;
  return {
    verify(key) {
      const verdict = checkHostKey(entries, target.host, target.port, key);
      if (verdict.status === 'known') {
        accepted = fingerprintOf(key);
        return true;
      }
      refused = refusalFor(target, verdict, key, files);
      return false;
    },
    refusal: () => refused,
    accepted: () => accepted,
  };
}

export function refusalFor(
  target: SshTarget,
  verdict: Exclude<HostKeyVerdict, { status: 'known' }>,
  key: Buffer,
  files: readonly string[],
): SshError {
  const name = hostPort(target.host, target.port);
  const type = keyTypeOf(key) || 'unknown-type';
  const offered = `${name} offered ${type} key ${fingerprintOf(key)}`;
  switch (verdict.status) {
    case 'revoked':
      return new SshError(
        'failed_precondition',
        target.display,
        `host key revoked: ${offered}, which ${verdict.entry.file}:${verdict.entry.line} marks @revoked; refusing to connect`,
      );
    case 'changed': {
      const old = verdict.entries[0] as KnownHostsEntry;
      const others = verdict.entries.map((e) => fingerprintOf(e.key)).join(', ');
      return new SshError(
        'failed_precondition',
        target.display,
        `host key changed: ${offered}, but ${old.file}:${old.line} holds another ${type} key for it (${others}); ` +
          'someone may be intercepting the connection, or the host was reinstalled: check with its owner, ' +
          `then remove the old key (ssh-keygen -R '${name}' -f ${old.file}) and add the new one`,
      );
    }
    case 'unknown': {
      const where = files.length > 0 ? files.join(' or ') : 'no known_hosts file';
      const only =
        verdict.otherTypes.length > 0
          ? ` (only ${verdict.otherTypes.join(', ')} keys are known for it)`
          : '';
      const port = target.port === DEFAULT_SSH_PORT ? '' : `-p ${target.port} `;
      const file = files[0] ?? '~/.ssh/known_hosts';
      return new SshError(
        'failed_precondition',
        target.display,
        `host key not known: ${offered}, which is not in ${where}${only}; ` +
          "if that fingerprint is the host's (ask its owner: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), add it: " +
          `ssh-keyscan ${port}-t ${keyscanType(type)} ${target.host} >> ${file}`,
      );
    }
  }
}
