/**
 * SOURCE_DATE_EPOCH for a reproducible image, from where a pipeline sets
 * it: `--source-date-epoch N`, else `--build-arg SOURCE_DATE_EPOCH=N`, else
 * the SOURCE_DATE_EPOCH environment variable (as buildx passes it on when
 * no build arg names it). An empty variable counts as unset; anything else
 * that is not a whole number of seconds is one line and exit 2.
 */
import type { Env } from '../../config/loader.js';
import { UsageError } from '../../errors.js';
import { MAX_SOURCE_DATE_EPOCH as MAX_EPOCH } from '../../oci/reproducible-config.js';

export const SOURCE_DATE_EPOCH = 'SOURCE_DATE_EPOCH';

export interface EpochSources {
  /** --source-date-epoch, as typed. */
  readonly flag?: string;
  /** The parsed --build-arg values (SOURCE_DATE_EPOCH among them, maybe). */
  readonly buildArgs: Readonly<Record<string, string>>;
  readonly env: Env;
}

/** The epoch in seconds, or undefined when none is set. */
export function resolveSourceDateEpoch(sources: EpochSources): bigint | undefined {
  if (sources.flag !== undefined) return parseEpoch('--source-date-epoch', sources.flag);
  const arg = sources.buildArgs[SOURCE_DATE_EPOCH];
  if (arg !== undefined) return parseEpoch(`--build-arg ${SOURCE_DATE_EPOCH}`, arg);
  const fromEnv = sources.env[SOURCE_DATE_EPOCH];
  if (fromEnv === undefined || fromEnv === '') return undefined;
  return parseEpoch(`${SOURCE_DATE_EPOCH} in the environment,`, fromEnv);
}

function parseEpoch(where: string, text: string): bigint {
  if (!/^[0-9]{1,12}$/.test(text) || BigInt(text) > MAX_EPOCH) {
    throw new UsageError(
      `${where} "${text}": not a whole number of seconds since 1970 between 0 and ${MAX_EPOCH}`,
    );
  }
  return BigInt(text);
}
