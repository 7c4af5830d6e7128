/**
 * Auth for test registries: an htpasswd file (bcrypt), and a token server
 * on 127.0.0.1 that signs JWTs the real registry verifies against a
 * certificate the test made.
 */
import { execFile } from 'node:child_process';
import { createPrivateKey, createSign, randomUUID, X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import bcrypt from 'bcryptjs';
import { requireCommand } from './components.js';

const exec = promisify(execFile);

export async function writeHtpasswd(dir: string, user: string, password: string): Promise<string> {
  const file = join(dir, 'htpasswd');
  await writeFile(file, `${user}:${bcrypt.hashSync(password, 10)}\n`);
  return file;
}

export interface TokenServer {
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  readonly certFile: string;
  /** Scopes of every token request received, in order. */
  readonly requests: { scopes: string[]; account?: string }[];
  stop(): Promise<void>;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/**
 * Grants every requested repository scope to `user`/`password` (and only
 * pull to anonymous callers when `anonymousPull`).
 */
export async function startTokenServer(
  dir: string,
  users: { user: string; password: string },
  options: { anonymousPull?: boolean; expiresInS?: number } = {},
): Promise<TokenServer> {
  const openssl = await requireCommand('openssl', 'openssl');
  const keyFile = join(dir, 'token.key');
  const certFile = join(dir, 'token.crt');
  await exec(openssl, [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    '2',
    '-subj',
    '/CN=braid-test-token-issuer',
  ]);
  const key = createPrivateKey(await readFile(keyFile));
  const certDer = new X509Certificate(await readFile(certFile)).raw;
  const service = 'braid-test-registry';
  const issuer = 'braid-test-issuer';
  const requests: { scopes: string[]; account?: string }[] = [];

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const scopes = url.searchParams
      .getAll('scope')
      .flatMap((s) => s.split(' '))
      .filter(Boolean);
    const authorization = req.headers.authorization ?? '';
    let account: string | undefined;
    if (authorization.startsWith('Basic ')) {
      const [user, ...rest] = Buffer.from(authorization.slice(6), 'base64').toString().split(':');
      if (user !== users.user || rest.join(':') !== users.password) {
        res
          .writeHead(401, { 'content-type': 'application/json' })
          .end('{"details":"bad credentials"}');
        return;
      }
      account = user;
    }
    requests.push({ scopes, account });
    const access = scopes.flatMap((scope) => {
      const [type, name, actions] = scope.split(':');
      if (type !== 'repository' || !name || !actions) return [];
      const granted = account
        ? actions.split(',')
        : options.anonymousPull
          ? actions.split(',').filter((a) => a === 'pull')
          : [];
      return granted.length ? [{ type, name, actions: granted }] : [];
    });
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = options.expiresInS ?? 300;
    const header = { alg: 'RS256', typ: 'JWT', x5c: [certDer.toString('base64')] };
    const claims = {
      iss: issuer,
      sub: account ?? '',
      aud: service,
      exp: now + expiresIn,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const signature = createSign('RSA-SHA256').update(signingInput).sign(key);
    const token = `${signingInput}.${b64url(signature)}`;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        token,
        expires_in: expiresIn,
        issued_at: new Date(now * 1000).toISOString(),
      }),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('token server has no port');
  return {
    realm: `http://127.0.0.1:${address.port}/token`,
    service,
    issuer,
    certFile,
    requests,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
