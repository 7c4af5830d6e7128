/**
 * The names the CLI shows for braid's enums and platforms: lowercase, with
 * `-` for `_` (`succeeded`, `timed-out`), the same in text and JSON output.
 */
import { BuildState, LogSource } from '../../gen/braid/v1/build_pb.js';
import { JobState, type Platform } from '../../gen/braid/v1/common_pb.js';
import { BraidError } from '../../errors.js';
import { formatPlatform } from '../../oci/platform.js';

function enumName(names: Record<number, string>, value: number): string {
  return (names[value] ?? String(value)).toLowerCase().replace(/_/g, '-');
}

export function buildStateName(state: BuildState): string {
  return enumName(BuildState, state);
}

export function jobStateName(state: JobState): string {
  return enumName(JobState, state);
}

export function logSourceName(source: LogSource): string {
  return enumName(LogSource, source);
}

/** `timed-out`, `TIMED_OUT` and `timed_out` all name BuildState.TIMED_OUT. */
export function parseBuildState(text: string): BuildState {
  const key = text.trim().toUpperCase().replace(/-/g, '_') as keyof typeof BuildState;
  const state = BuildState[key];
  if (typeof state !== 'number' || state === BuildState.UNSPECIFIED) {
    const known = Object.values(BuildState)
      .filter((s): s is BuildState => typeof s === 'number' && s !== BuildState.UNSPECIFIED)
      .map(buildStateName);
    throw new BraidError(
      'invalid_argument',
      `unknown build state "${text}" (known: ${known.join(', ')})`,
    );
  }
  return state;
}

const TERMINAL_BUILD_STATES: ReadonlySet<BuildState> = new Set([
  BuildState.SUCCEEDED,
  BuildState.FAILED,
  BuildState.CANCELLED,
  BuildState.TIMED_OUT,
]);

export function isBuildEnded(state: BuildState): boolean {
  return TERMINAL_BUILD_STATES.has(state);
}

export function isJobEnded(state: JobState): boolean {
  return state === JobState.SUCCEEDED || state === JobState.FAILED || state === JobState.CANCELLED;
}

/** `linux/arm64`; empty when the message carries no platform (a build-wide line). */
export function platformName(platform: Platform | undefined): string {
  if (!platform || (!platform.os && !platform.architecture)) return '';
  try {
    return formatPlatform(platform);
  } catch {
    // A platform the coordinator accepted but we cannot normalise is still shown as sent.
    return [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/');
  }
}

/** How a job runs: on a host of its own architecture or under QEMU. */
export function modeName(agent: string, emulated: boolean): string {
  if (!agent) return '-';
  return emulated ? 'qemu' : 'native';
}
