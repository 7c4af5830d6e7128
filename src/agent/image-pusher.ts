/**
 * Pushes an image the engine built, by digest, with our registry client: the
 * engine cannot push without a tag, and a per-platform tag left in the
 * registry is exactly what braid avoids. The image is exported, its config
 * checked against the platform the job asked for, each layer gzipped to a
 * temp file while hashed, and then layers (only those the registry lacks),
 * config and an OCI image manifest are uploaded; tags only if asked.
 *
 * The manifest is OCI (`application/vnd.oci.image.manifest.v1+json`, config
 * `application/vnd.oci.image.config.v1+json`, layers `…tar+gzip`): what
 * BuildKit itself pushes, and what Docker 20.10+, containerd and skopeo read.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { BraidError } from '../errors.js';
import { sha256Digest } from '../oci/digest.js';
import {
  DOCKER_LIST,
  OCI_CONFIG,
  OCI_INDEX,
  OCI_MANIFEST,
  isIndexMediaType,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
} from '../oci/media-types.js';
import {
  formatPlatform,
  platformFromOci,
  platformMatches,
  type Platform,
} from '../oci/platform.js';
import { withTag } from '../oci/reference.js';
import type { RegistryClient, Repository } from '../oci/registry.js';
import type { Engine } from './engine.js';
import { readImageArchive, type ImageConfig } from './image-archive.js';
import { OCI_LAYER_GZIP, type StoredLayer } from './layer-gzip.js';

/** An image in a registry whose layers the pushed image may share (its base). */
export interface LayerSource {
  repository: Repository;
  /** Tag or digest; an index is resolved to the expected platform. */
  reference: string;
}

export interface PushImageOptions {
  engine: Pick<Engine, 'exportImage'>;
  imageId: string;
  client: RegistryClient;
  repository: Repository;
  /** Tags to point at the pushed manifest, in the same repository; none by default. */
  tags?: readonly string[];
  /** The manifest's annotations (--annotation manifest=...); none by default. */
  annotations?: Readonly<Record<string, string>>;
  /** The platform the job asked for; the image's config must say the same. */
  expectedPlatform: Platform;
  /** Images whose layers are mounted or copied instead of uploaded when shared. */
  layerSources?: readonly LayerSource[];
  /** Upload chunk size (default 8 MiB): what a layer costs in memory while sent. */
  chunkBytes?: number;
  /** Layers uploaded at once (default 3). */
  concurrency?: number;
  /** zlib level of layers (default 6). */
  gzipLevel?: number;
  /** Where the gzipped layers are kept while pushed (default: the OS temp dir). */
  workDir?: string;
  /** SOURCE_DATE_EPOCH in seconds: clamp file, config and history times to it. */
  sourceDateEpoch?: number;
  /** With sourceDateEpoch: labels dropped from the pushed config (the run's ids). */
  runLabels?: readonly string[];
  signal?: AbortSignal;
}

export type LayerOutcome = 'uploaded' | 'exists' | 'mounted' | 'copied';

export interface PushedLayer {
  digest: string;
  size: number;
  mediaType: string;
  diffId: string;
  outcome: LayerOutcome;
}

export interface PushedImage {
  /** Digest of the manifest: the image is `repository@digest`. */
  digest: string;
  /** Bytes of the manifest. */
  size: number;
  mediaType: string;
  /** The platform the image's config names, normalised. */
  platform: Platform;
  configDigest: string;
  layers: PushedLayer[];
}

/** The image is of another platform than the job asked for; nothing was uploaded. */
export class ImagePlatformMismatchError extends BraidError {
  readonly imageId: string;
  readonly expected: string;
  readonly actual: string;
  constructor(imageId: string, expected: Platform, actual: Platform) {
    const wanted = formatPlatform(expected);
    const found = formatPlatform(actual);
    super(
      'failed_precondition',
      `image ${imageId} is ${found}, but ${wanted} was asked for: refusing to push it`,
    );
    this.imageId = imageId;
    this.expected = wanted;
    this.actual = found;
  }
}

const GZIP_LAYER_TYPES: ReadonlySet<string> = new Set([
  OCI_LAYER_GZIP,
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
]);

export async function pushImage(options: PushImageOptions): Promise<PushedImage> {
  const { client, repository, imageId } = options;
  const checkAborted = (): void => {
    if (options.signal?.aborted) {
      throw new BraidError('cancelled', `push of ${imageId} to ${repoText(repository)} cancelled`);
    }
  };
  // Tags are checked before any work, so a bad one fails fast.
  const tags = options.tags ?? [];
  for (const tag of tags)
    withTag({ domain: repository.domain, repository: repository.repository }, tag);

  checkAborted();
  const dir = await mkdtemp(join(options.workDir ?? tmpdir(), 'braid-push-'));
  try {
    const exported = await options.engine.exportImage(imageId, options.signal);
    const archiveStream =
      exported instanceof Readable ? exported : Readable.from(exported as AsyncIterable<Buffer>);
    let archive;
    try {
      archive = await readImageArchive(archiveStream, dir, {
        imageId,
        gzipLevel: options.gzipLevel ?? 6,
        ...(options.sourceDateEpoch !== undefined && {
          sourceDateEpoch: options.sourceDateEpoch,
          runLabels: options.runLabels ?? [],
        }),
      });
    } finally {
      archiveStream.destroy();
    }
    if (!platformMatches(options.expectedPlatform, archive.platform)) {
      throw new ImagePlatformMismatchError(imageId, options.expectedPlatform, archive.platform);
    }
    checkAborted();

    const shared = await sharedLayers(client, options.layerSources ?? [], options.expectedPlatform);
    const layers = await mapLimit(archive.layers, options.concurrency ?? 3, async (layer) => {
      checkAborted();
      return pushLayer(client, repository, layer, shared, options.chunkBytes ?? 8 * 1024 * 1024);
    });
    checkAborted();

    await client.uploadBlob(
      repository,
      archive.configDigest,
      archive.config.length,
      archive.config,
    );
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: archive.configDigest, size: archive.config.length },
      layers: layers.map(({ mediaType, digest, size }) => ({ mediaType, digest, size })),
      ...(options.annotations &&
        Object.keys(options.annotations).length > 0 && {
          annotations: Object.fromEntries(Object.entries(options.annotations).sort()),
        }),
    };
    const bytes = Buffer.from(JSON.stringify(manifest));
    const { digest } = await client.putManifest(
      repository,
      sha256Digest(bytes),
      bytes,
      OCI_MANIFEST,
    );
    for (const tag of tags) await client.putManifest(repository, tag, bytes, OCI_MANIFEST);
    return {
      digest,
      size: bytes.length,
      mediaType: OCI_MANIFEST,
      platform: archive.platform,
      configDigest: archive.configDigest,
      layers,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

interface SharedLayer {
  from: Repository;
  descriptor: Descriptor;
}

async function pushLayer(
  client: RegistryClient,
  repository: Repository,
  layer: StoredLayer,
  shared: ReadonlyMap<string, SharedLayer>,
  chunkBytes: number,
): Promise<PushedLayer> {
  const source = shared.get(layer.diffId);
  if (source !== undefined) {
    try {
      const outcome = await client.copyBlob(source.from, repository, source.descriptor);
      return {
        digest: source.descriptor.digest,
        size: source.descriptor.size,
        mediaType: OCI_LAYER_GZIP,
        diffId: layer.diffId,
        outcome,
      };
    } catch {
      // The source is an optimisation: upload our own gzip instead.
    }
  }
  const outcome = await client.uploadBlob(
    repository,
    layer.digest,
    layer.size,
    () => createReadStream(layer.file),
    { chunkBytes },
  );
  return {
    digest: layer.digest,
    size: layer.size,
    mediaType: OCI_LAYER_GZIP,
    diffId: layer.diffId,
    outcome,
  };
}

/**
 * diff_id -> compressed layer in a source image, for the expected platform.
 * A source that cannot be read only means its layers are uploaded.
 */
async function sharedLayers(
  client: RegistryClient,
  sources: readonly LayerSource[],
  platform: Platform,
): Promise<Map<string, SharedLayer>> {
  const shared = new Map<string, SharedLayer>();
  for (const source of sources) {
    try {
      let fetched = await client.getManifest(source.repository, source.reference);
      if (isIndexMediaType(fetched.mediaType)) {
        const index = JSON.parse(fetched.bytes.toString('utf8')) as ImageIndex;
        const child = index.manifests.find(
          (entry) =>
            entry.platform !== undefined &&
            !isIndexMediaType(entry.mediaType) &&
            platformMatches(platform, platformFromOci(entry.platform)),
        );
        if (child === undefined) continue;
        fetched = await client.getManifest(source.repository, child.digest);
      }
      if (fetched.mediaType === OCI_INDEX || fetched.mediaType === DOCKER_LIST) continue;
      const manifest = JSON.parse(fetched.bytes.toString('utf8')) as ImageManifest;
      const config = JSON.parse(
        (await client.getBlobBytes(source.repository, manifest.config.digest)).toString('utf8'),
      ) as ImageConfig;
      const diffIds = config.rootfs?.diff_ids ?? [];
      if (diffIds.length !== manifest.layers.length) continue;
      manifest.layers.forEach((descriptor, i) => {
        const diffId = diffIds[i];
        if (diffId === undefined || shared.has(diffId)) return;
        if (!GZIP_LAYER_TYPES.has(descriptor.mediaType) || descriptor.urls !== undefined) return;
        shared.set(diffId, { from: source.repository, descriptor });
      });
    } catch {
      // Unreadable source: its layers are simply uploaded.
    }
  }
  return shared;
}

/** Runs `work` over `items`, `limit` at a time; on a failure starts no more and rejects once all stopped. */
async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = async (): Promise<void> => {
    while (failure === undefined && next < items.length) {
      const i = next++;
      try {
        results[i] = await work(items[i] as T);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failure !== undefined) throw failure.error;
  return results;
}

function repoText(repository: Repository): string {
  return `${repository.domain}/${repository.repository}`;
}
