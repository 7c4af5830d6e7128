/**
 * The error of everything SSH: which host, what went wrong, and what the
 * operator can do about it, in one line.
 */
import { BraidError, type ErrorCode } from '../errors.js';
import { isUnrecoverable } from '../rpc/retryable.js';

export class SshError extends BraidError {
  /** The host as the user named it: `ssh://user@host:port`, or the URL text when it did not parse. */
  readonly target: string;

  constructor(code: ErrorCode, target: string, message: string, options?: { cause?: unknown }) {
    super(code, `${target}: ${message}`, options);
    this.target = target;
  }
}

/** A reconnect cannot fix it: a refused host key, refused credentials, bad settings (src/rpc/retryable.ts). */
export function isFatalSshError(err: unknown): boolean {
  return err instanceof SshError && isUnrecoverable(err);
}
