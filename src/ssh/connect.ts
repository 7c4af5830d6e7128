/**
 * One SSH connection: TCP, key exchange with the host key checked against
 * known_hosts, then login with the given identities. Resolves with a
 * ready ssh2 Client or rejects with an SshError whose code says whether a
 * retry can help (`unavailable`, `deadline_exceeded`) or not (host key,
 * login).
 */
import ssh2, { type Client } from 'ssh2';
import type { Logger } from '../log.js';
import { SshError } from './errors.js';
import { createHostVerifier } from './host-verifier.js';
import { authMethods, describeIdentity, type Identity } from './identities.js';
import { hostKeyAlgorithms, readKnownHosts } from './known-hosts.js';
import type { SshTarget } from './ssh-url.js';

export interface SshConnectOptions {
  identities: readonly Identity[];
  /** known_hosts files, read at every connect (an added key needs no restart). */
  knownHostsFiles: readonly string[];
  /** Deadline of TCP connect, key exchange and login. */
  readyTimeoutMs: number;
  /** SSH keepalive requests this often; the connection is dropped after `keepaliveCountMax` unanswered. */
  keepaliveIntervalMs: number;
  keepaliveCountMax: number;
  log?: Logger | undefined;
}

interface Ssh2Error extends Error {
  level?: string;
  code?: string;
}

export async function connectSsh(target: SshTarget, options: SshConnectOptions): Promise<Client> {
  const entries = await readKnownHosts(options.knownHostsFiles);
  const verifier = createHostVerifier(target, entries, options.knownHostsFiles);
  const client = new ssh2.Client();
  return new Promise<Client>((resolve, reject) => {
    let settled = false;
    const fail = (err: SshError): void => {
      if (settled) return;
      settled = true;
      client.end();
      reject(err);
    };
    client.on('ready', () => {
      if (settled) return;
      settled = true;
      options.log?.debug({ ssh: target.display, hostKey: verifier.accepted() }, 'ssh connected');
      resolve(client);
    });
    client.on('error', (err: Ssh2Error) => {
      if (settled) return;
      // ssh-agent unreachable: ssh2 moves on to the next identity.
      if (err.level === 'agent') {
        options.log?.warn({ ssh: target.display, err: err.message }, 'ssh-agent not usable');
        return;
      }
      const refused = verifier.refusal();
      if (refused) return fail(refused);
      if (err.level === 'client-authentication') {
        const tried = options.identities.map(describeIdentity).join(', ');
        return fail(
          new SshError(
            'unauthenticated',
            target.display,
            `login refused for user ${target.user} (tried ${tried}); ` +
              `add the public key to ~${target.user}/.ssh/authorized_keys on ${target.host}, or pass --ssh-key`,
            { cause: err },
          ),
        );
      }
      if (err.level === 'client-timeout') {
        return fail(
          new SshError(
            'deadline_exceeded',
            target.display,
            `no SSH session within ${options.readyTimeoutMs} ms`,
            { cause: err },
          ),
        );
      }
      fail(new SshError('unavailable', target.display, err.message, { cause: err }));
    });
    client.on('close', () => {
      fail(
        verifier.refusal() ??
          new SshError('unavailable', target.display, 'the connection closed before login'),
      );
    });
    client.connect({
      host: target.host,
      port: target.port,
      username: target.user,
      readyTimeout: options.readyTimeoutMs,
      keepaliveInterval: options.keepaliveIntervalMs,
      keepaliveCountMax: options.keepaliveCountMax,
      algorithms: { serverHostKey: hostKeyAlgorithms(entries, target.host, target.port) },
      hostVerifier: (key: Buffer) => verifier.verify(key),
      authHandler: authMethods(options.identities, target.user),
    });
  });
}
