/**
 * The secrets of builds in flight, in memory only: given with the submit,
 * handed to the agents that build, dropped when the build ends. Nothing here
 * is ever stored, logged or put in an error; a coordinator restart loses
 * them all, which is why a build records its secret ids (BuildSpec).
 */
import { BraidError } from '../errors.js';

/** BuildKit's own cap on one secret. */
export const MAX_SECRET_BYTES = 500 * 1024;
/** More than any real build mounts; bounds the memory one submit can hold. */
export const MAX_SECRETS = 64;
const SECRET_ID = /^[A-Za-z0-9._-]{1,128}$/;

export interface BuildSecretValue {
  readonly id: string;
  readonly value: Uint8Array;
}

/** Checks secrets as submitted; errors name the id and the size, never the value. */
export function checkSecrets(secrets: readonly BuildSecretValue[]): string[] {
  if (secrets.length > MAX_SECRETS)
    throw new BraidError(
      'invalid_argument',
      `${secrets.length} secrets given; at most ${MAX_SECRETS}`,
    );
  const ids: string[] = [];
  for (const secret of secrets) {
    if (!SECRET_ID.test(secret.id))
      throw new BraidError(
        'invalid_argument',
        `secret id "${secret.id.slice(0, 140)}" must be 1 to 128 of A-Z a-z 0-9 . _ -`,
      );
    if (ids.includes(secret.id))
      throw new BraidError('invalid_argument', `secret id "${secret.id}" is given twice`);
    if (secret.value.length > MAX_SECRET_BYTES)
      throw new BraidError(
        'invalid_argument',
        `secret "${secret.id}" is ${secret.value.length} bytes; BuildKit takes at most ${MAX_SECRET_BYTES} (500 KiB)`,
      );
    ids.push(secret.id);
  }
  return ids;
}

export class SecretVault {
  private readonly byBuild = new Map<string, readonly BuildSecretValue[]>();

  keep(buildId: string, secrets: readonly BuildSecretValue[]): void {
    // Copies: the request's buffers belong to the transport.
    if (secrets.length > 0)
      this.byBuild.set(
        buildId,
        secrets.map((s) => ({ id: s.id, value: Uint8Array.from(s.value) })),
      );
  }

  /** The build's secrets, or undefined when this process never had them (it restarted). */
  get(buildId: string): readonly BuildSecretValue[] | undefined {
    return this.byBuild.get(buildId);
  }

  /** Drops a build's secrets, overwriting the bytes first. Idempotent. */
  forget(buildId: string): void {
    for (const secret of this.byBuild.get(buildId) ?? []) (secret.value as Uint8Array).fill(0);
    this.byBuild.delete(buildId);
  }

  /** Builds holding secrets now (for tests and metrics; no ids, no values). */
  get size(): number {
    return this.byBuild.size;
  }
}
