/**
 * Stitching: N sources (image manifests or indexes) become one image index,
 * whose children are made present in every target repository before the
 * index is PUT under its tags. Same inputs, same bytes, same digest.
 */
import { BraidError } from '../errors.js';
import {
  DOCKER_LIST,
  DOCKER_MANIFEST,
  OCI_INDEX,
  isImageManifestMediaType,
  isIndexMediaType,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
} from './media-types.js';
import {
  formatPlatform,
  platformFromOci,
  platformToOci,
  platformsEqual,
  type OciPlatform,
  type Platform,
} from './platform.js';
import { formatReference, type ImageReference } from './reference.js';
import type { RegistryClient, Repository } from './registry.js';
import { sha256Digest } from './digest.js';

export const ATTESTATION_TYPE_KEY = 'vnd.docker.reference.type';
export const ATTESTATION_DIGEST_KEY = 'vnd.docker.reference.digest';
export const ATTESTATION_TYPE = 'attestation-manifest';

export type IndexFormat = 'auto' | 'oci' | 'docker';

/** One source as the user named it, with an optional platform it must have. */
export interface StitchSource {
  ref: ImageReference;
  /** manifest-tool specs name a platform per image: it must agree with the config. */
  platform?: Platform;
}

/** A child of the index to be, and where it comes from. */
export interface IndexEntry {
  source: ImageReference;
  repo: Repository;
  descriptor: Descriptor;
  /** Platform of an image (normalised, for comparisons); undefined for attestations. */
  platform?: Platform;
  /** The platform as the index will say it: as the config or source index wrote it. */
  ociPlatform?: OciPlatform;
  /** Digest of the image an attestation manifest describes. */
  attestationFor?: string;
}

export interface IndexPlan {
  mediaType: string;
  bytes: Buffer;
  digest: string;
  entries: IndexEntry[];
}

export interface BuildIndexOptions {
  /** Keep attestation manifests (default true). */
  attestations: boolean;
  format: IndexFormat;
  /** Annotations on the index itself (OCI only). */
  annotations: Record<string, string>;
}

export class StitchError extends BraidError {
  constructor(
    message: string,
    code: 'invalid_argument' | 'failed_precondition' = 'invalid_argument',
  ) {
    super(code, message);
  }
}

function repoOf(ref: ImageReference): Repository {
  return { domain: ref.domain, repository: ref.repository };
}

function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? 'latest';
}

function isAttestation(descriptor: Descriptor): boolean {
  return descriptor.annotations?.[ATTESTATION_TYPE_KEY] === ATTESTATION_TYPE;
}

type RawPlatform = {
  os?: string;
  architecture?: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
};

/** Known platform keys in a fixed order (deterministic bytes), values as written. */
function orderedPlatform(raw: RawPlatform, platform: Platform): OciPlatform {
  const out: OciPlatform = {
    architecture: raw.architecture ?? platform.architecture,
    os: raw.os ?? platform.os,
  };
  if (raw['os.version']) out['os.version'] = raw['os.version'];
  if (raw['os.features']?.length) out['os.features'] = [...raw['os.features']];
  if (raw.variant) out.variant = raw.variant;
  return out;
}

async function platformOfImage(
  client: RegistryClient,
  repo: Repository,
  manifestBytes: Buffer,
  what: string,
): Promise<{ platform: Platform; ociPlatform: OciPlatform }> {
  const manifest = JSON.parse(manifestBytes.toString('utf8')) as ImageManifest;
  if (!manifest.config?.digest) throw new StitchError(`${what}: manifest has no config`);
  const config = JSON.parse(
    (await client.getBlobBytes(repo, manifest.config.digest)).toString('utf8'),
  ) as RawPlatform;
  try {
    const platform = platformFromOci(config);
    return { platform, ociPlatform: orderedPlatform(config, platform) };
  } catch (err) {
    throw new StitchError(
      `${what}: config ${manifest.config.digest} has no usable platform (${(err as Error).message})`,
    );
  }
}

/** Read every source and list the index entries it contributes. */
export async function resolveSources(
  client: RegistryClient,
  sources: readonly StitchSource[],
): Promise<IndexEntry[]> {
  const perSource = await Promise.all(
    sources.map(async ({ ref, platform: wanted }): Promise<IndexEntry[]> => {
      const repo = repoOf(ref);
      const what = formatReference(ref);
      const fetched = await client.getManifest(repo, manifestReference(ref));
      if (isImageManifestMediaType(fetched.mediaType)) {
        const { platform, ociPlatform } = await platformOfImage(client, repo, fetched.bytes, what);
        if (wanted && !platformsEqual(wanted, platform)) {
          throw new StitchError(
            `${what}: listed as ${formatPlatform(wanted)} but its config says ${formatPlatform(platform)}`,
            'failed_precondition',
          );
        }
        // A spec may say more than the config (a variant, os.features): the index says it too.
        return [
          {
            source: ref,
            repo,
            platform: wanted ? { ...platform, ...wanted } : platform,
            ociPlatform: wanted ? { ...ociPlatform, ...platformToOci(wanted) } : ociPlatform,
            descriptor: {
              mediaType: fetched.mediaType,
              digest: fetched.digest,
              size: fetched.bytes.length,
            },
          },
        ];
      }
      if (!isIndexMediaType(fetched.mediaType)) {
        throw new StitchError(
          `${what}: ${fetched.mediaType || 'unknown media type'} is neither an image manifest nor an index`,
        );
      }
      if (wanted) {
        throw new StitchError(
          `${what}: is an index; a platform can only be given for a single image`,
        );
      }
      const index = JSON.parse(fetched.bytes.toString('utf8')) as ImageIndex;
      return Promise.all(
        (index.manifests ?? []).map(async (child): Promise<IndexEntry> => {
          const descriptor: Descriptor = {
            mediaType: child.mediaType,
            digest: child.digest,
            size: child.size,
            ...(child.annotations ? { annotations: child.annotations } : {}),
          };
          if (isAttestation(child)) {
            return {
              source: ref,
              repo,
              descriptor,
              attestationFor: child.annotations?.[ATTESTATION_DIGEST_KEY],
            };
          }
          if (!isImageManifestMediaType(child.mediaType)) {
            throw new StitchError(
              `${what}: child ${child.digest} is ${child.mediaType}; nested indexes are not supported`,
            );
          }
          if (child.platform) {
            const platform = platformFromOci(child.platform);
            const ociPlatform = orderedPlatform(child.platform, platform);
            return { source: ref, repo, descriptor, platform, ociPlatform };
          }
          const childManifest = await client.getManifest(repo, child.digest);
          const found = await platformOfImage(
            client,
            repo,
            childManifest.bytes,
            `${what} child ${child.digest}`,
          );
          return { source: ref, repo, descriptor, ...found };
        }),
      );
    }),
  );
  return perSource.flat();
}

function sortedObject(obj: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(obj).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** The index bytes for `entries` (pure: same inputs, same bytes). */
export function buildIndex(entries: readonly IndexEntry[], options: BuildIndexOptions): IndexPlan {
  const images = entries.filter((e) => e.platform);
  if (images.length === 0)
    throw new StitchError('no image to stitch: the sources hold only attestations');
  for (let i = 0; i < images.length; i++) {
    for (let j = i + 1; j < images.length; j++) {
      const a = images[i] as IndexEntry & { platform: Platform };
      const b = images[j] as IndexEntry & { platform: Platform };
      if (platformsEqual(a.platform, b.platform)) {
        throw new StitchError(
          `platform ${formatPlatform(a.platform)} comes from two sources: ${formatReference(a.source)} (${a.descriptor.digest}) and ${formatReference(b.source)} (${b.descriptor.digest})`,
        );
      }
    }
  }
  const imageDigests = new Set(images.map((e) => e.descriptor.digest));
  // An attestation is kept only with its image, and only once.
  const seen = new Set<string>();
  const attestations = options.attestations
    ? entries.filter((e) => {
        if (e.platform || !e.attestationFor || !imageDigests.has(e.attestationFor)) return false;
        if (seen.has(e.descriptor.digest)) return false;
        seen.add(e.descriptor.digest);
        return true;
      })
    : [];
  const children = [...images, ...attestations];
  const allDocker = children.every((e) => e.descriptor.mediaType === DOCKER_MANIFEST);
  if (options.format === 'docker' && !allDocker) {
    const odd = children.find((e) => e.descriptor.mediaType !== DOCKER_MANIFEST);
    throw new StitchError(
      `--format docker needs Docker v2 schema 2 manifests only; ${odd ? `${formatReference(odd.source)} (${odd.descriptor.digest}) is ${odd.descriptor.mediaType}${odd.attestationFor ? ', an attestation (use --no-attestations)' : ''}` : ''}`,
    );
  }
  const docker = options.format === 'docker' || (options.format === 'auto' && allDocker);
  if (docker && Object.keys(options.annotations).length > 0) {
    throw new StitchError('index annotations need an OCI index: use --format oci');
  }
  const mediaType = docker ? DOCKER_LIST : OCI_INDEX;
  const index = {
    schemaVersion: 2,
    mediaType,
    manifests: children.map((e) => ({
      mediaType: e.descriptor.mediaType,
      digest: e.descriptor.digest,
      size: e.descriptor.size,
      platform: e.platform
        ? orderedPlatform(e.ociPlatform ?? {}, e.platform)
        : { architecture: 'unknown', os: 'unknown' },
      ...(e.descriptor.annotations ? { annotations: sortedObject(e.descriptor.annotations) } : {}),
    })),
    ...(Object.keys(options.annotations).length
      ? { annotations: sortedObject(options.annotations) }
      : {}),
  };
  const bytes = Buffer.from(JSON.stringify(index, null, 2));
  return { mediaType, bytes, digest: sha256Digest(bytes), entries: children };
}

/** Run `jobs` with at most `limit` in flight. */
async function inParallel<T>(
  items: readonly T[],
  limit: number,
  job: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next++] as T;
      await job(item);
    }
  });
  await Promise.all(workers);
}

/** Make one image (or attestation) manifest and its blobs present in `to`. */
export async function copyImage(
  client: RegistryClient,
  from: Repository,
  to: Repository,
  descriptor: Descriptor,
): Promise<'exists' | 'copied'> {
  // In one registry, whether `to` has it already is asked while the blobs are
  // mounted: a mount of a blob the repository has is harmless, and a round trip
  // saved. Across registries blobs are copied, so the answer comes first.
  const present = client.headManifest(to, descriptor.digest);
  if (from.domain !== to.domain) {
    if (await present) return 'exists';
  } else {
    present.catch(() => undefined);
  }
  const fetched = await client.getManifest(from, descriptor.digest);
  const manifest = JSON.parse(fetched.bytes.toString('utf8')) as ImageManifest;
  const blobs = [manifest.config, ...(manifest.layers ?? [])].filter((d): d is Descriptor =>
    Boolean(d?.digest),
  );
  await inParallel(blobs, 4, async (blob) => {
    await client.copyBlob(from, to, blob);
  });
  if (await present) return 'exists';
  await client.putManifest(to, descriptor.digest, fetched.bytes, fetched.mediaType);
  return 'copied';
}

export interface PublishOptions {
  /** Checks an image before any tag moves; throws to refuse the stitch. */
  verifyImage?: (entry: IndexEntry & { platform: Platform }, repo: Repository) => Promise<void>;
  onEvent?: (event: {
    kind: 'child-copied' | 'child-present' | 'verified' | 'tagged';
    detail: string;
  }) => void;
  /** Parallel child copies and checks (default 8). */
  concurrency?: number;
}

/**
 * Put the index under every target tag. First every image is verified (in
 * its source repository), then every child is made present in every target
 * repository; only then are tags moved. A tag points at the new index
 * when the registry's answer to its PUT names the index's digest, or else
 * when reading the tag back gives it.
 */
export async function publishIndex(
  client: RegistryClient,
  plan: IndexPlan,
  targets: readonly ImageReference[],
  options: PublishOptions = {},
): Promise<void> {
  if (targets.length === 0) throw new StitchError('no target tag given (-t)');
  const concurrency = options.concurrency ?? 8;
  const repos = new Map<string, Repository>();
  for (const target of targets) {
    if (target.digest)
      throw new StitchError(`target ${formatReference(target)} must be a tag, not a digest`);
    repos.set(`${target.domain}/${target.repository}`, repoOf(target));
  }
  const work = [...repos.values()].flatMap((repo) =>
    plan.entries.map((entry) => ({ repo, entry })),
  );
  // Verify first, from the sources: a refused stitch pushes nothing at all.
  if (options.verifyImage) {
    const verify = options.verifyImage;
    const images = plan.entries.filter((e): e is IndexEntry & { platform: Platform } =>
      Boolean(e.platform),
    );
    await inParallel(images, Math.min(4, concurrency), async (entry) => {
      await verify(entry, entry.repo);
      options.onEvent?.({
        kind: 'verified',
        detail: `${formatPlatform(entry.platform)} ${entry.descriptor.digest}`,
      });
    });
  }
  await inParallel(work, concurrency, async ({ repo, entry }) => {
    const sameRepo = repo.domain === entry.repo.domain && repo.repository === entry.repo.repository;
    let result: 'exists' | 'copied';
    if (!sameRepo) {
      result = await copyImage(client, entry.repo, repo, entry.descriptor);
    } else if (await client.headManifest(repo, entry.descriptor.digest)) {
      result = 'exists';
    } else {
      throw new StitchError(
        `${formatReference(entry.source)}: ${entry.descriptor.digest} vanished from ${repo.domain}/${repo.repository}`,
        'failed_precondition',
      );
    }
    options.onEvent?.({
      kind: result === 'copied' ? 'child-copied' : 'child-present',
      detail: `${repo.domain}/${repo.repository}@${entry.descriptor.digest}`,
    });
  });
  // Each tag's PUT stores the index with it. The registry's answer says what
  // it stored; one that does not say is asked where the tag points now.
  await Promise.all(
    targets.map(async (target) => {
      const repo = repoOf(target);
      const tag = target.tag ?? 'latest';
      const { confirmed } = await client.putManifest(repo, tag, plan.bytes, plan.mediaType);
      const now = confirmed ? { digest: plan.digest } : await client.headManifest(repo, tag);
      if (now?.digest !== plan.digest) {
        throw new StitchError(
          `${formatReference(target)} points at ${now?.digest ?? 'nothing'} after the push, not ${plan.digest}`,
          'failed_precondition',
        );
      }
      options.onEvent?.({ kind: 'tagged', detail: formatReference(target) });
    }),
  );
}
