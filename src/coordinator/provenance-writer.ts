/**
 * A build's SLSA provenance, one attestation per platform, written at the
 * stitch: the request (the stored spec), the builder (what the job's agent
 * reported of its engine, and the placement: agent, emulation, attempt) and
 * the resolved base images become an in-toto statement, pushed by digest as
 * an attestation manifest beside the platform's image and listed in the
 * index after it, as BuildKit stores provenance. Deterministic: a stitch
 * repeated after a restart pushes the same bytes.
 */
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { ProvenanceMode, type BuildSpec } from '../gen/braid/v1/build_pb.js';
import { BraidError } from '../errors.js';
import { attestationManifest } from '../oci/attestation-manifest.js';
import { OCI_MANIFEST } from '../oci/media-types.js';
import { formatPlatform, type Platform } from '../oci/platform.js';
import { provenanceStatement, type ProvenanceStepInput } from '../oci/provenance.js';
import { formatReference, type ImageReference } from '../oci/reference.js';
import type { RegistryClient, Repository } from '../oci/registry.js';
import type { IndexEntry } from '../oci/stitch.js';
import { fromProtoPlatform } from '../rpc/platform.js';
import { BRAID_VERSION } from '../version.js';
import type { JobRecord } from './store.js';

export interface ProvenanceSettings {
  /** runDetails.builder.id: a URI naming this farm (`--builder-id`). */
  builderId: () => string;
  /** The coordinator as the statement names it (its address). */
  coordinator: () => string;
}

export interface ProvenanceBuild {
  id: string;
  requestId: string;
  spec: BuildSpec;
  platforms: readonly Platform[];
  tags: readonly ImageReference[];
}

/** Whether the build asked for provenance (unspecified is buildx's default: min). */
export function provenanceMode(spec: BuildSpec): 'min' | 'max' | undefined {
  if (spec.provenance === ProvenanceMode.DISABLED) return undefined;
  return spec.provenance === ProvenanceMode.MAX ? 'max' : 'min';
}

/**
 * Writes the attestation of one succeeded job into `repo` (where its image
 * is) and returns its index entry; the caller lists it after the images.
 */
export async function writeProvenance(
  registry: RegistryClient,
  repo: Repository,
  build: ProvenanceBuild,
  job: JobRecord,
  settings: ProvenanceSettings,
): Promise<IndexEntry> {
  const mode = provenanceMode(build.spec);
  const image = job.image;
  if (!mode || !image) throw new BraidError('internal', `no provenance to write for ${job.id}`);
  const facts = job.facts;
  const steps: ProvenanceStepInput[] = (facts?.steps ?? []).map((step) => ({
    digest: step.digest,
    name: step.name,
    inputs: step.inputs,
    cached: step.cached,
    ...(step.startedAt && { startedOn: timestampDate(step.startedAt) }),
    ...(step.finishedAt && { finishedOn: timestampDate(step.finishedAt) }),
    ...(step.error && { error: step.error }),
  }));
  const started = facts?.startedAt ? timestampDate(facts.startedAt) : job.startedAt;
  const finished = facts?.finishedAt ? timestampDate(facts.finishedAt) : job.finishedAt;
  const statement = provenanceStatement({
    mode,
    subject: {
      digest: image.digest,
      platform: job.platform,
      names: build.tags.map(formatReference),
    },
    request: {
      contextDigest: build.spec.contextDigest,
      dockerfile: { path: build.spec.dockerfile || 'Dockerfile' },
      ...(build.spec.target && { target: build.spec.target }),
      // As BuildKit's min mode: build arg and label values only in max (they may be private).
      // The epoch reaches BuildKit as a build arg, as buildx passes it: recorded as one.
      ...(mode === 'max' && {
        buildArgs: {
          ...build.spec.buildArgs,
          ...(build.spec.sourceDateEpoch !== undefined && {
            SOURCE_DATE_EPOCH: String(build.spec.sourceDateEpoch),
          }),
        },
        labels: build.spec.labels,
      }),
      platforms: build.platforms,
      tags: build.tags.map(formatReference),
      secretIds: build.spec.secretIds,
      sshIds: build.spec.sshIds,
      noCache: build.spec.noCache,
      ...(build.spec.network && { network: build.spec.network }),
      addHosts: build.spec.addHosts,
    },
    builder: {
      id: settings.builderId(),
      braidVersion: BRAID_VERSION,
      coordinator: settings.coordinator(),
      agent: { name: job.agent, host: facts?.host ?? '' },
      engine: { id: facts?.engineId ?? '', version: facts?.engineVersion ?? '' },
      ...(facts?.kernel && { kernel: facts.kernel }),
      builderPlatform: facts?.builderPlatform
        ? fromProtoPlatform(facts.builderPlatform)
        : job.platform,
      emulated: job.emulated,
      ...(job.emulated && {
        qemu: {
          handler: job.emulator,
          ...(facts?.emulatorVersion && { version: facts.emulatorVersion }),
        },
      }),
      attempt: job.attempt,
    },
    run: {
      invocationId: build.id,
      ...(build.requestId && { requestId: build.requestId }),
      jobId: job.id,
      startedOn: started ?? new Date(0),
      finishedOn: finished ?? started ?? new Date(0),
    },
    baseImages: (facts?.baseImages ?? []).map((base) => ({ ref: base.ref, digest: base.digest })),
    ...(mode === 'max' && { steps }),
  });
  const attestation = attestationManifest(statement, {
    digest: image.digest,
    size: Number(image.sizeBytes),
    mediaType: image.mediaType,
  });
  for (const blob of attestation.blobs) {
    await registry.uploadBlob(repo, blob.digest, blob.size, blob.bytes);
  }
  await registry.putManifest(
    repo,
    attestation.manifest.digest,
    attestation.manifest.bytes,
    OCI_MANIFEST,
  );
  return {
    source: {
      domain: repo.domain,
      repository: repo.repository,
      digest: attestation.manifest.digest,
    },
    repo,
    descriptor: attestation.descriptor,
    attestationFor: image.digest,
  };
}

/** One line for the build's log: which platform's provenance went where. */
export function provenanceLine(job: JobRecord, entry: IndexEntry): string {
  return `provenance of ${formatPlatform(job.platform)}: ${entry.descriptor.digest}`;
}
