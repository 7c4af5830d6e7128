/**
 * The agent's session given several coordinators: it follows a standby's
 * hint at once, skips one it cannot reach, and waits out the backoff only
 * after every coordinator failed in a round (time is injected).
 */
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import {
  ConnectResponseSchema,
  type ConnectRequestSchema,
  type ConnectResponse,
} from '../../src/gen/braid/v1/agent_pb.js';
import { RpcError } from '../../src/errors.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { AsyncQueue } from '../../src/rpc/async-queue.js';
import { standbyMessage } from '../../src/rpc/leader-hint.js';
import { AgentSessionLoop, type SessionCall } from '../../src/agent/session.js';

type Sent = MessageInitShape<typeof ConnectRequestSchema>;

/** A session stream that welcomes, or fails with `error`, once the hello is in. */
class ScriptedCall implements SessionCall {
  readonly sent: Sent[] = [];
  private readonly inbox = new AsyncQueue<ConnectResponse | { error: Error }>();

  constructor(private readonly answer: Error | 'welcome') {}

  send(message: Sent): Promise<void> {
    this.sent.push(message);
    if (message.body?.case === 'hello') {
      setImmediate(() => {
        if (this.answer === 'welcome') {
          this.inbox.push(
            create(ConnectResponseSchema, {
              body: {
                case: 'welcome',
                value: { coordinatorVersion: 'fake', heartbeatIntervalMs: 600_000 },
              },
            }),
          );
        } else {
          this.inbox.push({ error: this.answer });
          this.inbox.close();
        }
      });
    }
    return Promise.resolve();
  }

  cancel(): void {
    this.inbox.close();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<ConnectResponse> {
    for await (const item of this.inbox) {
      if ('error' in item) throw item.error;
      yield item;
    }
  }
}

const refused = (address: string) =>
  new RpcError(
    'unavailable',
    '/braid.v1.AgentService/Connect',
    address,
    `cannot reach ${address}: connection refused`,
  );
const standby = (address: string, leader?: string) =>
  new RpcError('unavailable', '/braid.v1.AgentService/Connect', address, standbyMessage(leader), {
    leader,
  });

function harness(addresses: string[], answer: (address: string, n: number) => Error | 'welcome') {
  const lines: { msg: string; [k: string]: unknown }[] = [];
  const log = pino(
    { level: 'debug', base: null, timestamp: false },
    { write: (line: string) => lines.push(JSON.parse(line) as { msg: string }) },
  );
  const dialled: string[] = [];
  const calls: ScriptedCall[] = [];
  const waits: number[] = [];
  const session = new AgentSessionLoop({
    name: 'fake-agent',
    capacity: 1,
    labels: {},
    native: parsePlatform('linux/amd64'),
    emulated: [],
    engineVersion: 'test',
    client: {
      connect: () => {
        throw new Error('with several coordinators the session dials by address');
      },
    },
    coordinators: {
      addresses,
      connect: (address) => {
        dialled.push(address);
        const call = new ScriptedCall(answer(address, dialled.length));
        calls.push(call);
        return call;
      },
    },
    log,
    runJob: () => Promise.reject(new Error('no job expected')),
    backoff: { baseMs: 100, maxMs: 800 },
    random: () => 1,
    sleep: (ms) => {
      waits.push(ms);
      return new Promise((resolve) => setImmediate(resolve));
    },
  });
  return { session, dialled, calls, waits, lines };
}

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setImmediate(r));
  expect(check()).toBe(true);
}

describe('an agent session given several coordinators', () => {
  it('follows the leader a standby names, without waiting, and joins it', async () => {
    const h = harness(['a:1', 'b:2'], (address) =>
      address === 'a:1' ? standby('a:1', 'b:2') : 'welcome',
    );
    const stop = new AbortController();
    const done = h.session.run(stop.signal);
    await until(() => h.session.state === 'joined');
    expect(h.dialled).toEqual(['a:1', 'b:2']);
    expect(h.session.coordinator).toBe('b:2');
    expect(h.waits).toEqual([]);
    expect(h.calls[1]?.sent[0]?.body?.case).toBe('hello');
    expect(h.lines.some((l) => l.msg.includes('named the leader') && l.leader === 'b:2')).toBe(
      true,
    );
    stop.abort();
    await done;
  });

  it('follows a leader that is not in the list, and says so', async () => {
    const h = harness(['a:1', 'b:2'], (address) =>
      address === 'z:9' ? 'welcome' : standby(address, 'z:9'),
    );
    const stop = new AbortController();
    const done = h.session.run(stop.signal);
    await until(() => h.session.state === 'joined');
    expect(h.dialled).toEqual(['a:1', 'z:9']);
    expect(h.lines.find((l) => l.leader === 'z:9')).toMatchObject({ listed: false });
    stop.abort();
    await done;
  });

  it('skips a coordinator it cannot reach', async () => {
    const h = harness(['a:1', 'b:2'], (address) =>
      address === 'a:1' ? refused('a:1') : 'welcome',
    );
    const stop = new AbortController();
    const done = h.session.run(stop.signal);
    await until(() => h.session.state === 'joined');
    expect(h.dialled).toEqual(['a:1', 'b:2']);
    expect(h.waits).toEqual([]);
    stop.abort();
    await done;
  });

  it('waits out the backoff once per round when none takes the session', async () => {
    const h = harness(['a:1', 'b:2'], (address, n) =>
      n > 4 ? 'welcome' : address === 'a:1' ? refused('a:1') : standby('b:2'),
    );
    const stop = new AbortController();
    const done = h.session.run(stop.signal);
    await until(() => h.session.state === 'joined');
    // Round 1: a, b, wait; round 2: a, b, wait; round 3: a joins.
    expect(h.dialled).toEqual(['a:1', 'b:2', 'a:1', 'b:2', 'a:1']);
    expect(h.waits).toEqual([100, 200]);
    stop.abort();
    await done;
  });
});
