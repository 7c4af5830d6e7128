import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { SshRelay, type SshJob } from '../../src/coordinator/ssh-relay.js';
import { BraidError } from '../../src/errors.js';
import {
  AgentServiceForwardSshRequestSchema,
  type AgentServiceForwardSshRequest,
  type AgentServiceForwardSshResponseSchema,
} from '../../src/gen/braid/v1/agent_pb.js';
import {
  ForwardSshRequestSchema,
  type ForwardSshRequest,
  type ForwardSshResponseSchema,
} from '../../src/gen/braid/v1/build_pb.js';
import { PlatformSchema } from '../../src/gen/braid/v1/common_pb.js';
import { createLogger } from '../../src/log.js';
import { AsyncQueue } from '../../src/rpc/async-queue.js';
import type { CallIdentity } from '../../src/rpc/service.js';

type ClientMessage = MessageInitShape<typeof ForwardSshResponseSchema>;
type AgentMessage = MessageInitShape<typeof AgentServiceForwardSshResponseSchema>;

const log = createLogger({ level: 'silent', format: 'json', component: 'test' });
const submitter: CallIdentity = { id: 'token-ci', name: 'ci', kind: 'token' };
const stranger: CallIdentity = { id: 'token-dev', name: 'dev', kind: 'token' };
const text = (value: string): Uint8Array => new TextEncoder().encode(value);
const read = (value: Uint8Array | undefined): string => new TextDecoder().decode(value);

/** Everything a stream yields, read in the background as a gRPC server would. */
function drain<T>(stream: AsyncIterable<T>) {
  const state: { items: T[]; ended: boolean; error: unknown } = {
    items: [],
    ended: false,
    error: undefined,
  };
  void (async () => {
    try {
      for await (const item of stream) state.items.push(item);
    } catch (err) {
      state.error = err;
    }
    state.ended = true;
  })();
  return state;
}

/** A client message as one line: "opened 1 default linux/arm64", "data 1 hi", "closed 1 ''". */
function line(message: ClientMessage): string {
  const body = message.body;
  switch (body?.case) {
    case 'opened': {
      const p = body.value.platform;
      return `opened ${body.value.connectionId} ${body.value.sshId} ${p?.os}/${p?.architecture}`;
    }
    case 'data':
      return `data ${body.value.connectionId} ${read(body.value.data)}`;
    case 'closed':
      return `closed ${body.value.connectionId} '${body.value.error ?? ''}'`;
    default:
      return `unexpected ${String(body?.case)}`;
  }
}

/** The CLI's end: sends a hello for `buildId`, then what the test sends. */
function attachClient(relay: SshRelay, buildId: string, identity: CallIdentity | undefined) {
  const requests = new AsyncQueue<ForwardSshRequest>();
  requests.push(create(ForwardSshRequestSchema, { body: { case: 'hello', value: { buildId } } }));
  const call = new AbortController();
  const received = drain(relay.serveClient(requests, identity, call.signal));
  return {
    received,
    call,
    lines: () => received.items.map(line),
    send(connectionId: bigint, data: string) {
      requests.push(
        create(ForwardSshRequestSchema, {
          body: { case: 'data', value: { connectionId, data: text(data) } },
        }),
      );
    },
    close(connectionId: bigint) {
      requests.push(
        create(ForwardSshRequestSchema, { body: { case: 'closed', value: { connectionId } } }),
      );
    },
  };
}

const job = (buildId: string, sshIds: string[], architecture: string): SshJob => ({
  buildId,
  sshIds,
  platform: create(PlatformSchema, { os: 'linux', architecture }),
});

/** One `RUN --mount=type=ssh` connection of a job, as its agent opens it. */
function connectAgent(relay: SshRelay, jobId: string, sshId: string, held: SshJob) {
  const requests = new AsyncQueue<AgentServiceForwardSshRequest>();
  requests.push(
    create(AgentServiceForwardSshRequestSchema, {
      body: { case: 'open', value: { jobId, sshId } },
    }),
  );
  const call = new AbortController();
  const resolve = (asked: string): SshJob => {
    if (asked !== jobId) throw new BraidError('permission_denied', `job ${asked} is not held`);
    return held;
  };
  const received = drain<AgentMessage>(relay.relayAgent(requests, resolve, call.signal));
  return {
    received,
    call,
    lines: () => received.items.map((m) => read(m.data)),
    send(data: Uint8Array | string) {
      requests.push(
        create(AgentServiceForwardSshRequestSchema, {
          body: { case: 'data', value: typeof data === 'string' ? text(data) : data },
        }),
      );
    },
    /** The build step closed its end. */
    end() {
      requests.close();
    },
  };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('the client that serves a build’s SSH agents', () => {
  it('is refused when it did not submit the build (permission denied)', async () => {
    const relay = new SshRelay(log);
    relay.expect('b1', submitter);
    const other = attachClient(relay, 'b1', stranger);
    const anonymous = attachClient(relay, 'b1', undefined);
    await vi.waitFor(() => expect(other.received.ended && anonymous.received.ended).toBe(true));
    for (const client of [other, anonymous]) {
      expect(client.received.error).toMatchObject({
        code: 'permission_denied',
        message: 'only the client that submitted build b1 may forward its SSH agents',
      });
    }
    // The submitter itself is taken: its agents' connections reach it.
    const own = attachClient(relay, 'b1', submitter);
    connectAgent(relay, 'b1-1', 'default', job('b1', ['default'], 'arm64'));
    await vi.waitFor(() => expect(own.lines()).toEqual(['opened 1 default linux/arm64']));
    relay.forget('b1');
  });

  it('is taken on a coordinator without tokens when the submit had none either', async () => {
    const relay = new SshRelay(log);
    relay.expect('b1', undefined);
    const client = attachClient(relay, 'b1', undefined);
    connectAgent(relay, 'b1-1', 'default', job('b1', ['default'], 'amd64'));
    await vi.waitFor(() => expect(client.lines()).toEqual(['opened 1 default linux/amd64']));
    relay.forget('b1');
  });

  it('is refused while another client serves the same build, and taken once that one left', async () => {
    const relay = new SshRelay(log);
    relay.expect('b1', submitter);
    const first = attachClient(relay, 'b1', submitter);
    const agent = connectAgent(relay, 'b1-1', 'default', job('b1', ['default'], 'arm64'));
    await vi.waitFor(() => expect(first.lines()).toHaveLength(1));

    const second = attachClient(relay, 'b1', submitter);
    await vi.waitFor(() => expect(second.received.ended).toBe(true));
    expect(second.received.error).toMatchObject({
      code: 'already_exists',
      message: 'build b1 already has a client forwarding its SSH agents',
    });
    expect(first.received.ended).toBe(false);

    // The first client's call ends: its connections end with it, and the build may be served again.
    first.call.abort();
    await vi.waitFor(() => expect(first.received.ended && agent.received.ended).toBe(true));
    const again = attachClient(relay, 'b1', submitter);
    connectAgent(relay, 'b1-2', 'default', job('b1', ['default'], 's390x'));
    await vi.waitFor(() => expect(again.lines()).toEqual(['opened 1 default linux/s390x']));
    relay.forget('b1');
  });

  it('is refused for a build that forwards no SSH agent, and without a hello', async () => {
    const relay = new SshRelay(log);
    const unknown = attachClient(relay, 'b9', submitter);
    await vi.waitFor(() => expect(unknown.received.ended).toBe(true));
    expect(unknown.received.error).toMatchObject({
      code: 'failed_precondition',
      message: 'build "b9" forwards no SSH agent, or it has ended',
    });

    relay.expect('b1', submitter);
    const requests = new AsyncQueue<ForwardSshRequest>();
    requests.push(
      create(ForwardSshRequestSchema, {
        body: { case: 'closed', value: { connectionId: 1n } },
      }),
    );
    const rude = drain(relay.serveClient(requests, submitter, new AbortController().signal));
    await vi.waitFor(() => expect(rude.ended).toBe(true));
    expect(rude.error).toMatchObject({
      code: 'invalid_argument',
      message: 'a ForwardSsh stream must start with a hello',
    });
    relay.forget('b1');
  });
});

describe('a build step’s connection relayed to the client', () => {
  it('moves bytes both ways, each connection under its own id', async () => {
    const relay = new SshRelay(log);
    relay.expect('b1', submitter);
    const client = attachClient(relay, 'b1', submitter);
    const arm = connectAgent(relay, 'b1-1', 'default', job('b1', ['default', 'gh'], 'arm64'));
    await vi.waitFor(() => expect(client.lines()).toHaveLength(1));
    const s390x = connectAgent(relay, 'b1-2', 'gh', job('b1', ['default', 'gh'], 's390x'));
    await vi.waitFor(() => expect(client.lines()).toHaveLength(2));

    arm.send('list keys?');
    s390x.send('sign this');
    await vi.waitFor(() =>
      expect(client.lines()).toEqual([
        'opened 1 default linux/arm64',
        'opened 2 gh linux/s390x',
        'data 1 list keys?',
        'data 2 sign this',
      ]),
    );

    client.send(2n, 'signature');
    client.send(1n, 'two keys');
    client.send(1n, ' (more)');
    // An id no connection has is dropped, not delivered anywhere.
    client.send(7n, 'stray');
    await vi.waitFor(() => {
      expect(arm.lines()).toEqual(['two keys', ' (more)']);
      expect(s390x.lines()).toEqual(['signature']);
    });
    relay.forget('b1');
  });

  it('ends the agent’s stream when the client closes the connection, without echoing it back', async () => {
    const relay = new SshRelay(log);
    relay.expect('b1', submitter);
    const client = attachClient(relay, 'b1', submitter);
    const agent = connectAgent(relay, 'b1-1', 'default', job('b1', ['default'], 'arm64'));
    await vi.waitFor(() => expect(client.lines()).toHaveLength(1));

    client.send(1n, 'last answer');
    client.close(1n);
    await vi.waitFor(() => expect(agent.received.ended).toBe(true));
    expect(agent.received.error).toBeUndefined();
    expect(agent.lines()).toEqual(['last answer']);

    // The next event the client sees is the next connection, not a "closed" for the first.
    connectAgent(relay, 'b1-1', 'default', job('b1', ['default'], 'arm64'));
    await vi.waitFor(() => expect(client.lines()).toHaveLength(2));
    expect(client.lines()).toEqual([
      'opened 1 default linux/arm64',
      'opened 2 default linux/arm64',
    ]);
    relay.forget('b1');
  });

  it('sends closed to the client when the agent’s end closes, with the reason when it broke', async () => {
    const relay = new SshRelay(log);
    relay.expect('b1', submitter);
    const client = attachClient(relay, 'b1', submitter);
    const calm = connectAgent(relay, 'b1-1', 'default', job('b1', ['default'], 'arm64'));
    await vi.waitFor(() => expect(client.lines()).toHaveLength(1));
    calm.send('bye');
    calm.end();
    await vi.waitFor(() => expect(calm.received.ended).toBe(true));
    await vi.waitFor(() =>
      expect(client.lines()).toEqual(['opened 1 default linux/arm64', 'data 1 bye', "closed 1 ''"]),
    );

    const loud = connectAgent(relay, 'b1-1', 'default', job('b1', ['default'], 'arm64'));
    await vi.waitFor(() => expect(client.lines()).toHaveLength(4));
    loud.send(new Uint8Array(256 * 1024 + 1));
    await vi.waitFor(() => expect(loud.received.ended).toBe(true));
    await vi.waitFor(() =>
      expect(client.lines().slice(3)).toEqual([
        'opened 2 default linux/arm64',
        "closed 2 'an SSH chunk over 256 KiB'",
      ]),
    );
    relay.forget('b1');
  });

  it('is refused for an SSH id the build does not forward, and for a job its agent does not hold', async () => {
    const relay = new SshRelay(log);
    relay.expect('b1', submitter);
    const client = attachClient(relay, 'b1', submitter);
    const wrongId = connectAgent(relay, 'b1-1', 'gitlab', job('b1', ['default'], 'arm64'));
    await vi.waitFor(() => expect(wrongId.received.ended).toBe(true));
    expect(wrongId.received.error).toMatchObject({
      code: 'not_found',
      message: 'the build of job b1-1 forwards no SSH agent "gitlab"',
    });

    const requests = new AsyncQueue<AgentServiceForwardSshRequest>();
    requests.push(
      create(AgentServiceForwardSshRequestSchema, {
        body: { case: 'open', value: { jobId: 'b1-2', sshId: 'default' } },
      }),
    );
    const notHeld = drain(
      relay.relayAgent(
        requests,
        (jobId) => {
          throw new BraidError('permission_denied', `job ${jobId} is not assigned to this agent`);
        },
        new AbortController().signal,
      ),
    );
    await vi.waitFor(() => expect(notHeld.ended).toBe(true));
    expect(notHeld.error).toMatchObject({ code: 'permission_denied' });
    // Neither reached the client.
    expect(client.lines()).toEqual([]);
    relay.forget('b1');
  });

  it('waits for a client that attaches late, within 10 s', async () => {
    vi.useFakeTimers();
    const relay = new SshRelay(log);
    relay.expect('b1', submitter);
    const agent = connectAgent(relay, 'b1-1', 'default', job('b1', ['default'], 'arm64'));
    await vi.advanceTimersByTimeAsync(9_000);
    expect(agent.received.ended).toBe(false);

    const client = attachClient(relay, 'b1', submitter);
    await vi.advanceTimersByTimeAsync(200);
    expect(client.lines()).toEqual(['opened 1 default linux/arm64']);
    agent.send('hello');
    client.send(1n, 'world');
    await vi.advanceTimersByTimeAsync(0);
    expect(client.lines()).toEqual(['opened 1 default linux/arm64', 'data 1 hello']);
    expect(agent.lines()).toEqual(['world']);
    relay.forget('b1');
  });

  it('fails a connection with "no braid build is attached" when no client attaches within 10 s', async () => {
    vi.useFakeTimers();
    const relay = new SshRelay(log);
    relay.expect('b1', submitter);
    const agent = connectAgent(relay, 'b1-1', 'default', job('b1', ['default'], 'arm64'));
    await vi.advanceTimersByTimeAsync(9_800);
    expect(agent.received.ended).toBe(false);
    await vi.advanceTimersByTimeAsync(400);
    expect(agent.received.ended).toBe(true);
    expect(agent.received.error).toMatchObject({
      code: 'failed_precondition',
      message:
        'no braid build is attached to forward SSH agent "default" of build b1: --ssh needs the submitting client to stay attached',
    });
    relay.forget('b1');
  });
});

describe('forget: the build ended', () => {
  it('ends the client’s stream and every open connection, and refuses both sides afterwards', async () => {
    const relay = new SshRelay(log);
    relay.expect('b1', submitter);
    relay.expect('b2', submitter);
    const client = attachClient(relay, 'b1', submitter);
    const one = connectAgent(relay, 'b1-1', 'default', job('b1', ['default'], 'arm64'));
    const two = connectAgent(relay, 'b1-2', 'default', job('b1', ['default'], 's390x'));
    const otherBuild = attachClient(relay, 'b2', submitter);
    await vi.waitFor(() => expect(client.lines()).toHaveLength(2));

    relay.forget('b1');
    await vi.waitFor(() =>
      expect([client, one, two].map((side) => side.received.ended)).toEqual([true, true, true]),
    );
    for (const side of [client, one, two]) expect(side.received.error).toBeUndefined();
    // Nobody is left to tell: no "closed" follows the end.
    expect(client.lines()).toHaveLength(2);
    // Another build's client is untouched.
    expect(otherBuild.received.ended).toBe(false);

    const late = attachClient(relay, 'b1', submitter);
    await vi.waitFor(() => expect(late.received.ended).toBe(true));
    expect(late.received.error).toMatchObject({ code: 'failed_precondition' });
    // A step of an ended build gets its answer at once, not after the 10 s wait.
    const started = Date.now();
    const stray = connectAgent(relay, 'b1-1', 'default', job('b1', ['default'], 'arm64'));
    await vi.waitFor(() => expect(stray.received.ended).toBe(true));
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(stray.received.error).toMatchObject({
      code: 'failed_precondition',
      message: expect.stringContaining('no braid build is attached'),
    });

    relay.forget('b2');
    relay.forget('b2');
    await vi.waitFor(() => expect(otherBuild.received.ended).toBe(true));
  });
});
