/**
 * The push check against real docker-registry processes on 127.0.0.1: an
 * anonymous one, one with htpasswd Basic auth and one with Bearer tokens
 * (test/support/registry-auth.ts), a port nothing listens on, a server that
 * never answers and a name under .invalid (which is never looked up).
 */
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PushPreflight, PushRefusedError } from '../../src/coordinator/push-preflight.js';
import { createLogger } from '../../src/log.js';
import { StaticCredentials, type CredentialSource } from '../../src/oci/credentials.js';
import { checkPushAccess } from '../../src/oci/push-access.js';
import { parseReference } from '../../src/oci/reference.js';
import { RegistryClient } from '../../src/oci/registry.js';
import { startTokenServer, writeHtpasswd, type TokenServer } from '../support/registry-auth.js';
import { freePort, startRegistry, type TestRegistry } from '../support/registry.js';

const log = createLogger({ level: 'silent', format: 'json', component: 'test' });
const DEADLINE_MS = 3000;

/** A client as the coordinator's check has it: short deadline, two attempts. */
function checkClient(credentials?: CredentialSource): RegistryClient {
  return new RegistryClient({
    credentials,
    requestTimeoutMs: DEADLINE_MS,
    retry: { maxAttempts: 2, baseDelayMs: 50, maxDelayMs: 100 },
  });
}

/**
 * Upload sessions the registry still holds for a repository: those with a
 * `startedat` file (distribution 2.8's DELETE removes it and the data, but
 * writes an empty hash state back after, which no upload uses).
 */
function openUploads(registry: TestRegistry, repository: string): string[] {
  const dir = join(registry.storageDir, 'docker/registry/v2/repositories', repository, '_uploads');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((id) => existsSync(join(dir, id, 'startedat')));
}

describe('the push check against an anonymous registry', () => {
  let registry: TestRegistry;
  beforeAll(async () => {
    registry = await startRegistry();
  });
  afterAll(async () => {
    await registry?.stop();
  });

  it('passes by opening an upload and cancelling it, leaving no upload behind', async () => {
    const repo = { domain: registry.host, repository: 'team/app' };
    const access = await checkPushAccess(checkClient(), repo, { deadlineMs: DEADLINE_MS });
    expect(access).toEqual({ kind: 'allowed', proof: 'upload' });
    expect(openUploads(registry, 'team/app')).toEqual([]);
  });

  it('handshakes once for a burst of builds to one repository, and takes milliseconds', async () => {
    const preflight = new PushPreflight({
      registry: checkClient(),
      deadlineMs: DEADLINE_MS,
      log,
    });
    const tag = [parseReference(`${registry.host}/burst/app:1`)];
    let started = performance.now();
    await preflight.checkTags(tag);
    const coldMs = performance.now() - started;
    started = performance.now();
    await Promise.all(Array.from({ length: 500 }, () => preflight.checkTags(tag)));
    const memoisedMs = (performance.now() - started) / 500;
    // Loopback: a handshake and an upload opened and cancelled.
    expect(coldMs).toBeLessThan(1000);
    expect(memoisedMs).toBeLessThan(1);
    console.log(
      `push check on loopback: cold ${coldMs.toFixed(1)} ms, memoised ${(memoisedMs * 1000).toFixed(1)} µs per build`,
    );
  });
});

describe('the push check against a registry with htpasswd Basic auth', () => {
  let dir: string;
  let registry: TestRegistry;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-pushcheck-basic-'));
    registry = await startRegistry({
      auth: { kind: 'htpasswd', file: await writeHtpasswd(dir, 'ci', 's3cret') },
    });
  });
  afterAll(async () => {
    await registry?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('passes with the right credentials', async () => {
    const client = checkClient(
      new StaticCredentials({
        [registry.host]: { kind: 'basic', username: 'ci', password: 's3cret' },
      }),
    );
    const repo = { domain: registry.host, repository: 'team/app' };
    expect(await checkPushAccess(client, repo, { deadlineMs: DEADLINE_MS })).toEqual({
      kind: 'allowed',
      proof: 'upload',
    });
    expect(openUploads(registry, 'team/app')).toEqual([]);
  });

  it('refuses wrong credentials with the registry’s words', async () => {
    const client = checkClient(
      new StaticCredentials({
        [registry.host]: { kind: 'basic', username: 'ci', password: 'wrong' },
      }),
    );
    const preflight = new PushPreflight({ registry: client, deadlineMs: DEADLINE_MS, log });
    const err = (await preflight
      .checkTags([parseReference(`${registry.host}/team/app:1`)])
      .catch((e: unknown) => e)) as PushRefusedError;
    expect(err).toBeInstanceOf(PushRefusedError);
    expect(err.code).toBe('failed_precondition');
    expect(err.message).toBe(
      `cannot push to ${registry.host}/team/app: the registry refused push (401 UNAUTHORIZED: authentication required)`,
    );
  });

  it('refuses a caller without credentials, saying none were found', async () => {
    const access = await checkPushAccess(
      checkClient(),
      { domain: registry.host, repository: 'team/app' },
      { deadlineMs: DEADLINE_MS },
    );
    expect(access.kind).toBe('denied');
    expect(access.kind !== 'allowed' && access.reason).toContain(
      `the registry refused push (401: ${registry.host} wants a user name and password; none found for it`,
    );
  });
});

describe('the push check against a registry with Bearer token auth', () => {
  let dir: string;
  let tokens: TokenServer;
  let registry: TestRegistry;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-pushcheck-token-'));
    tokens = await startTokenServer(
      dir,
      { user: 'ci', password: 'tok3n' },
      { anonymousPull: true },
    );
    registry = await startRegistry({
      auth: {
        kind: 'token',
        realm: tokens.realm,
        service: tokens.service,
        issuer: tokens.issuer,
        certFile: tokens.certFile,
      },
    });
  });
  afterAll(async () => {
    await registry?.stop();
    await tokens?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('passes on a token whose claims grant push, asked for with push scope, without an upload', async () => {
    const client = checkClient(
      new StaticCredentials({
        [registry.host]: { kind: 'basic', username: 'ci', password: 'tok3n' },
      }),
    );
    const repo = { domain: registry.host, repository: 'team/app' };
    const before = tokens.requests.length;
    expect(await checkPushAccess(client, repo, { deadlineMs: DEADLINE_MS })).toEqual({
      kind: 'allowed',
      proof: 'token',
    });
    const asked = tokens.requests.slice(before);
    expect(asked.map((r) => r.scopes)).toContainEqual(['repository:team/app:pull,push']);
    expect(asked.every((r) => r.account === 'ci')).toBe(true);
  });

  it('refuses credentials the token service refuses, in its words', async () => {
    const client = checkClient(
      new StaticCredentials({
        [registry.host]: { kind: 'basic', username: 'ci', password: 'nope' },
      }),
    );
    const access = await checkPushAccess(
      client,
      { domain: registry.host, repository: 'team/app' },
      { deadlineMs: DEADLINE_MS },
    );
    expect(access).toEqual({
      kind: 'denied',
      reason: `the registry refused push (401: token endpoint ${tokens.realm} refused the credentials for ${registry.host}: bad credentials)`,
    });
  });

  it('refuses an anonymous caller whose token grants pull only, in the registry’s words', async () => {
    const access = await checkPushAccess(
      checkClient(),
      { domain: registry.host, repository: 'team/app' },
      { deadlineMs: DEADLINE_MS },
    );
    expect(access.kind).toBe('denied');
    expect(access.kind !== 'allowed' && access.reason).toMatch(
      /^the registry refused push \(401 UNAUTHORIZED: authentication required\); the token issued without credentials \(none for 127\.0\.0\.1:\d+ in the docker config\) grants no push on team\/app$/,
    );
  });
});

describe('the push check where no registry answers', () => {
  let silent: Server;
  let silentHost: string;
  beforeAll(async () => {
    silent = createServer(() => undefined); // accepts, never answers
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    silentHost = `127.0.0.1:${(silent.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    silent.closeAllConnections();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });

  it('refuses a port nothing listens on as connection refused, at once', async () => {
    const port = await freePort();
    const preflight = new PushPreflight({ registry: checkClient(), deadlineMs: DEADLINE_MS, log });
    const started = Date.now();
    const err = (await preflight
      .checkTags([parseReference(`127.0.0.1:${port}/app:1`)])
      .catch((e: unknown) => e)) as PushRefusedError;
    expect(err).toBeInstanceOf(PushRefusedError);
    expect(err.message).toBe(
      `cannot push to 127.0.0.1:${port}/app: nothing listens on 127.0.0.1:${port} (connection refused)`,
    );
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('refuses a host that does not resolve, naming the tag, without looking it up', async () => {
    const preflight = new PushPreflight({
      registry: new RegistryClient({
        insecureRegistries: ['registry.invalid:5000'],
        retry: { maxAttempts: 2, baseDelayMs: 50, maxDelayMs: 100 },
      }),
      deadlineMs: DEADLINE_MS,
      log,
    });
    const err = (await preflight
      .checkTags([parseReference('registry.invalid:5000/team/app:1')])
      .catch((e: unknown) => e)) as PushRefusedError;
    expect(err.message).toBe(
      'cannot push to registry.invalid:5000/team/app: registry.invalid could not be resolved (ENOTFOUND)',
    );
  });

  it('gives a registry that never answers its deadline, and no more', async () => {
    const started = Date.now();
    const access = await checkPushAccess(
      new RegistryClient({
        requestTimeoutMs: 300,
        retry: { maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 10 },
      }),
      { domain: silentHost, repository: 'team/app' },
      { deadlineMs: 400 },
    );
    expect(access).toEqual({
      kind: 'unreachable',
      reason: `no answer from ${silentHost} within 400 ms`,
    });
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('checks repositories in parallel: two silent registries cost one deadline', async () => {
    const preflight = new PushPreflight({
      registry: new RegistryClient({
        requestTimeoutMs: 400,
        retry: { maxAttempts: 1, baseDelayMs: 1, maxDelayMs: 1 },
      }),
      deadlineMs: 400,
      log,
    });
    const started = Date.now();
    const err = (await preflight
      .checkTags([parseReference(`${silentHost}/a:1`), parseReference(`${silentHost}/b:1`)])
      .catch((e: unknown) => e)) as PushRefusedError;
    expect(err.refusals.map((r) => r.target.name)).toEqual([`${silentHost}/a`, `${silentHost}/b`]);
    expect(Date.now() - started).toBeLessThan(700);
  });
});
