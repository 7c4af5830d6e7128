import { readFile } from 'node:fs/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { checkImageArchitecture, type ArchCheckInput } from '../../src/oci/arch-guard.js';
import { ArchMismatchError } from '../../src/oci/errors.js';
import { requireBusybox } from '../support/components.js';
import {
  TAR_LAYER,
  ZSTD_LAYER,
  testImage,
  type LayerEntry,
  type TestImage,
  type TestLayer,
} from '../support/layers.js';

const busybox: Record<string, Buffer> = {};

beforeAll(async () => {
  for (const arch of ['amd64', 'arm64', 'armhf', 'ppc64el', 's390x']) {
    busybox[arch] = await readFile(await requireBusybox(arch));
  }
});

function bin(debianArch: string): Buffer {
  const bytes = busybox[debianArch];
  if (!bytes) throw new Error(`busybox ${debianArch} not loaded`);
  return bytes;
}

/** A busybox root: /bin/busybox of `debianArch` and /bin/sh -> busybox. */
function busyboxRoot(debianArch: string): LayerEntry[] {
  return [
    { path: 'bin/', type: 'dir' },
    { path: 'bin/busybox', content: bin(debianArch), mode: 0o755 },
    { path: 'bin/sh', type: 'symlink', target: 'busybox' },
    { path: 'etc/', type: 'dir' },
    { path: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\n' },
  ];
}

const ETC_LAYER: TestLayer = {
  entries: [
    { path: 'etc/', type: 'dir' },
    { path: 'etc/hostname', content: 'braid\n' },
  ],
};

const ARM64 = { os: 'linux', architecture: 'arm64', variant: 'v8' };

type ImageConfig = NonNullable<ArchCheckInput['config']['config']>;

function input(
  image: TestImage,
  config: ImageConfig,
  extra: Partial<ArchCheckInput> = {},
): ArchCheckInput {
  return {
    platform: ARM64,
    platformText: 'linux/arm64',
    config: { config },
    layers: image.layers,
    openLayer: (digest) => image.openLayer(digest),
    ...extra,
  };
}

function expectAllStreamsReleased(image: TestImage): void {
  expect(image.opened.filter((s) => !s.destroyed)).toEqual([]);
}

describe('the arch guard', () => {
  it('passes an arm64 image whose /bin/sh links to an arm64 busybox, naming the busybox', async () => {
    const image = await testImage([{ entries: busyboxRoot('arm64') }]);
    const result = await checkImageArchitecture(input(image, { Cmd: ['/bin/sh'] }));
    expect(result.platform).toBe('linux/arm64');
    expect(result.entrypoint).toEqual({
      path: '/bin/sh',
      resolved: '/bin/busybox',
      description: 'ARM aarch64 ELF',
    });
    expect(result.checked).toEqual([{ path: '/bin/busybox', description: 'ARM aarch64 ELF' }]);
    expect(result.skipped).toEqual([]);
    expectAllStreamsReleased(image);
  });

  it('rejects an arm64 claim on an amd64 busybox, naming the file the /bin/sh symlink resolves to', async () => {
    // Two layers on top keep the busybox out of the scan: the entrypoint check must find it.
    const image = await testImage([{ entries: busyboxRoot('amd64') }, ETC_LAYER, ETC_LAYER]);
    const check = checkImageArchitecture(input(image, { Cmd: ['/bin/sh'] }));
    await expect(check).rejects.toThrow(ArchMismatchError);
    await expect(check).rejects.toThrow(/^linux\/arm64: \/bin\/busybox is x86-64 ELF$/);
    expectAllStreamsReleased(image);
  });

  it('catches a wrong-architecture binary in a top layer although the entrypoint is right', async () => {
    const image = await testImage([
      { entries: busyboxRoot('arm64') },
      {
        entries: [
          { path: 'usr/local/bin/', type: 'dir' },
          { path: 'usr/local/bin/helper', content: bin('amd64'), mode: 0o755 },
        ],
      },
    ]);
    const check = checkImageArchitecture(input(image, { Cmd: ['/bin/sh'] }));
    await expect(check).rejects.toThrow('linux/arm64: /usr/local/bin/helper is x86-64 ELF');
    expectAllStreamsReleased(image);
  });

  it('ignores a wrong-architecture binary that an upper layer whites out', async () => {
    const image = await testImage([
      { entries: busyboxRoot('arm64') },
      { entries: [{ path: 'usr/local/bin/helper', content: bin('amd64'), mode: 0o755 }] },
      { entries: [{ path: 'usr/local/bin/.wh.helper', content: '' }] },
    ]);
    const result = await checkImageArchitecture(
      input(image, { Cmd: ['/bin/sh'] }, { topLayers: 3 }),
    );
    expect(result.checked).toEqual([{ path: '/bin/busybox', description: 'ARM aarch64 ELF' }]);
    expectAllStreamsReleased(image);
  });

  it('looks past a directory made opaque by an upper layer to the next PATH entry', async () => {
    const image = await testImage([
      {
        entries: [
          ...busyboxRoot('arm64'),
          { path: 'bin/tool', type: 'symlink', target: 'busybox' },
        ],
      },
      {
        entries: [
          { path: 'opt/tools/bin/', type: 'dir' },
          { path: 'opt/tools/bin/tool', content: bin('amd64'), mode: 0o755 },
        ],
      },
      {
        entries: [
          { path: 'opt/tools/bin/', type: 'dir' },
          { path: 'opt/tools/bin/.wh..wh..opq', content: '' },
        ],
      },
    ]);
    const result = await checkImageArchitecture(
      input(image, { Cmd: ['tool'], Env: ['PATH=/opt/tools/bin:/bin'] }, { topLayers: 3 }),
    );
    expect(result.entrypoint).toEqual({
      path: 'tool',
      resolved: '/bin/busybox',
      description: 'ARM aarch64 ELF',
    });
    expectAllStreamsReleased(image);
  });

  it('resolves /bin/sh through a /bin -> usr/bin directory symlink', async () => {
    const usrMerged = (arch: string): TestLayer => ({
      entries: [
        { path: 'usr/', type: 'dir' },
        { path: 'usr/bin/', type: 'dir' },
        { path: 'usr/bin/busybox', content: bin(arch), mode: 0o755 },
        { path: 'usr/bin/sh', type: 'symlink', target: '../bin/busybox' },
        { path: 'bin', type: 'symlink', target: 'usr/bin' },
      ],
    });
    const good = await testImage([usrMerged('arm64'), ETC_LAYER, ETC_LAYER]);
    const result = await checkImageArchitecture(input(good, { Cmd: ['/bin/sh'] }));
    expect(result.entrypoint?.resolved).toBe('/usr/bin/busybox');
    expect(result.entrypoint?.description).toBe('ARM aarch64 ELF');

    const bad = await testImage([usrMerged('amd64'), ETC_LAYER, ETC_LAYER]);
    await expect(checkImageArchitecture(input(bad, { Cmd: ['/bin/sh'] }))).rejects.toThrow(
      'linux/arm64: /usr/bin/busybox is x86-64 ELF',
    );
    expectAllStreamsReleased(good);
    expectAllStreamsReleased(bad);
  });

  it('finds a bare command name on the PATH of the config Env', async () => {
    const image = await testImage([
      { entries: [...busyboxRoot('arm64'), { path: 'usr/local/bin/', type: 'dir' }] },
    ]);
    const result = await checkImageArchitecture(
      input(image, { Cmd: ['sh', '-c', 'true'], Env: ['HOME=/root', 'PATH=/usr/local/bin:/bin'] }),
    );
    expect(result.entrypoint).toEqual({
      path: 'sh',
      resolved: '/bin/busybox',
      description: 'ARM aarch64 ELF',
    });
    expectAllStreamsReleased(image);
  });

  it('checks the shell of a shell-form entrypoint and ignores the command', async () => {
    const image = await testImage([{ entries: busyboxRoot('arm64') }]);
    const result = await checkImageArchitecture(
      input(image, { Entrypoint: ['/bin/sh', '-c', 'exec /app/server'], Cmd: ['/nonexistent'] }),
    );
    expect(result.entrypoint).toMatchObject({ path: '/bin/sh', resolved: '/bin/busybox' });
    expectAllStreamsReleased(image);
  });

  it.each([
    { debianArch: 'amd64', platform: { architecture: 'amd64' }, text: 'x86-64 ELF' },
    {
      debianArch: 'armhf',
      platform: { architecture: 'arm', variant: 'v7' },
      text: 'ARM ELF (32-bit)',
    },
    {
      debianArch: 'ppc64el',
      platform: { architecture: 'ppc64le' },
      text: 'PowerPC64 little-endian ELF',
    },
    { debianArch: 's390x', platform: { architecture: 's390x' }, text: 'IBM S/390 ELF (64-bit)' },
  ])(
    'passes Debian busybox-static:$debianArch as linux/$platform.architecture ($text)',
    async ({ debianArch, platform, text }) => {
      const image = await testImage([{ entries: busyboxRoot(debianArch) }]);
      const platformText = ['linux', platform.architecture, platform.variant]
        .filter(Boolean)
        .join('/');
      const result = await checkImageArchitecture(
        input(
          image,
          { Cmd: ['/bin/sh'] },
          { platform: { os: 'linux', ...platform }, platformText },
        ),
      );
      expect(result.entrypoint?.description).toBe(text);
      expect(result.checked).toEqual([{ path: '/bin/busybox', description: text }]);
      expectAllStreamsReleased(image);
    },
  );

  it('rejects an s390x busybox claimed as ppc64le', async () => {
    const image = await testImage([{ entries: busyboxRoot('s390x') }]);
    const check = checkImageArchitecture(
      input(
        image,
        { Cmd: ['/bin/sh'] },
        { platform: { os: 'linux', architecture: 'ppc64le' }, platformText: 'linux/ppc64le' },
      ),
    );
    await expect(check).rejects.toThrow('linux/ppc64le: /bin/busybox is IBM S/390 ELF (64-bit)');
  });

  it('checks the interpreter of a #! script entrypoint', async () => {
    const image = await testImage([
      { entries: busyboxRoot('arm64') },
      { entries: [{ path: 'entrypoint.sh', content: '#!/bin/sh -e\nexec "$@"\n', mode: 0o755 }] },
    ]);
    const result = await checkImageArchitecture(
      input(image, { Entrypoint: ['/entrypoint.sh'], Cmd: ['serve'] }),
    );
    expect(result.entrypoint).toEqual({
      path: '/entrypoint.sh',
      resolved: '/entrypoint.sh',
      description: 'script (#!/bin/sh)',
      interpreter: { path: '/bin/sh', resolved: '/bin/busybox', description: 'ARM aarch64 ELF' },
    });
    expect(result.checked).toEqual([{ path: '/bin/busybox', description: 'ARM aarch64 ELF' }]);
    expectAllStreamsReleased(image);
  });

  it('accepts an image without ELF files and says why nothing was checked', async () => {
    const image = await testImage([
      { entries: [{ path: 'app/run.py', content: '#!/usr/bin/python3\nprint(1)\n', mode: 0o755 }] },
    ]);
    const result = await checkImageArchitecture(
      input(image, { Entrypoint: ['./run.py'], WorkingDir: '/app' }),
    );
    expect(result.checked).toEqual([]);
    expect(result.entrypoint).toMatchObject({ resolved: '/app/run.py' });
    expect(result.skipped).toEqual([
      expect.stringContaining('interpreter /usr/bin/python3 of /app/run.py is not in the image'),
      expect.stringContaining('no ELF files found'),
    ]);
    expectAllStreamsReleased(image);
  });

  it('follows a hard link from an upper layer to the busybox below it', async () => {
    const image = await testImage([
      {
        entries: [
          { path: 'bin/', type: 'dir' },
          { path: 'bin/busybox', content: bin('arm64'), mode: 0o755 },
        ],
      },
      { entries: [{ path: 'bin/sh', type: 'link', target: 'bin/busybox' }] },
    ]);
    const result = await checkImageArchitecture(input(image, { Cmd: ['/bin/sh'] }));
    expect(result.entrypoint).toEqual({
      path: '/bin/sh',
      resolved: '/bin/sh',
      description: 'ARM aarch64 ELF',
    });
    expectAllStreamsReleased(image);
  });

  it('stops the scan when the budget is spent, says so, and still checks the entrypoint', async () => {
    const image = await testImage([{ entries: busyboxRoot('arm64') }, ETC_LAYER]);
    const result = await checkImageArchitecture(
      input(image, { Cmd: ['/bin/sh'] }, { budgetBytes: 16 * 1024 }),
    );
    expect(result.skipped).toEqual([
      expect.stringMatching(/^scan budget of 16384 bytes reached in layer sha256:[0-9a-f]{64}/),
    ]);
    expect(result.entrypoint?.description).toBe('ARM aarch64 ELF');
    expectAllStreamsReleased(image);
  });

  it('rejects instead of hanging when a layer stream fails mid-way', async () => {
    const image = await testImage([{ entries: busyboxRoot('arm64'), failAfterBytes: 40 * 1024 }]);
    await expect(checkImageArchitecture(input(image, { Cmd: ['/bin/sh'] }))).rejects.toThrow(
      /^arch guard: reading layer sha256:[0-9a-f]{64}: connection reset$/,
    );
    expectAllStreamsReleased(image);
  });

  it('reads uncompressed tar layers', async () => {
    const image = await testImage([
      { entries: busyboxRoot('amd64'), mediaType: TAR_LAYER },
      { ...ETC_LAYER, mediaType: TAR_LAYER },
      { ...ETC_LAYER, mediaType: TAR_LAYER },
    ]);
    await expect(checkImageArchitecture(input(image, { Cmd: ['/bin/sh'] }))).rejects.toThrow(
      'linux/arm64: /bin/busybox is x86-64 ELF',
    );
    expectAllStreamsReleased(image);
  });

  it.each([
    { how: 'by its media type', layer: { blob: Buffer.from('not read'), mediaType: ZSTD_LAYER } },
    {
      how: 'by its magic bytes',
      layer: { blob: Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]), mediaType: TAR_LAYER },
    },
  ])('reports a zstd layer found $how as not checkable instead of failing', async ({ layer }) => {
    const image = await testImage([{ entries: busyboxRoot('amd64') }, layer]);
    const zstdDigest = image.layers[1]!.digest;
    const result = await checkImageArchitecture(input(image, { Cmd: ['/bin/sh'] }));
    expect(result.checked).toEqual([]);
    expect(result.skipped).toContainEqual(
      expect.stringContaining(`layer ${zstdDigest} is zstd-compressed`),
    );
    expectAllStreamsReleased(image);
  });

  it('skips a platform it knows no ELF machine for without reading a layer', async () => {
    const image = await testImage([{ entries: busyboxRoot('amd64') }]);
    const result = await checkImageArchitecture(
      input(
        image,
        { Cmd: ['/bin/sh'] },
        {
          platform: { os: 'windows', architecture: 'amd64' },
          platformText: 'windows/amd64',
        },
      ),
    );
    expect(result).toEqual({
      platform: 'windows/amd64',
      checked: [],
      skipped: ['no ELF architecture is known for windows/amd64'],
    });
    expect(image.opened).toEqual([]);
  });
});
