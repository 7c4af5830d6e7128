/**
 * braid's error taxonomy. Every error a user can see is a BraidError with a
 * stable `code`; the message is one line that names the offending value.
 */

/** Stable, transport-independent error codes (mapped to gRPC in src/rpc/status.ts). */
export type ErrorCode =
  | 'invalid_argument'
  | 'not_found'
  | 'already_exists'
  | 'failed_precondition'
  | 'permission_denied'
  | 'unauthenticated'
  | 'resource_exhausted'
  | 'unavailable'
  | 'deadline_exceeded'
  | 'cancelled'
  | 'unimplemented'
  | 'internal';

export const ERROR_CODES: readonly ErrorCode[] = [
  'invalid_argument',
  'not_found',
  'already_exists',
  'failed_precondition',
  'permission_denied',
  'unauthenticated',
  'resource_exhausted',
  'unavailable',
  'deadline_exceeded',
  'cancelled',
  'unimplemented',
  'internal',
];

export function isErrorCode(value: string): value is ErrorCode {
  return (ERROR_CODES as readonly string[]).includes(value);
}

export class BraidError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * Bad usage: a flag, argument, value or file the user gave cannot be used,
 * and nothing was done. The one error type the CLI ends with exit 2
 * (src/cli/exit.ts). The message is one line naming the offending value.
 * Its code stays `invalid_argument`, so a coordinator that throws one still
 * answers INVALID_ARGUMENT, which a client reports as a remote error (exit 1).
 */
export class UsageError extends BraidError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('invalid_argument', message, options);
  }
}

/** Invalid configuration, a kind of bad usage: `key` names the setting, as the user spelled it. */
export class ConfigError extends UsageError {
  readonly key: string;

  constructor(key: string, message: string, options?: { cause?: unknown }) {
    super(`invalid config ${key}: ${message}`, options);
    this.key = key;
  }
}

/**
 * A remote call failed; `operation` is the RPC path, `target` the address.
 * `leader` is the leader a standby coordinator named when it refused the
 * call (src/rpc/leader-hint.ts); undefined otherwise.
 */
export class RpcError extends BraidError {
  readonly operation: string;
  readonly target: string;
  readonly leader: string | undefined;

  constructor(
    code: ErrorCode,
    operation: string,
    target: string,
    message: string,
    options?: { cause?: unknown; leader?: string | undefined },
  ) {
    super(code, message, options);
    this.operation = operation;
    this.target = target;
    this.leader = options?.leader;
  }
}

/** The one line a user sees for any error. */
export function errorLine(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] ?? err.name;
  return String(err);
}
