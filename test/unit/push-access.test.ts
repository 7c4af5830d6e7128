import { describe, expect, it } from 'vitest';
import { TokenServiceError, tokenServiceWords, type AuthScheme } from '../../src/oci/auth.js';
import { RegistryError } from '../../src/oci/errors.js';
import { HttpTimeoutError } from '../../src/oci/http-transport.js';
import {
  checkPushAccess,
  refusalOf,
  registryWords,
  tokenGrant,
  type PushProbe,
} from '../../src/oci/push-access.js';
import { RegistryClient, type Repository } from '../../src/oci/registry.js';

function jwt(claims: object): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${part({ alg: 'RS256', typ: 'JWT' })}.${part(claims)}.c2lnbmF0dXJl`;
}

function networkError(code: string, message = `connect ${code}`): RegistryError {
  return new RegistryError(
    'unavailable',
    { operation: 'GET /v2/', reference: 'r.example/a', message: `${code} (after 2 attempts)` },
    { cause: Object.assign(new Error(message), { code }) },
  );
}

const endpoint = { hostname: 'registry.example', hostPort: 'registry.example:443' };

describe('tokenGrant reads the access claims of a registry token', () => {
  it('finds push granted on the repository, or "*"', () => {
    const access = [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }];
    expect(tokenGrant(jwt({ access }), 'team/app')).toBe('push');
    expect(
      tokenGrant(
        jwt({ access: [{ type: 'repository', name: 'team/app', actions: ['*'] }] }),
        'team/app',
      ),
    ).toBe('push');
  });

  it('finds no push when the claims grant pull only, another repository, or nothing', () => {
    const pull = [{ type: 'repository', name: 'team/app', actions: ['pull'] }];
    expect(tokenGrant(jwt({ access: pull }), 'team/app')).toBe('no-push');
    const other = [{ type: 'repository', name: 'team/other', actions: ['pull', 'push'] }];
    expect(tokenGrant(jwt({ access: other }), 'team/app')).toBe('no-push');
    expect(tokenGrant(jwt({ access: [] }), 'team/app')).toBe('no-push');
  });

  it('does not know for an opaque token or a JWT without access claims', () => {
    expect(tokenGrant('djE6b3BhcXVl', 'team/app')).toBe('unknown');
    expect(tokenGrant('a.not-json.c', 'team/app')).toBe('unknown');
    expect(tokenGrant(jwt({ sub: 'ci' }), 'team/app')).toBe('unknown');
  });
});

describe('a refused push check in words', () => {
  it('names a host that does not resolve, and a port nothing listens on', () => {
    expect(refusalOf(networkError('ENOTFOUND'), endpoint)).toEqual({
      kind: 'unreachable',
      reason: 'registry.example could not be resolved (ENOTFOUND)',
    });
    expect(
      refusalOf(networkError('ECONNREFUSED'), {
        hostname: '127.0.0.1',
        hostPort: '127.0.0.1:5999',
      }),
    ).toEqual({
      kind: 'unreachable',
      reason: 'nothing listens on 127.0.0.1:5999 (connection refused)',
    });
  });

  it('finds the code under fetch’s cause, and says a TLS failure may be a plain-HTTP registry', () => {
    const viaFetch = new RegistryError(
      'unavailable',
      { operation: 'GET /v2/', reference: 'r.example/a', message: 'fetch failed' },
      {
        cause: Object.assign(new TypeError('fetch failed'), {
          cause: Object.assign(new Error('x'), { code: 'ERR_SSL_WRONG_VERSION_NUMBER' }),
        }),
      },
    );
    expect(refusalOf(viaFetch, endpoint).reason).toBe(
      'TLS with registry.example:443 failed (ERR_SSL_WRONG_VERSION_NUMBER); a registry served over plain HTTP must be named in insecureRegistry',
    );
  });

  it('says how long a silent registry was given', () => {
    const err = new RegistryError(
      'unavailable',
      { operation: 'GET /v2/', reference: 'r.example/a', message: 'no answer within 300 ms' },
      { cause: new HttpTimeoutError('no answer within 300 ms') },
    );
    expect(refusalOf(err, endpoint)).toEqual({
      kind: 'unreachable',
      reason: 'no answer from registry.example:443 within 300 ms',
    });
  });

  it('quotes the registry when it refuses, and the token service when it refuses the credentials', () => {
    const refused = new RegistryError('unauthenticated', {
      operation: 'POST blob upload',
      reference: 'r.example/a',
      status: 401,
      registryCode: 'UNAUTHORIZED',
      message: 'authentication required',
    });
    expect(registryWords(refused)).toBe('authentication required');
    expect(refusalOf(refused, endpoint)).toEqual({
      kind: 'denied',
      reason: 'the registry refused push (401 UNAUTHORIZED: authentication required)',
    });
    const token = new TokenServiceError('unauthenticated', {
      operation: 'GET /v2/',
      reference: 'r.example/a',
      status: 401,
      realm: 'https://auth.example/token',
      words: 'refused the credentials for r.example: incorrect username or password',
    });
    expect(refusalOf(token, endpoint).reason).toBe(
      'the registry refused push (401: token endpoint https://auth.example/token refused the credentials for r.example: incorrect username or password)',
    );
  });

  it('calls a 400 NAME_INVALID the name’s fault, a 405 a registry that takes no push, a 503 a failure', () => {
    const answer = (status: number, registryCode: string, message: string) =>
      refusalOf(
        new RegistryError('invalid_argument', {
          operation: 'POST blob upload',
          reference: 'r.example/a',
          status,
          registryCode,
          message,
        }),
        endpoint,
      );
    expect(answer(400, 'NAME_INVALID', 'invalid repository name')).toEqual({
      kind: 'invalid',
      reason: 'the registry refused the name (400 NAME_INVALID: invalid repository name)',
    });
    expect(answer(405, 'UNSUPPORTED', 'The operation is unsupported.').kind).toBe('denied');
    expect(answer(503, 'UNAVAILABLE', 'down').reason).toBe(
      'the registry failed (503 UNAVAILABLE: down)',
    );
  });
});

describe('token service words', () => {
  it('takes the JSON message of a refusal, else its text', () => {
    expect(tokenServiceWords('{"details":"incorrect username or password"}')).toBe(
      'incorrect username or password',
    );
    expect(tokenServiceWords('{"errors":[{"code":"DENIED","message":"no such user"}]}')).toBe(
      'no such user',
    );
    expect(tokenServiceWords('{"error":"invalid_grant","error_description":"bad token"}')).toBe(
      'bad token',
    );
    expect(tokenServiceWords('  forbidden \n')).toBe('forbidden');
  });
});

/** A registry played in memory: what the handshake yields and what the upload probe answers. */
function probe(
  scheme: AuthScheme | Error,
  upload: 'accepts' | Error | 'hangs',
): PushProbe & { uploads: number } {
  const client = new RegistryClient();
  const fake = {
    uploads: 0,
    apiHost: (domain: string) => client.apiHost(domain),
    baseUrl: (domain: string) => client.baseUrl(domain),
    handshake: async () => {
      if (scheme instanceof Error) throw scheme;
      return scheme;
    },
    probeUpload: async () => {
      fake.uploads++;
      if (upload === 'hangs') return new Promise<void>(() => undefined);
      if (upload instanceof Error) throw upload;
    },
  };
  return fake;
}

describe('checkPushAccess decides', () => {
  const repo: Repository = { domain: 'r.example', repository: 'team/app' };
  const options = { deadlineMs: 1000 };
  const denied = new RegistryError('unauthenticated', {
    operation: 'POST blob upload',
    reference: 'r.example/team/app',
    status: 401,
    registryCode: 'UNAUTHORIZED',
    message: 'authentication required',
  });

  it('that a token whose claims grant push proves it, with no upload', async () => {
    const registry = probe(
      {
        kind: 'bearer',
        account: 'ci',
        token: jwt({
          access: [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }],
        }),
      },
      'accepts',
    );
    expect(await checkPushAccess(registry, repo, options)).toEqual({
      kind: 'allowed',
      proof: 'token',
    });
    expect(registry.uploads).toBe(0);
  });

  it('to open an upload where the handshake proves nothing: no auth, Basic, an opaque token', async () => {
    for (const scheme of [
      { kind: 'anonymous' },
      { kind: 'basic', username: 'ci' },
      { kind: 'bearer', token: 'opaque', account: 'ci' },
    ] as AuthScheme[]) {
      const registry = probe(scheme, 'accepts');
      expect(await checkPushAccess(registry, repo, options)).toEqual({
        kind: 'allowed',
        proof: 'upload',
      });
      expect(registry.uploads).toBe(1);
    }
  });

  it('that a token without push is refused in the registry’s words, naming whom it was issued to', async () => {
    const pullOnly = jwt({ access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }] });
    const asCi = await checkPushAccess(
      probe({ kind: 'bearer', token: pullOnly, account: 'ci' }, denied),
      repo,
      options,
    );
    expect(asCi).toEqual({
      kind: 'denied',
      reason:
        'the registry refused push (401 UNAUTHORIZED: authentication required); the token issued to ci grants no push on team/app',
    });
    const anonymous = await checkPushAccess(
      probe({ kind: 'bearer', token: pullOnly, account: undefined }, denied),
      repo,
      options,
    );
    expect(anonymous.kind === 'denied' && anonymous.reason).toContain(
      'the token issued without credentials (none for r.example in the docker config) grants no push on team/app',
    );
  });

  it('to trust the upload over claims that lack push (a claim may be a glob)', async () => {
    const globbed = jwt({ access: [{ type: 'repository', name: 'team/*', actions: ['push'] }] });
    expect(
      await checkPushAccess(
        probe({ kind: 'bearer', token: globbed, account: 'ci' }, 'accepts'),
        repo,
        options,
      ),
    ).toEqual({ kind: 'allowed', proof: 'upload' });
  });

  it('that a failed handshake is refused without an upload', async () => {
    const registry = probe(networkError('ECONNREFUSED'), 'accepts');
    expect(await checkPushAccess(registry, repo, options)).toEqual({
      kind: 'unreachable',
      reason: 'nothing listens on r.example:443 (connection refused)',
    });
    expect(registry.uploads).toBe(0);
  });

  it('within its deadline when the registry never answers', async () => {
    const started = Date.now();
    const access = await checkPushAccess(probe({ kind: 'anonymous' }, 'hangs'), repo, {
      deadlineMs: 50,
    });
    expect(access).toEqual({
      kind: 'unreachable',
      reason: 'no answer from r.example:443 within 50 ms',
    });
    expect(Date.now() - started).toBeLessThan(1000);
  });
});
