import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { braid } from '../support/braid-cli.js';
import { requireCommand, requireEngine, requireQemu } from '../support/components.js';
import {
  startTestAgent,
  startTestCoordinator,
  waitForAgents,
  type TestAgent,
  type TestCoordinator,
} from '../support/farm.js';
import { run } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

const PLATFORMS = [
  { platform: 'linux/amd64', arch: 'amd64', uname: 'x86_64' },
  { platform: 'linux/arm64', arch: 'arm64', uname: 'aarch64' },
  { platform: 'linux/ppc64le', arch: 'ppc64le', uname: 'ppc64le' },
  { platform: 'linux/s390x', arch: 's390x', uname: 's390x' },
];

/** docker run, with the container removed before returning (--rm removes it asynchronously). */
async function runContainer(
  docker: string,
  platform: string,
  image: string,
  command: string[],
): Promise<{ stdout: string }> {
  const created = await run(docker, [
    'create',
    '--network',
    'none',
    '--platform',
    platform,
    image,
    ...command,
  ]);
  expect(created.code, created.stderr).toBe(0);
  const id = created.stdout.trim();
  try {
    const started = await run(docker, ['start', '--attach', id]);
    expect(started.code, started.stderr).toBe(0);
    return { stdout: started.stdout };
  } finally {
    await run(docker, ['rm', '--force', id]);
  }
}

const DOCKERFILE = `ARG BASE
FROM \${BASE} AS build
ARG TARGETPLATFORM
ARG TARGETARCH
COPY . /ctx
RUN echo "\${TARGETPLATFORM} \${TARGETARCH} $(uname -m)" > /ctx/info && ls -a /ctx > /ctx/listing
ARG FAIL_ON
RUN [ "\${FAIL_ON:-none}" != "\${TARGETARCH}" ] || { echo "failing on purpose for \${TARGETARCH}"; exit 7; }

FROM \${BASE}
COPY --from=build /ctx /ctx
CMD ["/bin/sh", "-c", "cat /ctx/info"]
`;

describe('the farm: a coordinator and two agents build one multi-arch image', () => {
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let agents: TestAgent[] = [];
  let docker: string;
  let skopeo: string;
  let dir: string;
  let base: string;
  const pulled: string[] = [];

  beforeAll(async () => {
    await requireEngine();
    for (const handler of ['qemu-aarch64', 'qemu-ppc64le', 'qemu-s390x'])
      await requireQemu(handler);
    docker = await requireCommand('docker', 'docker.io');
    skopeo = await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    base = `${registry.host}/base/busybox:latest`;
    coordinator = await startTestCoordinator();
    agents = [
      await startTestAgent(coordinator.address, 'a1', ['--capacity', '2']),
      await startTestAgent(coordinator.address, 'a2', ['--capacity', '1']),
    ];
    await waitForAgents(coordinator.address, ['a1', 'a2']);
    dir = await mkdtemp(join(tmpdir(), 'braid-farm-'));
    await writeFile(join(dir, 'Dockerfile'), DOCKERFILE);
    await writeFile(join(dir, 'message.txt'), 'hello farm\n');
    await writeFile(join(dir, 'debug.log'), 'must not be sent\n');
    await mkdir(join(dir, 'secrets'));
    await writeFile(join(dir, 'secrets', 'key'), 'must not be sent\n');
    await writeFile(join(dir, '.dockerignore'), '*.log\nsecrets/\n');
  });
  afterAll(async () => {
    for (const agent of agents) await agent.stop();
    await coordinator?.stop();
    if (docker) for (const image of pulled) await run(docker, ['image', 'rm', '--force', image]);
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
    if (dir) await rm(`${dir}-metadata.json`, { force: true });
  });

  it('builds four platforms, pushes one index under two tags, and each image runs as its platform', async () => {
    const metadataFile = join(dir, '..', `${dir.split('/').pop()}-metadata.json`);
    const tag = `${registry.host}/team/hello:1.0`;
    const result = await braid(
      [
        'build',
        dir,
        '-t',
        tag,
        '-t',
        `${registry.host}/team/hello:latest`,
        '--platform',
        PLATFORMS.map((p) => p.platform).join(','),
        '--build-arg',
        `BASE=${base}`,
        '--metadata-file',
        metadataFile,
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 600_000 },
    );
    expect(result.code, result.stderr.slice(-3000)).toBe(0);
    expect(result.stderr).toMatch(/^\[linux\/s390x\] /m);
    const raw = await run(skopeo, ['inspect', '--raw', '--tls-verify=false', `docker://${tag}`]);
    expect(raw.code, raw.stderr).toBe(0);
    const index = JSON.parse(raw.stdout) as {
      manifests: { digest: string; platform: { os: string; architecture: string } }[];
    };
    const images = index.manifests.filter((m) => m.platform.os !== 'unknown');
    expect(images.map((m) => `${m.platform.os}/${m.platform.architecture}`).sort()).toEqual(
      PLATFORMS.map((p) => p.platform).sort(),
    );
    // Each image is followed by nothing but attestations (provenance, on by default).
    expect(index.manifests.slice(images.length).map((m) => m.platform.os)).toEqual(
      PLATFORMS.map(() => 'unknown'),
    );
    const latest = await run(skopeo, [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${registry.host}/team/hello:latest`,
    ]);
    expect(latest.stdout).toBe(raw.stdout);

    const metadata = JSON.parse(await readFile(metadataFile, 'utf8')) as Record<string, unknown> & {
      platforms: { platform: string; agent: string; emulated: boolean }[];
    };
    const head = await fetch(`${registry.url}/v2/team/hello/manifests/1.0`, {
      method: 'HEAD',
      headers: { accept: 'application/vnd.oci.image.index.v1+json' },
    });
    expect(metadata['containerimage.digest']).toBe(head.headers.get('docker-content-digest'));
    expect(result.stdout.trim()).toBe(metadata['containerimage.digest']);
    expect(metadata.platforms.map((p) => p.platform).sort()).toEqual(
      PLATFORMS.map((p) => p.platform).sort(),
    );
    expect(metadata.platforms.find((p) => p.platform === 'linux/amd64')?.emulated).toBe(false);
    expect(metadata.platforms.find((p) => p.platform === 'linux/s390x')?.emulated).toBe(true);
    expect(new Set(metadata.platforms.map((p) => p.agent))).toEqual(new Set(['a1', 'a2']));

    pulled.push(tag);
    for (const p of PLATFORMS) {
      const pull = await run(docker, ['pull', '--quiet', '--platform', p.platform, tag]);
      expect(pull.code, pull.stderr).toBe(0);
      pulled.push(
        (await run(docker, ['image', 'inspect', '--format', '{{.Id}}', tag])).stdout.trim(),
      );
      const info = await runContainer(docker, p.platform, tag, []);
      expect(info.stdout.trim()).toBe(`${p.platform} ${p.arch} ${p.uname}`);
      const listing = await runContainer(docker, p.platform, tag, ['cat', '/ctx/listing']);
      expect(listing.stdout).toContain('message.txt');
      expect(listing.stdout).not.toContain('debug.log');
      expect(listing.stdout).not.toContain('secrets');
    }
    // Images pulled for the check carry braid's labels too: remove them now.
    for (const image of pulled.splice(0)) await run(docker, ['image', 'rm', '--force', image]);
    // No per-arch tag was left behind: the repository holds exactly the two tags.
    const tags = (await (await fetch(`${registry.url}/v2/team/hello/tags/list`)).json()) as {
      tags: string[];
    };
    expect(tags.tags.sort()).toEqual(['1.0', 'latest']);
  });

  it('uploads nothing when the same context is submitted again, and pushes per-platform tags only when asked', async () => {
    const result = await braid(
      [
        'build',
        dir,
        '-t',
        `${registry.host}/team/again:1`,
        '--platform-tags',
        '--platform',
        'linux/amd64',
        '--build-arg',
        `BASE=${base}`,
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(result.code, result.stderr.slice(-2000)).toBe(0);
    expect(result.stderr).toMatch(
      /context sha256:[0-9a-f]{12}: \d+ files, \d+ bytes, 0 bytes uploaded/,
    );
    const tags = (await (await fetch(`${registry.url}/v2/team/again/tags/list`)).json()) as {
      tags: string[];
    };
    expect(tags.tags.sort()).toEqual(['1', '1-linux-amd64']);
    const perPlatform = await run(skopeo, [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${registry.host}/team/again:1-linux-amd64`,
    ]);
    expect((JSON.parse(perPlatform.stdout) as { mediaType: string }).mediaType).toBe(
      'application/vnd.oci.image.manifest.v1+json',
    );
  });

  it('fails a build whose RUN fails on one platform, naming it, and moves no tag', async () => {
    const tag = `${registry.host}/team/broken:1`;
    const result = await braid(
      [
        'build',
        dir,
        '-t',
        tag,
        '--platform',
        'linux/amd64,linux/s390x',
        '--build-arg',
        `BASE=${base}`,
        '--build-arg',
        'FAIL_ON=s390x',
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^braid: .*linux\/s390x/m);
    expect(result.stderr).toContain('failing on purpose for s390x');
    expect(
      (await run(skopeo, ['inspect', '--raw', '--tls-verify=false', `docker://${tag}`])).code,
    ).not.toBe(0);
    const tags = await fetch(`${registry.url}/v2/team/broken/tags/list`);
    const body =
      tags.status === 200 ? ((await tags.json()) as { tags: string[] | null }) : { tags: null };
    expect(body.tags ?? []).toEqual([]);
  });

  it('leaves no image of its builds behind in the engine', async () => {
    // Only this farm's builds: other suites share the engine.
    const builds = await braid([
      'builds',
      '--coordinator',
      coordinator.address,
      '--output',
      'json',
    ]);
    const buildIds = builds.stdout
      .split('\n')
      .filter(Boolean)
      .map((line) => (JSON.parse(line) as { id: string }).id);
    expect(buildIds.length).toBeGreaterThanOrEqual(3);
    const leftovers: string[] = [];
    for (const id of buildIds) {
      const images = await run(docker, [
        'images',
        '--all',
        '--quiet',
        '--filter',
        `label=io.braid.build-id=${id}`,
      ]);
      leftovers.push(
        ...images.stdout
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((image) => `${id}: ${image}`),
      );
    }
    expect(leftovers).toEqual([]);
  });
});
