/**
 * What differs between two image manifests, the way diffoci reports it: the
 * manifest's and the config's fields by JSON path, then the merged
 * filesystems file by file (type, size, mode, uid/gid, mtime, link target,
 * content digest), then each layer whose digest differs, so that a
 * non-reproducible step whose output a later layer hides is still named.
 *
 * Layers stream through (contents hashed, never kept); a layer both images
 * share is read once and applied to both filesystems.
 */
import { BraidError, type ErrorCode } from '../errors.js';
import { jsonDifferences, type JsonDifference } from './json-diff.js';
import {
  LayerReadError,
  readLayerEntries,
  type FileRecord,
  type LayerContents,
  type LayerEntry,
} from './layer-entries.js';
import { isIndexMediaType, type Descriptor, type ImageManifest } from './media-types.js';
import {
  IMPLIED_DIR,
  MergedTree,
  OPAQUE_WHITEOUT,
  WHITEOUT_PREFIX,
  byName,
  walk,
  type TreeNode,
} from './merged-tree.js';
import type { RegistryClient, Repository } from './registry.js';

export { formatImageDiff } from './image-diff-format.js';
export { LayerReadError, type FileRecord } from './layer-entries.js';
export type { JsonDifference } from './json-diff.js';

/** An image manifest by digest; an ImageReference with a digest is one. */
export interface ImageAt extends Repository {
  digest: string;
}

/** The registry calls the differ makes; a RegistryClient is one. */
export type ImageDiffRegistry = Pick<RegistryClient, 'getManifest' | 'getBlobBytes' | 'getBlob'>;

export interface DiffImagesOptions {
  /** Differences listed per section (manifest, config, files); the rest are counted. Default 50. */
  maxDifferences?: number;
  /** Entries listed per differing layer. Default 10. */
  maxLayerEntries?: number;
  /** Uncompressed layer bytes read for each image; past it the diff fails. Default 8 GiB. */
  maxImageBytes?: number;
  signal?: AbortSignal;
}

export type FileField =
  'type' | 'content' | 'size' | 'mode' | 'uid' | 'gid' | 'mtime' | 'linkname' | 'device' | 'xattrs';

export interface FileDifference {
  /** Absolute path, e.g. `/stamp`; in a layer, whiteout files keep their `.wh.` names. */
  path: string;
  kind: 'changed' | 'only-a' | 'only-b';
  /** Undefined when only in b; for an implied directory, IMPLIED_DIR's fields. */
  a?: FileRecord;
  b?: FileRecord;
  /** The fields that differ, for `changed`. */
  fields: FileField[];
}

export interface LayerEntryDifference extends FileDifference {
  /** The difference does not show in the merged filesystems: a later layer replaces or deletes it. */
  hidden: boolean;
}

export interface LayerSide {
  digest: string;
  mediaType: string;
  /** sha256 of the uncompressed tar. */
  diffId: string;
}

/**
 * Why two layers at the same index have different digests:
 * - `entries`: some entries differ (listed);
 * - `order`: the same entries in another order;
 * - `tar-headers`: same entries and order, other tar bytes (user or group names, pax records, format);
 * - `compression`: the same tar, compressed differently;
 * - `only-a`/`only-b`: one image has more layers.
 */
export type LayerDifferenceKind =
  'entries' | 'order' | 'tar-headers' | 'compression' | 'only-a' | 'only-b';

export interface LayerDifference {
  /** Position in the manifest, bottom layer 0. */
  index: number;
  a?: LayerSide;
  b?: LayerSide;
  kind: LayerDifferenceKind;
  /** The first differing entries, by path. */
  entries: LayerEntryDifference[];
  /** Differing entries not listed. */
  moreEntries: number;
}

export type ConfigDifference = JsonDifference;

export interface ImageDiff {
  /** The two manifests have the same digest (then nothing else was read). */
  same: boolean;
  /** The images compared, as `domain/repository@digest`. */
  a: string;
  b: string;
  /** Manifest fields, except the config's and layers' digests and sizes (explained below them). */
  manifest: JsonDifference[];
  config: ConfigDifference[];
  /** The merged filesystems, by path, parents first. */
  files: FileDifference[];
  layers: LayerDifference[];
  /** Differences found but not listed, per section. */
  omitted: { manifest: number; config: number; files: number };
  /** Some difference was left out (see `omitted` and `moreEntries`). */
  truncated: boolean;
}

/** An image cannot be compared: not an image manifest, or its config is not JSON. */
export class ImageDiffError extends BraidError {
  readonly image: string;
  constructor(image: string, problem: string, options: { cause?: unknown; code?: ErrorCode } = {}) {
    super(options.code ?? 'invalid_argument', `image diff: ${image}: ${problem}`, options);
    this.image = image;
  }
}

export const DEFAULT_MAX_DIFFERENCES = 50;
export const DEFAULT_MAX_LAYER_ENTRIES = 10;
export const DEFAULT_MAX_IMAGE_BYTES = 8 * 1024 * 1024 * 1024;

type Side = 'a' | 'b';

interface LoadedImage {
  side: Side;
  at: ImageAt;
  text: string;
  manifest: ImageManifest;
  config: unknown;
}

/** Compare two image manifests, their configs and their filesystems. */
export async function diffImages(
  registry: ImageDiffRegistry,
  a: ImageAt,
  b: ImageAt,
  options: DiffImagesOptions = {},
): Promise<ImageDiff> {
  const maxDifferences = Math.max(0, options.maxDifferences ?? DEFAULT_MAX_DIFFERENCES);
  const diff: ImageDiff = {
    same: a.digest === b.digest,
    a: imageText(a),
    b: imageText(b),
    manifest: [],
    config: [],
    files: [],
    layers: [],
    omitted: { manifest: 0, config: 0, files: 0 },
    truncated: false,
  };
  if (diff.same) return diff;
  const [imageA, imageB] = await Promise.all([
    loadImage(registry, a, 'a', options.signal),
    loadImage(registry, b, 'b', options.signal),
  ]);

  const manifestFound = jsonDifferences(imageA.manifest, imageB.manifest).filter(
    (d) => !EXPLAINED_MANIFEST_PATH.test(d.path),
  );
  [diff.manifest, diff.omitted.manifest] = bound(manifestFound, maxDifferences);
  const configFound = jsonDifferences(imageA.config, imageB.config);
  [diff.config, diff.omitted.config] = bound(configFound, maxDifferences);

  const reader = new LayerReader(registry, [imageA, imageB], options);
  const trees = { a: new MergedTree(), b: new MergedTree() };
  const layersA = imageA.manifest.layers;
  const layersB = imageB.manifest.layers;
  const maxLayerEntries = Math.max(0, options.maxLayerEntries ?? DEFAULT_MAX_LAYER_ENTRIES);
  const layerFound: { difference: LayerDifference; all: FileDifference[] }[] = [];
  for (let index = 0; index < Math.max(layersA.length, layersB.length); index++) {
    const da = layersA[index];
    const db = layersB[index];
    if (da && db && da.digest === db.digest) {
      const shared = await reader.read(da, index, ['a', 'b']);
      trees.a.apply(shared.entries);
      trees.b.apply(shared.entries);
      continue;
    }
    const [ca, cb] = await reader.readBoth(da, db, index);
    if (ca) trees.a.apply(ca.entries);
    if (cb) trees.b.apply(cb.entries);
    layerFound.push(compareLayer(index, da, ca, db, cb));
  }

  const files = compareTrees(trees.a, trees.b, maxDifferences);
  diff.files = files.differences;
  diff.omitted.files = files.omitted;

  for (const { difference, all } of layerFound) {
    difference.entries = all.slice(0, maxLayerEntries).map((entry) => ({
      ...entry,
      hidden: !showsInTrees(entry.path, trees.a, trees.b),
    }));
    difference.moreEntries = Math.max(0, all.length - maxLayerEntries);
    diff.layers.push(difference);
  }
  diff.truncated =
    diff.omitted.manifest + diff.omitted.config + diff.omitted.files > 0 ||
    diff.layers.some((layer) => layer.moreEntries > 0);
  return diff;
}

/** The fields of two records that differ. */
export function recordDifferences(a: FileRecord, b: FileRecord): FileField[] {
  const fields: FileField[] = [];
  if (a.type !== b.type) fields.push('type');
  if (a.digest !== b.digest) fields.push('content');
  if (a.size !== b.size) fields.push('size');
  if (a.mode !== b.mode) fields.push('mode');
  if (a.uid !== b.uid) fields.push('uid');
  if (a.gid !== b.gid) fields.push('gid');
  if (a.mtime !== b.mtime) fields.push('mtime');
  if ((a.linkname ?? '') !== (b.linkname ?? '')) fields.push('linkname');
  if ((a.device ?? '') !== (b.device ?? '')) fields.push('device');
  if (JSON.stringify(a.xattrs ?? {}) !== JSON.stringify(b.xattrs ?? {})) fields.push('xattrs');
  return fields;
}

/** The differences of two merged filesystems, parents first, names in code-unit order. */
export function compareTrees(
  a: MergedTree,
  b: MergedTree,
  max = Infinity,
): {
  differences: FileDifference[];
  omitted: number;
} {
  const found = new Bounded<FileDifference>(max);
  compareNodes(a.root, b.root, '', found);
  return { differences: found.items, omitted: found.omitted };
}

/** The differences of two layers' own entries (whiteout files as entries), by path. */
export function compareLayerEntries(
  a: readonly LayerEntry[],
  b: readonly LayerEntry[],
): FileDifference[] {
  const byPathA = new Map(a.map((e) => [e.path, e.record]));
  const byPathB = new Map(b.map((e) => [e.path, e.record]));
  const paths = [...new Set([...byPathA.keys(), ...byPathB.keys()])].sort(byPath);
  const found: FileDifference[] = [];
  for (const path of paths) {
    const difference = differenceOf(`/${path}`, byPathA.get(path), byPathB.get(path));
    if (difference) found.push(difference);
  }
  return found;
}

// ---------------------------------------------------------------------------

/** Manifest paths that the config and layer sections explain. */
const EXPLAINED_MANIFEST_PATH = /^(config\.(digest|size)|layers\[\d+\](\.(digest|size))?)$/;

function imageText(at: ImageAt): string {
  return `${at.domain}/${at.repository}@${at.digest}`;
}

async function loadImage(
  registry: ImageDiffRegistry,
  at: ImageAt,
  side: Side,
  signal: AbortSignal | undefined,
): Promise<LoadedImage> {
  const text = imageText(at);
  if (signal?.aborted) throw new ImageDiffError(text, 'cancelled', { code: 'cancelled' });
  const fetched = await registry.getManifest(at, at.digest);
  if (isIndexMediaType(fetched.mediaType)) {
    throw new ImageDiffError(
      text,
      `is an image index (${fetched.mediaType}); compare one platform's manifest`,
    );
  }
  const manifest = parseJson(fetched.bytes, text, 'manifest') as ImageManifest;
  if (!manifest.config?.digest || !Array.isArray(manifest.layers)) {
    throw new ImageDiffError(
      text,
      `is not an image manifest (${fetched.mediaType || 'no media type'})`,
    );
  }
  if (signal?.aborted) throw new ImageDiffError(text, 'cancelled', { code: 'cancelled' });
  const configBytes = await registry.getBlobBytes(at, manifest.config.digest);
  return {
    side,
    at,
    text,
    manifest,
    config: parseJson(configBytes, text, `config ${manifest.config.digest}`),
  };
}

function parseJson(bytes: Buffer, image: string, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new ImageDiffError(image, `the ${what} is not JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/**
 * Reads layers for both images within each image's byte budget. A digest
 * met again later (in either image) is kept as its entries, not read again.
 */
class LayerReader {
  private readonly images: Record<Side, LoadedImage>;
  private readonly left: Record<Side, number>;
  private readonly maxImageBytes: number;
  /** Uses of each digest not yet served, to know what to keep. */
  private readonly usesLeft = new Map<string, number>();
  private readonly kept = new Map<string, LayerContents>();

  constructor(
    private readonly registry: ImageDiffRegistry,
    images: [LoadedImage, LoadedImage],
    private readonly options: DiffImagesOptions,
  ) {
    this.images = { a: images[0], b: images[1] };
    this.maxImageBytes = options.maxImageBytes ?? DEFAULT_MAX_IMAGE_BYTES;
    this.left = { a: this.maxImageBytes, b: this.maxImageBytes };
    const la = images[0].manifest.layers;
    const lb = images[1].manifest.layers;
    for (let i = 0; i < Math.max(la.length, lb.length); i++) {
      const digests = new Set([la[i]?.digest, lb[i]?.digest].filter((d) => d !== undefined));
      for (const digest of digests) this.usesLeft.set(digest, (this.usesLeft.get(digest) ?? 0) + 1);
    }
  }

  /** The two images' layers at `index`, read side by side; one failing stops the other. */
  async readBoth(
    da: Descriptor | undefined,
    db: Descriptor | undefined,
    index: number,
  ): Promise<[LayerContents | undefined, LayerContents | undefined]> {
    const stop = new AbortController();
    const signal = this.options.signal
      ? AbortSignal.any([this.options.signal, stop.signal])
      : stop.signal;
    // The first failure is the cause; the other side is stopped because of it.
    let firstError: { reason: unknown } | undefined;
    const one = async (d: Descriptor | undefined, side: Side) => {
      if (!d) return undefined;
      try {
        return await this.read(d, index, [side], signal);
      } catch (err) {
        firstError ??= { reason: err };
        stop.abort();
        throw err;
      }
    };
    const [ca, cb] = await Promise.allSettled([one(da, 'a'), one(db, 'b')]);
    if (firstError) throw firstError.reason;
    return [
      ca.status === 'fulfilled' ? ca.value : undefined,
      cb.status === 'fulfilled' ? cb.value : undefined,
    ];
  }

  /** One layer, for the images in `sides` (both when they share it). */
  async read(
    descriptor: Descriptor,
    index: number,
    sides: Side[],
    signal = this.options.signal,
  ): Promise<LayerContents> {
    const digest = descriptor.digest;
    const uses = (this.usesLeft.get(digest) ?? 1) - 1;
    this.usesLeft.set(digest, uses);
    const known = this.kept.get(digest);
    if (known) {
      if (uses <= 0) this.kept.delete(digest);
      return known;
    }
    // The budget of the image with the least left bounds a read made for both.
    const side = sides.reduce((x, y) => (this.left[y] < this.left[x] ? y : x));
    const image = this.images[side];
    const source = { image: image.text, index, digest };
    if (signal?.aborted) throw new LayerReadError('cancelled', source, 'cancelled');
    let blob: NodeJS.ReadableStream;
    try {
      blob = await this.registry.getBlob(image.at, digest, descriptor.size);
    } catch (err) {
      const code = err instanceof BraidError ? err.code : 'unavailable';
      const message = err instanceof Error ? err.message.split('\n')[0] : String(err);
      throw new LayerReadError(code, source, `reading the blob: ${message}`, { cause: err });
    }
    const contents = await readLayerEntries(blob, source, {
      maxBytes: this.left[side],
      limitText: `the ${this.maxImageBytes}-byte limit on uncompressed layer bytes read for ${image.text}`,
      signal,
    });
    for (const s of sides) this.left[s] -= contents.bytes;
    if (uses > 0) this.kept.set(digest, contents);
    return contents;
  }
}

function compareLayer(
  index: number,
  da: Descriptor | undefined,
  ca: LayerContents | undefined,
  db: Descriptor | undefined,
  cb: LayerContents | undefined,
): { difference: LayerDifference; all: FileDifference[] } {
  const all = compareLayerEntries(ca?.entries ?? [], cb?.entries ?? []);
  const side = (d: Descriptor | undefined, c: LayerContents | undefined): LayerSide | undefined =>
    d && c ? { digest: d.digest, mediaType: d.mediaType, diffId: c.diffId } : undefined;
  let kind: LayerDifferenceKind;
  if (!ca) kind = 'only-b';
  else if (!cb) kind = 'only-a';
  else if (all.length > 0) kind = 'entries';
  else if (!samePathOrder(ca.entries, cb.entries)) kind = 'order';
  else if (ca.diffId !== cb.diffId) kind = 'tar-headers';
  else kind = 'compression';
  const difference: LayerDifference = { index, kind, entries: [], moreEntries: 0 };
  const a = side(da, ca);
  const b = side(db, cb);
  if (a) difference.a = a;
  if (b) difference.b = b;
  return { difference, all };
}

function samePathOrder(a: readonly LayerEntry[], b: readonly LayerEntry[]): boolean {
  return a.length === b.length && a.every((entry, i) => entry.path === b[i]!.path);
}

/** Whether a layer entry's difference (at `/path`) shows in the merged filesystems. */
function showsInTrees(displayPath: string, a: MergedTree, b: MergedTree): boolean {
  const path = displayPath.slice(1);
  const slash = path.lastIndexOf('/');
  const dir = slash < 0 ? '' : path.slice(0, slash);
  const name = path.slice(slash + 1);
  if (name === OPAQUE_WHITEOUT) {
    const found = new Bounded<FileDifference>(0);
    compareNodes(a.find(dir) ?? {}, b.find(dir) ?? {}, dir, found);
    return found.omitted > 0;
  }
  const effective = name.startsWith(WHITEOUT_PREFIX)
    ? `${dir === '' ? '' : `${dir}/`}${name.slice(WHITEOUT_PREFIX.length)}`
    : path;
  const na = a.find(effective);
  const nb = b.find(effective);
  if (!na || !nb) return na !== nb;
  return recordDifferences(na.record ?? IMPLIED_DIR, nb.record ?? IMPLIED_DIR).length > 0;
}

function compareNodes(
  a: TreeNode,
  b: TreeNode,
  path: string,
  found: Bounded<FileDifference>,
): void {
  if (path === '' && (a.record || b.record)) {
    const root = differenceOf('/', a.record ?? IMPLIED_DIR, b.record ?? IMPLIED_DIR);
    if (root) found.push(root);
  }
  const childrenA = a.children ?? new Map<string, TreeNode>();
  const childrenB = b.children ?? new Map<string, TreeNode>();
  const names = [...new Set([...childrenA.keys(), ...childrenB.keys()])].sort(byName);
  for (const name of names) {
    const childPath = path === '' ? name : `${path}/${name}`;
    const ca = childrenA.get(name);
    const cb = childrenB.get(name);
    if (ca && cb) {
      const difference = differenceOf(
        `/${childPath}`,
        ca.record ?? IMPLIED_DIR,
        cb.record ?? IMPLIED_DIR,
      );
      if (difference) found.push(difference);
      compareNodes(ca, cb, childPath, found);
      continue;
    }
    const only = (ca ?? cb)!;
    const kind = ca ? 'only-a' : 'only-b';
    found.push(onlyIn(kind, `/${childPath}`, only.record ?? IMPLIED_DIR));
    for (const below of walk(only, childPath)) {
      found.push(onlyIn(kind, `/${below.path}`, below.node.record ?? IMPLIED_DIR));
    }
  }
}

function differenceOf(
  path: string,
  a: FileRecord | undefined,
  b: FileRecord | undefined,
): FileDifference | undefined {
  if (a && b) {
    const fields = recordDifferences(a, b);
    return fields.length > 0 ? { path, kind: 'changed', a, b, fields } : undefined;
  }
  if (a) return onlyIn('only-a', path, a);
  if (b) return onlyIn('only-b', path, b);
  return undefined;
}

function onlyIn(kind: 'only-a' | 'only-b', path: string, record: FileRecord): FileDifference {
  return kind === 'only-a'
    ? { path, kind, a: record, fields: [] }
    : { path, kind, b: record, fields: [] };
}

/** Paths component by component, so a directory comes right before what is in it. */
function byPath(a: string, b: string): number {
  const pa = a.split('/');
  const pb = b.split('/');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const order = byName(pa[i]!, pb[i]!);
    if (order !== 0) return order;
  }
  return pa.length - pb.length;
}

function bound<T>(items: T[], max: number): [T[], number] {
  return [items.slice(0, max), Math.max(0, items.length - max)];
}

/** Keeps the first `max` items and counts the rest. */
class Bounded<T> {
  readonly items: T[] = [];
  omitted = 0;
  constructor(private readonly max: number) {}
  push(item: T): void {
    if (this.items.length < this.max) this.items.push(item);
    else this.omitted++;
  }
}
