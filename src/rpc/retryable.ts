/**
 * The one place that decides whether an error is worth another attempt:
 * the agent's session with the coordinator, the agent's first look at its
 * engine and an SSH connection to an engine host all ask here.
 */
import { BraidError, type ErrorCode } from '../errors.js';

/**
 * Codes a retry cannot fix: refused credentials or access, a request or
 * setting the other side will never accept, a name already taken, an
 * operation the other side does not have, a refused host key.
 */
export const UNRECOVERABLE_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'unauthenticated',
  'permission_denied',
  'invalid_argument',
  'failed_precondition',
  'already_exists',
  'unimplemented',
]);

/** Whether `err` carries a code no retry can fix (see UNRECOVERABLE_CODES). */
export function isUnrecoverable(err: unknown): boolean {
  return err instanceof BraidError && UNRECOVERABLE_CODES.has(err.code);
}

/**
 * Whether another attempt may succeed: network errors, UNAVAILABLE, a
 * deadline, and anything that is not a BraidError (a socket reset) are;
 * UNRECOVERABLE_CODES are not.
 */
export function isRetryable(err: unknown): boolean {
  return !isUnrecoverable(err);
}
