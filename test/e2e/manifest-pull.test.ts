import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_PLATFORMS, platformString, pushBaseImage } from '../support/base-image.js';
import { braid } from '../support/braid-cli.js';
import { requireCommand, requireEngine, requireQemu } from '../support/components.js';
import { run } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

const PUSHED_BY_DOCKER = BASE_PLATFORMS.filter((p) =>
  ['amd64', 'arm64', 's390x'].includes(p.architecture),
);

describe('indexes stitched by braid, judged by the docker CLI and the engine', () => {
  let registry: TestRegistry;
  let docker: string;
  let skopeo: string;
  const localImages: string[] = [];

  async function dockerOk(args: string[]): Promise<string> {
    const result = await run(docker, args);
    expect(result.code, `docker ${args.join(' ')}: ${result.stderr}`).toBe(0);
    return result.stdout.trim();
  }

  beforeAll(async () => {
    await requireEngine();
    for (const handler of ['qemu-aarch64', 'qemu-arm', 'qemu-ppc64le', 'qemu-s390x'])
      await requireQemu(handler);
    docker = await requireCommand('docker', 'docker.io');
    skopeo = await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'src/busybox', 'multi');
    // Per-arch tags pushed the way users do today: docker pull, tag, push (Docker v2 schema 2).
    for (const p of PUSHED_BY_DOCKER) {
      const tag = `${registry.host}/src/v2:${p.architecture}`;
      await dockerOk([
        'pull',
        '--quiet',
        '--platform',
        platformString(p),
        `${registry.host}/src/busybox:multi`,
      ]);
      await dockerOk(['tag', `${registry.host}/src/busybox:multi`, tag]);
      await dockerOk(['push', '--quiet', tag]);
      localImages.push(tag);
    }
    localImages.push(`${registry.host}/src/busybox:multi`);
  });
  afterAll(async () => {
    if (docker)
      for (const image of localImages) await run(docker, ['image', 'rm', '--force', image]);
    await registry?.stop();
  });

  it('stitches docker-pushed v2 images into a Docker manifest list that docker pulls per platform', async () => {
    const target = `${registry.host}/team/v2:1`;
    const result = await braid([
      'manifest',
      'create',
      '-t',
      target,
      ...PUSHED_BY_DOCKER.map((p) => `${registry.host}/src/v2:${p.architecture}`),
    ]);
    expect(result.code, result.stderr).toBe(0);
    const raw = await run(skopeo, ['inspect', '--raw', '--tls-verify=false', `docker://${target}`]);
    expect((JSON.parse(raw.stdout) as { mediaType: string }).mediaType).toBe(
      'application/vnd.docker.distribution.manifest.list.v2+json',
    );
    localImages.push(target);
    for (const p of PUSHED_BY_DOCKER) {
      await dockerOk(['pull', '--quiet', '--platform', platformString(p), target]);
      expect(
        await dockerOk([
          'run',
          '--rm',
          '--network',
          'none',
          '--platform',
          platformString(p),
          target,
          'uname',
          '-m',
        ]),
      ).toBe(p.unameMachine);
    }
  });

  it('stitches an OCI index from per-platform digests that docker pulls and runs on every platform', async () => {
    const index = JSON.parse(
      (
        await run(skopeo, [
          'inspect',
          '--raw',
          '--tls-verify=false',
          `docker://${registry.host}/src/busybox:multi`,
        ])
      ).stdout,
    ) as {
      manifests: { digest: string }[];
    };
    const target = `${registry.host}/team/oci:1`;
    const result = await braid([
      'manifest',
      'create',
      '-t',
      target,
      ...index.manifests.map((m) => `${registry.host}/src/busybox@${m.digest}`),
    ]);
    expect(result.code, result.stderr).toBe(0);
    localImages.push(target);
    for (const p of BASE_PLATFORMS) {
      await dockerOk(['pull', '--quiet', '--platform', platformString(p), target]);
      expect(await dockerOk(['image', 'inspect', '--format', '{{.Architecture}}', target])).toBe(
        p.architecture,
      );
      expect(
        await dockerOk([
          'run',
          '--rm',
          '--network',
          'none',
          '--platform',
          platformString(p),
          target,
          'uname',
          '-m',
        ]),
      ).toBe(p.unameMachine);
    }
  });
});
