import { timestampMs } from '@bufbuild/protobuf/wkt';
import { clientSettings } from '../../config/settings.js';
import { BuildService, BuildState, type Build } from '../../gen/braid/v1/build_pb.js';
import { BraidError } from '../../errors.js';
import { coordinatorClient } from '../client.js';
import { compile } from '../compile.js';
import { EXIT_FAILED } from '../exit.js';
import { buildJson, isoTime, provenanceName } from '../progress/build-view.js';
import { formatAge, formatDuration } from '../progress/format.js';
import { buildStateName, isBuildEnded, platformName } from '../progress/names.js';
import { platformRowsFromBuild, renderPlatformTable } from '../progress/platform-table.js';

/** The build's fields, one row per platform, where each job went, and each platform's provenance. */
export function describeBuild(build: Build, nowMs: number): string {
  const created = build.createdAt ? timestampMs(build.createdAt) : undefined;
  const finished = build.finishedAt ? timestampMs(build.finishedAt) : undefined;
  const fields: [string, string][] = [
    ['build', build.id],
    ['state', buildStateName(build.state)],
    [
      'created',
      created === undefined
        ? '-'
        : `${isoTime(build.createdAt)} (${formatAge(nowMs - created)} ago)`,
    ],
    [
      'finished',
      finished === undefined
        ? '-'
        : `${isoTime(build.finishedAt)}${created === undefined ? '' : ` (took ${formatDuration(finished - created)})`}`,
    ],
    ['platforms', (build.spec?.platforms ?? []).map(platformName).join(', ') || '-'],
    ['tags', build.spec?.tags.join(', ') || '-'],
    ['index', build.index?.digest || '-'],
    ['provenance', build.spec ? provenanceName(build.spec.provenance) : '-'],
    ['request', build.requestId || '-'],
  ];
  if (build.error) fields.push(['error', build.error.split('\n')[0] ?? '']);
  const lines = fields.map(([key, value]) => `${key.padEnd(10)} ${value}`);
  const rows = platformRowsFromBuild(build, nowMs);
  const table = rows.length > 0 ? `\n${renderPlatformTable(rows, { detail: true })}` : '';
  // Why each job went where it went (cache affinity, least loaded, only capable).
  const placements = build.jobs
    .filter((job) => job.placementDetail && job.agent)
    .map(
      (job) => `placed     ${platformName(job.platform)} on ${job.agent}: ${job.placementDetail}`,
    );
  // The attestation manifest in the index that holds each platform's provenance.
  const attestations = build.jobs
    .filter((job) => job.attestation?.digest)
    .map((job) => `provenance ${platformName(job.platform)} ${job.attestation?.digest ?? ''}`);
  const notes = [...placements, ...attestations];
  const noted = notes.length > 0 ? `\n${notes.join('\n')}\n` : '';
  return `${lines.join('\n')}\n${table}${noted}`;
}

/**
 * Prints the build whatever its state, and exits as `braid logs` does: 0
 * while it runs or once it succeeded, 1 when it failed, was cancelled or
 * timed out (the output, not an error line, says why).
 */
export async function runStatus(
  id: string,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { output, ...rest } = flags;
  const config = compile(clientSettings(), rest, env);
  const client = coordinatorClient(BuildService, config);
  try {
    const { build } = await client.getBuild({ buildId: id }, { timeoutMs: config.timeoutMs });
    if (!build) throw new BraidError('not_found', `build ${id}: the coordinator returned no build`);
    process.stdout.write(
      output === 'json'
        ? `${JSON.stringify(buildJson(build))}\n`
        : describeBuild(build, Date.now()),
    );
    if (isBuildEnded(build.state) && build.state !== BuildState.SUCCEEDED) {
      process.exitCode = EXIT_FAILED;
    }
  } finally {
    client.close();
  }
}
