/**
 * Which coordinator to try next when several are configured and one of
 * them leads. After a failure, the leader a standby named comes first (the
 * hint is authoritative, listed or not), then the next address of the
 * list; each address at most once per round. A round is one CLI call, or
 * an agent's attempts between two backoff waits: a farm tries every
 * coordinator once, then waits, instead of hammering a dead one.
 */
import { errorLine } from '../errors.js';
import { leaderHintOf } from './leader-hint.js';

/** One address that failed in the current round, and why. */
export interface FailedAttempt {
  address: string;
  reason: string;
}

/** What to try after a failure. */
export interface NextCoordinator {
  address: string;
  /** Named by the standby that refused (not just the next of the list). */
  hinted: boolean;
}

export class LeaderSearch {
  private readonly list: string[];
  private at: string;
  private readonly tried = new Set<string>();
  private failures: FailedAttempt[] = [];
  /** The leader last named in this round. */
  private lastHint: string | undefined;

  /** `addresses` in the user's order (canonical strings); the first is tried first unless `start`. */
  constructor(addresses: readonly string[], start?: string) {
    if (addresses.length === 0) throw new Error('LeaderSearch needs at least one address');
    this.list = [...addresses];
    this.at = start ?? this.list[0]!;
    this.tried.add(this.at);
  }

  /** The address to try now. */
  get current(): string {
    return this.at;
  }

  /** The configured addresses, in order. */
  get addresses(): readonly string[] {
    return this.list;
  }

  /** The failures of this round, in the order they happened. */
  get attempts(): readonly FailedAttempt[] {
    return this.failures;
  }

  /**
   * `current` failed with `err`: the address to try next in this round and
   * whether a standby named it, or undefined when the round has tried every
   * candidate. `current` moves to the returned address.
   */
  failed(err: unknown): NextCoordinator | undefined {
    this.failures.push({ address: this.at, reason: reasonOf(err, this.at) });
    const hint = leaderHintOf(err);
    if (hint) this.lastHint = hint;
    if (hint && !this.tried.has(hint)) return this.moveTo(hint, true);
    const from = this.list.indexOf(this.at);
    for (let step = 1; step <= this.list.length; step++) {
      // From a leader that is not listed (from = -1), the list's first comes next.
      const candidate = this.list[(from + step + this.list.length) % this.list.length]!;
      if (!this.tried.has(candidate)) return this.moveTo(candidate, false);
    }
    return undefined;
  }

  /**
   * Begin a new round: at `from`, else at the leader last named in the
   * round that ended, else where that round began.
   */
  newRound(from?: string): void {
    const began = this.failures[0]?.address ?? this.at;
    this.at = from ?? this.lastHint ?? began;
    this.tried.clear();
    this.tried.add(this.at);
    this.failures = [];
    this.lastHint = undefined;
  }

  private moveTo(address: string, hinted: boolean): NextCoordinator {
    this.at = address;
    this.tried.add(address);
    return { address, hinted };
  }
}

/** An error's one line without the "cannot reach ADDRESS: " the transport puts first. */
export function reasonOf(err: unknown, address: string): string {
  const line = errorLine(err);
  const prefix = `cannot reach ${address}: `;
  return line.startsWith(prefix) ? line.slice(prefix.length) : line;
}

/** "a:7465 (connection refused), b:7465 (standby coordinator: no leader elected yet)". */
export function describeAttempts(attempts: readonly FailedAttempt[]): string {
  return attempts.map((a) => `${a.address} (${a.reason})`).join(', ');
}
