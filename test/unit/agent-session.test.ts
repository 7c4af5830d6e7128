/**
 * The agent's session loop against a fake coordinator stream: reconnect
 * backoff, unrecoverable codes, drain and the abort listener, in
 * milliseconds (time and randomness are injected).
 */
import { getEventListeners } from 'node:events';
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import {
  ConnectResponseSchema,
  type AssignJob,
  type ConnectRequestSchema,
  type ConnectResponse,
} from '../../src/gen/braid/v1/agent_pb.js';
import { RpcError, type ErrorCode } from '../../src/errors.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { AsyncQueue } from '../../src/rpc/async-queue.js';
import { toProtoPlatform } from '../../src/rpc/platform.js';
import {
  AgentSessionLoop,
  abortableSleep,
  type SessionCall,
  type SessionOptions,
} from '../../src/agent/session.js';
import type { JobOutcome, JobReporter } from '../../src/agent/job-runner.js';

type Sent = MessageInitShape<typeof ConnectRequestSchema>;
type Inbound = MessageInitShape<typeof ConnectResponseSchema>['body'];

/** One session stream as the coordinator would answer it, driven by the test. */
class FakeCall implements SessionCall {
  readonly sent: Sent[] = [];
  cancelled = false;
  /** Acknowledge each result as the coordinator does once it recorded it. */
  autoAck = true;
  private readonly inbox = new AsyncQueue<ConnectResponse | { error: Error }>();

  send(message: Sent): Promise<void> {
    this.sent.push(message);
    if (this.autoAck && message.body?.case === 'result') {
      const jobId = message.body.value.jobId ?? '';
      setImmediate(() => this.ack(jobId));
    }
    return Promise.resolve();
  }

  ack(jobId: string): void {
    this.deliver({ case: 'ack', value: { jobId } });
  }

  cancel(): void {
    this.cancelled = true;
    this.inbox.close();
  }

  deliver(body: Inbound): void {
    this.inbox.push(create(ConnectResponseSchema, { body }));
  }

  welcome(): void {
    this.deliver({
      case: 'welcome',
      value: { coordinatorVersion: 'fake', heartbeatIntervalMs: 600_000 },
    });
  }

  fail(error: Error): void {
    this.inbox.push({ error });
    this.inbox.close();
  }

  end(): void {
    this.inbox.close();
  }

  results(): { jobId: string; error: string }[] {
    return this.sent.flatMap((m) =>
      m.body?.case === 'result'
        ? [{ jobId: m.body.value.jobId ?? '', error: m.body.value.error ?? '' }]
        : [],
    );
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<ConnectResponse> {
    for await (const item of this.inbox) {
      if ('error' in item) throw item.error;
      yield item;
    }
  }
}

interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

const unavailable = () =>
  new RpcError('unavailable', '/braid.v1.AgentService/Connect', 'fake', 'connection refused');

/** A session whose every stream comes from `onConnect`; its log lines and waits are recorded. */
function harness(
  onConnect: (call: FakeCall, index: number) => void,
  overrides: Partial<SessionOptions> = {},
) {
  const lines: LogLine[] = [];
  const log = pino(
    { level: 'debug', base: null, timestamp: false },
    { write: (line: string) => lines.push(JSON.parse(line) as LogLine) },
  );
  const calls: FakeCall[] = [];
  let clock = 1_000_000;
  const waits: number[] = [];
  const options: SessionOptions = {
    name: 'fake-agent',
    capacity: 2,
    labels: {},
    native: parsePlatform('linux/amd64'),
    emulated: [],
    engineVersion: 'test',
    client: {
      connect: () => {
        const call = new FakeCall();
        calls.push(call);
        // After the hello is sent: the fake answers on the next turn, as a server would.
        queueMicrotask(() => onConnect(call, calls.length - 1));
        return call;
      },
    },
    log,
    runJob: () => Promise.reject(new Error('no job expected')),
    backoff: { baseMs: 100, maxMs: 800 },
    stableAfterMs: 30_000,
    random: () => 1,
    now: () => clock,
    sleep: (ms) => {
      waits.push(ms);
      clock += ms;
      // A turn of the event loop, so that a loop that never stops cannot starve the test's timeout.
      return new Promise((resolve) => setImmediate(resolve));
    },
    ...overrides,
  };
  const session = new AgentSessionLoop(options);
  return {
    session,
    calls,
    waits,
    lines,
    advance: (ms: number) => (clock += ms),
    messages: (msg: string) => lines.filter((l) => l.msg === msg),
  };
}

function assign(jobId: string): Inbound {
  return {
    case: 'assign',
    value: {
      jobId,
      buildId: 'b1',
      platform: toProtoPlatform(parsePlatform('linux/amd64')),
      contextDigest: `sha256:${'0'.repeat(64)}`,
    },
  };
}

/** A job the test finishes (or the session aborts) by hand. */
function manualJob() {
  const started: { job: AssignJob; signal: AbortSignal; finish: (o: JobOutcome) => void }[] = [];
  const runJob = (job: AssignJob, _report: JobReporter, signal: AbortSignal) =>
    new Promise<JobOutcome>((resolve) => {
      started.push({ job, signal, finish: resolve });
      signal.addEventListener('abort', () =>
        resolve({
          error: `cancelled: ${String(signal.reason)}`,
          durationMs: 1,
          fetchMs: 0,
          buildMs: 0,
          pushMs: 0,
        }),
      );
    });
  return { runJob, started };
}

const succeeded: JobOutcome = {
  image: {
    digest: `sha256:${'a'.repeat(64)}`,
    sizeBytes: 10,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    platform: parsePlatform('linux/amd64'),
  },
  durationMs: 5,
  fetchMs: 1,
  buildMs: 3,
  pushMs: 1,
};

async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (check()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`never: ${what}`);
}

describe('the agent session reconnects with backoff', () => {
  it('doubles the wait after each failed attempt and caps it', async () => {
    const h = harness((call, i) => {
      if (i < 7) call.fail(unavailable());
      else h.session.stop();
    });
    await h.session.run(new AbortController().signal);
    expect(h.waits).toEqual([100, 200, 400, 800, 800, 800, 800]);
    expect(h.messages('session lost; reconnecting').map((l) => l.retryInMs)).toEqual(h.waits);
    expect(h.messages('session lost; reconnecting')[0]?.err).toBe('connection refused');
  });

  it('jitters each wait between half and all of its ceiling', async () => {
    const draws = [0, 0.5, 0.999, 0];
    const h = harness((call, i) => (i < 4 ? call.fail(unavailable()) : h.session.stop()), {
      random: () => draws.shift() ?? 0,
    });
    await h.session.run(new AbortController().signal);
    expect(h.waits).toEqual([50, 150, 400, 400]);
  });

  it('starts again from the base wait after a session that lasted', async () => {
    const h = harness((call, i) => {
      if (i < 3 || i === 4) call.fail(unavailable());
      else if (i === 3) {
        call.welcome();
        void until('joined', () => h.session.state === 'joined').then(() => {
          h.advance(60_000);
          call.end();
        });
      } else h.session.stop();
    });
    await h.session.run(new AbortController().signal);
    expect(h.waits).toEqual([100, 200, 400, 100, 200]);
    expect(h.messages('joined the coordinator')).toHaveLength(1);
    expect(h.messages('session lost; reconnecting')[3]?.err).toBe(
      'the coordinator ended the session',
    );
  });

  it('keeps backing off after a session that joined but dropped at once', async () => {
    const h = harness((call, i) => {
      if (i < 2) call.fail(unavailable());
      else if (i < 4) {
        call.welcome();
        void until('joined', () => h.session.state === 'joined').then(() => call.end());
      } else h.session.stop();
    });
    await h.session.run(new AbortController().signal);
    expect(h.waits).toEqual([100, 200, 400, 800]);
  });

  it('retries unavailable, deadline, internal and plain network errors', async () => {
    const errors = [
      unavailable(),
      new RpcError('deadline_exceeded', 'Connect', 'fake', 'deadline'),
      new RpcError('internal', 'Connect', 'fake', 'stream reset'),
      Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }),
    ];
    const h = harness((call, i) => {
      const error = errors[i];
      if (error) call.fail(error);
      else h.session.stop();
    });
    await h.session.run(new AbortController().signal);
    expect(h.calls).toHaveLength(5);
    expect(h.session.state).toBe('stopped');
  });
});

/** Refused credentials or access, a bad hello, a name in use, a coordinator without the call. */
const UNRECOVERABLE: ErrorCode[] = [
  'unauthenticated',
  'permission_denied',
  'invalid_argument',
  'already_exists',
  'unimplemented',
  'failed_precondition',
];

describe('the agent session stops on an error no retry can fix', () => {
  for (const code of UNRECOVERABLE) {
    it(`stops on ${code} with the coordinator's message`, async () => {
      const refused = new RpcError(code, 'Connect', 'fake', `refused: ${code}`);
      // A second attempt would be the bug: it ends the loop, and the test fails instead of hanging.
      const h = harness((call, i) => (i === 0 ? call.fail(refused) : h.session.stop()));
      await expect(h.session.run(new AbortController().signal)).rejects.toBe(refused);
      expect(h.calls).toHaveLength(1);
      expect(h.waits).toEqual([]);
      expect(h.session.state).toBe('stopped');
      const stopped = h.messages('session stopped: not retrying');
      expect(stopped).toHaveLength(1);
      expect(stopped[0]?.err).toBe(`refused: ${code}`);
    });
  }

  it('stops with the error when the coordinator refuses after joining (token revoked)', async () => {
    const revoked = new RpcError(
      'unauthenticated',
      'Connect',
      'fake',
      'join token "ci" was revoked',
    );
    const h = harness((call) => {
      call.welcome();
      void until('joined', () => h.session.state === 'joined').then(() => call.fail(revoked));
    });
    await expect(h.session.run(new AbortController().signal)).rejects.toBe(revoked);
    expect(h.calls).toHaveLength(1);
  });
});

describe('the agent session drains', () => {
  it('takes no new job, lets the running one finish, then stops', async () => {
    const jobs = manualJob();
    const h = harness(
      (call) => {
        call.welcome();
        call.deliver(assign('j1'));
      },
      { runJob: jobs.runJob, sleep: (ms, signal) => abortableSleep(60_000, signal) },
    );
    const running = h.session.run(new AbortController().signal);
    await until('j1 started', () => jobs.started.length === 1);
    const call = h.calls[0] as FakeCall;
    const drained = h.session.drain(60_000);
    expect(h.session.state).toBe('draining');
    expect(h.messages('session draining: no new jobs; running jobs may finish')[0]).toMatchObject({
      runningJobs: 1,
      graceMs: 60_000,
    });

    // Assigned during the drain: handed back at once, never run.
    call.deliver(assign('j2'));
    await until('j2 handed back', () => call.results().some((r) => r.jobId === 'j2'));
    expect(call.results()).toEqual([{ jobId: 'j2', error: 'agent fake-agent is shutting down' }]);
    expect(jobs.started).toHaveLength(1);
    expect(h.session.state).toBe('draining');

    // The running job finishes within the grace: its result goes out, then the session stops.
    jobs.started[0]?.finish(succeeded);
    await drained;
    await running;
    expect(jobs.started[0]?.signal.aborted).toBe(false);
    expect(call.results()).toEqual([
      { jobId: 'j2', error: 'agent fake-agent is shutting down' },
      { jobId: 'j1', error: '' },
    ]);
    expect(h.session.state).toBe('stopped');
    expect(call.cancelled).toBe(true);
    expect(h.messages('session stopped')[0]?.reason).toBe('drained');
  });

  it('ends as soon as the last job ends, without waiting out the grace', async () => {
    const jobs = manualJob();
    const h = harness(
      (call) => {
        call.welcome();
        call.deliver(assign('j1'));
        call.deliver(assign('j2'));
      },
      // A grace that never runs out on its own: only the jobs can end the drain.
      { runJob: jobs.runJob, sleep: (_ms, signal) => abortableSleep(3_600_000, signal) },
    );
    const running = h.session.run(new AbortController().signal);
    await until('both started', () => jobs.started.length === 2);
    const drained = h.session.drain(3_600_000);
    jobs.started[1]?.finish(succeeded);
    await until('j2 reported', () => (h.calls[0] as FakeCall).results().length === 1);
    expect(h.session.state).toBe('draining');
    jobs.started[0]?.finish({ ...succeeded, error: 'RUN make: exit 2', image: undefined });
    await drained;
    await running;
    expect((h.calls[0] as FakeCall).results()).toEqual([
      { jobId: 'j2', error: '' },
      { jobId: 'j1', error: 'RUN make: exit 2' },
    ]);
  });

  it('cancels the jobs still running when the grace runs out, and reports them', async () => {
    const jobs = manualJob();
    const h = harness(
      (call) => {
        call.welcome();
        call.deliver(assign('slow'));
      },
      { runJob: jobs.runJob, sleep: abortableSleep },
    );
    const running = h.session.run(new AbortController().signal);
    await until('slow started', () => jobs.started.length === 1);
    await h.session.drain(5);
    await running;
    expect(jobs.started[0]?.signal.reason).toBe('agent shutting down');
    expect((h.calls[0] as FakeCall).results()).toEqual([
      { jobId: 'slow', error: 'cancelled: agent shutting down' },
    ]);
    expect(h.session.state).toBe('stopped');
  });

  it('stops only once the coordinator acknowledged the last result', async () => {
    const jobs = manualJob();
    const h = harness(
      (call) => {
        call.autoAck = false;
        call.welcome();
        call.deliver(assign('j1'));
      },
      { runJob: jobs.runJob, sleep: (_ms, signal) => abortableSleep(3_600_000, signal) },
    );
    const running = h.session.run(new AbortController().signal);
    await until('j1 started', () => jobs.started.length === 1);
    const call = h.calls[0] as FakeCall;
    const drained = h.session.drain(60_000);
    jobs.started[0]?.finish(succeeded);
    await until('j1 reported', () => call.results().length === 1);
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    // Sent is not received: cancelling the stream now could lose it.
    expect(h.session.state).toBe('draining');
    expect(call.cancelled).toBe(false);
    call.ack('j1');
    await drained;
    await running;
    expect(h.session.state).toBe('stopped');
    expect(call.cancelled).toBe(true);
  });

  it('stops without the acknowledgement after a bound', async () => {
    const jobs = manualJob();
    const h = harness(
      (call) => {
        call.autoAck = false;
        call.welcome();
        call.deliver(assign('j1'));
      },
      { runJob: jobs.runJob, sleep: abortableSleep, ackWaitMs: 5 },
    );
    const running = h.session.run(new AbortController().signal);
    await until('j1 started', () => jobs.started.length === 1);
    const drained = h.session.drain(60_000);
    jobs.started[0]?.finish(succeeded);
    await drained;
    await running;
    expect(h.session.state).toBe('stopped');
  });

  it('stops at once when drained with nothing running; stop and drain again are no-ops', async () => {
    const h = harness((call) => call.welcome(), { sleep: abortableSleep });
    const running = h.session.run(new AbortController().signal);
    await until('joined', () => h.session.state === 'joined');
    await h.session.drain(60_000);
    await running;
    h.session.stop();
    await h.session.drain(60_000);
    expect(h.messages('session stopped')).toHaveLength(1);
    expect(h.session.state).toBe('stopped');
  });
});

describe('the agent session and its abort signal', () => {
  it('keeps the abort listener count flat across many reconnects', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const external = new AbortController();
      const counts: number[] = [];
      const h = harness(
        (call, i) => {
          counts.push(getEventListeners(external.signal, 'abort').length);
          if (i < 40) call.fail(unavailable());
          else external.abort();
        },
        { backoff: { baseMs: 1, maxMs: 1 }, sleep: abortableSleep },
      );
      await h.session.run(external.signal);
      // Node reports a leak on the next turn.
      await new Promise((r) => setImmediate(r));
      expect(h.calls).toHaveLength(41);
      expect(new Set(counts)).toEqual(new Set([1]));
      expect(getEventListeners(external.signal, 'abort')).toHaveLength(0);
      expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('a backoff wait leaves no listener on the signal it watched', async () => {
    const controller = new AbortController();
    for (let i = 0; i < 20; i++) await abortableSleep(0, controller.signal);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
    const early = abortableSleep(60_000, controller.signal);
    controller.abort();
    await early;
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });
});
