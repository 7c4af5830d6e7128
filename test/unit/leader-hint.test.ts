/**
 * The standby's refusal, both ways: what a StandbyError becomes on the wire
 * (UNAVAILABLE, one line, the `braid-leader` trailer) and how a client
 * reads the leader back; and the order in which a caller tries coordinators.
 */
import { Metadata, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { BraidError, RpcError } from '../../src/errors.js';
import {
  LEADER_METADATA_KEY,
  StandbyError,
  leaderHintOf,
  standbyMessage,
} from '../../src/rpc/leader-hint.js';
import { LeaderSearch, describeAttempts } from '../../src/rpc/leader-search.js';
import { fromServiceError, toStatusObject } from '../../src/rpc/status.js';

/** What grpc-js hands a client for a status object the server sent. */
function asReceived(status: ReturnType<typeof toStatusObject>): ServiceError {
  return Object.assign(new Error(`${status.code}: ${status.details}`), {
    code: status.code ?? GrpcStatus.UNKNOWN,
    details: status.details ?? '',
    metadata: status.metadata ?? new Metadata(),
  }) as ServiceError;
}

describe('a standby refusal on the wire', () => {
  it('is UNAVAILABLE with one line naming the leader and the braid-leader trailer', () => {
    const status = toStatusObject(new StandbyError('10.0.0.5:7465'));
    expect(LEADER_METADATA_KEY).toBe('braid-leader');
    expect(status.code).toBe(GrpcStatus.UNAVAILABLE);
    expect(status.details).toBe('standby coordinator: the leader is 10.0.0.5:7465');
    expect(status.metadata?.get('braid-leader')).toEqual(['10.0.0.5:7465']);
    expect(status.metadata?.get('braid-error-code')).toEqual(['unavailable']);
  });

  it('carries no trailer while no leader is known', () => {
    const status = toStatusObject(new StandbyError());
    expect(status.code).toBe(GrpcStatus.UNAVAILABLE);
    expect(status.details).toBe('standby coordinator: no leader elected yet');
    expect(status.metadata?.get('braid-leader')).toEqual([]);
    expect(standbyMessage('')).toBe('standby coordinator: no leader elected yet');
  });

  it('is read back by a client as an RpcError that keeps the message and names the leader', () => {
    const received = asReceived(toStatusObject(new StandbyError('10.0.0.5:7465')));
    const err = fromServiceError(received, '/braid.v1.AgentService/Connect', '10.0.0.4:7465');
    expect(err).toBeInstanceOf(RpcError);
    expect(err.code).toBe('unavailable');
    expect(err.message).toBe('standby coordinator: the leader is 10.0.0.5:7465');
    expect(err.leader).toBe('10.0.0.5:7465');
    expect(leaderHintOf(err)).toBe('10.0.0.5:7465');
  });

  it('leaves other errors as they were: no trailer, no leader', () => {
    const status = toStatusObject(new BraidError('unavailable', 'draining'));
    expect(status.metadata?.get('braid-leader')).toEqual([]);
    const err = fromServiceError(asReceived(status), '/x', 'a:1');
    expect(err.leader).toBeUndefined();
    expect(leaderHintOf(err)).toBeUndefined();
  });
});

describe('leaderHintOf', () => {
  it('reads the leader from an RpcError, a StandbyError and a grpc-js error', () => {
    expect(
      leaderHintOf(new RpcError('unavailable', '/x', 'a:1', 'standby', { leader: 'b:2' })),
    ).toBe('b:2');
    expect(leaderHintOf(new StandbyError('b:2'))).toBe('b:2');
    const metadata = new Metadata();
    metadata.set('braid-leader', 'b:2');
    expect(leaderHintOf({ code: GrpcStatus.UNAVAILABLE, metadata })).toBe('b:2');
  });

  it('follows causes, so a wrapped refusal keeps its hint', () => {
    const inner = new RpcError('unavailable', '/x', 'a:1', 'standby', { leader: 'b:2' });
    expect(leaderHintOf(new BraidError('unavailable', 'wrapped', { cause: inner }))).toBe('b:2');
  });

  it('gives the leader canonically and ignores what is no address', () => {
    expect(leaderHintOf(new StandbyError(' [::1]:7465 '))).toBe('[::1]:7465');
    expect(
      leaderHintOf(
        new RpcError('unavailable', '/x', 'a:1', 'standby', { leader: 'not an address' }),
      ),
    ).toBeUndefined();
    expect(leaderHintOf(new Error('connection refused'))).toBeUndefined();
    expect(leaderHintOf(undefined)).toBeUndefined();
    expect(leaderHintOf('standby coordinator: the leader is b:2')).toBeUndefined();
  });
});

const refused = (target: string) =>
  new RpcError('unavailable', '/x', target, `cannot reach ${target}: connection refused`);
const standby = (leader?: string) =>
  new RpcError('unavailable', '/x', 'x', standbyMessage(leader), { leader });

describe('LeaderSearch', () => {
  it('tries the list in order when nobody names a leader, each once', () => {
    const search = new LeaderSearch(['a:1', 'b:2', 'c:3']);
    expect(search.current).toBe('a:1');
    expect(search.failed(refused('a:1'))).toEqual({ address: 'b:2', hinted: false });
    expect(search.failed(refused('b:2'))).toEqual({ address: 'c:3', hinted: false });
    expect(search.failed(refused('c:3'))).toBeUndefined();
    expect(describeAttempts(search.attempts)).toBe(
      'a:1 (connection refused), b:2 (connection refused), c:3 (connection refused)',
    );
  });

  it('goes to the leader a standby names first, listed or not', () => {
    const search = new LeaderSearch(['a:1', 'b:2', 'c:3']);
    expect(search.failed(standby('c:3'))).toEqual({ address: 'c:3', hinted: true });
    const unlisted = new LeaderSearch(['a:1', 'b:2']);
    expect(unlisted.failed(standby('z:9'))).toEqual({ address: 'z:9', hinted: true });
    // From an unlisted leader, the list goes on where it was not tried.
    expect(unlisted.failed(refused('z:9'))).toEqual({ address: 'b:2', hinted: false });
  });

  it('does not follow a hint back to an address this round tried', () => {
    const search = new LeaderSearch(['a:1', 'b:2', 'c:3']);
    expect(search.failed(standby('b:2'))).toEqual({ address: 'b:2', hinted: true });
    expect(search.failed(standby('a:1'))).toEqual({ address: 'c:3', hinted: false });
    expect(search.failed(standby('a:1'))).toBeUndefined();
  });

  it('starts the next round at the leader last named, else where the round began', () => {
    const named = new LeaderSearch(['a:1', 'b:2']);
    named.failed(standby('b:2'));
    named.failed(refused('b:2'));
    named.newRound();
    expect(named.current).toBe('b:2');
    expect(named.attempts).toEqual([]);
    const unnamed = new LeaderSearch(['a:1', 'b:2'], 'b:2');
    unnamed.failed(refused('b:2'));
    unnamed.failed(refused('a:1'));
    unnamed.newRound();
    expect(unnamed.current).toBe('b:2');
  });
});
