import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DockerConfigCredentials, StaticCredentials } from '../../src/oci/credentials.js';
import { sha256Digest } from '../../src/oci/digest.js';
import { RegistryError } from '../../src/oci/errors.js';
import { DOCKER_CONFIG, DOCKER_MANIFEST, OCI_MANIFEST } from '../../src/oci/media-types.js';
import { parseReference } from '../../src/oci/reference.js';
import { RegistryClient, type Repository } from '../../src/oci/registry.js';
import { buildIndex, publishIndex, resolveSources } from '../../src/oci/stitch.js';
import { requireCommand } from '../support/components.js';
import { run } from '../support/process.js';
import { startTokenServer, writeHtpasswd, type TokenServer } from '../support/registry-auth.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

interface TestImage {
  config: Buffer;
  layer: Buffer;
  manifest: Buffer;
  digest: string;
}

function makeImage(layerBytes = 64 * 1024, mediaType = OCI_MANIFEST): TestImage {
  const layer = randomBytes(layerBytes);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [sha256Digest(layer)] },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: {
        mediaType:
          mediaType === OCI_MANIFEST ? 'application/vnd.oci.image.config.v1+json' : DOCKER_CONFIG,
        digest: sha256Digest(config),
        size: config.length,
      },
      layers: [
        {
          mediaType:
            mediaType === OCI_MANIFEST
              ? 'application/vnd.oci.image.layer.v1.tar'
              : 'application/vnd.docker.image.rootfs.diff.tar',
          digest: sha256Digest(layer),
          size: layer.length,
        },
      ],
    }),
  );
  return { config, layer, manifest, digest: sha256Digest(manifest) };
}

async function pushImage(
  client: RegistryClient,
  repo: Repository,
  image: TestImage,
  tag?: string,
): Promise<void> {
  await client.uploadBlob(repo, sha256Digest(image.config), image.config.length, image.config);
  await client.uploadBlob(repo, sha256Digest(image.layer), image.layer.length, image.layer);
  await client.putManifest(
    repo,
    tag ?? image.digest,
    image.manifest,
    JSON.parse(image.manifest.toString()).mediaType,
  );
}

const noSleep = { sleep: async () => undefined };

describe('the registry client against an anonymous docker-registry', () => {
  let registry: TestRegistry;
  let other: TestRegistry;
  let client: RegistryClient;
  let repo: Repository;

  beforeAll(async () => {
    [registry, other] = await Promise.all([startRegistry(), startRegistry()]);
    client = new RegistryClient();
    repo = { domain: registry.host, repository: 'braid-test/app' };
  });
  afterAll(async () => {
    await Promise.all([registry?.stop(), other?.stop()]);
  });

  it('uploads blobs monolithically and in chunks, and knows when one already exists', async () => {
    const small = randomBytes(1000);
    const big = randomBytes(300 * 1024 + 17);
    expect(await client.uploadBlob(repo, sha256Digest(small), small.length, small)).toBe(
      'uploaded',
    );
    expect(
      await client.uploadBlob(
        repo,
        sha256Digest(big),
        big.length,
        () =>
          (async function* () {
            for (let i = 0; i < big.length; i += 10_000) yield big.subarray(i, i + 10_000);
          })() as unknown as import('node:stream').Readable,
        { chunkBytes: 64 * 1024 },
      ),
    ).toBe('uploaded');
    expect(await client.headBlob(repo, sha256Digest(big))).toBe(big.length);
    expect(await client.uploadBlob(repo, sha256Digest(small), small.length, small)).toBe('exists');
    expect(await client.getBlobBytes(repo, sha256Digest(big))).toEqual(big);
    expect(await client.headBlob(repo, sha256Digest(randomBytes(8)))).toBeUndefined();
  });

  it('pushes a manifest by tag that skopeo reads back byte for byte', async () => {
    const image = makeImage();
    await pushImage(client, repo, image, 'v1');
    const skopeo = await requireCommand('skopeo', 'skopeo');
    const raw = await run(skopeo, [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${registry.host}/braid-test/app:v1`,
    ]);
    expect(raw.code, raw.stderr).toBe(0);
    expect(raw.stdout).toBe(image.manifest.toString());
    const head = await client.headManifest(repo, 'v1');
    expect(head).toEqual({
      mediaType: OCI_MANIFEST,
      digest: image.digest,
      size: image.manifest.length,
    });
    const got = await client.getManifest(repo, image.digest);
    expect(got.bytes).toEqual(image.manifest);
    expect(got.mediaType).toBe(OCI_MANIFEST);
  });

  it('moves a tag on the registry word when it names the digest, and reads the tag back when it does not', async () => {
    const image = makeImage();
    await pushImage(client, repo, image);
    const source = parseReference(`${registry.host}/braid-test/app@${image.digest}`);
    const plan = buildIndex(await resolveSources(client, [{ ref: source }]), {
      attestations: true,
      format: 'oci',
      annotations: {},
    });
    const target = (tag: string) => parseReference(`${registry.host}/braid-test/app:${tag}`);
    const heads: string[] = [];
    /** A registry whose manifest PUT answers name no digest, or `answered`. */
    const quiet = (answered?: (url: string) => string | undefined) =>
      new RegistryClient({
        fetch: async (input, init) => {
          const url = String(input instanceof Request ? input.url : input);
          if (init?.method === 'HEAD' && url.includes('/manifests/')) heads.push(url);
          const response = await fetch(input, init);
          if (init?.method !== 'PUT' || !url.includes('/manifests/')) return response;
          const headers = new Headers(response.headers);
          headers.delete('docker-content-digest');
          const named = answered?.(url);
          if (named) headers.set('docker-content-digest', named);
          return new Response(await response.arrayBuffer(), { status: response.status, headers });
        },
      });

    expect(await client.putManifest(repo, 'said', plan.bytes, plan.mediaType)).toEqual({
      digest: plan.digest,
      confirmed: true,
    });
    await publishIndex(
      quiet(() => plan.digest),
      plan,
      [target('confirmed')],
    );
    expect(heads.filter((url) => url.endsWith('/manifests/confirmed'))).toEqual([]);

    await publishIndex(quiet(), plan, [target('unconfirmed')]);
    expect(heads.filter((url) => url.endsWith('/manifests/unconfirmed'))).toHaveLength(1);
    expect((await client.headManifest(repo, 'unconfirmed'))?.digest).toBe(plan.digest);

    const other = sha256Digest(Buffer.from('another index'));
    await expect(
      publishIndex(
        quiet(() => other),
        plan,
        [target('contradicted')],
      ),
    ).rejects.toThrow(`registry stored digest ${other}, braid sent ${plan.digest}`);
  });

  it('keeps a Docker v2 schema 2 manifest as Docker media type', async () => {
    const image = makeImage(1024, DOCKER_MANIFEST);
    await pushImage(client, repo, image, 'docker-v2');
    expect((await client.getManifest(repo, 'docker-v2')).mediaType).toBe(DOCKER_MANIFEST);
  });

  it('says which manifest is unknown, with the registry own error code', async () => {
    const err = (await client
      .getManifest(repo, 'no-such-tag')
      .catch((e: unknown) => e)) as RegistryError;
    expect(err).toBeInstanceOf(RegistryError);
    expect(err.code).toBe('not_found');
    expect(err.message).toBe(
      `GET manifest ${registry.host}/braid-test/app:no-such-tag: HTTP 404 MANIFEST_UNKNOWN: manifest unknown`,
    );
    expect(await client.headManifest(repo, 'no-such-tag')).toBeUndefined();
  });

  it('mounts blobs across repositories of one registry and copies them across registries', async () => {
    const image = makeImage();
    await pushImage(client, repo, image);
    const layer = { digest: sha256Digest(image.layer), size: image.layer.length };
    const sibling = { domain: registry.host, repository: 'braid-test/sibling' };
    expect(await client.copyBlob(repo, sibling, layer)).toBe('mounted');
    expect(await client.getBlobBytes(sibling, layer.digest)).toEqual(image.layer);
    // A source without the blob cannot mount it; the target has it already.
    const empty = { domain: registry.host, repository: 'braid-test/empty' };
    expect(await client.copyBlob(empty, sibling, layer)).toBe('exists');
    const elsewhere = { domain: other.host, repository: 'braid-test/copy' };
    expect(await client.copyBlob(repo, elsewhere, layer)).toBe('copied');
    expect(await client.copyBlob(repo, elsewhere, layer)).toBe('exists');
    expect(await client.getBlobBytes(elsewhere, layer.digest)).toEqual(image.layer);
  });

  it('refuses bytes that do not match the digest they were asked for', async () => {
    const image = makeImage();
    await pushImage(client, repo, image, 'tamper');
    const tampering = new RegistryClient({
      fetch: async (input, init) => {
        const response = await fetch(input, init);
        if (init?.method !== 'GET' || !String(input).includes('/blobs/')) return response;
        const body = Buffer.from(await response.arrayBuffer());
        body[body.length - 1] = (body[body.length - 1] ?? 0) ^ 0xff;
        return new Response(body, { status: response.status, headers: response.headers });
      },
    });
    await expect(tampering.getBlobBytes(repo, sha256Digest(image.layer))).rejects.toThrow(
      /does not match/,
    );
  });

  it('retries 503s and dropped connections with backoff, then succeeds', async () => {
    const image = makeImage();
    await pushImage(client, repo, image, 'flaky');
    let calls = 0;
    const retries: string[] = [];
    const flaky = new RegistryClient({
      ...noSleep,
      onRetry: (info) => retries.push(info.reason),
      fetch: async (input, init) => {
        calls++;
        if (calls === 1) return new Response('busy', { status: 503 });
        if (calls === 2)
          throw Object.assign(new TypeError('fetch failed'), { cause: { code: 'ECONNRESET' } });
        return fetch(input, init);
      },
    });
    expect((await flaky.getManifest(repo, 'flaky')).digest).toBe(image.digest);
    expect(retries).toEqual(['HTTP 503', 'ECONNRESET']);
  });

  it('retries a manifest PUT the registry calls DIGEST_INVALID while a shared blob is being committed', async () => {
    // distribution answers this when another push commits a referenced blob at the same
    // moment; braid has checked the digest itself, so it is the registry's transient state.
    const image = makeImage();
    const digestInvalid = (): Response =>
      new Response(
        JSON.stringify({
          errors: [
            { code: 'DIGEST_INVALID', message: 'provided digest did not match uploaded content' },
          ],
        }),
        { status: 400, headers: { 'content-type': 'application/json' } },
      );
    let refusals = 2;
    const retries: string[] = [];
    const racing = new RegistryClient({
      ...noSleep,
      onRetry: (info) => retries.push(`${info.operation}: ${info.reason}`),
      fetch: async (input, init) => {
        const url = String(input instanceof Request ? input.url : input);
        if (init?.method === 'PUT' && url.includes('/manifests/') && refusals-- > 0) {
          return digestInvalid();
        }
        return fetch(input, init);
      },
    });
    await pushImage(racing, repo, image, 'racing');
    expect(retries).toEqual([
      'PUT manifest: HTTP 400 DIGEST_INVALID',
      'PUT manifest: HTTP 400 DIGEST_INVALID',
    ]);
    expect((await client.getManifest(repo, 'racing')).digest).toBe(image.digest);

    // A registry that keeps refusing still fails, with its own code, after the attempt cap.
    const refusing = new RegistryClient({
      ...noSleep,
      retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 1 },
      fetch: async (input, init) =>
        init?.method === 'PUT' && String(input).includes('/manifests/')
          ? digestInvalid()
          : fetch(input, init),
    });
    const err = (await refusing
      .putManifest(repo, image.digest, image.manifest, OCI_MANIFEST)
      .catch((e: unknown) => e)) as RegistryError;
    expect(err).toBeInstanceOf(RegistryError);
    expect(err.message).toBe(
      `PUT manifest ${registry.host}/braid-test/app@${image.digest}: HTTP 400 DIGEST_INVALID: provided digest did not match uploaded content (after 3 attempts)`,
    );
  });

  it('honours Retry-After on 429 and gives up after the attempt cap with the last answer', async () => {
    const delays: number[] = [];
    const limited = new RegistryClient({
      retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 5000 },
      sleep: async (ms) => void delays.push(ms),
      fetch: async () =>
        new Response(
          JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down' }] }),
          {
            status: 429,
            headers: { 'retry-after': '2' },
          },
        ),
    });
    const err = (await limited.getManifest(repo, 'x').catch((e: unknown) => e)) as RegistryError;
    expect(delays).toEqual([2000, 2000]);
    expect(err.code).toBe('resource_exhausted');
    expect(err.message).toBe(
      `GET manifest ${registry.host}/braid-test/app:x: HTTP 429 TOOMANYREQUESTS: slow down (after 3 attempts)`,
    );
  });
});

describe('the registry client when the registry does not answer', () => {
  let server: Server;
  let host: string;
  beforeAll(async () => {
    server = createServer(() => undefined); // accepts, never answers
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('times out each request and reports it as unavailable', async () => {
    const client = new RegistryClient({
      requestTimeoutMs: 200,
      retry: { maxAttempts: 2, baseDelayMs: 1, maxDelayMs: 1 },
    });
    const err = (await client
      .headBlob({ domain: host, repository: 'a/b' }, sha256Digest(Buffer.from('x')))
      .catch((e: unknown) => e)) as RegistryError;
    expect(err.code).toBe('unavailable');
    expect(err.message).toMatch(
      /^HEAD blob 127\.0\.0\.1:\d+\/a\/b@sha256:[0-9a-f]{64}: no answer within 200 ms \(after 2 attempts\)$/,
    );
  });
});

describe('the registry client against a registry with htpasswd Basic auth', () => {
  let dir: string;
  let registry: TestRegistry;
  let repo: Repository;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-basic-'));
    registry = await startRegistry({
      auth: { kind: 'htpasswd', file: await writeHtpasswd(dir, 'ci', 's3cret') },
    });
    repo = { domain: registry.host, repository: 'team/app' };
  });
  afterAll(async () => {
    await registry?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('tells an anonymous caller to log in, naming the registry', async () => {
    const err = (await new RegistryClient()
      .headManifest(repo, 'latest')
      .catch((e: unknown) => e)) as RegistryError;
    expect(err.code).toBe('unauthenticated');
    expect(err.message).toContain(
      `${registry.host} wants a user name and password; none found for it`,
    );
  });

  it('pushes and pulls with credentials from a docker config.json', async () => {
    const configDir = join(dir, 'docker');
    await writeConfig(configDir, {
      auths: { [`http://${registry.host}`]: { auth: Buffer.from('ci:s3cret').toString('base64') } },
    });
    const client = new RegistryClient({
      credentials: new DockerConfigCredentials({ env: { DOCKER_CONFIG: configDir } }),
    });
    const image = makeImage();
    await pushImage(client, repo, image, 'basic');
    expect((await client.getManifest(repo, 'basic')).digest).toBe(image.digest);
  });

  it('asks a docker-credential helper named in credHelpers', async () => {
    const bin = join(dir, 'bin');
    await writeConfig(bin, {});
    const helper = join(bin, 'docker-credential-braidtest');
    await writeFile(
      helper,
      `#!/bin/sh\nread host\n[ "$host" = "${registry.host}" ] || { echo "credentials not found in native keychain"; exit 1; }\necho '{"ServerURL":"'$host'","Username":"ci","Secret":"s3cret"}'\n`,
    );
    await chmod(helper, 0o755);
    vi.stubEnv('PATH', `${bin}:${process.env.PATH ?? ''}`);
    const configDir = join(dir, 'helper-config');
    await writeConfig(configDir, { credHelpers: { [registry.host]: 'braidtest' } });
    const client = new RegistryClient({
      credentials: new DockerConfigCredentials({ env: { DOCKER_CONFIG: configDir } }),
    });
    const image = makeImage();
    await pushImage(client, repo, image, 'helper');
    expect(await client.headManifest(repo, 'helper')).toMatchObject({ digest: image.digest });
  });

  it('reports refused credentials as unauthenticated with the registry code', async () => {
    const client = new RegistryClient({
      credentials: new StaticCredentials({
        [registry.host]: { kind: 'basic', username: 'ci', password: 'wrong' },
      }),
    });
    const err = (await client.getManifest(repo, 'basic').catch((e: unknown) => e)) as RegistryError;
    expect(err.code).toBe('unauthenticated');
    expect(err.message).toMatch(/HTTP 401 UNAUTHORIZED/);
  });
});

describe('the registry client against a registry with Bearer token auth', () => {
  let dir: string;
  let tokens: TokenServer;
  let registry: TestRegistry;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-token-'));
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

  it('pushes with a token per scope, caches it, and the registry verifies it for real', async () => {
    const client = new RegistryClient({
      credentials: new StaticCredentials({
        [registry.host]: { kind: 'basic', username: 'ci', password: 'tok3n' },
      }),
    });
    const repo = { domain: registry.host, repository: 'team/app' };
    const image = makeImage();
    await pushImage(client, repo, image, 'tok');
    expect((await client.getManifest(repo, 'tok')).digest).toBe(image.digest);
    const before = tokens.requests.length;
    await client.headManifest(repo, 'tok');
    await client.headManifest(repo, 'tok');
    expect(tokens.requests.length).toBe(before);
    expect(tokens.requests.every((r) => r.account === 'ci')).toBe(true);
    expect(tokens.requests.flatMap((r) => r.scopes)).toContain('repository:team/app:pull,push');
  });

  it('asks for pull on the source and push on the target when mounting across repositories', async () => {
    const client = new RegistryClient({
      credentials: new StaticCredentials({
        [registry.host]: { kind: 'basic', username: 'ci', password: 'tok3n' },
      }),
    });
    const source = { domain: registry.host, repository: 'team/source' };
    const image = makeImage();
    await pushImage(client, source, image);
    const target = { domain: registry.host, repository: 'team/target' };
    expect(
      await client.copyBlob(source, target, {
        digest: sha256Digest(image.layer),
        size: image.layer.length,
      }),
    ).toBe('mounted');
    expect(
      tokens.requests.some(
        (r) =>
          r.scopes.includes('repository:team/target:pull,push') &&
          r.scopes.includes('repository:team/source:pull'),
      ),
    ).toBe(true);
  });

  it('lets an anonymous caller pull but not push', async () => {
    const anonymous = new RegistryClient();
    const repo = { domain: registry.host, repository: 'team/app' };
    expect(await anonymous.headManifest(repo, 'tok')).toBeDefined();
    const blob = randomBytes(10);
    const err = (await anonymous
      .uploadBlob(repo, sha256Digest(blob), blob.length, blob)
      .catch((e: unknown) => e)) as RegistryError;
    expect(err).toBeInstanceOf(RegistryError);
    expect(err.code).toBe('unauthenticated');
    expect(err.message).toContain('POST blob upload');
  });
});

async function writeConfig(dir: string, config: object): Promise<void> {
  const { mkdir } = await import('node:fs/promises');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
}
