/**
 * What the user gave, read by parsers of other layers that do not know
 * where their input came from. An image reference or a platform that does
 * not parse is an error of the OCI layer (InvalidReferenceError,
 * PlatformError), thrown the same for a registry's answer as for a flag; an
 * SSH URL, key file or known_hosts file that cannot be used is an SshError
 * (invalid_argument) in the agent and in `braid farm` alike. Where a command
 * knows the input is the user's, these turn that refusal into a UsageError
 * (exit 2) with the same one-line message and the original as its cause.
 */
import { UsageError } from '../errors.js';
import { InvalidReferenceError, PlatformError } from '../oci/errors.js';
import { SshError } from '../ssh/errors.js';

/** Runs `parse` on text the user typed; a reference, platform or SSH URL it refuses is bad usage. */
export function fromUser<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof InvalidReferenceError || err instanceof PlatformError) {
      throw new UsageError(err.message, { cause: err });
    }
    throw sshSettingRefusal(err);
  }
}

/**
 * `err` as bad usage when it is an SshError refusing what the user set (the
 * SSH URL, a key file, a known_hosts file: src/ssh throws these, and only
 * these, as invalid_argument); otherwise `err` itself.
 */
export function sshSettingRefusal(err: unknown): unknown {
  if (err instanceof SshError && err.code === 'invalid_argument') {
    return new UsageError(err.message, { cause: err });
  }
  return err;
}
