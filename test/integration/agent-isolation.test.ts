/**
 * One agent cannot see, report on, fetch for or cancel another agent's job.
 * A real coordinator process on 127.0.0.1 (tokens required); the agents are
 * the far side faked at the protocol level, so the coordinator's checks are
 * what is under test.
 */
import { createHash } from 'node:crypto';
import { credentials } from '@grpc/grpc-js';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentService, type ConnectResponse } from '../../src/gen/braid/v1/agent_pb.js';
import { BuildService, BuildState, LogSource } from '../../src/gen/braid/v1/build_pb.js';
import { EmulationPolicy, JobState } from '../../src/gen/braid/v1/common_pb.js';
import { RpcError } from '../../src/errors.js';
import { createClient, type BidiCall, type ServiceClient } from '../../src/rpc/client.js';
import { braid, startTestCoordinator, type TestCoordinator } from '../support/braid-cli.js';

type AgentClient = ServiceClient<(typeof AgentService)['method']>;
type Session = ReturnType<AgentClient['connect']>;

async function contextTar(): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (c: unknown) => chunks.push(c as Buffer));
  const ended = new Promise<void>((resolve) => tar.on('end', () => resolve()));
  tar.entry({ name: 'Dockerfile', mode: 0o644, mtime: new Date(0) }, 'FROM scratch\n');
  tar.finalize();
  await ended;
  return Buffer.concat(chunks);
}

type Body = ConnectResponse['body'];
type Kind = 'welcome' | 'assign' | 'cancel';
type ValueOf<K extends Kind> = Extract<Body, { case: K; value: unknown }>['value'];

/** Everything the coordinator sends on one session, kept for inspection. */
class Inbox {
  readonly messages: ConnectResponse[] = [];
  private wake: (() => void) | undefined;

  constructor(session: Session) {
    void (async () => {
      try {
        for await (const message of session) {
          this.messages.push(message);
          this.wake?.();
        }
      } catch {
        // The session ends when the test cancels it.
      }
    })();
  }

  async next<K extends Kind>(kind: K, timeoutMs = 10_000): Promise<ValueOf<K>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.find((m) => m.body.case === kind);
      if (found) {
        this.messages.splice(this.messages.indexOf(found), 1);
        return found.body.value as ValueOf<K>;
      }
      if (Date.now() > deadline) throw new Error(`no ${kind} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 100);
      });
    }
  }
}

describe("an agent and another agent's job", () => {
  let coordinator: TestCoordinator;
  let build: ServiceClient<(typeof BuildService)['method']>;
  const agents: AgentClient[] = [];
  const sessions: BidiCall<unknown, unknown>[] = [];

  async function token(kind: 'api' | 'join', name: string): Promise<string> {
    const made = await braid([
      'tokens',
      'create',
      '--kind',
      kind,
      '--name',
      name,
      '--data-dir',
      coordinator.dataDir,
    ]);
    expect(made.code, made.stderr).toBe(0);
    return made.stdout.trim();
  }

  async function join(
    name: string,
    architecture: string,
  ): Promise<{
    client: AgentClient;
    session: Session;
    inbox: Inbox;
  }> {
    const client = createClient(AgentService, coordinator.address, {
      credentials: credentials.createInsecure(),
      metadata: { authorization: `Bearer ${await token('join', `${name}-token`)}` },
    });
    agents.push(client);
    const session = client.connect();
    sessions.push(session as BidiCall<unknown, unknown>);
    const inbox = new Inbox(session);
    await session.send({
      body: {
        case: 'hello',
        value: {
          name,
          version: 'test',
          nativePlatform: { os: 'linux', architecture },
          capacity: 1,
        },
      },
    });
    await inbox.next('welcome');
    return { client, session, inbox };
  }

  function ignoredReports(): number {
    return coordinator.process
      .stderr()
      .split('\n')
      .filter((l) => l.includes("report ignored: the job is another agent's")).length;
  }

  beforeAll(async () => {
    // Its tags name a port nothing listens on: the submit's push check is not what this tests.
    coordinator = await startTestCoordinator('127.0.0.1:0', ['--require-auth', '--no-push-check']);
    build = createClient(BuildService, coordinator.address, {
      credentials: credentials.createInsecure(),
      metadata: { authorization: `Bearer ${await token('api', 'cli')}` },
    });
  });
  afterAll(async () => {
    for (const session of sessions) session.cancel();
    for (const client of agents) client.close();
    build?.close();
    await coordinator?.stop();
  });

  it('ignores its reports, refuses its fetch, and sends it no assignment or cancel', async () => {
    const alpha = await join('alpha', 'amd64');
    const beta = await join('beta', 's390x');

    const tar = await contextTar();
    const digest = `sha256:${createHash('sha256').update(tar).digest('hex')}`;
    await build.uploadContext([
      { payload: { case: 'header', value: { digest, sizeBytes: BigInt(tar.length) } } },
      { payload: { case: 'chunk', value: tar } },
    ]);
    const submitted = await build.submitBuild({
      spec: {
        contextDigest: digest,
        platforms: [{ os: 'linux', architecture: 'amd64' }],
        tags: ['127.0.0.1:9/isolation/app:1'],
        emulation: EmulationPolicy.NATIVE_ONLY,
      },
    });
    const buildId = submitted.build?.id ?? '';
    const assigned = await alpha.inbox.next('assign');
    expect(assigned.buildId).toBe(buildId);
    const jobId = assigned.jobId;

    // beta speaks for alpha's job: progress, a log line, a successful result.
    await beta.session.send({
      body: { case: 'update', value: { jobId, state: JobState.RUNNING, step: 'forged' } },
    });
    await beta.session.send({
      body: {
        case: 'log',
        value: { jobId, lines: ['forged line'], source: LogSource.BUILD, firstSequence: 1n },
      },
    });
    await beta.session.send({
      body: {
        case: 'result',
        value: {
          jobId,
          image: {
            digest: `sha256:${'0'.repeat(64)}`,
            sizeBytes: 1n,
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            platform: { os: 'linux', architecture: 'amd64' },
          },
        },
      },
    });
    const deadline = Date.now() + 10_000;
    while (ignoredReports() < 3 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    expect(ignoredReports()).toBe(3);

    const { build: after } = await build.getBuild({ buildId });
    expect(after?.jobs[0]).toMatchObject({ id: jobId, agent: 'alpha', state: JobState.ASSIGNED });
    expect(after?.jobs[0]?.image).toBeUndefined();
    const texts: string[] = [];
    for await (const { event } of build.watchBuild({ buildId, follow: false })) {
      if (event?.body.case === 'log') texts.push(event.body.value.text);
    }
    expect(texts).not.toContain('forged line');

    // beta may not fetch the context of alpha's job; alpha may.
    const fetched = await (async () => {
      const chunks: Buffer[] = [];
      for await (const r of beta.client.fetchContext({ digest })) chunks.push(Buffer.from(r.chunk));
      return chunks;
    })().catch((e: unknown) => e);
    expect(fetched).toBeInstanceOf(RpcError);
    expect((fetched as RpcError).code).toBe('permission_denied');
    expect((fetched as RpcError).message).toBe(
      `context ${digest} belongs to no job assigned to this agent`,
    );
    const chunks: Buffer[] = [];
    for await (const r of alpha.client.fetchContext({ digest })) chunks.push(Buffer.from(r.chunk));
    expect(Buffer.concat(chunks).equals(tar)).toBe(true);

    // alpha's own report is taken.
    await alpha.session.send({
      body: { case: 'update', value: { jobId, state: JobState.RUNNING, step: 'building' } },
    });
    const running = Date.now() + 10_000;
    let state = JobState.ASSIGNED;
    while (state !== JobState.RUNNING && Date.now() < running) {
      state = (await build.getBuild({ buildId })).build?.jobs[0]?.state ?? state;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(state).toBe(JobState.RUNNING);

    // A cancel goes to the agent running the job, and to no other.
    const cancelled = await build.cancelBuild({ buildId, reason: 'test over' });
    expect(cancelled.build?.state).toBe(BuildState.CANCELLED);
    expect((await alpha.inbox.next('cancel')).jobId).toBe(jobId);
    expect(beta.inbox.messages.map((m) => m.body.case)).toEqual([]);
  });

  it("refuses a join token on BuildService: agents cannot list or read others' builds", async () => {
    const joinToken = await token('join', 'snoop');
    const snoop = createClient(BuildService, coordinator.address, {
      credentials: credentials.createInsecure(),
      metadata: { authorization: `Bearer ${joinToken}` },
    });
    try {
      const refused = await snoop.listBuilds({}).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(RpcError);
      expect((refused as RpcError).code).toBe('permission_denied');
    } finally {
      snoop.close();
    }
  });
});
