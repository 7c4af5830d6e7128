/**
 * The names the CLI shows for braid's enums and platforms: lowercase, with
 * `-` for `_` (`succeeded`, `timed-out`), the same in text and JSON output.
 */
import { BuildState, JobRole, LogSource } from '../../gen/braid/v1/build_pb.js';
import { JobState, type Platform } from '../../gen/braid/v1/common_pb.js';
import { UsageError } from '../../errors.js';
import { formatPlatform } from '../../oci/platform.js';
// The ends of the coordinator's transition tables: one definition of "ended".
import { TERMINAL_BUILD_STATES, TERMINAL_JOB_STATES } from '../../coordinator/transitions.js';

/** A protobuf enum value as braid prints it: `TIMED_OUT` -> `timed-out`. */
export function enumName(names: Record<number, string>, value: number): string {
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

/**
 * The enum value a user named (`timed-out`, `TIMED_OUT`, `timed_out`); an
 * unknown name or the UNSPECIFIED value is an error listing the known ones.
 */
export function parseEnumName<T extends number>(
  names: Record<string, string | number>,
  key: string,
  shown: string,
  what: string,
): T {
  const value = names[key.toUpperCase().replace(/-/g, '_')];
  if (typeof value !== 'number' || value === 0) {
    const known = Object.values(names)
      .filter((v): v is number => typeof v === 'number' && v !== 0)
      .map((v) => enumName(names as Record<number, string>, v));
    throw new UsageError(`unknown ${what} "${shown}" (known: ${known.join(', ')})`);
  }
  return value as T;
}

/** `timed-out`, `TIMED_OUT` and `timed_out` all name BuildState.TIMED_OUT. */
export function parseBuildState(text: string): BuildState {
  return parseEnumName<BuildState>(BuildState, text.trim(), text, 'build state');
}

export function isBuildEnded(state: BuildState): boolean {
  return TERMINAL_BUILD_STATES.has(state);
}

export function isJobEnded(state: JobState): boolean {
  return TERMINAL_JOB_STATES.has(state);
}

/** A job's row: its platform, or `linux/amd64 (check)` for --check-reproducible's second build. */
export function jobKey(platform: Platform | undefined, role: JobRole): string {
  const name = platformName(platform);
  return role === JobRole.REPRODUCIBILITY_CHECK && name ? `${name} (check)` : name;
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
