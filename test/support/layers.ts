/**
 * Image layers built in memory (tar-stream + gzip) and served as streams the
 * way a registry would: in chunks, optionally failing mid-way, with every
 * opened stream kept so a test can check that none was left open.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';

export const GZIP_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const TAR_LAYER = 'application/vnd.oci.image.layer.v1.tar';
export const ZSTD_LAYER = 'application/vnd.oci.image.layer.v1.tar+zstd';

export type LayerEntry =
  | { path: string; type?: 'file'; content: Buffer | string; mode?: number }
  | { path: string; type: 'dir'; mode?: number }
  | { path: string; type: 'symlink' | 'link'; target: string };

const EPOCH = new Date(0);

/** An uncompressed tar of `entries`, in order. */
export async function layerTar(entries: readonly LayerEntry[]): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    tar.on('end', resolve);
    tar.on('error', reject);
  });
  const owner = { mtime: EPOCH, uid: 0, gid: 0 };
  for (const entry of entries) {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null) => (err ? reject(err) : resolve());
      switch (entry.type) {
        case 'dir':
          tar.entry(
            { ...owner, name: entry.path, type: 'directory', mode: entry.mode ?? 0o755 },
            done,
          );
          break;
        case 'symlink':
        case 'link':
          tar.entry(
            { ...owner, name: entry.path, type: entry.type, linkname: entry.target, mode: 0o777 },
            done,
          );
          break;
        default: {
          const body = Buffer.from(entry.content);
          tar.entry(
            { ...owner, name: entry.path, mode: entry.mode ?? 0o644, size: body.length },
            body,
            done,
          );
        }
      }
    });
  }
  tar.finalize();
  await ended;
  return Buffer.concat(chunks);
}

export interface TestLayer {
  entries?: readonly LayerEntry[];
  /** Raw blob bytes instead of a tar of `entries`. */
  blob?: Buffer;
  /** Default: gzip. */
  mediaType?: string;
  /** The served stream fails with "connection reset" after this many bytes. */
  failAfterBytes?: number;
}

export interface TestImage {
  layers: { digest: string; mediaType: string; size: number }[];
  openLayer(digest: string): Promise<NodeJS.ReadableStream>;
  /** Every stream handed out, in order. */
  opened: Readable[];
}

const CHUNK_BYTES = 16 * 1024;

/** Layers bottom first, served as chunked streams by digest. */
export async function testImage(layers: readonly TestLayer[]): Promise<TestImage> {
  const blobs = new Map<string, TestLayer & { bytes: Buffer }>();
  const descriptors: TestImage['layers'] = [];
  for (const layer of layers) {
    const mediaType = layer.mediaType ?? GZIP_LAYER;
    let bytes = layer.blob ?? (await layerTar(layer.entries ?? []));
    if (!layer.blob && mediaType === GZIP_LAYER) bytes = gzipSync(bytes);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    blobs.set(digest, { ...layer, bytes });
    descriptors.push({ digest, mediaType, size: bytes.length });
  }
  const opened: Readable[] = [];
  return {
    layers: descriptors,
    opened,
    async openLayer(digest) {
      const blob = blobs.get(digest);
      if (!blob) throw new Error(`blob ${digest} not found`);
      const stream = chunkedStream(blob.bytes, blob.failAfterBytes);
      opened.push(stream);
      return stream;
    },
  };
}

function chunkedStream(bytes: Buffer, failAfterBytes?: number): Readable {
  let position = 0;
  return new Readable({
    read() {
      if (failAfterBytes !== undefined && position >= failAfterBytes) {
        this.destroy(Object.assign(new Error('connection reset'), { code: 'ECONNRESET' }));
        return;
      }
      if (position >= bytes.length) {
        this.push(null);
        return;
      }
      const end = Math.min(position + CHUNK_BYTES, bytes.length, failAfterBytes ?? Infinity);
      this.push(bytes.subarray(position, end));
      position = end;
    },
  });
}
