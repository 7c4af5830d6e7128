import { createReadStream } from 'node:fs';
import { BuildService, BuildState, type Build } from '../../gen/braid/v1/build_pb.js';
import { EmulationPolicy } from '../../gen/braid/v1/common_pb.js';
import { clientSettings } from '../../config/settings.js';
import { intSetting, parsedSetting } from '../../config/loader.js';
import { BraidError, RpcError } from '../../errors.js';
import { formatPlatform, parsePlatforms, type Platform } from '../../oci/platform.js';
import { formatReference, parseReference } from '../../oci/reference.js';
import { toProtoPlatform } from '../../rpc/platform.js';
import { requestIdFor } from '../../rpc/request-id.js';
import { coordinatorClient } from '../client.js';
import { compile } from '../compile.js';
import { parseKeyValues } from '../key-values.js';
import { packContext } from '../context.js';
import { EXIT_INTERRUPTED } from '../exit.js';
import { buildMetadata, writeMetadataFile } from '../metadata.js';
import {
  BuildFailedError,
  BuildTracker,
  createProgressRenderer,
  failureReport,
  resolveProgressMode,
} from '../progress/index.js';

const BUILD_ARG_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Ctrl-C while following a build. On a terminal braid asks whether to cancel
 * the build or only stop watching; without one it cancels, unless
 * --detach-on-interrupt (for CI, where a job's cancel should not cancel a
 * shared build). SIGTERM (a CI runner or supervisor stopping the step) never
 * asks: it cancels, or detaches with --detach-on-interrupt. A second signal
 * leaves at once.
 */
function onInterrupt(options: {
  buildId: string;
  detach: boolean;
  ask: boolean;
  cancel: () => Promise<void>;
}): void {
  let interrupts = 0;
  const detach = () => {
    process.stderr.write(
      `\ndetached; build ${options.buildId} goes on (braid logs -f ${options.buildId})\n`,
    );
    process.exit(EXIT_INTERRUPTED);
  };
  const cancel = () => {
    process.stderr.write(
      `\ncancelling build ${options.buildId} (Ctrl-C again to leave without waiting)\n`,
    );
    void options.cancel().catch(() => undefined);
  };
  process.on('SIGTERM', () => {
    interrupts++;
    if (interrupts > 1) process.exit(EXIT_INTERRUPTED);
    return options.detach ? detach() : cancel();
  });
  process.on('SIGINT', () => {
    interrupts++;
    if (interrupts > 1) process.exit(EXIT_INTERRUPTED);
    if (options.detach) return detach();
    if (!options.ask) return cancel();
    process.stderr.write(
      `\ncancel build ${options.buildId}? [y = cancel, N = detach and leave it running] `,
    );
    process.stdin.setEncoding('utf8');
    process.stdin.once('data', (answer: string) => (/^\s*y/i.test(answer) ? cancel() : detach()));
    process.stdin.resume();
  });
}
const UPLOAD_CHUNK_BYTES = 1024 * 1024;
const WATCH_RECONNECTS = 10;

function defaultPlatforms(): Platform[] {
  return parsePlatforms('linux/amd64,linux/arm64');
}

async function* uploadChunks(path: string, header: { digest: string; sizeBytes: bigint }) {
  yield { payload: { case: 'header' as const, value: header } };
  for await (const chunk of createReadStream(path, { highWaterMark: UPLOAD_CHUNK_BYTES })) {
    yield { payload: { case: 'chunk' as const, value: chunk as Buffer } };
  }
}

export async function runBuild(
  contextDir: string,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const {
    tag,
    file,
    platform,
    buildArg,
    target,
    label,
    cache,
    pull,
    platformTags,
    metadataFile,
    progress,
    emulation,
    detach,
    detachOnInterrupt,
    maxContextBytes,
    requestId: givenRequestId,
    ...rest
  } = flags;
  const config = compile(clientSettings(), rest, env);
  const { maxContextBytes: maxBytes, requestId } = compile(
    {
      maxContextBytes: intSetting({
        min: 1024,
        max: 64 * 1024 * 1024 * 1024,
        default: 2 * 1024 * 1024 * 1024,
      }),
      // A CI run's own id (e.g. $GITHUB_RUN_ID) ties its logs to the farm's; else a new one.
      requestId: parsedSetting(requestIdFor, ''),
    },
    { maxContextBytes, requestId: givenRequestId },
    env,
  );
  // Every value the user typed is checked before anything is packed or sent.
  const tags = ((tag as string[] | undefined) ?? []).map((t) => {
    const ref = parseReference(t);
    if (ref.digest) throw new BraidError('invalid_argument', `-t "${t}": a tag, not a digest`);
    return ref;
  });
  if (tags.length === 0)
    throw new BraidError('invalid_argument', 'no tag given: use -t REGISTRY/REPO:TAG');
  const platforms = (platform as string[] | undefined)?.length
    ? parsePlatforms((platform as string[]).join(','))
    : defaultPlatforms();
  const buildArgs = parseKeyValues((buildArg as string[] | undefined) ?? [], {
    flag: '--build-arg',
    key: BUILD_ARG_NAME,
    env,
  });
  const labels = parseKeyValues((label as string[] | undefined) ?? [], { flag: '--label' });
  const mode = resolveProgressMode(String(progress), process.stderr, env);

  const packed = await packContext(contextDir, {
    dockerfile: typeof file === 'string' ? file : undefined,
    maxBytes,
  });
  const client = coordinatorClient(BuildService, config);
  let build: Build;
  try {
    const timeout = { timeoutMs: config.timeoutMs };
    const has = await client.hasContext({ digest: packed.digest }, timeout);
    let uploaded = 0n;
    if (!has.present) {
      const result = await client.uploadContext(
        uploadChunks(packed.path, { digest: packed.digest, sizeBytes: BigInt(packed.sizeBytes) }),
      );
      uploaded = result.alreadyPresent ? 0n : result.sizeBytes;
    }
    const note = `context ${packed.digest.slice(0, 19)}: ${packed.files} files, ${packed.sizeBytes} bytes, ${uploaded} bytes uploaded`;
    if (mode !== 'json') process.stderr.write(`${note}\n`);
    const submitted = await client.submitBuild(
      {
        spec: {
          contextDigest: packed.digest,
          dockerfile: packed.dockerfileInContext,
          platforms: platforms.map(toProtoPlatform),
          tags: tags.map(formatReference),
          buildArgs,
          target: typeof target === 'string' ? target : '',
          labels,
          noCache: cache === false,
          pull: pull === true,
          emulation:
            emulation === 'native-only'
              ? EmulationPolicy.NATIVE_ONLY
              : emulation === 'any'
                ? EmulationPolicy.ANY
                : EmulationPolicy.PREFER_NATIVE,
          platformTags: platformTags === true,
        },
        // Follows the build into the coordinator's and the agents' log lines.
        requestId,
      },
      timeout,
    );
    build = submitted.build as Build;
  } finally {
    await packed.cleanup();
  }
  const buildId = build.id;
  if (detach) {
    process.stdout.write(`${buildId}\n`);
    client.close();
    return;
  }
  if (mode !== 'json')
    process.stderr.write(
      `build ${buildId}: ${platforms.map(formatPlatform).join(', ')}${build.requestId ? ` (request ${build.requestId})` : ''}\n`,
    );

  onInterrupt({
    buildId,
    detach: detachOnInterrupt === true,
    ask: process.stdin.isTTY === true && process.stderr.isTTY === true,
    cancel: () =>
      client
        .cancelBuild({ buildId, reason: 'interrupted by the user (Ctrl-C)' })
        .then(() => undefined),
  });

  // Seeded from the submit answer, so queued platforms show before their first event.
  const tracker = new BuildTracker(buildId);
  tracker.applyBuild(build);
  const renderer = createProgressRenderer(mode, { out: process.stderr, tracker });
  let after = 0n;
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        for await (const { event } of client.watchBuild({
          buildId,
          afterSequence: after,
          follow: true,
        })) {
          if (!event) continue;
          after = event.sequence;
          renderer.event(event);
        }
        break;
      } catch (err) {
        // A dropped stream resumes where it stopped: no event is lost.
        if (err instanceof RpcError && err.code === 'unavailable' && attempt < WATCH_RECONNECTS) {
          await new Promise((r) => setTimeout(r, Math.min(10_000, 500 * 2 ** attempt)));
          continue;
        }
        throw err;
      }
    }
  } finally {
    renderer.finish();
  }
  const final = (await client.getBuild({ buildId }, { timeoutMs: config.timeoutMs }))
    .build as Build;
  client.close();
  if (typeof metadataFile === 'string' && final.state === BuildState.SUCCEEDED) {
    await writeMetadataFile(metadataFile, buildMetadata(final));
  }
  if (final.state !== BuildState.SUCCEEDED) {
    const report = failureReport(tracker);
    if (report?.details) process.stderr.write(report.details);
    throw report
      ? new BuildFailedError(report)
      : new BraidError(
          'failed_precondition',
          `build ${buildId} ended ${BuildState[final.state]?.toLowerCase()}: ${final.error}`,
        );
  }
  process.stdout.write(`${final.index?.digest ?? ''}\n`);
}
