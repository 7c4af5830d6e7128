/**
 * --check-reproducible: every platform is built a second time (a check job,
 * on another agent when one can build it, else on the same one without
 * cache), and before anything is stitched the two pushed manifests must be
 * the same digest. When they are not, the two images are compared file by
 * file (src/oci/image-diff.ts) and the build fails naming what differs; no
 * tag moves.
 */
import { JobRole } from '../gen/braid/v1/build_pb.js';
import { JobState } from '../gen/braid/v1/common_pb.js';
import { BraidError, errorLine } from '../errors.js';
import { diffImages, formatImageDiff, type ImageDiffRegistry } from '../oci/image-diff.js';
import { formatPlatform, platformsEqual } from '../oci/platform.js';
import type { Repository } from '../oci/registry.js';
import type { JobRecord } from './store.js';

/** Differences named in the build's error; the coordinator log has them all (up to the diff's bound). */
const DIFFERENCES_IN_ERROR = 3;

export function isCheckJob(job: Pick<JobRecord, 'role'>): boolean {
  return job.role === JobRole.REPRODUCIBILITY_CHECK;
}

/** `linux/amd64`, or `linux/amd64 (reproducibility check)` for a check job. */
export function jobLabel(job: Pick<JobRecord, 'platform' | 'role'>): string {
  const platform = formatPlatform(job.platform);
  return isCheckJob(job) ? `${platform} (reproducibility check)` : platform;
}

/** One queued check job per image job, numbered after them. */
export function checkJobs(buildId: string, images: readonly JobRecord[]): JobRecord[] {
  return images.map((image, i) => ({
    ...image,
    id: `${buildId}-${images.length + i + 1}`,
    state: JobState.QUEUED,
    role: JobRole.REPRODUCIBILITY_CHECK,
  }));
}

/** The image job a check job is compared with (same build, same platform). */
export function imageJobOf(check: JobRecord, jobs: readonly JobRecord[]): JobRecord | undefined {
  return jobs.find((j) => !isCheckJob(j) && platformsEqual(j.platform, check.platform));
}

/** The build does not reproduce: one line for the build's error. */
export class NotReproducibleError extends BraidError {
  constructor(message: string) {
    super('failed_precondition', message);
  }
}

/**
 * Compares each platform's two images; resolves when all are identical.
 * `log` gets every difference found, one line each; the error names the
 * platforms, the agents and the first differences.
 */
export async function compareBuilds(
  registry: ImageDiffRegistry,
  repository: Repository,
  jobs: readonly JobRecord[],
  log: (line: string) => void,
): Promise<void> {
  const failures: string[] = [];
  for (const check of jobs.filter(isCheckJob)) {
    const image = imageJobOf(check, jobs);
    const a = image?.image?.digest;
    const b = check.image?.digest;
    if (!image || !a || !b) continue;
    const platform = formatPlatform(check.platform);
    const who = (job: JobRecord) => `agent ${job.agent}${job.emulated ? ' (QEMU)' : ''}`;
    if (a === b) {
      log(`${platform} is reproducible: ${who(image)} and ${who(check)} both built ${a}`);
      continue;
    }
    let lines: string[];
    try {
      const diff = await diffImages(
        registry,
        { ...repository, digest: a },
        { ...repository, digest: b },
      );
      lines = formatImageDiff(
        diff,
        image.agent === check.agent
          ? [`${image.agent}, first build`, `${check.agent}, second build`]
          : [image.agent, check.agent],
      );
    } catch (err) {
      lines = [`the two images could not be compared: ${errorLine(err)}`];
    }
    log(`${platform} is not reproducible: ${who(image)} built ${a}, ${who(check)} built ${b}`);
    for (const line of lines) log(`${platform}: ${line}`);
    // Files first: the config's diff_ids and the layer digests only follow from them.
    const isFile = (line: string) => !/^(manifest|config|layer) /.test(line);
    const ranked = [...lines.filter(isFile), ...lines.filter((line) => !isFile(line))];
    const shown = ranked.slice(0, DIFFERENCES_IN_ERROR).join('; ');
    const more =
      lines.length > DIFFERENCES_IN_ERROR
        ? ` (and ${lines.length - DIFFERENCES_IN_ERROR} more lines in braid logs)`
        : '';
    failures.push(
      `${platform} is not reproducible (${who(image)}: ${a.slice(0, 19)}…, ${who(check)}: ${b.slice(0, 19)}…): ${shown}${more}`,
    );
  }
  if (failures.length > 0) throw new NotReproducibleError(failures.join('; '));
}
