/**
 * Builds, jobs and agents as JSON for `--output json` (status, builds,
 * agents, cancel): enums as lowercase names, platforms as strings, times as
 * ISO 8601, sizes and durations as numbers; absent values are null.
 */
import { timestampDate, type Timestamp } from '@bufbuild/protobuf/wkt';
import {
  JobRole,
  PlacementReason,
  ProvenanceMode,
  type AgentInfo,
  type Build,
  type Job,
} from '../../gen/braid/v1/build_pb.js';
import type { ImageDescriptor } from '../../gen/braid/v1/common_pb.js';
import { buildStateName, enumName, jobStateName, platformName } from './names.js';

/** An OCI descriptor as buildx writes `containerimage.descriptor`. */
export interface DescriptorJson {
  mediaType: string;
  digest: string;
  size: number;
}

export function descriptorJson(descriptor: ImageDescriptor | undefined): DescriptorJson | null {
  if (!descriptor?.digest) return null;
  return {
    mediaType: descriptor.mediaType,
    digest: descriptor.digest,
    size: Number(descriptor.sizeBytes),
  };
}

/** The provenance a build asked for: UNSPECIFIED (an older CLI) is buildx's default, min. */
export function provenanceName(mode: ProvenanceMode | undefined): 'disabled' | 'min' | 'max' {
  if (mode === ProvenanceMode.DISABLED) return 'disabled';
  return mode === ProvenanceMode.MAX ? 'max' : 'min';
}

export function isoTime(timestamp: Timestamp | undefined): string | null {
  return timestamp ? timestampDate(timestamp).toISOString() : null;
}

export function jobJson(job: Job) {
  return {
    id: job.id,
    platform: platformName(job.platform),
    /** `image`, or `reproducibility-check` for --check-reproducible's second build. */
    role: job.role === JobRole.REPRODUCIBILITY_CHECK ? 'reproducibility-check' : 'image',
    state: jobStateName(job.state),
    agent: job.agent || null,
    emulated: job.emulated,
    emulator: job.emulator || null,
    attempt: job.attempt,
    currentStep: job.currentStep || null,
    image: descriptorJson(job.image),
    /** The platform's provenance attestation manifest in the index (null until written, or when off). */
    attestation: descriptorJson(job.attestation),
    startedAt: isoTime(job.startedAt),
    finishedAt: isoTime(job.finishedAt),
    durationMs: job.durationMs > 0n ? Number(job.durationMs) : null,
    error: job.error || null,
    /** Why its agent: `only-capable`, `least-loaded` or `cache-affinity` (null while queued). */
    placementReason:
      job.placementReason === PlacementReason.UNSPECIFIED
        ? null
        : enumName(PlacementReason, job.placementReason),
    placementDetail: job.placementDetail || null,
  };
}

export function buildJson(build: Build) {
  const spec = build.spec;
  return {
    id: build.id,
    state: buildStateName(build.state),
    createdAt: isoTime(build.createdAt),
    finishedAt: isoTime(build.finishedAt),
    tags: spec?.tags ?? [],
    platforms: (spec?.platforms ?? []).map(platformName),
    contextDigest: spec?.contextDigest || null,
    dockerfile: spec?.dockerfile || 'Dockerfile',
    target: spec?.target || null,
    provenance: spec ? provenanceName(spec.provenance) : null,
    index: descriptorJson(build.index),
    error: build.error || null,
    requestId: build.requestId || null,
    jobs: build.jobs.map(jobJson),
  };
}

export function agentJson(agent: AgentInfo) {
  return {
    name: agent.name,
    version: agent.version,
    engineVersion: agent.engineVersion || null,
    engineId: agent.engineId || null,
    native: platformName(agent.nativePlatform) || null,
    emulated: agent.emulatedPlatforms.map((e) => ({
      platform: platformName(e.platform),
      handler: e.handler,
    })),
    running: agent.running,
    capacity: agent.capacity,
    labels: agent.labels,
    connectedAt: isoTime(agent.connectedAt),
    lastHeartbeat: isoTime(agent.lastHeartbeat),
  };
}
