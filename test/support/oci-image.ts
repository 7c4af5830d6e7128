/**
 * Single-platform OCI images built in memory, entry headers under the test's
 * control (mtime, mode, owner, whiteouts), and pushed to a registry with
 * braid's client or served by an in-memory stand-in for it.
 */
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import type { FetchedManifest, RegistryClient, Repository } from '../../src/oci/registry.js';

export interface TarEntrySpec {
  name: string;
  type?: 'file' | 'directory' | 'symlink' | 'link';
  content?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch; default 0. */
  mtime?: number;
  linkname?: string;
  uname?: string;
}

export interface LayerSpec {
  entries: readonly TarEntrySpec[];
  /** Blob bytes served instead of the entries' tar (a corrupt layer, say); media type gzip. */
  blob?: Buffer;
  /** Default gzip at level 6; `tar` leaves it uncompressed. */
  compression?: 'gzip' | 'tar';
  gzipLevel?: number;
}

export interface BuiltImage {
  manifest: Buffer;
  digest: string;
  config: Buffer;
  /** Digest -> bytes, the config and every layer. */
  blobs: Map<string, Buffer>;
  layerDigests: string[];
}

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const GZIP_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';
const TAR_LAYER = 'application/vnd.oci.image.layer.v1.tar';

export function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** An uncompressed tar of `entries` in order, with the given headers. */
export async function tarOf(entries: readonly TarEntrySpec[]): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    tar.on('end', resolve);
    tar.on('error', reject);
  });
  for (const e of entries) {
    const type = e.type ?? 'file';
    const header = {
      name: e.name,
      type,
      mode: e.mode ?? (type === 'directory' ? 0o755 : type === 'symlink' ? 0o777 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      uname: e.uname ?? 'root',
      gname: 'root',
      mtime: new Date((e.mtime ?? 0) * 1000),
      ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
    };
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null) => (err ? reject(err) : resolve());
      if (type === 'file') tar.entry(header, Buffer.from(e.content ?? ''), done);
      else tar.entry(header, done);
    });
  }
  tar.finalize();
  await ended;
  return Buffer.concat(chunks);
}

/** An image of `layers` (bottom first) with `config` merged over a minimal amd64 config. */
export async function buildImage(
  layers: readonly LayerSpec[],
  config: Record<string, unknown> = {},
): Promise<BuiltImage> {
  const blobs = new Map<string, Buffer>();
  const descriptors: { mediaType: string; digest: string; size: number }[] = [];
  const diffIds: string[] = [];
  for (const layer of layers) {
    const tar = await tarOf(layer.entries);
    diffIds.push(sha256(tar));
    const gzip = (layer.compression ?? 'gzip') === 'gzip';
    const bytes = layer.blob ?? (gzip ? gzipSync(tar, { level: layer.gzipLevel ?? 6 }) : tar);
    const digest = sha256(bytes);
    blobs.set(digest, bytes);
    descriptors.push({ mediaType: gzip ? GZIP_LAYER : TAR_LAYER, digest, size: bytes.length });
  }
  const configBytes = Buffer.from(
    JSON.stringify({
      created: '1970-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: layers.map((_, i) => ({
        created: '1970-01-01T00:00:00Z',
        created_by: `layer ${i}`,
      })),
      ...config,
    }),
  );
  blobs.set(sha256(configBytes), configBytes);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: sha256(configBytes), size: configBytes.length },
      layers: descriptors,
    }),
  );
  return {
    manifest,
    digest: sha256(manifest),
    config: configBytes,
    blobs,
    layerDigests: descriptors.map((d) => d.digest),
  };
}

/** Push the image's blobs and its manifest by digest. */
export async function pushImage(
  client: RegistryClient,
  repo: Repository,
  image: BuiltImage,
): Promise<void> {
  for (const [digest, bytes] of image.blobs) {
    await client.uploadBlob(repo, digest, bytes.length, bytes);
  }
  await client.putManifest(repo, image.digest, image.manifest, OCI_MANIFEST);
}

/**
 * The three reads the image differ makes, served from memory: blobs in
 * small chunks, every blob read counted by digest.
 */
export class MemoryRegistry {
  readonly blobReads = new Map<string, number>();
  private readonly manifests = new Map<string, { bytes: Buffer; mediaType: string }>();
  private readonly blobs = new Map<string, Buffer>();

  add(image: BuiltImage): void {
    this.manifests.set(image.digest, { bytes: image.manifest, mediaType: OCI_MANIFEST });
    for (const [digest, bytes] of image.blobs) this.blobs.set(digest, bytes);
  }

  /** A manifest of any kind (an index, say) under `digest`. */
  addManifest(digest: string, bytes: Buffer, mediaType: string): void {
    this.manifests.set(digest, { bytes, mediaType });
  }

  /** Replace a blob's bytes (to serve a corrupt layer under its digest). */
  corrupt(digest: string, bytes: Buffer): void {
    this.blobs.set(digest, bytes);
  }

  async getManifest(_repo: Repository, reference: string): Promise<FetchedManifest> {
    const manifest = this.manifests.get(reference);
    if (!manifest) throw new Error(`no manifest ${reference}`);
    return { ...manifest, digest: reference };
  }

  async getBlobBytes(_repo: Repository, digest: string): Promise<Buffer> {
    const bytes = this.blobs.get(digest);
    if (!bytes) throw new Error(`no blob ${digest}`);
    return bytes;
  }

  async getBlob(_repo: Repository, digest: string): Promise<Readable> {
    const bytes = this.blobs.get(digest);
    if (!bytes) throw new Error(`no blob ${digest}`);
    this.blobReads.set(digest, (this.blobReads.get(digest) ?? 0) + 1);
    const chunks: Buffer[] = [];
    for (let at = 0; at < bytes.length; at += 1000) chunks.push(bytes.subarray(at, at + 1000));
    return Readable.from(chunks, { objectMode: false });
  }
}
