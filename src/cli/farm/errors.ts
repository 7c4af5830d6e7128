/**
 * What went wrong on a farm host, in one line that starts with the host
 * (`ssh://root@arm64-01:22: ...`) and says what to do about it.
 */
import { BraidError, type ErrorCode } from '../../errors.js';

export class FarmError extends BraidError {
  /** `ssh://user@host:port`, or the agent's name when no host is involved. */
  readonly host: string;

  constructor(code: ErrorCode, host: string, message: string, options?: { cause?: unknown }) {
    super(code, `${host}: ${message}`, options);
    this.host = host;
  }
}
