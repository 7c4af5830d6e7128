/**
 * The `--metadata-file` JSON, with buildx's keys where buildx has one so CI
 * steps written for `docker buildx build --metadata-file` keep working:
 *
 *   {
 *     "image.name": "reg/app:1,reg/app:latest",
 *     "containerimage.digest": "sha256:<index>",
 *     "containerimage.descriptor": { "mediaType": "...index...", "digest": "sha256:<index>", "size": 856 },
 *     "braid.build.id": "b-…",
 *     "braid.request.id": "9f2c…",
 *     "platforms": [
 *       { "platform": "linux/arm64", "digest": "sha256:…", "attestation": "sha256:…",
 *         "agent": "a2", "emulated": false, "durationMs": 41230 }
 *     ]
 *   }
 *
 * The containerimage keys are absent when the build produced no index.
 * buildx's `buildx.build.provenance/<platform>` holds the provenance
 * predicate itself, read from BuildKit's build record; braid's is in the
 * registry, so the file names its attestation manifest by digest instead.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { JobRole, type Build } from '../gen/braid/v1/build_pb.js';
import { BraidError } from '../errors.js';
import { descriptorJson, type DescriptorJson } from './progress/build-view.js';
import { platformName } from './progress/names.js';

export interface PlatformMetadata {
  platform: string;
  /** The platform's image manifest digest; null when its job produced none. */
  digest: string | null;
  /** Its provenance attestation manifest's digest in the index; null when none was written. */
  attestation: string | null;
  agent: string;
  emulated: boolean;
  durationMs: number | null;
}

export interface BuildMetadata {
  'image.name': string;
  'containerimage.digest'?: string;
  'containerimage.descriptor'?: DescriptorJson;
  'braid.build.id': string;
  /** The id the coordinator's and agents' log lines about this build carry. */
  'braid.request.id'?: string;
  platforms: PlatformMetadata[];
}

export function buildMetadata(build: Build): BuildMetadata {
  const metadata: BuildMetadata = {
    'image.name': (build.spec?.tags ?? []).join(','),
    'braid.build.id': build.id,
    ...(build.requestId ? { 'braid.request.id': build.requestId } : {}),
    // The platforms of the index: a reproducibility check's second image is not one.
    platforms: build.jobs
      .filter((job) => job.role !== JobRole.REPRODUCIBILITY_CHECK)
      .map((job) => ({
        platform: platformName(job.platform),
        digest: job.image?.digest || null,
        attestation: job.attestation?.digest || null,
        agent: job.agent,
        emulated: job.emulated,
        durationMs: job.durationMs > 0n ? Number(job.durationMs) : null,
      })),
  };
  const index = descriptorJson(build.index);
  if (index) {
    metadata['containerimage.digest'] = index.digest;
    metadata['containerimage.descriptor'] = index;
  }
  return metadata;
}

/**
 * Writes the file atomically: a temporary file next to it, flushed, then
 * renamed over it, so a reader never sees half a file.
 */
export async function writeMetadataFile(path: string, metadata: BuildMetadata): Promise<void> {
  const temporary = join(
    dirname(path),
    `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  );
  try {
    const file = await open(temporary, 'wx', 0o644);
    try {
      await file.writeFile(`${JSON.stringify(metadata, null, 2)}\n`);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, path);
  } catch (err) {
    await rm(temporary, { force: true });
    const reason = err instanceof Error ? err.message : String(err);
    throw new BraidError('failed_precondition', `cannot write metadata file ${path}: ${reason}`, {
      cause: err,
    });
  }
}
