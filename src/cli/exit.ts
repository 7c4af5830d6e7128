/**
 * How the braid CLI ends: one line on stderr and a documented exit code.
 *   0  success
 *   1  the operation failed (remote error, build failure, unreachable coordinator)
 *   2  bad usage or invalid config (nothing was done)
 *   130 interrupted
 */
import { BraidError, ConfigError, errorLine } from '../errors.js';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

export function exitCodeFor(err: unknown): number {
  if (err instanceof ConfigError) return EXIT_USAGE;
  if (err instanceof BraidError && err.code === 'invalid_argument' && !('operation' in err)) {
    return EXIT_USAGE;
  }
  return EXIT_FAILED;
}

export function reportAndExit(err: unknown): never {
  process.stderr.write(`braid: ${errorLine(err)}\n`);
  process.exit(exitCodeFor(err));
}
