/**
 * What `braid verify` reads from a registry: for each platform image of an
 * index (or the one image of a single-platform manifest), the arch guard's
 * verdict and the provenance BuildKit's attestation storage keeps beside it
 * (an `unknown/unknown` manifest annotated `vnd.docker.reference.digest`),
 * read and checked against the image's digest. Any image, not only braid's:
 * what the index or a statement lacks is reported as absent, never guessed.
 *
 * Nothing here decides whether a verification passed: it reports outcomes
 * (`passed`, `failed`, `absent`, `invalid`) and the CLI applies the user's
 * requirements to them.
 */
import { BraidError, errorLine } from '../errors.js';
import { IN_TOTO_MEDIA_TYPE, PREDICATE_TYPE_ANNOTATION } from './attestation-manifest.js';
import { ArchMismatchError } from './errors.js';
import type { ArchVerdict } from './image-verifier.js';
import {
  isImageManifestMediaType,
  isIndexMediaType,
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
} from './media-types.js';
import { formatPlatform, platformFromOci, platformMatches, type Platform } from './platform.js';
import { SLSA_PROVENANCE_V1 } from './provenance.js';
import {
  MAX_READ_BYTES,
  SLSA_PROVENANCE_V02,
  provenanceCovers,
  readProvenance,
  type ProvenanceReading,
} from './provenance-reader.js';
import { formatReference, type ImageReference } from './reference.js';
import type { RegistryClient, Repository } from './registry.js';
import { ATTESTATION_DIGEST_KEY, ATTESTATION_TYPE, ATTESTATION_TYPE_KEY } from './stitch.js';

export type ArchOutcome =
  | { state: 'passed'; remembered: boolean; checked: number; skipped: string[] }
  | { state: 'skipped'; detail: string }
  | { state: 'failed'; detail: string };

export type ProvenanceOutcome =
  | { state: 'absent'; detail: string }
  | { state: 'invalid'; attestation: string; detail: string }
  | {
      state: 'present';
      /** The attestation manifest's digest. */
      attestation: string;
      /** The in-toto layer's digest. */
      statement: string;
      reading: ProvenanceReading;
    };

/**
 * How the platform was built: braid's `emulated`; else, for other
 * producers, `native` when the builder's platform is the image's (no QEMU
 * can have run); else absent.
 */
export type BuildOutcome =
  | { state: 'native'; source: 'provenance' | 'builderPlatform'; builderPlatform?: string }
  | {
      state: 'emulated';
      qemu?: { handler: string; version?: string };
      builderPlatform?: string;
    }
  | { state: 'absent'; builderPlatform?: string };

export interface PlatformVerification {
  /** As the index (or the config) writes it, e.g. `linux/arm64/v8`. */
  platform: string;
  digest: string;
  mediaType: string;
  arch: ArchOutcome;
  provenance: ProvenanceOutcome;
  build: BuildOutcome;
}

export interface ImageVerification {
  reference: string;
  digest: string;
  mediaType: string;
  /** `manifest`: a single-platform image, verified as its one platform. */
  kind: 'index' | 'manifest';
  platforms: PlatformVerification[];
  /** Attestation manifests of the index that describe no image in it. */
  orphans: { attestation: string; refersTo?: string }[];
}

/** The guard on one image (archGuardVerifier's function); throws ArchMismatchError on a mismatch. */
export type ArchCheck = (
  image: { descriptor: Descriptor; platform: Platform },
  repo: Repository,
) => Promise<ArchVerdict>;

export interface IndexVerifierOptions {
  archCheck: ArchCheck;
  /** Statements larger than this are refused unread (default MAX_READ_BYTES). */
  maxStatementBytes?: number;
  /** Platforms read at once (default 4). */
  concurrency?: number;
}

// ---------------------------------------------------------------------------
// Pure: the index's shape

export interface IndexImage {
  descriptor: Descriptor;
  /** Attestation manifests whose `vnd.docker.reference.digest` names this image. */
  attestations: Descriptor[];
}

export function isAttestationDescriptor(d: Descriptor): boolean {
  return d.annotations?.[ATTESTATION_TYPE_KEY] === ATTESTATION_TYPE;
}

/** The index's images, each with the attestation manifests that name it, and those that name none. */
export function pairAttestations(index: ImageIndex): {
  images: IndexImage[];
  orphans: ImageVerification['orphans'];
} {
  const manifests = Array.isArray(index.manifests) ? index.manifests : [];
  const images: IndexImage[] = manifests
    .filter((d) => !isAttestationDescriptor(d))
    .map((descriptor) => ({ descriptor, attestations: [] }));
  const orphans: ImageVerification['orphans'] = [];
  for (const attestation of manifests.filter(isAttestationDescriptor)) {
    const refersTo = attestation.annotations?.[ATTESTATION_DIGEST_KEY];
    const image = images.find((i) => i.descriptor.digest === refersTo);
    if (image) image.attestations.push(attestation);
    else {
      orphans.push({
        attestation: attestation.digest,
        ...(refersTo !== undefined && refersTo !== '' && { refersTo }),
      });
    }
  }
  return { images, orphans };
}

const PROVENANCE_TYPES = new Set([SLSA_PROVENANCE_V1, SLSA_PROVENANCE_V02]);

/**
 * The layers of an attestation manifest that hold provenance: in-toto
 * statements annotated with an SLSA provenance predicate type, or with no
 * predicate type at all (then the statement itself must be provenance).
 * SBOMs and other predicates are left alone.
 */
export function provenanceLayers(manifest: ImageManifest): Descriptor[] {
  const layers = Array.isArray(manifest.layers) ? manifest.layers : [];
  return layers.filter((layer) => {
    if (layer.mediaType !== IN_TOTO_MEDIA_TYPE) return false;
    const predicateType = layer.annotations?.[PREDICATE_TYPE_ANNOTATION];
    return predicateType === undefined || PROVENANCE_TYPES.has(predicateType);
  });
}

/** The index's way of writing a platform: `os/arch[/variant]`, `(os.version)` when given. */
export function writtenPlatform(p: Descriptor['platform']): string {
  if (!p) return 'unknown';
  const text = [p.os, p.architecture, p.variant].filter(Boolean).join('/') || 'unknown';
  return p['os.version'] ? `${text} (${p['os.version']})` : text;
}

/** How the platform was built, from its provenance (see BuildOutcome). */
export function buildOutcome(
  platform: Platform | undefined,
  provenance: ProvenanceOutcome,
): BuildOutcome {
  if (provenance.state !== 'present') return { state: 'absent' };
  const { reading } = provenance;
  const builderPlatform = reading.builderPlatform;
  const withBuilder = builderPlatform !== undefined ? { builderPlatform } : {};
  if (reading.emulated === true) {
    return {
      state: 'emulated',
      ...(reading.qemu !== undefined && { qemu: reading.qemu }),
      ...withBuilder,
    };
  }
  if (reading.emulated === false) return { state: 'native', source: 'provenance', ...withBuilder };
  if (builderPlatform !== undefined && platform !== undefined) {
    let builder: Platform | undefined;
    try {
      builder = platformFromOci(splitPlatform(builderPlatform));
    } catch {
      builder = undefined;
    }
    if (builder && platformMatches(platform, builder) && platformMatches(builder, platform)) {
      return { state: 'native', source: 'builderPlatform', builderPlatform };
    }
  }
  return { state: 'absent', ...withBuilder };
}

function splitPlatform(text: string): { os?: string; architecture?: string; variant?: string } {
  const [os, architecture, variant] = text.split('/');
  return { os, architecture, ...(variant !== undefined && { variant }) };
}

// ---------------------------------------------------------------------------
// Reading the registry

/** Reads `ref` and verifies every platform image it holds. */
export async function verifyReference(
  client: RegistryClient,
  ref: ImageReference,
  options: IndexVerifierOptions,
): Promise<ImageVerification> {
  const repo: Repository = { domain: ref.domain, repository: ref.repository };
  const fetched = await client.getManifest(repo, ref.digest ?? ref.tag ?? 'latest');
  const base = {
    reference: formatReference(ref),
    digest: fetched.digest,
    mediaType: fetched.mediaType,
  };
  const document = parseJson(fetched.bytes, `${formatReference(ref)}: the manifest`);
  if (isIndexMediaType(fetched.mediaType)) {
    const { images, orphans } = pairAttestations(document as unknown as ImageIndex);
    const platforms = await inParallel(images, options.concurrency ?? 4, (image) =>
      verifyIndexImage(client, repo, image, options),
    );
    return { ...base, kind: 'index', platforms, orphans };
  }
  if (!isImageManifestMediaType(fetched.mediaType)) {
    throw new VerifyInputError(
      `${formatReference(ref)} is a ${fetched.mediaType}, neither an image index nor an image manifest`,
    );
  }
  const one = await verifySingleManifest(
    client,
    repo,
    { mediaType: fetched.mediaType, digest: fetched.digest, size: fetched.bytes.length },
    document as unknown as ImageManifest,
    options,
  );
  return { ...base, kind: 'manifest', platforms: [one], orphans: [] };
}

async function verifyIndexImage(
  client: RegistryClient,
  repo: Repository,
  image: IndexImage,
  options: IndexVerifierOptions,
): Promise<PlatformVerification> {
  const { descriptor } = image;
  let platform: Platform | undefined;
  let platformError = '';
  try {
    platform = platformFromOci(descriptor.platform ?? {});
  } catch (err) {
    platformError = errorLine(err);
  }
  const archCheck: Promise<ArchOutcome> = isIndexMediaType(descriptor.mediaType)
    ? Promise.resolve({ state: 'skipped', detail: 'a nested index is not an image' })
    : platform === undefined
      ? Promise.resolve({ state: 'skipped', detail: `no platform to check: ${platformError}` })
      : runArchCheck(options.archCheck, descriptor, platform, repo);
  const [arch, provenance] = await Promise.all([
    archCheck,
    readAttestedProvenance(client, repo, descriptor.digest, image.attestations, options),
  ]);
  return {
    platform: writtenPlatform(descriptor.platform),
    digest: descriptor.digest,
    mediaType: descriptor.mediaType,
    arch,
    provenance,
    build: buildOutcome(platform, provenance),
  };
}

async function verifySingleManifest(
  client: RegistryClient,
  repo: Repository,
  descriptor: Descriptor,
  manifest: ImageManifest,
  options: IndexVerifierOptions,
): Promise<PlatformVerification> {
  const configDigest = manifest.config?.digest;
  if (typeof configDigest !== 'string') {
    throw new VerifyInputError(`image manifest ${descriptor.digest} has no config`);
  }
  const config = parseJson(
    await client.getBlobBytes(repo, configDigest),
    `config ${configDigest}`,
  ) as Parameters<typeof platformFromOci>[0];
  let platform: Platform | undefined;
  let arch: ArchOutcome;
  try {
    platform = platformFromOci(config);
    arch = await runArchCheck(options.archCheck, descriptor, platform, repo);
  } catch (err) {
    arch = { state: 'skipped', detail: `no platform to check: ${errorLine(err)}` };
  }
  const provenance: ProvenanceOutcome = {
    state: 'absent',
    detail: 'a single-platform manifest has no index to list attestations in',
  };
  return {
    platform: platform ? formatPlatform(platform) : writtenPlatform(undefined),
    digest: descriptor.digest,
    mediaType: descriptor.mediaType,
    arch,
    provenance,
    build: buildOutcome(platform, provenance),
  };
}

async function runArchCheck(
  check: ArchCheck,
  descriptor: Descriptor,
  platform: Platform,
  repo: Repository,
): Promise<ArchOutcome> {
  try {
    const verdict = await check({ descriptor, platform }, repo);
    if (!verdict.remembered && verdict.checked === 0) {
      return { state: 'skipped', detail: verdict.skipped[0] ?? 'nothing was checkable' };
    }
    return { state: 'passed', ...verdict };
  } catch (err) {
    if (err instanceof ArchMismatchError) return { state: 'failed', detail: err.message };
    return { state: 'failed', detail: `could not be read: ${errorLine(err)}` };
  }
}

/**
 * The provenance of the image `subject` from its attestation manifests: the
 * first SLSA statement about it, or why there is none or it cannot be trusted.
 */
async function readAttestedProvenance(
  client: RegistryClient,
  repo: Repository,
  subject: string,
  attestations: readonly Descriptor[],
  options: IndexVerifierOptions,
): Promise<ProvenanceOutcome> {
  if (attestations.length === 0) {
    return { state: 'absent', detail: 'no attestation manifest in the index names this image' };
  }
  const maxBytes = options.maxStatementBytes ?? MAX_READ_BYTES;
  let present: ProvenanceOutcome | undefined;
  for (const attestation of attestations) {
    const where = `attestation ${attestation.digest}`;
    const invalid = (detail: string): ProvenanceOutcome => ({
      state: 'invalid',
      attestation: attestation.digest,
      detail: `${where}: ${detail}`,
    });
    let manifest: ImageManifest;
    try {
      const fetched = await client.getManifest(repo, attestation.digest);
      if (!isImageManifestMediaType(fetched.mediaType)) {
        return invalid(`is a ${fetched.mediaType}, not an image manifest`);
      }
      manifest = parseJson(fetched.bytes, 'the manifest') as unknown as ImageManifest;
    } catch (err) {
      return invalid(errorLine(err));
    }
    for (const layer of provenanceLayers(manifest)) {
      if (!Number.isFinite(layer.size) || layer.size > maxBytes) {
        return invalid(
          `statement ${layer.digest} is ${layer.size} bytes, more than the ${maxBytes} allowed`,
        );
      }
      let reading: ProvenanceReading;
      try {
        reading = readProvenance(await client.getBlobBytes(repo, layer.digest, maxBytes), {
          maxBytes,
        });
      } catch (err) {
        return invalid(`statement ${layer.digest}: ${errorLine(err)}`);
      }
      if (!provenanceCovers(reading, subject)) {
        const named = reading.subjects
          .flatMap((s) => Object.entries(s.digest).map(([a, h]) => `${a}:${h}`))
          .join(', ');
        return invalid(`statement ${layer.digest} is about ${named}, not ${subject}`);
      }
      present ??= {
        state: 'present',
        attestation: attestation.digest,
        statement: layer.digest,
        reading,
      };
    }
  }
  return (
    present ?? {
      state: 'absent',
      detail: `attestation ${attestations[0]?.digest ?? ''} holds no SLSA provenance statement`,
    }
  );
}

/** What the registry holds is not what verify reads (neither an index nor an image, not JSON). */
export class VerifyInputError extends BraidError {
  constructor(message: string) {
    super('failed_precondition', message);
  }
}

function parseJson(bytes: Buffer, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new VerifyInputError(`${what} is not JSON: ${errorLine(err)}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new VerifyInputError(`${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

async function inParallel<T, R>(
  items: readonly T[],
  limit: number,
  work: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await work(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
