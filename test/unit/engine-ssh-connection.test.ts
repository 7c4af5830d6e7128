import { EventEmitter } from 'node:events';
import type { Client } from 'ssh2';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SshConnection } from '../../src/ssh/connection.js';
import { SshError } from '../../src/ssh/errors.js';
import { parseSshUrl } from '../../src/ssh/ssh-url.js';

/** Stands in for ssh2's Client: the state machine only listens for close and calls end. */
class FakeClient extends EventEmitter {
  ended = false;
  end(): this {
    this.ended = true;
    queueMicrotask(() => this.emit('close'));
    return this;
  }
  destroy(): this {
    return this.end();
  }
  /** The peer went away. */
  drop(): void {
    this.emit('close');
  }
}

const target = parseSshUrl('ssh://root@127.0.0.1:2222');
const unavailable = (text: string) => new SshError('unavailable', target.display, text);

/** A connection whose attempts follow `script`: a client, or an error to fail with. */
function scripted(script: (FakeClient | SshError)[], now: () => number = Date.now) {
  const attempts: number[] = [];
  const connection = new SshConnection(target, {
    identities: [],
    knownHostsFiles: [],
    readyTimeoutMs: 1000,
    keepaliveIntervalMs: 1000,
    keepaliveCountMax: 3,
    backoff: { baseMs: 100, maxMs: 400 },
    stableAfterMs: 10_000,
    // The ceiling of each jittered delay: base, 2x base, ... up to the cap.
    random: () => 1,
    now,
    connect: async () => {
      attempts.push(Date.now());
      const next = script.shift();
      if (next === undefined) throw unavailable('script ran out');
      if (next instanceof SshError) throw next;
      return next as unknown as Client;
    },
  });
  return { connection, attempts };
}

describe('the SSH connection keeper', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('connects on first use and shares one connection between calls', async () => {
    const client = new FakeClient();
    const { connection, attempts } = scripted([client]);
    expect(connection.state).toBe('idle');
    const [a, b] = await Promise.all([connection.client(1000), connection.client(1000)]);
    expect(a).toBe(client);
    expect(b).toBe(client);
    expect(await connection.client(1000)).toBe(client);
    expect(attempts).toHaveLength(1);
    expect(connection.state).toBe('ready');
  });

  it('never retries a refused host key or login, and every later call says why', async () => {
    const refused = new SshError('failed_precondition', target.display, 'host key changed: ...');
    const { connection, attempts } = scripted([refused, new FakeClient()]);
    await expect(connection.client(5000)).rejects.toBe(refused);
    await vi.advanceTimersByTimeAsync(60_000);
    await expect(connection.client(5000)).rejects.toBe(refused);
    expect(attempts).toHaveLength(1);
    expect(connection.state).toBe('failed');
  });

  it('retries a network failure with doubling backoff up to the cap', async () => {
    const client = new FakeClient();
    const { connection, attempts } = scripted([
      unavailable('connect ECONNREFUSED'),
      unavailable('connect ECONNREFUSED'),
      unavailable('connect ECONNREFUSED'),
      unavailable('connect ECONNREFUSED'),
      client,
    ]);
    const start = Date.now();
    const ready = connection.client(10_000);
    await vi.runAllTimersAsync();
    expect(await ready).toBe(client);
    expect(attempts.map((t) => t - start)).toEqual([0, 100, 300, 700, 1100]);
  });

  it('fails a call that waits longer than it may, naming the last error, and keeps trying', async () => {
    const client = new FakeClient();
    const { connection } = scripted([
      unavailable('connect ECONNREFUSED 127.0.0.1:2222'),
      unavailable('connect ECONNREFUSED 127.0.0.1:2222'),
      client,
    ]);
    const early = connection.client(50);
    const caught = early.catch((err: unknown) => err);
    await vi.advanceTimersByTimeAsync(50);
    const err = (await caught) as SshError;
    expect(err.code).toBe('unavailable');
    expect(err.message).toBe(
      'ssh://root@127.0.0.1:2222: not connected within 50 ms (waiting: connect ECONNREFUSED 127.0.0.1:2222)',
    );
    const later = connection.client(1000);
    await vi.advanceTimersByTimeAsync(1000);
    expect(await later).toBe(client);
  });

  it('re-establishes a dropped connection at once when it had lasted, after backoff when it had not', async () => {
    let clock = 0;
    const first = new FakeClient();
    const second = new FakeClient();
    const third = new FakeClient();
    const { connection, attempts } = scripted([first, second, third], () => clock);
    await connection.client(1000);
    clock = 60_000;
    first.drop();
    await vi.advanceTimersByTimeAsync(0);
    expect(attempts).toHaveLength(2);
    expect(await connection.client(1000)).toBe(second);
    // Dropped a moment after it came up: a failure streak, so it waits.
    second.drop();
    await vi.advanceTimersByTimeAsync(99);
    expect(attempts).toHaveLength(2);
    expect(connection.state).toBe('waiting');
    await vi.advanceTimersByTimeAsync(1);
    expect(attempts).toHaveLength(3);
    expect(await connection.client(1000)).toBe(third);
  });

  it('close ends the connection, fails waiting calls and stops reconnecting', async () => {
    const client = new FakeClient();
    const { connection, attempts } = scripted([client, new FakeClient()]);
    await connection.client(1000);
    await connection.close();
    expect(client.ended).toBe(true);
    expect(connection.state).toBe('closed');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(attempts).toHaveLength(1);
    await expect(connection.client(1000)).rejects.toMatchObject({ code: 'cancelled' });
    await connection.close();
  });
});
