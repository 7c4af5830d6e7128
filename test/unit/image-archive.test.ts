import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ImageArchiveError, readImageArchive } from '../../src/agent/image-archive.js';
import { storeLayer } from '../../src/agent/layer-gzip.js';
import { layerTar } from '../support/layers.js';

const sha256 = (bytes: Buffer): string =>
  `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

type ArchiveEntry =
  | { name: string; body: Buffer | string }
  | { name: string; symlink: string }
  | { name: string; dir: true };

async function archive(entries: readonly ArchiveEntry[]): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve) => tar.on('end', () => resolve()));
  for (const entry of entries) {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null) => (err ? reject(err) : resolve());
      if ('dir' in entry) tar.entry({ name: entry.name, type: 'directory' }, done);
      else if ('symlink' in entry)
        tar.entry({ name: entry.name, type: 'symlink', linkname: entry.symlink }, done);
      else tar.entry({ name: entry.name }, Buffer.from(entry.body), done);
    });
  }
  tar.finalize();
  await ended;
  return Buffer.concat(chunks);
}

function config(diffIds: string[], platform: Record<string, string> = {}): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: 'arm64',
      os: 'linux',
      variant: 'v8',
      ...platform,
      rootfs: { type: 'layers', diff_ids: diffIds },
    }),
  );
}

/** Two layers: a base with a big incompressible file, and a small one. */
async function layers(): Promise<[Buffer, Buffer]> {
  return [
    await layerTar([
      { path: 'bin/', type: 'dir' },
      { path: 'bin/tool', content: randomBytes(3 * 1024 * 1024), mode: 0o755 },
    ]),
    await layerTar([{ path: 'out/uname', content: 'aarch64\n' }]),
  ];
}

/** docker save of engine 20.10: `<id>/layer.tar`, `<config hex>.json`, manifest.json last. */
async function legacyArchive(tars: Buffer[], configBytes: Buffer): Promise<Buffer> {
  const hex = sha256(configBytes).slice(7);
  const ids = tars.map((_, i) => `${String(i).repeat(64)}`);
  return archive([
    ...tars.flatMap((tar, i): ArchiveEntry[] => [
      { name: `${ids[i]}/`, dir: true },
      { name: `${ids[i]}/VERSION`, body: '1.0' },
      { name: `${ids[i]}/json`, body: '{}' },
      { name: `${ids[i]}/layer.tar`, body: tar },
    ]),
    { name: `${hex}.json`, body: configBytes },
    {
      name: 'manifest.json',
      body: JSON.stringify([
        { Config: `${hex}.json`, RepoTags: null, Layers: ids.map((id) => `${id}/layer.tar`) },
      ]),
    },
  ]);
}

/** docker save of engine 25+: an OCI layout whose legacy paths are symlinks into blobs/. */
async function ociArchive(blobs: Buffer[], configBytes: Buffer): Promise<Buffer> {
  const configHex = sha256(configBytes).slice(7);
  const hexes = blobs.map((blob) => sha256(blob).slice(7));
  return archive([
    { name: 'blobs/', dir: true },
    { name: 'blobs/sha256/', dir: true },
    ...blobs.map((blob, i) => ({ name: `blobs/sha256/${hexes[i]}`, body: blob })),
    { name: `blobs/sha256/${configHex}`, body: configBytes },
    ...hexes.map((hex) => ({ name: `${hex}/layer.tar`, symlink: `../blobs/sha256/${hex}` })),
    { name: 'oci-layout', body: '{"imageLayoutVersion":"1.0.0"}' },
    {
      name: 'manifest.json',
      body: JSON.stringify([
        {
          Config: `blobs/sha256/${configHex}`,
          RepoTags: null,
          Layers: hexes.map((hex, i) => (i === 0 ? `${hex}/layer.tar` : `blobs/sha256/${hex}`)),
        },
      ]),
    },
  ]);
}

describe('readImageArchive', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-archive-test-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads engine 20.10's legacy layout: config, platform and gzipped layers matching the diff_ids", async () => {
    const tars = await layers();
    const configBytes = config(tars.map(sha256));
    const image = await readImageArchive(
      Readable.from([await legacyArchive(tars, configBytes)]),
      dir,
    );
    expect(image.config.equals(configBytes)).toBe(true);
    expect(image.configDigest).toBe(sha256(configBytes));
    expect(image.platform).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(image.layers.map((layer) => layer.diffId)).toEqual(tars.map(sha256));
    for (const [i, layer] of image.layers.entries()) {
      const gzipped = await readFile(layer.file);
      expect(layer.digest).toBe(sha256(gzipped));
      expect(layer.size).toBe(gzipped.length);
      expect(gunzipSync(gzipped).equals(tars[i] as Buffer)).toBe(true);
      expect(layer.keptCompression).toBe(false);
    }
  });

  it("reads engine 25's OCI layout through its symlinks, keeping an already gzipped layer's bytes", async () => {
    const tars = await layers();
    const gzipped = gzipSync(tars[1] as Buffer, { level: 1 });
    const configBytes = config(tars.map(sha256), { architecture: 's390x', variant: '' });
    const image = await readImageArchive(
      Readable.from([await ociArchive([tars[0] as Buffer, gzipped], configBytes)]),
      dir,
    );
    expect(image.platform).toEqual({ os: 'linux', architecture: 's390x' });
    expect(image.layers.map((layer) => layer.diffId)).toEqual(tars.map(sha256));
    expect(image.layers[1]?.digest).toBe(sha256(gzipped));
    expect(image.layers[1]?.keptCompression).toBe(true);
  });

  it('refuses an archive whose layer does not match the diff_id in the config', async () => {
    const tars = await layers();
    const configBytes = config([sha256(tars[0] as Buffer), sha256(Buffer.from('other'))]);
    const error = await readImageArchive(
      Readable.from([await legacyArchive(tars, configBytes)]),
      dir,
      { imageId: 'sha256:feed' },
    ).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ImageArchiveError);
    expect((error as Error).message).toMatch(/^image archive of sha256:feed: layer 2 .* diff_id/);
  });

  it('refuses an archive without manifest.json', async () => {
    await expect(
      readImageArchive(Readable.from([await archive([{ name: 'x.json', body: '{}' }])]), dir),
    ).rejects.toThrow(/no manifest.json/);
  });
});

describe('storeLayer', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-gzip-test-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('gzips the same tar to the same bytes every time, with no name or mtime in the header', async () => {
    const [tar] = await layers();
    const first = await storeLayer(Readable.from([tar]), join(dir, 'a.gz'));
    const second = await storeLayer(
      Readable.from([tar.subarray(0, 7), tar.subarray(7)]),
      join(dir, 'b.gz'),
    );
    expect(second.digest).toBe(first.digest);
    const header = (await readFile(first.file)).subarray(0, 10);
    expect(header[3]).toBe(0); // FLG: no FNAME, FCOMMENT, FEXTRA
    expect(header.readUInt32LE(4)).toBe(0); // MTIME
  });

  it('refuses a zstd layer it cannot hash', async () => {
    await expect(
      storeLayer(Readable.from([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0])]), join(dir, 'z')),
    ).rejects.toMatchObject({ code: 'unimplemented' });
  });
});
