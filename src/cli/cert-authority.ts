/**
 * A small farm's certificates, made with the `openssl` command: a CA, a
 * server certificate for the coordinator (SANs from the host list) and one
 * client certificate for agents and the CLI (mTLS). ECDSA P-256 keys,
 * written 0600; nothing is replaced unless asked to.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { BraidError, UsageError } from '../errors.js';

export const DEFAULT_HOSTS = ['localhost', '127.0.0.1', '::1'] as const;

/** What `initCertificates` writes, in order: certificates 0644, keys 0600. */
export const CERT_FILES = {
  ca: 'ca.pem',
  caKey: 'ca-key.pem',
  server: 'server.pem',
  serverKey: 'server-key.pem',
  client: 'client.pem',
  clientKey: 'client-key.pem',
} as const;

const KEY_FILES: ReadonlySet<string> = new Set([
  CERT_FILES.caKey,
  CERT_FILES.serverKey,
  CERT_FILES.clientKey,
]);

export interface CertsInitOptions {
  dir: string;
  /** Names and addresses the coordinator is reached by (the server certificate's SANs). */
  hosts: readonly string[];
  /** Validity of the server and client certificates; the CA gets at least ten years. */
  days: number;
  /** Replace files that exist. */
  force: boolean;
}

const DNS_NAME =
  /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** `subjectAltName` entries for the hosts; a host that is neither a name nor an IP is an error. */
export function subjectAltNames(hosts: readonly string[]): string {
  if (hosts.length === 0) throw new UsageError('--hosts: no host given');
  return hosts
    .map((host) => {
      if (isIP(host)) return `IP:${host}`;
      if (DNS_NAME.test(host) && host.length <= 253) return `DNS:${host}`;
      throw new UsageError(`--hosts: "${host}" is neither a host name nor an IP address`);
    })
    .join(',');
}

function openssl(args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('openssl', args, { cwd, timeout: 60_000 }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return reject(
          new BraidError(
            'failed_precondition',
            'braid certs init needs the openssl command (Debian: apt-get install openssl)',
            { cause: err },
          ),
        );
      }
      const line =
        stderr
          .split('\n')
          .map((l) => l.trim())
          .filter(Boolean)
          .pop() ?? err.message;
      reject(new BraidError('internal', `openssl ${args[0]} failed: ${line}`, { cause: err }));
    });
  });
}

/** A positive random 128-bit serial, as openssl takes it. */
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return `0x${bytes.toString('hex')}`;
}

const NEW_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

/** A key and a certificate signed by the CA in `work`. */
async function issue(
  work: string,
  name: 'server' | 'client',
  subject: string,
  extensions: string,
  days: number,
): Promise<void> {
  await writeFile(join(work, `${name}.ext`), extensions);
  await openssl(
    [
      'req',
      '-new',
      ...NEW_KEY,
      '-keyout',
      `${name}-key.pem`,
      '-out',
      `${name}.csr`,
      '-subj',
      subject,
    ],
    work,
  );
  await openssl(
    [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      CERT_FILES.ca,
      '-CAkey',
      CERT_FILES.caKey,
      '-set_serial',
      serial(),
      '-days',
      String(days),
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.pem`,
    ],
    work,
  );
}

/** Write the CA, server and client certificates and keys into `dir`; returns their paths. */
export async function initCertificates(options: CertsInitOptions): Promise<string[]> {
  const sans = subjectAltNames(options.hosts);
  const names = Object.values(CERT_FILES);
  const existing = names.filter((n) => existsSync(join(options.dir, n)));
  if (existing.length > 0 && !options.force) {
    throw new BraidError(
      'already_exists',
      `${options.dir} already holds ${existing.join(', ')}: pass --force to replace them`,
    );
  }
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  // Everything is made in a private directory beside the target and moved
  // in only when all of it exists: a failure leaves the old files alone.
  const work = await mkdtemp(join(options.dir, '.braid-certs-'));
  try {
    await openssl(
      [
        'req',
        '-x509',
        ...NEW_KEY,
        '-keyout',
        CERT_FILES.caKey,
        '-out',
        CERT_FILES.ca,
        '-days',
        String(Math.max(3650, options.days)),
        '-subj',
        '/CN=braid CA',
        '-addext',
        'basicConstraints=critical,CA:TRUE,pathlen:0',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
        '-addext',
        'subjectKeyIdentifier=hash',
      ],
      work,
    );
    const leaf = [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'subjectKeyIdentifier=hash',
      'authorityKeyIdentifier=keyid',
    ];
    await issue(
      work,
      'server',
      '/CN=braid coordinator',
      [...leaf, 'extendedKeyUsage=serverAuth', `subjectAltName=${sans}`, ''].join('\n'),
      options.days,
    );
    await issue(
      work,
      'client',
      '/CN=braid client',
      [...leaf, 'extendedKeyUsage=clientAuth', ''].join('\n'),
      options.days,
    );
    const written: string[] = [];
    for (const name of names) {
      await chmod(join(work, name), KEY_FILES.has(name) ? 0o600 : 0o644);
      await rename(join(work, name), join(options.dir, name));
      written.push(join(options.dir, name));
    }
    return written;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
