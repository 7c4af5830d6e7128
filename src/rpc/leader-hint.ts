/**
 * How a standby coordinator sends a caller to the leader, both sides.
 *
 * A standby refuses what only the leader may do (an agent's Connect, calls
 * it cannot serve) with gRPC status UNAVAILABLE, the one-line message
 * `standby coordinator: the leader is HOST:PORT` (or `standby coordinator:
 * no leader elected yet`), and the leader's address in the response trailer
 * `braid-leader` (absent while no leader is known). The server throws a
 * StandbyError, which src/rpc/status.ts turns into that status and trailer;
 * a client reads the address back with leaderHintOf.
 */
import { BraidError, RpcError } from '../errors.js';
import { formatGrpcAddress, parseGrpcAddress } from './address.js';

/** The response trailer naming the leader's address. */
export const LEADER_METADATA_KEY = 'braid-leader';

/** The message of a standby's refusal. */
export function standbyMessage(leader?: string): string {
  return `standby coordinator: ${leader ? `the leader is ${leader}` : 'no leader elected yet'}`;
}

/**
 * Thrown by a standby coordinator's handlers: UNAVAILABLE, with the leader
 * (when known) in the `braid-leader` trailer.
 */
export class StandbyError extends BraidError {
  /** The leader's address as callers reach it; undefined while none is known. */
  readonly leader: string | undefined;
  /** Trailer metadata that src/rpc/status.ts sends with the status. */
  readonly trailers: Readonly<Record<string, string>>;

  constructor(leader?: string, options?: { cause?: unknown }) {
    const named = leader?.trim() || undefined;
    super('unavailable', standbyMessage(named), options);
    this.leader = named;
    this.trailers = named ? { [LEADER_METADATA_KEY]: named } : {};
  }
}

/** The trailer value of grpc-js Metadata (or anything with its `get`). */
function metadataValue(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const get = (value as { get?: unknown }).get;
  if (typeof get !== 'function') return undefined;
  const found = (get as (key: string) => unknown[]).call(value, LEADER_METADATA_KEY)[0];
  if (typeof found === 'string') return found;
  return Buffer.isBuffer(found) ? found.toString('utf8') : undefined;
}

/** `text` as a canonical gRPC address, or undefined when it is not one. */
function canonical(text: string | undefined): string | undefined {
  if (!text?.trim()) return undefined;
  try {
    return formatGrpcAddress(parseGrpcAddress(text));
  } catch {
    return undefined;
  }
}

/**
 * The leader a standby named when it refused the call that failed with
 * `err` (an RpcError from src/rpc/client.ts, the grpc-js error it wraps,
 * or a StandbyError thrown in-process), as a canonical address; undefined
 * when `err` is no such refusal or the standby knew no leader. Follows
 * `cause` links, so wrapped errors keep their hint.
 */
export function leaderHintOf(err: unknown): string | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 8 && current !== undefined && current !== null; depth++) {
    if (current instanceof RpcError || current instanceof StandbyError) {
      const hint = canonical(current.leader);
      if (hint) return hint;
    } else {
      const hint = canonical(metadataValue((current as { metadata?: unknown }).metadata));
      if (hint) return hint;
    }
    current = current instanceof Error ? current.cause : undefined;
  }
  return undefined;
}
