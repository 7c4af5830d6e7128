/**
 * The BuildKit session the agent opens for every build, against the real
 * engine: secrets reach `RUN --mount=type=secret` on every platform (and
 * never the image), optional secret mounts work without a value, and `FROM`
 * an image in a registry with htpasswd auth pulls with the credentials the
 * session hands out — and fails with the registry's words when they are wrong.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SessionProviders } from '../../src/agent/buildkit-session.js';
import { createEngine, type Engine } from '../../src/agent/engine.js';
import { EngineError } from '../../src/agent/engine-error.js';
import type { Credentials } from '../../src/oci/credentials.js';
import { pushBaseImage } from '../support/base-image.js';
import { requireCommand, requireEngine, requireQemu } from '../support/components.js';
import { run } from '../support/process.js';
import { writeHtpasswd } from '../support/registry-auth.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { contextTar } from '../support/files.js';

describe('the BuildKit session on the real engine', () => {
  let registry: TestRegistry;
  let privateRegistry: TestRegistry;
  let credentialsDir: string;
  let engine: Engine;
  let docker: string;
  const buildId = `e2e-session-${randomUUID()}`;
  const built = new Set<string>();
  // Random per run: a layer that kept it would be found by the grep below.
  const secretValue = `braid-secret-${randomUUID()}`;

  function providers(overrides: Partial<SessionProviders> = {}): SessionProviders {
    return {
      secrets: new Map([['tok', new TextEncoder().encode(secretValue)]]),
      credentials: async () => undefined,
      ...overrides,
    };
  }

  async function build(dockerfile: string, platform: string, session: SessionProviders) {
    const { imageId } = await engine.build(
      {
        context: await contextTar({ Dockerfile: dockerfile }),
        dockerfile: 'Dockerfile',
        platform,
        // Build args land in the image's history: only the value's hash goes there.
        buildArgs: { EXPECTED_SHA256: createHash('sha256').update(secretValue).digest('hex') },
        labels: { 'io.braid.build-id': buildId, 'io.braid.job-id': randomUUID() },
        noCache: true,
        pull: false,
        networkMode: 'none',
        session,
      },
      () => undefined,
      new AbortController().signal,
    );
    built.add(imageId);
    return imageId;
  }

  beforeAll(async () => {
    await requireEngine();
    await requireQemu('qemu-s390x');
    await requireQemu('qemu-aarch64');
    await requireQemu('qemu-ppc64le');
    docker = await requireCommand('docker', 'docker.io');
    const skopeo = await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base', 'latest');
    credentialsDir = await mkdtemp(join(tmpdir(), 'braid-session-auth-'));
    privateRegistry = await startRegistry({
      auth: { kind: 'htpasswd', file: await writeHtpasswd(credentialsDir, 'builder', 'pa55') },
    });
    const copied = await run(skopeo, [
      'copy',
      '--all',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      '--dest-creds',
      'builder:pa55',
      '--quiet',
      `docker://${registry.host}/base:latest`,
      `docker://${privateRegistry.host}/private/base:latest`,
    ]);
    expect(copied.code, copied.stderr).toBe(0);
    engine = createEngine('unix:///var/run/docker.sock');
  }, 600_000);

  afterAll(async () => {
    for (const id of built) await engine?.removeImage(id).catch(() => undefined);
    await engine?.close();
    await registry?.stop();
    await privateRegistry?.stop();
    if (credentialsDir) await rm(credentialsDir, { recursive: true, force: true });
  });

  it.each(['linux/amd64', 'linux/arm64', 'linux/ppc64le', 'linux/s390x'])(
    'hands the secret to RUN --mount=type=secret on %s and leaves it out of the image',
    async (platform) => {
      const imageId = await build(
        [
          `FROM ${registry.host}/base:latest`,
          'ARG EXPECTED_SHA256',
          'RUN --mount=type=secret,id=tok test "$(sha256sum < /run/secrets/tok | cut -d" " -f1)" = "$EXPECTED_SHA256" && echo secret-ok > /checked',
          '',
        ].join('\n'),
        platform,
        providers(),
      );
      // The saved image (config and every layer) never holds the value.
      // (docker save keeps layers uncompressed, so a byte search finds any copy.)
      const file = join(credentialsDir, `${platform.replace(/\//g, '-')}.tar`);
      const saved = await run(docker, ['save', '-o', file, imageId]);
      expect(saved.code, saved.stderr).toBe(0);
      const bytes = await readFile(file);
      expect(bytes.includes(Buffer.from(secretValue))).toBe(false);
      expect(bytes.includes(Buffer.from('secret-ok'))).toBe(true);
    },
  );

  it('builds an optional secret mount without a value, and fails a required one naming it', async () => {
    await build(
      [
        `FROM ${registry.host}/base:latest`,
        'RUN --mount=type=secret,id=absent,required=false test ! -s /run/secrets/absent',
        '',
      ].join('\n'),
      'linux/amd64',
      providers({ secrets: new Map() }),
    );
    const failed = await build(
      [
        `FROM ${registry.host}/base:latest`,
        'RUN --mount=type=secret,id=absent,required=true true',
        '',
      ].join('\n'),
      'linux/amd64',
      providers({ secrets: new Map() }),
    ).catch((err: unknown) => err);
    expect(failed).toBeInstanceOf(EngineError);
    expect((failed as EngineError).message).toMatch(/secret absent/);
  });

  it('pulls FROM an htpasswd registry with the credentials the session hands out', async () => {
    const asked: string[] = [];
    const good: Credentials = { kind: 'basic', username: 'builder', password: 'pa55' };
    const dockerfile = [
      `FROM ${privateRegistry.host}/private/base:latest`,
      'RUN uname -m > /arch',
      '',
    ].join('\n');
    await build(
      dockerfile,
      'linux/arm64',
      providers({
        credentials: async (host) => {
          asked.push(host);
          return host === privateRegistry.host ? good : undefined;
        },
      }),
    );
    expect(asked).toContain(privateRegistry.host);

    const wrong = await build(
      dockerfile,
      'linux/s390x',
      providers({
        credentials: async () => ({ kind: 'basic', username: 'builder', password: 'wrong' }),
      }),
    ).catch((err: unknown) => err);
    expect(wrong).toBeInstanceOf(EngineError);
    // The registry's own words reach the user.
    expect((wrong as EngineError).message).toMatch(/401 Unauthorized|unauthorized/i);
  });
});
