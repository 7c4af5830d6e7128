import { createReadStream } from 'node:fs';
import { BuildService, BuildState, type Build } from '../../gen/braid/v1/build_pb.js';
import { EmulationPolicy } from '../../gen/braid/v1/common_pb.js';
import { clientSettings } from '../../config/settings.js';
import { intSetting, parsedSetting } from '../../config/loader.js';
import { BraidError, RpcError, UsageError } from '../../errors.js';
import { formatPlatform, parsePlatforms, type Platform } from '../../oci/platform.js';
import { formatReference, parseReference } from '../../oci/reference.js';
import { backoffDelayMs, type RetryPolicy } from '../../oci/retry.js';
import { toProtoPlatform } from '../../rpc/platform.js';
import { fromUser } from '../user-input.js';
import { requestIdFor } from '../../rpc/request-id.js';
import { buildxSpecFields } from '../build-request.js';
import { parseBuildxFlags, readSecretFile, readSecrets } from '../buildx-flags.js';
import { resolveSourceDateEpoch, SOURCE_DATE_EPOCH } from '../buildx/source-date-epoch.js';
import { coordinatorClient } from '../client.js';
import { startSshRelay } from '../ssh-relay-client.js';
import { compile } from '../compile.js';
import { parseKeyValues } from '../key-values.js';
import { packContext } from '../context.js';
import { handleInterrupts } from '../interrupt.js';
import { buildMetadata, writeMetadataFile } from '../metadata.js';
import {
  BuildFailedError,
  BuildTracker,
  createProgressRenderer,
  failureReport,
  resolveProgressMode,
} from '../progress/index.js';

const BUILD_ARG_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

const UPLOAD_CHUNK_BYTES = 1024 * 1024;
const WATCH_RECONNECTS = 10;
const WATCH_RETRY: RetryPolicy = {
  maxAttempts: WATCH_RECONNECTS + 1,
  baseDelayMs: 500,
  maxDelayMs: 10_000,
};

/**
 * A watch stream that broke on the way, not one the coordinator ended:
 * the coordinator unreachable (restarting, a cut connection), or the
 * stream reset under it (`INTERNAL: Received RST_STREAM`, a proxy or load
 * balancer closing it). Resumed from the last event seen.
 */
export function watchDropped(err: unknown): boolean {
  if (!(err instanceof RpcError)) return false;
  return err.code === 'unavailable' || (err.code === 'internal' && /RST_STREAM/i.test(err.message));
}

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
    const ref = fromUser(() => parseReference(t));
    if (ref.digest) throw new UsageError(`-t "${t}": a tag, not a digest`);
    return ref;
  });
  if (tags.length === 0) throw new UsageError('no tag given: use -t REGISTRY/REPO:TAG');
  const platforms = (platform as string[] | undefined)?.length
    ? fromUser(() => parsePlatforms((platform as string[]).join(',')))
    : defaultPlatforms();
  const buildArgs = parseKeyValues((buildArg as string[] | undefined) ?? [], {
    flag: '--build-arg',
    key: BUILD_ARG_NAME,
    env,
  });
  const labels = parseKeyValues((label as string[] | undefined) ?? [], { flag: '--label' });
  const sourceDateEpoch = resolveSourceDateEpoch({
    ...(typeof flags.sourceDateEpoch === 'string' && { flag: flags.sourceDateEpoch }),
    buildArgs,
    env,
  });
  // The agent passes the epoch to BuildKit itself: one value, never two that disagree.
  delete buildArgs[SOURCE_DATE_EPOCH];
  if (flags.checkReproducible === true && sourceDateEpoch === undefined)
    throw new UsageError(
      '--check-reproducible needs --source-date-epoch (or SOURCE_DATE_EPOCH): without it every image records when it was built',
    );
  const mode = resolveProgressMode(String(progress), process.stderr, env);
  const buildx = parseBuildxFlags(flags, env);
  // Read now: a missing file or unset variable is a usage error before any upload.
  const secrets = await readSecrets(buildx.secrets, { env, readFile: readSecretFile });
  const sshAgents =
    buildx.ssh.length > 0
      ? await (await import('../ssh-forward.js')).ForwardedAgents.open(buildx.ssh)
      : undefined;

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
          ...buildxSpecFields(buildx),
          ...(sourceDateEpoch !== undefined && { sourceDateEpoch }),
          checkReproducible: flags.checkReproducible === true,
        },
        // Follows the build into the coordinator's and the agents' log lines.
        requestId,
        // Apart from the spec: the coordinator keeps values in memory only.
        secrets,
      },
      timeout,
    );
    build = submitted.build as Build;
  } catch (err) {
    sshAgents?.close();
    throw err;
  } finally {
    await packed.cleanup();
  }
  const buildId = build.id;
  // The build's RUN --mount=type=ssh steps reach this machine's agents while it is followed.
  const sshRelay =
    sshAgents &&
    startSshRelay(client.forwardSsh(), buildId, sshAgents, (line) => {
      if (mode !== 'json') process.stderr.write(`${line}\n`);
    });
  if (detach) {
    process.stdout.write(`${buildId}\n`);
    client.close();
    return;
  }
  if (mode !== 'json')
    process.stderr.write(
      `build ${buildId}: ${platforms.map(formatPlatform).join(', ')}${build.requestId ? ` (request ${build.requestId})` : ''}\n`,
    );

  // Seeded from the submit answer, so queued platforms show before their first event.
  const tracker = new BuildTracker(buildId);
  tracker.applyBuild(build);
  const renderer = createProgressRenderer(mode, { out: process.stderr, tracker });
  const interrupts = handleInterrupts({
    buildId,
    detach: detachOnInterrupt === true,
    // A person at a terminal is asked; JSON progress is read by a program.
    ask: mode !== 'json' && process.stdin.isTTY === true && process.stderr.isTTY === true,
    cancel: () =>
      client
        .cancelBuild({ buildId, reason: 'interrupted by the user (Ctrl-C)' })
        .then(() => undefined),
    screen: renderer,
  });
  let after = 0n;
  try {
    for (let attempt = 0; ; attempt++) {
      const resumedAfter = after;
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
        // A dropped stream resumes where it stopped: no event is lost. A stream
        // that delivered events before it dropped starts the count again.
        if (after > resumedAfter) attempt = 0;
        if (watchDropped(err) && attempt < WATCH_RECONNECTS) {
          await new Promise((r) =>
            setTimeout(r, backoffDelayMs(WATCH_RETRY, attempt + 1, Math.random)),
          );
          continue;
        }
        throw err;
      }
    }
  } finally {
    renderer.finish();
    sshRelay?.stop();
  }
  interrupts.stop();
  const final = (await client.getBuild({ buildId }, { timeoutMs: config.timeoutMs }))
    .build as Build;
  client.close();
  if (typeof metadataFile === 'string' && final.state === BuildState.SUCCEEDED) {
    await writeMetadataFile(metadataFile, buildMetadata(final));
  }
  if (final.state !== BuildState.SUCCEEDED) {
    const report = failureReport(tracker, { pointToLogs: true });
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
