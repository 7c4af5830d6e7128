/**
 * One assigned job, start to end: fetch the context (cached), build the
 * platform's image with BuildKit, verify and push it by digest, clean up,
 * and report the pushed image.
 */
import { createReadStream } from 'node:fs';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { LogSource, ProvenanceMode } from '../gen/braid/v1/build_pb.js';
import type { AssignJob } from '../gen/braid/v1/agent_pb.js';
import { BraidError, errorLine, type ErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import { formatPlatform, type Platform } from '../oci/platform.js';
import type { CredentialSource } from '../oci/credentials.js';
import type { RegistryClient } from '../oci/registry.js';
import { fromProtoPlatform, toProtoPlatform } from '../rpc/platform.js';
import type { ContextCache, ContextFetcher } from './context-cache.js';
import type { SshForwarder } from './buildkit-session.js';
import type { Engine, EngineInfo } from './engine.js';
import { BuildFactsRecorder, type BuildFactsInit } from './build-facts.js';
import { pushImage } from './image-pusher.js';

/** On every image an agent builds, so leftovers on its engine are found and cleaned. */
const BUILD_ID_LABEL = 'io.braid.build-id';
const JOB_ID_LABEL = 'io.braid.job-id';

export interface JobReporter {
  step(step: string): void;
  log(line: string, source?: LogSource): void;
}

/** The parts of a job, in order. */
export type JobStage = 'fetch' | 'build' | 'push';

export interface JobOutcome {
  image?: {
    digest: string;
    sizeBytes: number;
    mediaType: string;
    platform: ReturnType<typeof fromProtoPlatform>;
  };
  error?: string;
  /** Where a failed job failed, and the error's code (for the agent's metrics). */
  failure?: { stage: JobStage; code: ErrorCode };
  durationMs: number;
  fetchMs: number;
  buildMs: number;
  pushMs: number;
  /** How it was built, for the build's provenance (set on success). */
  facts?: BuildFactsInit;
}

export interface JobRunnerDeps {
  engine: Engine;
  contexts: ContextCache;
  fetchContext: ContextFetcher;
  registry: RegistryClient;
  /** Registry logins BuildKit may use for `FROM` (the agent's docker config). */
  credentials: CredentialSource;
  /** The engine as provenance names it: host, id, version, kernel, native platform. */
  builder?: { engine: EngineInfo; platform: Platform };
  /** The QEMU handler's version for an emulated platform ('' when unknown; never rejects). */
  emulatorVersion?: (platform: Platform) => Promise<string>;
  /** Where a job's `RUN --mount=type=ssh` connections go (through the coordinator). */
  sshForwarder?: (job: AssignJob) => SshForwarder | undefined;
  /** Engine network for RUN steps ('' = the engine's default). */
  buildNetwork: string;
  log: Logger;
  clock?: () => number;
}

function splitRepository(text: string): { domain: string; repository: string } {
  const slash = text.indexOf('/');
  if (slash <= 0)
    throw new BraidError('invalid_argument', `push repository "${text}" has no registry`);
  return { domain: text.slice(0, slash), repository: text.slice(slash + 1) };
}

export async function runJob(
  job: AssignJob,
  deps: JobRunnerDeps,
  report: JobReporter,
  signal: AbortSignal,
): Promise<JobOutcome> {
  const clock = deps.clock ?? Date.now;
  const platform = fromProtoPlatform(job.platform);
  const platformText = formatPlatform(platform);
  const log = deps.log.child({
    buildId: job.buildId,
    requestId: job.requestId || undefined,
    jobId: job.jobId,
    platform: platformText,
  });
  log.info({ emulated: job.emulated, attempt: job.attempt }, 'job started');
  const started = clock();
  let fetchMs = 0;
  let buildMs = 0;
  let pushMs = 0;
  let imageId: string | undefined;
  let stage: JobStage = 'fetch';
  // Asked while the job runs (once per handler, cached): its answer waits for no one.
  const emulatorVersion =
    job.emulated && job.provenance !== ProvenanceMode.DISABLED && deps.emulatorVersion
      ? deps.emulatorVersion(platform).catch(() => '')
      : Promise.resolve('');
  try {
    report.step('fetching context');
    const fetched = await deps.contexts.get(job.contextDigest, deps.fetchContext);
    fetchMs = clock() - started;
    report.log(
      fetched.fetchedBytes > 0
        ? `context ${job.contextDigest.slice(0, 19)} fetched (${fetched.fetchedBytes} bytes, ${fetchMs} ms)`
        : `context ${job.contextDigest.slice(0, 19)} cached`,
      LogSource.AGENT,
    );
    if (signal.aborted) throw new BraidError('cancelled', 'cancelled');
    stage = 'build';
    const buildStart = clock();
    const recorder = new BuildFactsRecorder(job.provenance === ProvenanceMode.MAX);
    const epoch = job.sourceDateEpoch === undefined ? undefined : Number(job.sourceDateEpoch);
    const built = await deps.engine.build(
      {
        context: createReadStream(fetched.path),
        dockerfile: job.dockerfile || 'Dockerfile',
        platform: platformText,
        // BuildKit writes its cache into the image config (--cache-to): dockerd exports no other kind.
        buildArgs: {
          ...job.buildArgs,
          ...(job.inlineCache && { BUILDKIT_INLINE_CACHE: '1' }),
          // As buildx passes it: a Dockerfile's `ARG SOURCE_DATE_EPOCH` sees it.
          ...(epoch !== undefined && { SOURCE_DATE_EPOCH: String(epoch) }),
        },
        target: job.target || undefined,
        labels: { ...job.labels, [BUILD_ID_LABEL]: job.buildId, [JOB_ID_LABEL]: job.jobId },
        noCache: job.noCache,
        pull: job.pull,
        // The build's own --network, else the agent's setting.
        networkMode: job.network || deps.buildNetwork || undefined,
        addHosts: job.addHosts,
        cacheFrom: job.cacheFrom,
        session: {
          secrets: new Map(job.secrets.map((secret) => [secret.id, secret.value])),
          credentials: (host) => deps.credentials.credentialsFor(host),
          ssh: deps.sshForwarder?.(job),
        },
      },
      (event) => {
        recorder.record(event);
        if (event.kind === 'step') {
          if (event.state === 'started') report.step(event.name);
          if (event.state === 'started' || event.state === 'cached') {
            report.log(event.state === 'cached' ? `${event.name} CACHED` : event.name);
          }
          if (event.state === 'error' && event.error)
            report.log(`${event.name} ERROR: ${event.error}`);
        } else {
          report.log(event.text);
        }
      },
      signal,
    );
    imageId = built.imageId;
    buildMs = clock() - buildStart;
    report.step('pushing');
    stage = 'push';
    const pushStart = clock();
    const repository = splitRepository(job.pushRepository);
    const pushed = await pushImage({
      engine: deps.engine,
      imageId,
      client: deps.registry,
      repository,
      tags: [...job.pushTags],
      annotations: job.manifestAnnotations,
      expectedPlatform: platform,
      // A reproducible image does not say which build made it: the provenance does.
      ...(epoch !== undefined && {
        sourceDateEpoch: epoch,
        runLabels: [BUILD_ID_LABEL, JOB_ID_LABEL],
      }),
    });
    pushMs = clock() - pushStart;
    report.log(`pushed ${job.pushRepository}@${pushed.digest} (${pushMs} ms)`, LogSource.AGENT);
    log.info({ digest: pushed.digest, buildMs, pushMs, emulated: job.emulated }, 'job succeeded');
    return {
      image: {
        digest: pushed.digest,
        sizeBytes: pushed.size,
        mediaType: pushed.mediaType,
        platform: pushed.platform,
      },
      durationMs: clock() - started,
      fetchMs,
      buildMs,
      pushMs,
      ...(job.provenance !== ProvenanceMode.DISABLED && {
        facts: {
          ...recorder.facts(),
          host: deps.builder?.engine.name ?? '',
          engineId: deps.builder?.engine.id ?? '',
          engineVersion: deps.builder?.engine.serverVersion ?? '',
          kernel: deps.builder?.engine.kernelVersion ?? '',
          builderPlatform: deps.builder && toProtoPlatform(deps.builder.platform),
          emulatorVersion: await emulatorVersion,
          startedAt: timestampFromMs(started),
          finishedAt: timestampFromMs(clock()),
        },
      }),
    };
  } catch (err) {
    const error = signal.aborted
      ? `cancelled: ${String(signal.reason ?? 'by the coordinator')}`
      : errorLine(err);
    log.warn({ err: error }, 'job failed');
    const code: ErrorCode = signal.aborted
      ? 'cancelled'
      : err instanceof BraidError
        ? err.code
        : 'internal';
    return {
      error,
      failure: { stage, code },
      durationMs: clock() - started,
      fetchMs,
      buildMs,
      pushMs,
    };
  } finally {
    // The pushed image lives in the registry; nothing stays behind in the engine.
    if (imageId)
      await deps.engine
        .removeImage(imageId)
        .catch((err: unknown) => log.warn({ err: errorLine(err) }, 'image cleanup failed'));
  }
}
