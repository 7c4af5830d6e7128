import { timestampMs } from '@bufbuild/protobuf/wkt';
import { clientSettings } from '../../config/settings.js';
import { BuildService, JobRole, type Build } from '../../gen/braid/v1/build_pb.js';
import { UsageError } from '../../errors.js';
import { coordinatorClient } from '../client.js';
import { compile } from '../compile.js';
import { buildJson } from '../progress/build-view.js';
import { formatAge } from '../progress/format.js';
import { buildStateName, parseBuildState, platformName } from '../progress/names.js';
import { renderTable } from '../table.js';

const MAX_LIMIT = 10_000;

function parseLimit(text: unknown): number {
  const value = String(text);
  const limit = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(limit >= 1 && limit <= MAX_LIMIT)) {
    throw new UsageError(`--limit "${value}": expected 1 to ${MAX_LIMIT}`);
  }
  return limit;
}

function row(build: Build, nowMs: number): string[] {
  const platforms = build.spec?.platforms.length
    ? build.spec.platforms.map(platformName)
    : build.jobs
        .filter((job) => job.role !== JobRole.REPRODUCIBILITY_CHECK)
        .map((job) => platformName(job.platform));
  return [
    build.id,
    buildStateName(build.state),
    platforms.join(',') || '-',
    build.spec?.tags.join(',') || '-',
    build.createdAt ? formatAge(nowMs - timestampMs(build.createdAt)) : '-',
    build.index?.digest || '-',
  ];
}

export async function runBuilds(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { state, limit, output, ...rest } = flags;
  const config = compile(clientSettings(), rest, env);
  const states = ((state as string[] | undefined) ?? [])
    .flatMap((s) => s.split(','))
    .filter((s) => s !== '')
    .map(parseBuildState);
  const client = coordinatorClient(BuildService, config);
  try {
    const { builds } = await client.listBuilds(
      { limit: parseLimit(limit), states },
      { timeoutMs: config.timeoutMs },
    );
    if (output === 'json') {
      for (const build of builds) process.stdout.write(`${JSON.stringify(buildJson(build))}\n`);
      return;
    }
    const nowMs = Date.now();
    process.stdout.write(
      renderTable(
        ['ID', 'STATE', 'PLATFORMS', 'TAGS', 'AGE', 'INDEX'],
        builds.map((build) => row(build, nowMs)),
      ),
    );
  } finally {
    client.close();
  }
}
