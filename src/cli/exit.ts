/**
 * How the braid CLI ends: one line on stderr and a documented exit code.
 *   0  success
 *   1  the operation failed (remote error, build failure, unreachable coordinator)
 *   2  bad usage or invalid config (nothing was done)
 *   130 interrupted
 *   141 the reader of stdout or stderr went away (`braid logs ID | head -1`), as
 *       for a Unix tool ended by SIGPIPE
 */
import { RpcError, UsageError, errorLine } from '../errors.js';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;
/** 128 + SIGPIPE: what a shell reports for a Unix tool whose reader closed the pipe. */
export const EXIT_CLOSED_PIPE = 141;

/**
 * 2 for a UsageError (a ConfigError is one), and only for it: the code of an
 * error does not decide, so a remote INVALID_ARGUMENT (an RpcError) or a
 * registry's malformed answer is a failed operation, 1. Code that checks
 * what the user typed with a parser of its own domain (a reference, a
 * platform, an SSH URL) turns that parser's refusal into a UsageError where
 * it knows the text came from the user (src/cli/user-input.ts).
 */
export function exitCodeFor(err: unknown): number {
  return err instanceof UsageError ? EXIT_USAGE : EXIT_FAILED;
}

/** A refusal by the coordinator says so first: `unauthenticated: ...`, `permission denied: ...`. */
const REFUSALS: Partial<Record<string, string>> = {
  unauthenticated: 'unauthenticated',
  permission_denied: 'permission denied',
};

export function userLine(err: unknown): string {
  const refusal = err instanceof RpcError ? REFUSALS[err.code] : undefined;
  return refusal ? `${refusal}: ${errorLine(err)}` : errorLine(err);
}

export function reportAndExit(err: unknown): never {
  process.stderr.write(`braid: ${userLine(err)}\n`);
  process.exit(exitCodeFor(err));
}
