/**
 * A submitted build checked and made into records, before anything is
 * stored: the spec validated, the context and its Dockerfile present, the
 * push targets accepted, one job per platform (and the reproducibility
 * twins). The leader's orchestrator stores it in memory and the store; a
 * standby on a shared store writes it to the store alone and notifies the
 * leader, which adopts it (submitToStore below).
 */
import { create } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import {
  BuildEventSchema,
  BuildState,
  CacheType,
  type Build,
  type BuildEvent,
  type BuildSpec,
} from '../gen/braid/v1/build_pb.js';
import { BraidError } from '../errors.js';
import { formatPlatform } from '../oci/platform.js';
import { formatReference, parseReference, type ImageReference } from '../oci/reference.js';
import { requestIdFor } from '../rpc/request-id.js';
import type { BuildContexts } from './contexts.js';
import { checkJobs } from './reproducibility-check.js';
import { checkSecrets, type BuildSecretValue } from './secret-vault.js';
import { validateSpec, type ValidSpec } from './spec-validation.js';
import {
  buildToProto,
  queuedJob,
  type BuildRecord,
  type JobRecord,
  type StoreWrite,
} from './store.js';

export interface Submission {
  valid: ValidSpec;
  record: BuildRecord;
  jobs: JobRecord[];
  /** The text of the build's first event (queued). */
  queued: string;
}

export interface SubmissionDeps {
  contexts: BuildContexts;
  /** Refuses tags the registry would not take (push-preflight.ts). */
  checkPush?: ((refs: readonly ImageReference[]) => Promise<void>) | undefined;
  newId: () => string;
  clock: () => Date;
  /** Throws when no agent could build some job (the leader knows its agents). */
  refuseUnbuildable?: (jobs: readonly JobRecord[], valid: ValidSpec) => void;
}

export async function prepareSubmission(
  spec: BuildSpec,
  sentRequestId: string,
  secrets: readonly BuildSecretValue[],
  deps: SubmissionDeps,
): Promise<Submission> {
  const valid = validateSpec(spec);
  const secretIds = checkSecrets(secrets);
  const requestId = requestIdFor(sentRequestId);
  if ((await deps.contexts.size(spec.contextDigest)) === undefined) {
    throw new BraidError(
      'failed_precondition',
      `context ${spec.contextDigest} has not been uploaded`,
    );
  }
  if (!(await deps.contexts.hasFile(spec.contextDigest, valid.dockerfile))) {
    throw new BraidError(
      'invalid_argument',
      `Dockerfile "${valid.dockerfile}" is not in context ${spec.contextDigest}`,
    );
  }
  const id = deps.newId();
  const jobs: JobRecord[] = valid.platforms.map((platform, i) =>
    queuedJob(`${id}-${i + 1}`, id, platform),
  );
  // --check-reproducible: a second build of every platform to compare with.
  if (spec.checkReproducible) jobs.push(...checkJobs(id, jobs));
  deps.refuseUnbuildable?.(jobs, valid);
  await deps.checkPush?.(valid.tags);
  // The cache refs too: a refused cache push would fail the stitch after every platform built.
  const cacheRefs = spec.cacheTo
    .filter((c) => c.type === CacheType.REGISTRY)
    .map((c) => parseReference(c.ref));
  if (cacheRefs.length > 0)
    await deps.checkPush?.(cacheRefs).catch((err: unknown) => {
      throw err instanceof BraidError
        ? new BraidError(err.code, `--cache-to: ${err.message}`, { cause: err })
        : err;
    });
  const record: BuildRecord = {
    id,
    // The ids are the coordinator's to set: they say which values it must hold.
    spec: { ...spec, dockerfile: valid.dockerfile, secretIds },
    state: BuildState.QUEUED,
    createdAt: deps.clock(),
    error: '',
    requestId,
  };
  const queued = `build queued: ${valid.platforms.map(formatPlatform).join(', ')} -> ${valid.tags.map(formatReference).join(', ')}`;
  return { valid, record, jobs, queued };
}

/**
 * Why a standby cannot take a submission itself, or undefined when it can:
 * secret values and SSH agents stay in the memory of the coordinator that
 * runs the build, so such a build goes to the leader.
 */
export function needsLeader(spec: BuildSpec | undefined, secrets: readonly unknown[]): boolean {
  return secrets.length > 0 || (spec?.sshIds.length ?? 0) > 0;
}

/**
 * A submission stored by a coordinator that does not lead: the build, its
 * jobs and its first event in one commit, with `announce` telling the
 * leader (in the same transaction) to adopt it.
 */
export async function submitToStore(
  submission: Submission,
  commit: (writes: StoreWrite[]) => Promise<void>,
): Promise<Build> {
  const { record, jobs, queued } = submission;
  const event: BuildEvent = create(BuildEventSchema, {
    sequence: 1n,
    time: timestampFromDate(record.createdAt),
    body: { case: 'buildState', value: { state: BuildState.QUEUED, message: queued } },
  });
  await commit([
    { kind: 'createBuild', build: record, jobs },
    { kind: 'appendEvent', buildId: record.id, event },
  ]);
  return buildToProto(record, jobs);
}
