/**
 * Reads the tar the engine exports for an image (`docker save`, `GET
 * /images/{id}/get`) in one pass: the config, and every layer stored as gzip
 * on disk with its digests, checked against the config's diff_ids. Both
 * layouts are read: the legacy one of engine 20.10 (`manifest.json`,
 * `<id>.json`, `<layer>/layer.tar`) and the OCI one of engine 25+ (`blobs/
 * sha256/…`, with `<layer>/layer.tar` as symlinks into it).
 */
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { extract } from 'tar-stream';
import { BraidError, type ErrorCode } from '../errors.js';
import { sha256Digest } from '../oci/digest.js';
import { readCapped } from '../oci/http-transport.js';
import { platformFromOci, type Platform } from '../oci/platform.js';
import { storeLayer, type StoredLayer } from './layer-gzip.js';
import { reproducibleConfig } from '../oci/reproducible-config.js';

export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
  rootfs?: { type?: string; diff_ids?: string[] };
  config?: { Labels?: Record<string, string> | null };
}

export interface ImageArchive {
  /** The config's bytes, exactly as the engine has them (its digest is the image id on 20.10). */
  config: Buffer;
  configDigest: string;
  configJson: ImageConfig;
  /** The platform the config names, normalised. */
  platform: Platform;
  /** The layers in order, as gzip files in the work directory. */
  layers: StoredLayer[];
}

export interface ReadArchiveOptions {
  /** zlib level for layers that arrive uncompressed. */
  gzipLevel?: number;
  /** For errors: the image the archive is of. */
  imageId?: string;
  /**
   * SOURCE_DATE_EPOCH in seconds: layers get their file times clamped to it
   * and the config its `created` and history times (reproducible-config.ts).
   */
  sourceDateEpoch?: number;
  /** With sourceDateEpoch: labels dropped from the config (the build's and job's ids). */
  runLabels?: readonly string[];
}

/** The archive is not a readable image export. */
export class ImageArchiveError extends BraidError {
  readonly imageId: string | undefined;
  constructor(code: ErrorCode, imageId: string | undefined, message: string) {
    super(code, `image archive${imageId ? ` of ${imageId}` : ''}: ${message}`);
    this.imageId = imageId;
  }
}

/** Small JSON files (manifests, configs) are kept in memory up to these limits. */
const MAX_JSON_BYTES = 16 * 1024 * 1024;
const MAX_KEPT_JSON_BYTES = 64 * 1024 * 1024;
/** Blobs of the OCI layout up to this size are read whole to tell JSON from a layer. */
const SNIFF_BYTES = 1024 * 1024;

interface ManifestEntry {
  Config?: unknown;
  Layers?: unknown;
}

/**
 * Reads `archive` to its end, writing layers as gzip files into `dir` (which
 * the caller owns and removes).
 */
export async function readImageArchive(
  archive: AsyncIterable<Buffer> | Readable,
  dir: string,
  options: ReadArchiveOptions = {},
): Promise<ImageArchive> {
  const fail = (code: ErrorCode, message: string): never => {
    throw new ImageArchiveError(code, options.imageId, message);
  };
  const json = new Map<string, Buffer>();
  const layers = new Map<string, StoredLayer>();
  const links = new Map<string, string>();
  let keptJsonBytes = 0;
  let stored = 0;

  const keepJson = (name: string, bytes: Buffer): void => {
    keptJsonBytes += bytes.length;
    if (keptJsonBytes > MAX_KEPT_JSON_BYTES) fail('resource_exhausted', 'too much JSON metadata');
    json.set(name, bytes);
  };
  const store = async (name: string, source: AsyncIterable<Buffer>): Promise<void> => {
    const file = join(dir, `layer-${stored++}.gz`);
    layers.set(
      name,
      await storeLayer(source, file, {
        level: options.gzipLevel ?? 6,
        ...(options.sourceDateEpoch !== undefined && { sourceDateEpoch: options.sourceDateEpoch }),
      }),
    );
  };

  const tar = extract();
  const input = archive instanceof Readable ? archive : Readable.from(archive);
  input.on('error', (err) => tar.destroy(err));
  input.pipe(tar);
  for await (const entry of tar) {
    // tar-stream entries are streamx Readables: async iterables of Buffers.
    const body = entry as unknown as AsyncIterable<Buffer> & { destroy(): void };
    const name = entryName(entry.header.name);
    const type = entry.header.type ?? 'file';
    const size = entry.header.size ?? 0;
    if (type === 'symlink' || type === 'link') {
      const target = entry.header.linkname ?? '';
      // Symlinks are relative to their directory, hard links to the archive root.
      links.set(
        name,
        type === 'symlink' ? posix.join(posix.dirname(name), target) : entryName(target),
      );
      entry.resume();
      continue;
    }
    if (type !== 'file' && type !== 'contiguous-file') {
      entry.resume();
      continue;
    }
    if (isLegacyLayer(name)) {
      await store(name, body);
    } else if (isBlob(name)) {
      if (size > SNIFF_BYTES) {
        await store(name, body);
      } else {
        const bytes = await readAll(body, SNIFF_BYTES);
        if (looksLikeJson(bytes)) keepJson(name, bytes);
        else await store(name, Readable.from([bytes]));
      }
    } else if (name === 'manifest.json' || (!name.includes('/') && name.endsWith('.json'))) {
      if (size > MAX_JSON_BYTES)
        fail('resource_exhausted', `${name} is larger than ${MAX_JSON_BYTES} bytes`);
      keepJson(name, await readAll(body, MAX_JSON_BYTES));
    } else {
      entry.resume();
    }
  }

  const resolve = (name: string): string => {
    let current = entryName(name);
    for (let hops = 0; links.has(current); hops++) {
      if (hops >= 16) fail('invalid_argument', `${name}: too many levels of links`);
      current = links.get(current) ?? current;
    }
    return current;
  };

  const manifestBytes = json.get('manifest.json') ?? fail('invalid_argument', 'no manifest.json');
  const manifest = parseJson<ManifestEntry[]>(manifestBytes, 'manifest.json', fail);
  if (!Array.isArray(manifest) || manifest.length !== 1) {
    fail(
      'invalid_argument',
      `manifest.json lists ${Array.isArray(manifest) ? manifest.length : 'no'} images, expected 1`,
    );
  }
  const image = manifest[0] ?? {};
  if (typeof image.Config !== 'string')
    return fail('invalid_argument', 'manifest.json names no Config');
  const layerPaths = image.Layers;
  if (!Array.isArray(layerPaths) || !layerPaths.every((p) => typeof p === 'string')) {
    return fail('invalid_argument', 'manifest.json has no Layers list');
  }

  const configPath = resolve(image.Config);
  const config =
    json.get(configPath) ?? fail('invalid_argument', `config ${image.Config} is missing`);
  const configJson = parseJson<ImageConfig>(config, image.Config, fail);
  const diffIds = configJson.rootfs?.diff_ids ?? [];
  if (diffIds.length !== layerPaths.length) {
    fail('internal', `config lists ${diffIds.length} diff_ids for ${layerPaths.length} layers`);
  }

  const ordered = (layerPaths as string[]).map((path, i) => {
    const layer = layers.get(resolve(path)) ?? fail('invalid_argument', `layer ${path} is missing`);
    if (layer.sourceDiffId !== diffIds[i]) {
      fail(
        'internal',
        `layer ${i + 1} (${path}) has diff_id ${layer.sourceDiffId}, config says ${diffIds[i]}`,
      );
    }
    return layer;
  });
  if (options.sourceDateEpoch !== undefined) {
    const rewritten = reproducibleConfig(
      configJson,
      ordered.map((layer) => layer.diffId),
      options.sourceDateEpoch,
      options.runLabels,
    );
    return {
      config: rewritten.bytes,
      configDigest: sha256Digest(rewritten.bytes),
      configJson: rewritten.config,
      platform: platformFromOci(rewritten.config),
      layers: ordered,
    };
  }
  return {
    config,
    configDigest: sha256Digest(config),
    configJson,
    platform: platformFromOci(configJson),
    layers: ordered,
  };
}

function entryName(name: string): string {
  return posix.normalize(name.replace(/^\.\//, '').replace(/^\/+/, ''));
}

function isLegacyLayer(name: string): boolean {
  return /^[^/]+\/layer\.tar$/.test(name);
}

function isBlob(name: string): boolean {
  return /^blobs\/[a-z0-9]+\/[a-f0-9]+$/.test(name);
}

function looksLikeJson(bytes: Buffer): boolean {
  const first = bytes.toString('utf8', 0, Math.min(bytes.length, 64)).trimStart()[0];
  return first === '{' || first === '[';
}

async function readAll(
  entry: AsyncIterable<Buffer> & { destroy(): void },
  maxBytes: number,
): Promise<Buffer> {
  const bytes = await readCapped(entry, maxBytes);
  if (bytes === undefined) {
    throw new BraidError('resource_exhausted', `archive entry exceeds ${maxBytes} bytes`);
  }
  return bytes;
}

function parseJson<T>(
  bytes: Buffer,
  name: string,
  fail: (code: ErrorCode, message: string) => never,
): T {
  try {
    return JSON.parse(bytes.toString('utf8')) as T;
  } catch {
    return fail('invalid_argument', `${name} is not JSON`);
  }
}
