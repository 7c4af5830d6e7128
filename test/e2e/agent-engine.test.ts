import { createHash, randomInt, randomUUID } from 'node:crypto';
import { access, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProgressEvent } from '../../src/agent/buildkit-trace.js';
import { createEngine, type BuildOptions, type Engine } from '../../src/agent/engine.js';
import { EngineError } from '../../src/agent/engine-error.js';
import { ImagePlatformMismatchError, pushImage } from '../../src/agent/image-pusher.js';
import { OCI_MANIFEST, type ImageIndex, type ImageManifest } from '../../src/oci/media-types.js';
import { parsePlatform, platformFromOci, platformsEqual } from '../../src/oci/platform.js';
import { RegistryClient, type Repository } from '../../src/oci/registry.js';
import { pushBaseImage } from '../support/base-image.js';
import { requireCommand, requireEngine, requireQemu } from '../support/components.js';
import { run } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { contextTar } from '../support/files.js';

const PLATFORMS = [
  { platform: 'linux/s390x', arch: 's390x', uname: 's390x' },
  { platform: 'linux/arm64', arch: 'arm64', uname: 'aarch64' },
  { platform: 'linux/amd64', arch: 'amd64', uname: 'x86_64' },
] as const;

/** Processes whose command line contains `marker` (build containers run on this host). */
async function processesWith(marker: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((name) => /^\d+$/.test(name))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').includes(marker)) found.push(pid);
  }
  return found;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('the agent builds on the real engine with BuildKit and pushes by digest', () => {
  let registry: TestRegistry;
  let docker: string;
  let skopeo: string;
  let engine: Engine;
  let client: RegistryClient;
  const buildId = `e2e-agent-engine-${randomUUID()}`;
  const builtImages = new Set<string>();
  const pulledReferences: string[] = [];

  const repo = (repository: string): Repository => ({ domain: registry.host, repository });

  const baseDockerfile = () =>
    [
      `FROM ${registry.host}/base:latest AS build`,
      'ARG TARGETPLATFORM',
      'ARG TARGETARCH',
      'ARG GREETING=unset',
      'RUN uname -m > /uname && echo "$TARGETPLATFORM $TARGETARCH $GREETING" > /target && echo "built for $TARGETARCH"',
      `FROM ${registry.host}/base:latest`,
      'COPY --from=build /uname /target /out/',
      '',
    ].join('\n');

  async function build(
    dockerfile: string,
    platform: string,
    jobId: string,
    overrides: Partial<BuildOptions> = {},
    signal: AbortSignal = new AbortController().signal,
    events: ProgressEvent[] = [],
  ): Promise<{ imageId: string; events: ProgressEvent[] }> {
    const { imageId } = await engine.build(
      {
        context: await contextTar({ Dockerfile: dockerfile }),
        dockerfile: 'Dockerfile',
        platform,
        buildArgs: {},
        labels: { 'io.braid.build-id': buildId, 'io.braid.job-id': jobId },
        noCache: false,
        pull: false,
        networkMode: 'none',
        ...overrides,
      },
      (event) => events.push(event),
      signal,
    );
    builtImages.add(imageId);
    return { imageId, events };
  }

  async function docker_(args: string[]): Promise<string> {
    const result = await run(docker, args);
    expect(result.code, `docker ${args.join(' ')}: ${result.stderr}`).toBe(0);
    return result.stdout.trim();
  }

  async function tagsOf(repository: string): Promise<string[]> {
    const response = await fetch(`${registry.url}/v2/${repository}/tags/list`);
    if (response.status === 404) return [];
    return ((await response.json()) as { tags: string[] | null }).tags ?? [];
  }

  async function labelledImages(): Promise<string[]> {
    const out = await docker_([
      'images',
      '--quiet',
      '--no-trunc',
      '--filter',
      `label=io.braid.build-id=${buildId}`,
    ]);
    return out === '' ? [] : [...new Set(out.split('\n'))];
  }

  beforeAll(async () => {
    await requireEngine();
    await requireQemu('qemu-s390x');
    await requireQemu('qemu-aarch64');
    docker = await requireCommand('docker', 'docker.io');
    skopeo = await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base', 'latest');
    engine = createEngine('unix:///var/run/docker.sock');
    client = new RegistryClient();
  });

  afterAll(async () => {
    if (docker) {
      for (const reference of pulledReferences) await run(docker, ['image', 'rm', reference]);
      for (const imageId of builtImages) await engine.removeImage(imageId).catch(() => undefined);
      // Whatever a failed test left behind still carries the build id.
      for (const imageId of await labelledImages().catch(() => []))
        await run(docker, ['image', 'rm', '--force', imageId]);
    }
    await registry?.stop();
  });

  it('reports the engine it talks to, with the architecture the engine names', async () => {
    const info = await engine.info();
    expect(info.os).toBe('linux');
    expect(info.architecture).toBe('x86_64');
    expect(info.serverVersion).toMatch(/^\d+\.\d+/);
    expect(await engine.hasNetwork('none')).toBe(true);
    expect(await engine.hasNetwork(`braid-no-such-network-${randomUUID()}`)).toBe(false);
  });

  it.each(PLATFORMS)(
    'builds $platform with BuildKit, pushes it by digest only, and docker runs it with uname $uname',
    async ({ platform, arch, uname }) => {
      const jobId = `job-${arch}`;
      const { imageId, events } = await build(baseDockerfile(), platform, jobId, {
        noCache: true,
        buildArgs: { GREETING: 'hello' },
      });
      const runStep = `[build 2/2] RUN uname -m > /uname && echo "${platform} ${arch} hello" > /target && echo "built for ${arch}"`;
      expect(events).toContainEqual(
        expect.objectContaining({ kind: 'step', name: runStep, state: 'started' }),
      );
      expect(events).toContainEqual(
        expect.objectContaining({ kind: 'step', name: runStep, state: 'completed' }),
      );
      expect(events).toContainEqual({
        kind: 'log',
        step: runStep,
        stream: 'stdout',
        text: `built for ${arch}`,
      });
      expect(events).toContainEqual(
        expect.objectContaining({
          kind: 'step',
          name: '[stage-1 2/2] COPY --from=build /uname /target /out/',
          state: 'completed',
        }),
      );
      const labels = JSON.parse(
        await docker_(['image', 'inspect', '--format', '{{json .Config.Labels}}', imageId]),
      ) as Record<string, string>;
      expect(labels).toMatchObject({ 'io.braid.build-id': buildId, 'io.braid.job-id': jobId });

      const repository = repo('agent/app');
      const pushed = await pushImage({
        engine,
        imageId,
        client,
        repository,
        expectedPlatform: parsePlatform(platform),
      });
      expect(pushed.mediaType).toBe(OCI_MANIFEST);
      expect(platformsEqual(pushed.platform, parsePlatform(platform))).toBe(true);

      const raw = await run(skopeo, [
        'inspect',
        '--raw',
        '--tls-verify=false',
        `docker://${registry.host}/agent/app@${pushed.digest}`,
      ]);
      expect(raw.code, raw.stderr).toBe(0);
      const manifestBytes = Buffer.from(raw.stdout, 'utf8');
      expect(`sha256:${createHash('sha256').update(manifestBytes).digest('hex')}`).toBe(
        pushed.digest,
      );
      expect(manifestBytes.length).toBe(pushed.size);
      const manifest = JSON.parse(raw.stdout) as ImageManifest;
      expect(manifest.mediaType).toBe(OCI_MANIFEST);
      expect(manifest.layers).toHaveLength(2);
      expect(await tagsOf('agent/app')).toEqual([]);

      // The same image pushed again: same digest, and no layer is sent twice.
      const again = await pushImage({
        engine,
        imageId,
        client,
        repository,
        expectedPlatform: parsePlatform(platform),
      });
      expect(again.digest).toBe(pushed.digest);
      expect(again.layers.map((layer) => layer.outcome)).toEqual(['exists', 'exists']);

      // Gone from the engine, so docker run pulls what was pushed.
      await engine.removeImage(imageId);
      builtImages.delete(imageId);
      const reference = `${registry.host}/agent/app@${pushed.digest}`;
      pulledReferences.push(reference);
      const args = ['run', '--rm', '--network', 'none', '--platform', platform, reference];
      expect(await docker_([...args, 'cat', '/out/uname'])).toBe(uname);
      expect(await docker_([...args, 'cat', '/out/target'])).toBe(`${platform} ${arch} hello`);
    },
  );

  it('mounts the base layers from the base image instead of uploading them again', async () => {
    const { imageId } = await build(baseDockerfile(), 'linux/arm64', 'job-mount');
    const baseIndex = JSON.parse(
      (await client.getManifest(repo('base'), 'latest')).bytes.toString('utf8'),
    ) as ImageIndex;
    const arm64 = baseIndex.manifests.find(
      (entry) => entry.platform && platformFromOci(entry.platform).architecture === 'arm64',
    );
    const baseManifest = JSON.parse(
      (await client.getManifest(repo('base'), arm64?.digest ?? 'missing')).bytes.toString('utf8'),
    ) as ImageManifest;

    const pushed = await pushImage({
      engine,
      imageId,
      client,
      repository: repo('agent/mounted'),
      expectedPlatform: parsePlatform('linux/arm64'),
      layerSources: [{ repository: repo('base'), reference: 'latest' }],
    });
    expect(pushed.layers[0]).toMatchObject({
      digest: baseManifest.layers[0]?.digest,
      outcome: 'mounted',
    });
    expect(pushed.layers[1]?.outcome).toBe('uploaded');
    const raw = await run(skopeo, [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${registry.host}/agent/mounted@${pushed.digest}`,
    ]);
    expect(raw.code, raw.stderr).toBe(0);
  });

  it('moves only the tags it is asked for, in the same repository', async () => {
    const { imageId } = await build(baseDockerfile(), 'linux/amd64', 'job-tags');
    const pushed = await pushImage({
      engine,
      imageId,
      client,
      repository: repo('agent/tagged'),
      tags: ['1.0', 'amd64-latest'],
      expectedPlatform: parsePlatform('linux/amd64'),
    });
    expect((await tagsOf('agent/tagged')).sort()).toEqual(['1.0', 'amd64-latest']);
    const inspect = await run(skopeo, [
      'inspect',
      '--tls-verify=false',
      '--format',
      '{{.Digest}}',
      `docker://${registry.host}/agent/tagged:1.0`,
    ]);
    expect(inspect.stdout.trim()).toBe(pushed.digest);
  });

  it('rejects a failing RUN with an EngineError naming the step, its exit code and its output', async () => {
    const events: ProgressEvent[] = [];
    const dockerfile = [
      `FROM ${registry.host}/base:latest`,
      'RUN echo "about to fail" && exit 3',
      '',
    ].join('\n');
    const error = await build(dockerfile, 'linux/s390x', 'job-fail', {}, undefined, events).catch(
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(EngineError);
    const failure = error as EngineError;
    expect(failure.code).toBe('failed_precondition');
    expect(failure.step).toBe('[2/2] RUN echo "about to fail" && exit 3');
    expect(failure.exitCode).toBe(3);
    expect(failure.logTail).toContain('about to fail');
    expect(failure.message).toContain('[2/2] RUN echo "about to fail" && exit 3');
    expect(events).toContainEqual(
      expect.objectContaining({
        kind: 'step',
        name: '[2/2] RUN echo "about to fail" && exit 3',
        state: 'error',
      }),
    );
  });

  it('stops the build on the engine when the signal is aborted, and rejects as cancelled', async () => {
    const marker = String(randomInt(100_000_000, 999_999_999));
    const dockerfile = [`FROM ${registry.host}/base:latest`, `RUN sleep ${marker}`, ''].join('\n');
    const abort = new AbortController();
    const building = build(dockerfile, 'linux/amd64', 'job-abort', { noCache: true }, abort.signal);
    const outcome = building.then(
      () => undefined,
      (err: unknown) => err,
    );
    await waitFor(
      `the build container running sleep ${marker}`,
      async () => (await processesWith(marker)).length > 0,
      120_000,
    );
    abort.abort();
    const error = await outcome;
    expect(error).toBeInstanceOf(EngineError);
    expect((error as EngineError).code).toBe('cancelled');
    await waitFor(
      `the build container running sleep ${marker} to stop`,
      async () => (await processesWith(marker)).length === 0,
      60_000,
    );
    expect(await processesWith(marker)).toEqual([]);
  });

  it('refuses to push an image of another platform than expected, before uploading anything', async () => {
    const { imageId } = await build(baseDockerfile(), 'linux/arm64', 'job-mismatch');
    const error = await pushImage({
      engine,
      imageId,
      client,
      repository: repo('agent/mismatch'),
      expectedPlatform: parsePlatform('linux/s390x'),
    }).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ImagePlatformMismatchError);
    const mismatch = error as ImagePlatformMismatchError;
    expect(mismatch.expected).toBe('linux/s390x');
    expect(mismatch.actual).toBe('linux/arm64');
    expect(mismatch.message).toContain('linux/arm64');
    expect(mismatch.message).toContain('linux/s390x');
    const repositoryDir = join(
      registry.storageDir,
      'docker/registry/v2/repositories/agent/mismatch',
    );
    await expect(access(repositoryDir)).rejects.toThrow();
  });

  it('leaves no image carrying the build id behind once its images are removed', async () => {
    for (const imageId of builtImages) await engine.removeImage(imageId);
    builtImages.clear();
    for (const reference of pulledReferences.splice(0)) await docker_(['image', 'rm', reference]);
    expect(await labelledImages()).toEqual([]);
  });
});
