import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  diffImages,
  formatImageDiff,
  type ImageAt,
  type ImageDiff,
} from '../../src/oci/image-diff.js';
import { jsonDifferences } from '../../src/oci/json-diff.js';
import { LayerReadError, readLayerEntries } from '../../src/oci/layer-entries.js';
import { MergedTree, walk } from '../../src/oci/merged-tree.js';
import {
  MemoryRegistry,
  buildImage,
  tarOf,
  type BuiltImage,
  type LayerSpec,
  type TarEntrySpec,
} from '../support/oci-image.js';

const SOURCE = { image: 'registry.test/app@sha256:aaaa', index: 2, digest: 'sha256:bbbb' };

async function entriesOf(entries: TarEntrySpec[], gzip = true) {
  const tar = await tarOf(entries);
  return readLayerEntries(Readable.from([gzip ? gzipSync(tar) : tar]), SOURCE);
}

async function treeOf(...layers: TarEntrySpec[][]): Promise<MergedTree> {
  const tree = new MergedTree();
  for (const layer of layers) tree.apply((await entriesOf(layer)).entries);
  return tree;
}

function paths(tree: MergedTree): string[] {
  return [...walk(tree.root, '')].map((e) => e.path);
}

const at = (image: BuiltImage): ImageAt => ({
  domain: 'registry.test',
  repository: 'app',
  digest: image.digest,
});

async function diffOf(
  a: readonly LayerSpec[],
  b: readonly LayerSpec[],
  options: Parameters<typeof diffImages>[3] = {},
  configs: [Record<string, unknown>, Record<string, unknown>] = [{}, {}],
): Promise<{ diff: ImageDiff; registry: MemoryRegistry; imageA: BuiltImage; imageB: BuiltImage }> {
  const registry = new MemoryRegistry();
  const imageA = await buildImage(a, configs[0]);
  const imageB = await buildImage(b, configs[1]);
  registry.add(imageA);
  registry.add(imageB);
  const diff = await diffImages(registry, at(imageA), at(imageB), options);
  return { diff, registry, imageA, imageB };
}

const base: LayerSpec = {
  entries: [
    { name: 'bin/', type: 'directory' },
    { name: 'bin/sh', content: '#!sh', mode: 0o755 },
    { name: 'etc/', type: 'directory' },
    { name: 'etc/passwd', content: 'root:x:0:0' },
    { name: 'etc/old', content: 'old' },
  ],
};

describe('reading a layer', () => {
  it('records type, mode, owner, mtime, link target and the content digest of each entry', async () => {
    const layer = await entriesOf([
      { name: './usr/', type: 'directory', mode: 0o755, mtime: 100 },
      {
        name: './usr/app',
        content: 'hello',
        mode: 0o4755,
        uid: 1000,
        gid: 50,
        mtime: 1_700_000_000,
      },
      { name: 'usr/link', type: 'symlink', linkname: 'app' },
      { name: 'usr/hard', type: 'link', linkname: 'usr/app' },
    ]);
    expect(layer.entries.map((e) => e.path)).toEqual(['usr', 'usr/app', 'usr/link', 'usr/hard']);
    expect(layer.entries[1]!.record).toEqual({
      type: 'file',
      mode: 0o4755,
      uid: 1000,
      gid: 50,
      size: 5,
      mtime: '1700000000',
      digest: 'sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824',
    });
    expect(layer.entries[2]!.record).toMatchObject({ type: 'symlink', linkname: 'app' });
    expect(layer.entries[3]!.record).toMatchObject({ type: 'hardlink', linkname: 'usr/app' });
    expect(layer.diffId).toMatch(/^sha256:[a-f0-9]{64}$/);
  });

  it('streams a file of several megabytes through to the right digest', async () => {
    const content = Buffer.alloc(6 * 1024 * 1024, 'braid');
    const layer = await entriesOf([{ name: 'big', content }]);
    expect(layer.entries[0]!.record.digest).toBe(
      `sha256:${createHash('sha256').update(content).digest('hex')}`,
    );
    expect(layer.bytes).toBeGreaterThan(content.length);
  });

  it('reads an uncompressed tar the same as a gzipped one', async () => {
    const entries: TarEntrySpec[] = [{ name: 'a', content: 'x' }];
    expect((await entriesOf(entries, false)).entries).toEqual((await entriesOf(entries)).entries);
  });

  it('fails a corrupt gzip with one line naming the image and the layer', async () => {
    const gzip = gzipSync(await tarOf([{ name: 'a', content: 'x'.repeat(5000) }]));
    gzip.writeUInt8(gzip.readUInt8(30) ^ 0xff, 30);
    const reading = readLayerEntries(Readable.from([gzip]), SOURCE);
    await expect(reading).rejects.toBeInstanceOf(LayerReadError);
    await expect(reading).rejects.toThrow(
      /^registry\.test\/app@sha256:aaaa layer 2 \(sha256:bbbb\): corrupt layer while decompressing \(gzip\): [^\n]+$/,
    );
  });

  it('fails a tar that is not a tar, naming the image and the layer', async () => {
    const reading = readLayerEntries(Readable.from([Buffer.alloc(1024, 7)]), SOURCE);
    await expect(reading).rejects.toMatchObject({
      code: 'invalid_argument',
      layerIndex: 2,
      message: expect.stringMatching(
        /layer 2 \(sha256:bbbb\): corrupt layer while reading the tar/,
      ),
    });
  });

  it('fails a truncated tar', async () => {
    const tar = await tarOf([{ name: 'a', content: 'x'.repeat(3000) }]);
    const reading = readLayerEntries(Readable.from([gzipSync(tar.subarray(0, 1500))]), SOURCE);
    await expect(reading).rejects.toThrow(/corrupt layer while/);
  });

  it('stops at the byte limit with resource_exhausted, saying which limit', async () => {
    const tar = await tarOf([{ name: 'big', content: 'x'.repeat(100_000) }]);
    const reading = readLayerEntries(Readable.from([gzipSync(tar)]), SOURCE, {
      maxBytes: 10_000,
      limitText: 'the test limit',
    });
    await expect(reading).rejects.toMatchObject({
      code: 'resource_exhausted',
      message: expect.stringContaining('more than 10000 uncompressed bytes (the test limit)'),
    });
  });

  it('reports a failing blob stream as the registry read failing, not as a corrupt layer', async () => {
    const blob = new Readable({
      read() {
        this.destroy(Object.assign(new Error('connection reset'), { code: 'ECONNRESET' }));
      },
    });
    await expect(readLayerEntries(blob, SOURCE)).rejects.toMatchObject({
      code: 'unavailable',
      message: expect.stringContaining('reading the blob: connection reset'),
    });
  });

  it('is cancelled by its signal', async () => {
    const controller = new AbortController();
    controller.abort();
    const tar = await tarOf([{ name: 'a', content: 'x' }]);
    await expect(
      readLayerEntries(Readable.from([tar]), SOURCE, { signal: controller.signal }),
    ).rejects.toMatchObject({ code: 'cancelled' });
  });
});

describe('merging layers with whiteouts', () => {
  it('deletes a file and a whole directory with .wh. entries of a higher layer', async () => {
    const tree = await treeOf(
      [
        { name: 'a/', type: 'directory' },
        { name: 'a/one', content: '1' },
        { name: 'a/sub/', type: 'directory' },
        { name: 'a/sub/deep', content: 'd' },
        { name: 'keep', content: 'k' },
      ],
      [
        { name: 'a/.wh.one', content: '' },
        { name: 'a/.wh.sub', content: '' },
      ],
    );
    expect(paths(tree)).toEqual(['a', 'keep']);
  });

  it('empties an opaque directory of the lower layers but keeps what its own layer puts there', async () => {
    const tree = await treeOf(
      [
        { name: 'd/', type: 'directory' },
        { name: 'd/lower', content: 'l' },
        { name: 'other', content: 'o' },
      ],
      [
        { name: 'd/', type: 'directory', mode: 0o700 },
        { name: 'd/new', content: 'n' },
        { name: 'd/.wh..wh..opq', content: '' },
      ],
    );
    expect(paths(tree)).toEqual(['d', 'd/new', 'other']);
    expect(tree.find('d')?.record?.mode).toBe(0o700);
  });

  it('keeps a directory’s contents when a higher layer changes its metadata, and drops them when a file replaces it', async () => {
    const kept = await treeOf(
      [
        { name: 'd/', type: 'directory' },
        { name: 'd/x', content: 'x' },
      ],
      [{ name: 'd/', type: 'directory', mtime: 5 }],
    );
    expect(paths(kept)).toEqual(['d', 'd/x']);
    expect(kept.find('d')?.record?.mtime).toBe('5');
    const replaced = await treeOf(
      [
        { name: 'd/', type: 'directory' },
        { name: 'd/x', content: 'x' },
      ],
      [{ name: 'd', content: 'now a file' }],
    );
    expect(paths(replaced)).toEqual(['d']);
  });

  it('gives a hard link the content digest of its target', async () => {
    const tree = await treeOf([
      { name: 'f', content: 'same' },
      { name: 'h', type: 'link', linkname: 'f' },
    ]);
    expect(tree.find('h')?.record?.digest).toBe(tree.find('f')?.record?.digest);
  });
});

describe('comparing JSON by path', () => {
  it('names each differing leaf by its path, with keys that are not identifiers quoted', () => {
    expect(
      jsonDifferences(
        { created: '1', config: { Env: ['A=1', 'B=2'], Labels: { 'a.b': 'x' } } },
        { created: '2', config: { Env: ['A=1'], Labels: { 'a.b': 'y' } } },
      ),
    ).toEqual([
      { path: 'config.Env[1]', a: 'B=2', b: undefined },
      { path: 'config.Labels["a.b"]', a: 'x', b: 'y' },
      { path: 'created', a: '1', b: '2' },
    ]);
  });
});

describe('diffing two images', () => {
  const stampLayer = (stamp: string, mtime: number): LayerSpec => ({
    entries: [
      { name: 'stamp', content: stamp, mtime },
      { name: 'etc/.wh.old', content: '' },
    ],
  });

  it('calls two images with the same digest the same without reading anything', async () => {
    const registry = new MemoryRegistry();
    const image = await buildImage([base]);
    registry.add(image);
    const diff = await diffImages(registry, at(image), at(image));
    expect(diff.same).toBe(true);
    expect(registry.blobReads.size).toBe(0);
    expect(formatImageDiff(diff, ['agent a', 'agent b'])).toEqual([]);
  });

  it('names exactly the file whose content and mtime differ, and the config fields', async () => {
    const { diff, registry, imageA } = await diffOf(
      [base, stampLayer('Mon Jan 1', 100)],
      [base, stampLayer('Tue Jan 2', 200)],
      {},
      [{ created: '2026-01-01T00:00:00Z' }, { created: '2026-01-02T00:00:00Z' }],
    );
    expect(diff.same).toBe(false);
    expect(diff.files).toHaveLength(1);
    expect(diff.files[0]).toMatchObject({
      path: '/stamp',
      kind: 'changed',
      fields: ['content', 'mtime'],
    });
    expect(diff.config.map((d) => d.path)).toEqual(['created', 'rootfs.diff_ids[1]']);
    expect(diff.manifest).toEqual([]);
    expect(diff.layers).toHaveLength(1);
    expect(diff.layers[0]).toMatchObject({ index: 1, kind: 'entries', moreEntries: 0 });
    expect(diff.layers[0]!.entries).toMatchObject([{ path: '/stamp', hidden: false }]);
    // The shared base layer was read once for both images.
    expect(registry.blobReads.get(imageA.layerDigests[0]!)).toBe(1);
    const lines = formatImageDiff(diff, ['agent a', 'agent b']);
    expect(lines).toContainEqual(
      expect.stringMatching(
        /^\/stamp: content sha256:[a-f0-9]{12}… \(agent a\) ≠ sha256:[a-f0-9]{12}… \(agent b\); mtime 1970-01-01T00:01:40Z ≠ 1970-01-01T00:03:20Z$/,
      ),
    );
    expect(lines).toContain(
      'config created: "2026-01-01T00:00:00Z" (agent a) ≠ "2026-01-02T00:00:00Z" (agent b)',
    );
  });

  it('names a mode change, a whiteout and files only in one image', async () => {
    const { diff } = await diffOf(
      [
        base,
        { entries: [{ name: 'bin/sh', content: '#!sh', mode: 0o755 }, { name: 'etc/.wh.old' }] },
      ],
      [
        base,
        {
          entries: [
            { name: 'bin/sh', content: '#!sh', mode: 0o700 },
            { name: 'new', content: 'n' },
          ],
        },
      ],
    );
    expect(diff.files.map((f) => [f.path, f.kind, f.fields])).toEqual([
      ['/bin/sh', 'changed', ['mode']],
      ['/etc/old', 'only-b', []],
      ['/new', 'only-b', []],
    ]);
    const lines = formatImageDiff(diff, ['a', 'b']);
    expect(lines).toContain('/bin/sh: mode 0755 (a) ≠ 0700 (b)');
    expect(lines).toContainEqual(
      expect.stringMatching(/^\/etc\/old: only in b \(file, 3 bytes, mode 0644/),
    );
  });

  it('names a layer whose difference a later layer deletes, though the filesystems are equal', async () => {
    const scratch = (text: string): LayerSpec => ({
      entries: [{ name: 'tmp/build.log', content: text }],
    });
    const cleanup: LayerSpec = { entries: [{ name: 'tmp/.wh.build.log' }] };
    const { diff } = await diffOf(
      [base, scratch('run 1'), cleanup],
      [base, scratch('run 2'), cleanup],
    );
    expect(diff.files).toEqual([]);
    expect(diff.layers).toHaveLength(1);
    expect(diff.layers[0]).toMatchObject({
      index: 1,
      kind: 'entries',
      entries: [{ path: '/tmp/build.log', fields: ['content'], hidden: true }],
    });
    expect(diff.config.map((d) => d.path)).toEqual(['rootfs.diff_ids[1]']);
    const lines = formatImageDiff(diff, ['a', 'b']).filter((line) => line.startsWith('layer'));
    expect(lines[0]).toMatch(
      /^layer 1: sha256:[a-f0-9]{12}… \(a\) ≠ sha256:[a-f0-9]{12}… \(b\): 1 entries differ$/,
    );
    expect(lines[1]).toMatch(/^layer 1 \/tmp\/build.log: content .* \[not in the final filesystem/);
  });

  it('tells a layer compressed differently and one with other tar headers from one with other entries', async () => {
    const entries: TarEntrySpec[] = [{ name: 'f', content: 'x'.repeat(10_000) }];
    const gz = await diffOf([{ entries, gzipLevel: 1 }], [{ entries, gzipLevel: 9 }]);
    expect(gz.diff.layers.map((l) => l.kind)).toEqual(['compression']);
    expect(gz.diff.files).toEqual([]);
    const headers = await diffOf(
      [{ entries: [{ name: 'f', content: 'x', uname: 'root' }] }],
      [{ entries: [{ name: 'f', content: 'x', uname: 'builder' }] }],
    );
    expect(headers.diff.layers.map((l) => l.kind)).toEqual(['tar-headers']);
    const order = await diffOf(
      [
        {
          entries: [
            { name: 'a', content: '1' },
            { name: 'b', content: '2' },
          ],
        },
      ],
      [
        {
          entries: [
            { name: 'b', content: '2' },
            { name: 'a', content: '1' },
          ],
        },
      ],
    );
    expect(order.diff.layers.map((l) => l.kind)).toEqual(['order']);
    expect(formatImageDiff(order.diff, ['a', 'b'])).toEqual([
      expect.stringMatching(
        /^config rootfs\.diff_ids\[0\]: "sha256:.*" \(a\) ≠ "sha256:.*" \(b\)$/,
      ),
      expect.stringMatching(/^layer 0: .*: the same entries in another order$/),
    ]);
  });

  it('names a layer only one image has', async () => {
    const extra: LayerSpec = { entries: [{ name: 'extra', content: 'e' }] };
    const { diff } = await diffOf([base], [base, extra]);
    expect(diff.files.map((f) => `${f.kind} ${f.path}`)).toEqual(['only-b /extra']);
    expect(diff.layers).toMatchObject([{ index: 1, kind: 'only-b' }]);
    expect(formatImageDiff(diff, ['a', 'b'])).toContainEqual(
      expect.stringMatching(/^layer 1: only in b \(sha256:/),
    );
  });

  it('lists at most maxDifferences files, sorted by path, and says how many more', async () => {
    const files = (text: string): LayerSpec => ({
      entries: ['z', 'b', 'y', 'a', 'c'].map((name) => ({ name, content: `${name}${text}` })),
    });
    const { diff } = await diffOf([files('1')], [files('2')], {
      maxDifferences: 2,
      maxLayerEntries: 1,
    });
    expect(diff.files.map((f) => f.path)).toEqual(['/a', '/b']);
    expect(diff.omitted.files).toBe(3);
    expect(diff.truncated).toBe(true);
    expect(diff.layers[0]).toMatchObject({ moreEntries: 4 });
    const lines = formatImageDiff(diff, ['a', 'b']);
    expect(lines).toContain('… and 3 more file differences');
    expect(lines).toContain('layer 0: … and 4 more entries');
  });

  it('fails a corrupt layer with one line naming the image and the layer index', async () => {
    const registry = new MemoryRegistry();
    const imageA = await buildImage([base, stampLayer('1', 1)]);
    const imageB = await buildImage([base, stampLayer('2', 2)]);
    registry.add(imageA);
    registry.add(imageB);
    registry.corrupt(
      imageB.layerDigests[1]!,
      Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]),
    );
    const diffing = diffImages(registry, at(imageA), at(imageB));
    await expect(diffing).rejects.toBeInstanceOf(LayerReadError);
    await expect(diffing).rejects.toThrow(
      `registry.test/app@${imageB.digest} layer 1 (${imageB.layerDigests[1]}): corrupt layer while decompressing (gzip)`,
    );
  });

  it('fails when an image needs more than maxImageBytes, naming the image', async () => {
    const big: LayerSpec = { entries: [{ name: 'big', content: 'x'.repeat(50_000) }] };
    const registry = new MemoryRegistry();
    const imageA = await buildImage([big, stampLayer('1', 1)]);
    const imageB = await buildImage([big, stampLayer('2', 2)]);
    registry.add(imageA);
    registry.add(imageB);
    await expect(
      diffImages(registry, at(imageA), at(imageB), { maxImageBytes: 20_000 }),
    ).rejects.toMatchObject({
      code: 'resource_exhausted',
      message: expect.stringMatching(/layer 0 .*the 20000-byte limit on uncompressed layer bytes/),
    });
  });

  it('stops with code cancelled when its signal is aborted', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(
      diffOf([base, stampLayer('1', 1)], [base, stampLayer('2', 2)], { signal: controller.signal }),
    ).rejects.toMatchObject({ code: 'cancelled' });
  });

  it('refuses an image index, naming it', async () => {
    const registry = new MemoryRegistry();
    const image = await buildImage([base]);
    registry.add(image);
    const indexDigest = `sha256:${'1'.repeat(64)}`;
    registry.addManifest(
      indexDigest,
      Buffer.from('{"schemaVersion":2,"manifests":[]}'),
      'application/vnd.oci.image.index.v1+json',
    );
    await expect(
      diffImages(registry, at(image), { ...at(image), digest: indexDigest }),
    ).rejects.toThrow(
      `image diff: registry.test/app@${indexDigest}: is an image index (application/vnd.oci.image.index.v1+json); compare one platform's manifest`,
    );
  });
});
