import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { checkImageArchitecture, type ArchCheckInput } from '../../src/oci/arch-guard.js';
import { EM_X86_64 } from '../../src/oci/elf.js';
import { ArchMismatchError } from '../../src/oci/errors.js';
import { TAR_LAYER, layerTar, testImage, type TestImage } from '../support/layers.js';

/** The first 64 bytes of an x86-64 executable: all the guard reads of a binary. */
function x86Head(): Buffer {
  const head = Buffer.alloc(64);
  head.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  head.writeUInt16LE(2, 16);
  head.writeUInt16LE(EM_X86_64, 18);
  return head;
}

const ROOT = [
  { path: 'bin/', type: 'dir' as const },
  { path: 'bin/sh', type: 'symlink' as const, target: 'busybox' },
  { path: 'bin/busybox', content: x86Head(), mode: 0o755 },
];

/** Overwrites the size field of the header at `offset` and fixes its checksum. */
function setSize(archive: Buffer, offset: number, size: number): void {
  const block = archive.subarray(offset, offset + 512);
  block.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 'latin1');
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
}

function armInput(image: TestImage): ArchCheckInput {
  return {
    platform: { os: 'linux', architecture: 'arm64' },
    platformText: 'linux/arm64',
    config: { config: { Cmd: ['/bin/sh'] } },
    layers: image.layers,
    openLayer: (digest) => image.openLayer(digest),
  };
}

describe('the arch guard reading layer archives', () => {
  it('rejects an x86-64 busybox claimed as arm64 in an uncompressed layer', async () => {
    const image = await testImage([{ blob: await layerTar(ROOT), mediaType: TAR_LAYER }]);
    await expect(checkImageArchitecture(armInput(image))).rejects.toThrow(
      new ArchMismatchError('linux/arm64', '/bin/busybox', 'x86-64 ELF'),
    );
  });

  it('sees the entry after a symbolic link whose header claims content, as the runtime does', async () => {
    const archive = await layerTar(ROOT);
    // bin/sh claims the busybox header and content as its own: read so, the busybox would vanish.
    setSize(archive, 512, 1024);
    const image = await testImage([{ blob: gzipSync(archive) }]);
    await expect(checkImageArchitecture(armInput(image))).rejects.toThrow(
      'linux/arm64: /bin/busybox is x86-64 ELF',
    );
  });

  it('ignores entries after the end of the archive, which the runtime does not unpack', async () => {
    const archive = Buffer.concat([await layerTar(ROOT.slice(0, 2)), await layerTar(ROOT)]);
    const image = await testImage([{ blob: gzipSync(archive) }]);
    const result = await checkImageArchitecture(armInput(image));
    expect(result.checked).toEqual([]);
    expect(result.skipped).toContain('entrypoint /bin/sh not checked: /bin/busybox does not exist');
  });

  it('fails on a corrupt header, naming the layer', async () => {
    const archive = await layerTar(ROOT);
    archive.write('X', 1024, 'latin1'); // the busybox's name, after its checksum
    const image = await testImage([{ blob: gzipSync(archive) }]);
    await expect(checkImageArchitecture(armInput(image))).rejects.toThrow(
      `arch guard: reading layer ${image.layers[0]!.digest}: invalid tar header at byte 1024: ` +
        'checksum mismatch (a corrupt archive, or not a tar archive)',
    );
  });

  it('fails on an archive that ends inside a file, naming the layer', async () => {
    const archive = await layerTar(ROOT);
    const image = await testImage([{ blob: gzipSync(archive.subarray(0, 1536 + 40)) }]);
    await expect(checkImageArchitecture(armInput(image))).rejects.toThrow(
      `arch guard: reading layer ${image.layers[0]!.digest}: ` +
        'the tar archive is truncated: it ends inside the content of an entry',
    );
  });
});
