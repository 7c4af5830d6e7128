/**
 * `--annotation` on the farm, as buildx places them: on the index, on every
 * (or one platform's) manifest, and on the manifests' descriptors in the
 * index — read back by skopeo, not by braid's own parser.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { braid } from '../support/braid-cli.js';
import { startOneBoxFarm, type OneBoxFarm } from '../support/one-box-farm.js';
import type { TestRegistry } from '../support/registry.js';
import { rawManifest } from '../support/skopeo.js';

interface Descriptor {
  digest: string;
  platform?: { architecture: string };
  annotations?: Record<string, string>;
}

describe('--annotation on the farm', () => {
  let farm: OneBoxFarm;
  let registry: TestRegistry;
  let coordinator: OneBoxFarm['coordinator'];
  let skopeo: string;
  let dir: string;

  beforeAll(async () => {
    farm = await startOneBoxFarm({
      qemu: 'qemu-aarch64',
      agentName: 'n1',
      name: 'annotations',
    });
    ({ registry, coordinator, skopeo, dir } = farm);
  }, 600_000);

  afterAll(async () => {
    await farm?.stop();
  });

  const raw = (ref: string) => rawManifest<Record<string, unknown>>(skopeo, ref);

  it('puts each annotation where its type says, and only on the platform it names', async () => {
    const tag = `${registry.host}/team/annotated:1`;
    const built = await braid(
      [
        'build',
        dir,
        '-t',
        tag,
        '--platform',
        'linux/amd64,linux/arm64',
        '--annotation',
        'index:org.opencontainers.image.title=braid annotated',
        '--annotation',
        'org.opencontainers.image.vendor=team',
        '--annotation',
        'manifest-descriptor[linux/arm64]:com.example.arm=yes',
        '--annotation',
        'manifest[linux/amd64]:com.example.only-amd64=1',
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(built.code, built.stderr).toBe(0);

    const index = (await raw(tag)) as {
      annotations?: Record<string, string>;
      manifests: Descriptor[];
    };
    expect(index.annotations).toEqual({ 'org.opencontainers.image.title': 'braid annotated' });
    const byArch = new Map(index.manifests.map((d) => [d.platform?.architecture, d]));
    expect(byArch.get('arm64')?.annotations).toEqual({ 'com.example.arm': 'yes' });
    expect(byArch.get('amd64')?.annotations).toBeUndefined();

    const amd64 = (await raw(`${registry.host}/team/annotated@${byArch.get('amd64')?.digest}`)) as {
      annotations?: Record<string, string>;
    };
    const arm64 = (await raw(`${registry.host}/team/annotated@${byArch.get('arm64')?.digest}`)) as {
      annotations?: Record<string, string>;
    };
    expect(amd64.annotations).toEqual({
      'com.example.only-amd64': '1',
      'org.opencontainers.image.vendor': 'team',
    });
    expect(arm64.annotations).toEqual({ 'org.opencontainers.image.vendor': 'team' });
  });
});
