/**
 * The legal moves of builds and jobs. Every state change goes through here;
 * an illegal one is a typed error, never a silent overwrite.
 */
import { BuildState } from '../gen/braid/v1/build_pb.js';
import { JobState } from '../gen/braid/v1/common_pb.js';
import { BraidError } from '../errors.js';

export class IllegalTransitionError extends BraidError {
  constructor(what: string, from: string, to: string) {
    super('failed_precondition', `${what} cannot move from ${from} to ${to}`);
  }
}

const BUILD_MOVES: Record<BuildState, readonly BuildState[]> = {
  [BuildState.UNSPECIFIED]: [],
  [BuildState.QUEUED]: [
    BuildState.RUNNING,
    BuildState.FAILED,
    BuildState.CANCELLED,
    BuildState.TIMED_OUT,
  ],
  [BuildState.RUNNING]: [
    BuildState.STITCHING,
    BuildState.FAILED,
    BuildState.CANCELLED,
    BuildState.TIMED_OUT,
  ],
  [BuildState.STITCHING]: [BuildState.SUCCEEDED, BuildState.FAILED],
  [BuildState.SUCCEEDED]: [],
  [BuildState.FAILED]: [],
  [BuildState.CANCELLED]: [],
  [BuildState.TIMED_OUT]: [],
};

const JOB_MOVES: Record<JobState, readonly JobState[]> = {
  [JobState.UNSPECIFIED]: [],
  [JobState.QUEUED]: [JobState.ASSIGNED, JobState.FAILED, JobState.CANCELLED],
  [JobState.ASSIGNED]: [
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.QUEUED,
  ],
  [JobState.RUNNING]: [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED],
  [JobState.SUCCEEDED]: [],
  [JobState.FAILED]: [],
  [JobState.CANCELLED]: [],
};

/** The states a move table leaves no way out of (UNSPECIFIED is no state at all). */
function endsOf<S extends number>(moves: Record<S, readonly S[]>): ReadonlySet<S> {
  const ends = (Object.keys(moves) as unknown as S[])
    .map((key) => Number(key) as S)
    .filter((state) => state !== 0 && moves[state].length === 0);
  return new Set(ends);
}

/** Builds that ended: no move leaves them. */
export const TERMINAL_BUILD_STATES: ReadonlySet<BuildState> = endsOf(BUILD_MOVES);

/** Jobs that ended: no move leaves them. */
export const TERMINAL_JOB_STATES: ReadonlySet<JobState> = endsOf(JOB_MOVES);

export function buildStateName(state: BuildState): string {
  return (BuildState[state] ?? String(state)).toLowerCase();
}

export function jobStateName(state: JobState): string {
  return (JobState[state] ?? String(state)).toLowerCase();
}

export function checkBuildMove(id: string, from: BuildState, to: BuildState): void {
  if (!BUILD_MOVES[from].includes(to)) {
    throw new IllegalTransitionError(`build ${id}`, buildStateName(from), buildStateName(to));
  }
}

export function checkJobMove(id: string, from: JobState, to: JobState): void {
  if (!JOB_MOVES[from].includes(to)) {
    throw new IllegalTransitionError(`job ${id}`, jobStateName(from), jobStateName(to));
  }
}
