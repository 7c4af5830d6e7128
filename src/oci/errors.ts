/**
 * Errors of the OCI layer. Each names what the user gave or asked for.
 */
import { BraidError, type ErrorCode } from '../errors.js';

/** An image reference that does not parse; `text` is what the user wrote. */
export class InvalidReferenceError extends BraidError {
  readonly text: string;
  constructor(text: string, reason: string) {
    super('invalid_argument', `invalid image reference "${text}": ${reason}`);
    this.text = text;
  }
}

/** A platform string that does not parse or names an unknown architecture. */
export class PlatformError extends BraidError {
  readonly text: string;
  constructor(text: string, reason: string) {
    super('invalid_argument', `invalid platform "${text}": ${reason}`);
    this.text = text;
  }
}

/**
 * A registry operation failed. `operation` is what braid was doing
 * ("HEAD manifest", "PUT blob upload"), `reference` what it was done to, and
 * `registryCode`/`status` what the registry answered.
 */
export class RegistryError extends BraidError {
  readonly operation: string;
  readonly reference: string;
  readonly status: number | undefined;
  readonly registryCode: string | undefined;

  constructor(
    code: ErrorCode,
    details: {
      operation: string;
      reference: string;
      status?: number;
      registryCode?: string;
      message: string;
    },
    options?: { cause?: unknown },
  ) {
    const answer = [
      details.status !== undefined ? `HTTP ${details.status}` : undefined,
      details.registryCode,
    ]
      .filter(Boolean)
      .join(' ');
    super(
      code,
      `${details.operation} ${details.reference}: ${answer ? `${answer}: ` : ''}${details.message}`,
      options,
    );
    this.operation = details.operation;
    this.reference = details.reference;
    this.status = details.status;
    this.registryCode = details.registryCode;
  }
}

/** The arch guard found a binary of another architecture than the platform claims. */
export class ArchMismatchError extends BraidError {
  readonly platform: string;
  readonly file: string;
  readonly actual: string;
  constructor(platform: string, file: string, actual: string) {
    super('failed_precondition', `${platform}: ${file} is ${actual}`);
    this.platform = platform;
    this.file = file;
    this.actual = actual;
  }
}
