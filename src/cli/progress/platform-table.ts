/**
 * The per-platform table: the summary after a build's progress and the body
 * of `braid status`. PLATFORM, STATE, AGENT, MODE (native|qemu), DURATION,
 * DIGEST, and with `detail` the running step or the error.
 */
import { timestampMs } from '@bufbuild/protobuf/wkt';
import type { Build } from '../../gen/braid/v1/build_pb.js';
import { JobState } from '../../gen/braid/v1/common_pb.js';
import { renderTable } from '../table.js';
import { formatDuration } from './format.js';
import { isJobEnded, jobKey, jobStateName, modeName } from './names.js';
import type { BuildTracker } from './tracker.js';

export interface PlatformRow {
  platform: string;
  state: JobState;
  agent: string;
  emulated: boolean;
  /** Final for an ended job, elapsed so far for a running one. */
  durationMs: number | undefined;
  digest: string;
  /** The step running now, or the error of a failed job. */
  detail: string;
}

function elapsed(
  state: JobState,
  startedAtMs: number | undefined,
  durationMs: number | undefined,
  nowMs: number,
): number | undefined {
  if (durationMs !== undefined) return durationMs;
  if (startedAtMs === undefined || isJobEnded(state)) return undefined;
  return Math.max(0, nowMs - startedAtMs);
}

function detailOf(state: JobState, step: string, message: string): string {
  if (state === JobState.FAILED || state === JobState.CANCELLED) return message;
  return isJobEnded(state) ? '' : step;
}

export function platformRowsFromTracker(tracker: BuildTracker, nowMs: number): PlatformRow[] {
  return tracker.jobs.map((job) => ({
    platform: job.platform,
    state: job.state,
    agent: job.agent,
    emulated: job.emulated,
    durationMs: elapsed(job.state, job.startedAtMs, job.durationMs, nowMs),
    digest: job.image?.digest ?? '',
    detail: detailOf(job.state, job.step, job.message),
  }));
}

export function platformRowsFromBuild(build: Build, nowMs: number): PlatformRow[] {
  return build.jobs.map((job) => ({
    platform: jobKey(job.platform, job.role),
    state: job.state,
    agent: job.agent,
    emulated: job.emulated,
    durationMs: elapsed(
      job.state,
      job.startedAt ? timestampMs(job.startedAt) : undefined,
      job.durationMs > 0n ? Number(job.durationMs) : undefined,
      nowMs,
    ),
    digest: job.image?.digest ?? '',
    detail: detailOf(job.state, job.currentStep, job.error),
  }));
}

export function renderPlatformTable(
  rows: readonly PlatformRow[],
  options: { detail?: boolean } = {},
): string {
  const headers = ['PLATFORM', 'STATE', 'AGENT', 'MODE', 'DURATION', 'DIGEST'];
  if (options.detail) headers.push('DETAIL');
  return renderTable(
    headers,
    rows.map((row) => {
      const cells = [
        row.platform,
        jobStateName(row.state),
        row.agent || '-',
        modeName(row.agent, row.emulated),
        row.durationMs === undefined ? '-' : formatDuration(row.durationMs),
        row.digest || '-',
      ];
      if (options.detail) cells.push(row.detail.split('\n')[0] ?? '');
      return cells;
    }),
  );
}
