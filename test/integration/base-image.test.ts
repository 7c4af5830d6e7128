import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_PLATFORMS, platformString, pushBaseImage } from '../support/base-image.js';
import { requireCommand } from '../support/components.js';
import { run } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

describe('the test base image in a real registry', () => {
  let registry: TestRegistry;
  let digest: string;

  beforeAll(async () => {
    registry = await startRegistry();
    digest = await pushBaseImage(registry.host, 'braid-test/busybox', 'latest');
  });
  afterAll(async () => {
    await registry?.stop();
  });

  it('is an OCI index that skopeo reads back with every platform, under the digest we computed', async () => {
    const skopeo = await requireCommand('skopeo', 'skopeo');
    const raw = await run(skopeo, [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${registry.host}/braid-test/busybox:latest`,
    ]);
    expect(raw.code, raw.stderr).toBe(0);
    const index = JSON.parse(raw.stdout) as {
      mediaType: string;
      manifests: { platform: { architecture: string; variant?: string } }[];
    };
    expect(index.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(
      index.manifests.map((m) => platformString({ ...m.platform, os: 'linux' })).sort(),
    ).toEqual(BASE_PLATFORMS.map(platformString).sort());
    const res = await fetch(`${registry.url}/v2/braid-test/busybox/manifests/latest`, {
      method: 'HEAD',
      headers: { accept: 'application/vnd.oci.image.index.v1+json' },
    });
    expect(res.headers.get('docker-content-digest')).toBe(digest);
  });

  it.each(BASE_PLATFORMS.map((p) => [platformString(p), p] as const))(
    'records %s in the config blob of its platform image',
    async (_name, platform) => {
      const skopeo = await requireCommand('skopeo', 'skopeo');
      const args = [
        'inspect',
        '--config',
        '--raw',
        '--tls-verify=false',
        '--override-os',
        'linux',
        '--override-arch',
        platform.architecture,
      ];
      if (platform.variant) args.push('--override-variant', platform.variant);
      const config = await run(skopeo, [
        ...args,
        `docker://${registry.host}/braid-test/busybox:latest`,
      ]);
      expect(config.code, config.stderr).toBe(0);
      const parsed = JSON.parse(config.stdout) as {
        architecture: string;
        variant?: string;
        os: string;
      };
      expect({ os: parsed.os, architecture: parsed.architecture, variant: parsed.variant }).toEqual(
        {
          os: 'linux',
          architecture: platform.architecture,
          variant: platform.variant,
        },
      );
    },
  );
});
