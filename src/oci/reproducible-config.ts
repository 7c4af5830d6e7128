/**
 * The image config of a reproducible build (SOURCE_DATE_EPOCH): `created`
 * is the epoch, every history time later than the epoch (or missing) is the
 * epoch, rootfs.diff_ids name the layers as re-packed with their file
 * times clamped, and labels naming the run that made it are dropped. Everything else is kept in the engine's key order, written
 * as Go writes JSON, so two hosts with the same engine version give the
 * same bytes.
 */
import { goJson } from './provenance.js';

/** 9999-12-31T23:59:59Z, the last second an RFC 3339 `created` can say. */
export const MAX_SOURCE_DATE_EPOCH = 253_402_300_799n;

interface HistoryEntry {
  created?: string;
  [key: string]: unknown;
}

/** The parts of an image config this rewrites; the rest is kept as it is. */
interface Config {
  created?: string;
  history?: HistoryEntry[];
  rootfs?: { type?: string; diff_ids?: string[] };
  config?: { Labels?: Record<string, string> | null };
}

/** An RFC 3339 time as Go's time.Time marshals a whole second: `2023-11-14T22:13:20Z`. */
export function epochTime(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toISOString().replace(/\.000Z$/, 'Z');
}

/**
 * `dropLabels` are labels that say which run made the image (a build's id)
 * rather than what it is: a reproducible image cannot carry them.
 */
export function reproducibleConfig<C extends Config>(
  config: C,
  diffIds: readonly string[],
  epochSeconds: number,
  dropLabels: readonly string[] = [],
): { config: C; bytes: Buffer } {
  const epoch = epochTime(epochSeconds);
  const source: C = config;
  const clamp = (time: string | undefined): string => {
    const ms = time === undefined ? Number.NaN : Date.parse(time);
    return Number.isNaN(ms) || ms > epochSeconds * 1000 ? epoch : (time as string);
  };
  const rewritten: C = {
    ...source,
    created: epoch,
    ...(Array.isArray(source.history) && {
      history: source.history.map((entry) => ({ ...entry, created: clamp(entry.created) })),
    }),
    rootfs: { ...source.rootfs, type: source.rootfs?.type ?? 'layers', diff_ids: [...diffIds] },
  };
  const labels = source.config?.Labels;
  if (labels && dropLabels.some((key) => key in labels)) {
    const kept = Object.fromEntries(
      Object.entries(labels).filter(([key]) => !dropLabels.includes(key)),
    );
    rewritten.config = {
      ...source.config,
      Labels: Object.keys(kept).length > 0 ? kept : null,
    };
  }
  return { config: rewritten, bytes: Buffer.from(goJson(rewritten)) };
}
