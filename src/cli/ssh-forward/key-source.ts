/**
 * Where a forwarded agent's keys come from: one interface, implemented once
 * per kind (agent-socket.ts: a running ssh-agent; key-file.ts: a private key
 * file). Both kinds offer only the two read-only operations, list and sign.
 */
import type { ParsedKey } from 'ssh2';

/** The hash of an RSA signature: SSH_AGENT_RSA_SHA2_256/512, or SHA-1 when neither flag is set. */
export type SignHash = 'sha1' | 'sha256' | 'sha512';

export interface KeySource {
  /** For logs: the socket or the file, nothing secret. */
  readonly description: string;
  /** Public keys (with their comments) this source signs with. */
  identities(): Promise<ParsedKey[]>;
  /**
   * The signature blob of `data` by `publicKey`'s private half, without the
   * algorithm name (the agent reply adds it); `hash` only for RSA keys.
   */
  sign(publicKey: ParsedKey, data: Buffer, hash: SignHash | undefined): Promise<Buffer>;
}

export interface SourceTimeouts {
  /** Connecting to an agent socket (BuildKit dials with 2 s). */
  connectTimeoutMs: number;
  /** One request to an agent socket, connecting included. */
  requestTimeoutMs: number;
}

/** A source that cannot be used, in words for the user; the caller adds the flag. */
export class SourceProblem extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SourceProblem';
  }
}

/** The same public key: compared by SSH wire blob. */
export function sameKey(a: ParsedKey, b: ParsedKey): boolean {
  return a.getPublicSSH().equals(b.getPublicSSH());
}
