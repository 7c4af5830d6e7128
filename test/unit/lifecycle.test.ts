/**
 * The build lifecycle without processes: a real store in a temp file, fake
 * agent sessions that record what they are sent, and a clock moved by hand.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import {
  AgentHelloSchema,
  JobResultSchema,
  type AgentHello,
  type ConnectResponseSchema,
} from '../../src/gen/braid/v1/agent_pb.js';
import { BuildSpecSchema, BuildState, JobRole } from '../../src/gen/braid/v1/build_pb.js';
import { JobState } from '../../src/gen/braid/v1/common_pb.js';
import { createLogger } from '../../src/log.js';
import type { RegistryClient } from '../../src/oci/registry.js';
import { AgentRegistry, type AgentSession } from '../../src/coordinator/agent-registry.js';
import type { ContextStore } from '../../src/coordinator/context-store.js';
import { Orchestrator, type OrchestratorLimits } from '../../src/coordinator/orchestrator.js';
import { prepareSubmission, submitToStore } from '../../src/coordinator/submission.js';
import { asAsyncStore } from '../support/async-store.js';
import { SqliteBuildStore } from '../../src/coordinator/sqlite-build-store.js';
import type {
  BuildRecord,
  BuildStore,
  JobRecord,
  StoreWrite,
} from '../../src/coordinator/store.js';
import {
  checkBuildMove,
  checkJobMove,
  IllegalTransitionError,
  TERMINAL_BUILD_STATES,
  TERMINAL_JOB_STATES,
} from '../../src/coordinator/transitions.js';

type Sent = MessageInitShape<typeof ConnectResponseSchema>['body'];

class FakeSession implements AgentSession {
  readonly connectedAt = new Date(0);
  lastHeartbeat = new Date(0);
  readonly jobs = new Set<string>();
  readonly sent: Sent[] = [];
  closed = '';
  constructor(
    readonly name: string,
    readonly hello: AgentHello,
  ) {}
  send(message: Sent): void {
    this.sent.push(message);
  }
  close(reason: string): void {
    this.closed = reason;
  }
  /** Job ids of the assigns it was sent. */
  assigned(): string[] {
    return this.sent.flatMap((m) => (m?.case === 'assign' ? [m.value.jobId ?? ''] : []));
  }
  cancelled(): string[] {
    return this.sent.flatMap((m) => (m?.case === 'cancel' ? [m.value.jobId ?? ''] : []));
  }
}

const ARCH = { amd64: 'amd64', arm64: 'arm64' } as const;
const DIGEST = `sha256:${'c'.repeat(64)}`;
const IMAGE_DIGEST = (n: number) => `sha256:${n.toString(16).padStart(64, '0')}`;

/** A registry that never answers: a build that reaches the stitch stays STITCHING. */
const silentRegistry = new Proxy(
  {},
  { get: () => () => new Promise<never>(() => undefined) },
) as unknown as RegistryClient;

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function newFarm(
  limits: Partial<OrchestratorLimits> = {},
  file?: string,
  registry: RegistryClient = silentRegistry,
  /** The store as the orchestrator sees it (default: the SQLite store itself). */
  seen: (store: SqliteBuildStore) => BuildStore = (store) => store,
) {
  let dbFile = file;
  if (!dbFile) {
    const dir = mkdtempSync(join(tmpdir(), 'braid-lifecycle-'));
    dirs.push(dir);
    dbFile = join(dir, 'braid.db');
  }
  const store = new SqliteBuildStore(dbFile);
  let now = Date.parse('2026-01-01T00:00:00Z');
  let ids = 0;
  const agents = new AgentRegistry();
  const contexts = {
    size: () => Promise.resolve(100),
    hasFile: () => Promise.resolve(true),
  } as unknown as ContextStore;
  const orchestrator = new Orchestrator({
    store: seen(store),
    contexts,
    agents,
    registry,
    log: createLogger({ level: 'silent', format: 'json', component: 'test' }),
    clock: () => new Date(now),
    newId: () => `b${++ids}`,
    limits: {
      maxJobAttempts: 2,
      jobTimeoutMs: 60_000,
      buildTimeoutMs: 600_000,
      reattachGraceMs: 10_000,
      waitForAgentMs: 30_000,
      ...limits,
    },
    cacheAffinity: { enabled: false },
  });
  const farm = {
    store,
    agents,
    orchestrator,
    dbFile,
    advance(ms: number) {
      now += ms;
    },
    connect(
      name: string,
      arch: keyof typeof ARCH,
      options: { capacity?: number; held?: string[] } = {},
    ): FakeSession {
      const session = new FakeSession(
        name,
        create(AgentHelloSchema, {
          name,
          nativePlatform: { os: 'linux', architecture: ARCH[arch] },
          capacity: options.capacity ?? 1,
          heldJobIds: options.held ?? [],
        }),
      );
      orchestrator.agentConnected(session);
      return session;
    },
    async submit(
      archs: (keyof typeof ARCH)[],
      extra: { checkReproducible?: boolean; sourceDateEpoch?: bigint; keepGoing?: boolean } = {},
    ): Promise<string> {
      const build = await orchestrator.submit(
        create(BuildSpecSchema, {
          contextDigest: DIGEST,
          platforms: archs.map((a) => ({ os: 'linux', architecture: ARCH[a] })),
          tags: ['127.0.0.1:5000/app:1'],
          ...extra,
        }),
      );
      return build.id;
    },
    running(session: FakeSession, jobId: string) {
      orchestrator.jobUpdate(session, {
        $typeName: 'braid.v1.JobUpdate',
        jobId,
        state: JobState.RUNNING,
        step: '[1/1] RUN true',
      });
    },
    succeed(session: FakeSession, jobId: string, n = 1) {
      const job = orchestrator.live.job(jobId);
      orchestrator.jobResult(
        session,
        create(JobResultSchema, {
          jobId,
          image: {
            digest: IMAGE_DIGEST(n),
            sizeBytes: 100n,
            mediaType: 'application/vnd.oci.image.manifest.v1+json',
            platform: {
              os: job?.platform.os ?? 'linux',
              architecture: job?.platform.architecture ?? 'amd64',
            },
          },
        }),
      );
    },
    fail(session: FakeSession, jobId: string, error: string) {
      orchestrator.jobResult(session, create(JobResultSchema, { jobId, error }));
    },
    /** A job in flight from memory, one of an ended build from the store. */
    async job(id: string): Promise<JobRecord> {
      const buildId = id.replace(/-\d+$/, '');
      const job =
        orchestrator.live.job(id) ?? (await store.jobsOf(buildId)).find((j) => j.id === id);
      if (!job) throw new Error(`no job ${id}`);
      return job;
    },
    async build(id: string): Promise<BuildRecord | undefined> {
      return orchestrator.live.build(id) ?? (await store.getBuild(id));
    },
    async buildState(id: string): Promise<BuildState> {
      return (await farm.build(id))?.state ?? BuildState.UNSPECIFIED;
    },
    async eventCount(id: string): Promise<number> {
      await orchestrator.live.flushed();
      return (await store.eventsAfter(id, 0n, 100_000)).length;
    },
  };
  return farm;
}

describe('losing an agent', () => {
  it.each([
    { attempts: 1, lost: 1, ends: 'failed' },
    { attempts: 2, lost: 1, ends: 'queued' },
    { attempts: 2, lost: 2, ends: 'failed' },
    { attempts: 3, lost: 2, ends: 'queued' },
    { attempts: 3, lost: 3, ends: 'failed' },
  ])(
    'with $attempts attempts allowed, losing the agent $lost times leaves the job $ends',
    async ({ attempts, lost, ends }) => {
      const farm = newFarm({ maxJobAttempts: attempts });
      let session = farm.connect('a1', 'amd64');
      const id = await farm.submit(['amd64']);
      for (let i = 1; i <= lost; i++) {
        if (i > 1) session = farm.connect('a1', 'amd64');
        expect(session.assigned()).toEqual([`${id}-1`]);
        expect((await farm.job(`${id}-1`)).attempt).toBe(i);
        farm.running(session, `${id}-1`);
        farm.orchestrator.agentLost(session, 'heartbeats stopped');
      }
      const job = await farm.job(`${id}-1`);
      if (ends === 'failed') {
        expect(job.state).toBe(JobState.FAILED);
        expect(job.error).toContain(`gave up after ${attempts} attempts`);
        expect(await farm.buildState(id)).toBe(BuildState.FAILED);
      } else {
        expect(job.state).toBe(JobState.QUEUED);
        expect(job.attempt).toBe(lost + 1);
        expect(job.agent).toBe('');
        expect(await farm.buildState(id)).toBe(BuildState.RUNNING);
      }
    },
  );

  it('re-queues the job on another agent that can build it', async () => {
    const farm = newFarm();
    const first = farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    const second = farm.connect('a2', 'amd64');
    farm.orchestrator.agentLost(first, 'connection lost');
    expect(second.assigned()).toEqual([`${id}-1`]);
    expect(await farm.job(`${id}-1`)).toMatchObject({
      state: JobState.ASSIGNED,
      agent: 'a2',
      attempt: 2,
    });
  });

  it('stops the other platforms on their agents, and frees their slots, when one platform gives up', async () => {
    const farm = newFarm({ maxJobAttempts: 1 });
    const amd = farm.connect('amd', 'amd64');
    const arm = farm.connect('arm', 'arm64');
    const id = await farm.submit(['amd64', 'arm64']);
    farm.orchestrator.agentLost(amd, 'connection lost');
    expect(arm.cancelled()).toEqual([`${id}-2`]);
    expect(arm.jobs.size).toBe(0);
    expect((await farm.job(`${id}-2`)).state).toBe(JobState.CANCELLED);
    expect(await farm.buildState(id)).toBe(BuildState.FAILED);
  });
});

describe('reports the orchestrator must not believe', () => {
  it('ignores a late result from the session that lost the job, even under the same agent name', async () => {
    const farm = newFarm();
    const old = farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    farm.running(old, `${id}-1`);
    farm.orchestrator.agentLost(old, 'connection lost');
    const again = farm.connect('a1', 'amd64');
    expect(again.assigned()).toEqual([`${id}-1`]);
    farm.succeed(old, `${id}-1`);
    expect(await farm.job(`${id}-1`)).toMatchObject({ state: JobState.ASSIGNED, attempt: 2 });
    expect(await farm.buildState(id)).toBe(BuildState.RUNNING);
    // The attempt that holds the job still speaks for it.
    farm.succeed(again, `${id}-1`);
    expect((await farm.job(`${id}-1`)).state).toBe(JobState.SUCCEEDED);
    expect(await farm.buildState(id)).toBe(BuildState.STITCHING);
  });

  it("ignores another agent's report about a job, and does not acknowledge it", async () => {
    const farm = newFarm();
    const owner = farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    const stranger = farm.connect('a2', 'amd64');
    stranger.jobs.add(`${id}-1`); // a confused or lying agent
    farm.fail(stranger, `${id}-1`, 'made up');
    farm.running(stranger, `${id}-1`);
    expect(await farm.job(`${id}-1`)).toMatchObject({
      state: JobState.ASSIGNED,
      agent: 'a1',
      error: '',
    });
    expect(stranger.sent.filter((m) => m?.case === 'ack')).toEqual([]);
    expect(owner.jobs.has(`${id}-1`)).toBe(true);
  });

  it('refuses a result for another platform than the job', async () => {
    const farm = newFarm();
    const session = farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    farm.orchestrator.jobResult(
      session,
      create(JobResultSchema, {
        jobId: `${id}-1`,
        image: { digest: IMAGE_DIGEST(1), platform: { os: 'linux', architecture: 'arm64' } },
      }),
    );
    expect((await farm.job(`${id}-1`)).error).toContain('built linux/arm64, not linux/amd64');
    expect(await farm.buildState(id)).toBe(BuildState.FAILED);
  });
});

describe('cancel', () => {
  it('cancels a build still waiting to be placed, sending nothing to any agent', async () => {
    const farm = newFarm();
    const busy = farm.connect('a1', 'amd64');
    const first = await farm.submit(['amd64']);
    const waiting = await farm.submit(['amd64']);
    expect((await farm.job(`${waiting}-1`)).state).toBe(JobState.QUEUED);
    await farm.orchestrator.cancel(waiting, 'not needed');
    expect(await farm.buildState(waiting)).toBe(BuildState.CANCELLED);
    expect(await farm.job(`${waiting}-1`)).toMatchObject({
      state: JobState.CANCELLED,
      error: 'not needed',
    });
    expect(busy.cancelled()).toEqual([]);
    expect((await farm.job(`${first}-1`)).state).toBe(JobState.ASSIGNED);
  });

  it('cancels a running build on its agent and frees the slot for the next build', async () => {
    const farm = newFarm();
    const session = farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    const next = await farm.submit(['amd64']);
    farm.running(session, `${id}-1`);
    const build = await farm.orchestrator.cancel(id, '');
    expect(build.state).toBe(BuildState.CANCELLED);
    expect(build.error).toBe('cancelled: cancelled by user; no tag was moved');
    expect(session.cancelled()).toEqual([`${id}-1`]);
    expect(session.jobs.has(`${id}-1`)).toBe(false);
    expect(session.assigned()).toEqual([`${id}-1`, `${next}-1`]);
    // The cancelled job's result, should it still come, changes nothing.
    farm.succeed(session, `${id}-1`);
    expect((await farm.job(`${id}-1`)).state).toBe(JobState.CANCELLED);
  });

  it('leaves a stitching build alone: it ends by its stitch', async () => {
    const farm = newFarm();
    const session = farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    farm.succeed(session, `${id}-1`);
    expect(await farm.buildState(id)).toBe(BuildState.STITCHING);
    expect((await farm.orchestrator.cancel(id, 'too late')).state).toBe(BuildState.STITCHING);
    expect((await farm.job(`${id}-1`)).state).toBe(JobState.SUCCEEDED);
  });

  it('fails the build when its stitch fails, moving no tag', async () => {
    const refusing = new Proxy(
      {},
      { get: () => () => Promise.reject(new Error('registry unreachable')) },
    ) as unknown as RegistryClient;
    const farm = newFarm({}, undefined, refusing);
    const session = farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    farm.succeed(session, `${id}-1`);
    expect(await farm.buildState(id)).toBe(BuildState.STITCHING);
    await vi.waitFor(async () => expect(await farm.buildState(id)).toBe(BuildState.FAILED));
    expect((await farm.build(id))?.error).toMatch(/^stitch: .*; no tag was moved$/);
  });

  it('is idempotent on an ended build', async () => {
    const farm = newFarm();
    farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    await farm.orchestrator.cancel(id, 'once');
    const events = await farm.eventCount(id);
    expect((await farm.orchestrator.cancel(id, 'twice')).error).toContain('once');
    expect(await farm.eventCount(id)).toBe(events);
  });
});

describe('timeouts', () => {
  it('ends the build TIMED_OUT when a job runs longer than the job timeout, stopping it on its agent', async () => {
    const farm = newFarm({ jobTimeoutMs: 60_000 });
    const session = farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    farm.running(session, `${id}-1`);
    farm.advance(60_000);
    farm.orchestrator.checkDeadlines();
    expect(await farm.buildState(id)).toBe(BuildState.RUNNING);
    farm.advance(1);
    farm.orchestrator.checkDeadlines();
    expect(await farm.buildState(id)).toBe(BuildState.TIMED_OUT);
    expect(await farm.job(`${id}-1`)).toMatchObject({ state: JobState.FAILED });
    expect((await farm.job(`${id}-1`)).error).toContain(
      'linux/amd64 ran longer than the job timeout',
    );
    expect(session.cancelled()).toEqual([`${id}-1`]);
    expect(session.jobs.size).toBe(0);
  });

  it('ends the build TIMED_OUT when it is older than the build timeout, naming what was unfinished', async () => {
    const farm = newFarm({ buildTimeoutMs: 100_000, jobTimeoutMs: 1_000_000 });
    const amd = farm.connect('amd', 'amd64');
    const arm = farm.connect('arm', 'arm64');
    const id = await farm.submit(['amd64', 'arm64']);
    farm.succeed(amd, `${id}-1`);
    farm.advance(100_001);
    farm.orchestrator.checkDeadlines();
    expect(await farm.buildState(id)).toBe(BuildState.TIMED_OUT);
    expect((await farm.build(id))?.error).toContain('(unfinished: linux/arm64)');
    expect(arm.cancelled()).toEqual([`${id}-2`]);
    expect((await farm.job(`${id}-1`)).state).toBe(JobState.SUCCEEDED);
  });

  it('fails a re-queued job that no connected agent can build after waitForAgentMs', async () => {
    const farm = newFarm({ waitForAgentMs: 30_000 });
    const session = farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    farm.orchestrator.agentLost(session, 'connection lost');
    expect((await farm.job(`${id}-1`)).state).toBe(JobState.QUEUED);
    farm.advance(30_001);
    farm.orchestrator.checkDeadlines();
    expect((await farm.job(`${id}-1`)).state).toBe(JobState.FAILED);
    expect((await farm.job(`${id}-1`)).error).toContain('none connected within 30000 ms');
    expect(await farm.buildState(id)).toBe(BuildState.FAILED);
  });
});

describe('a coordinator restart', () => {
  async function runningBuild() {
    const farm = newFarm();
    const session = farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    farm.running(session, `${id}-1`);
    await farm.store.close();
    // The same database, a new coordinator.
    const after = newFarm({}, farm.dbFile);
    await after.orchestrator.recover();
    return { after, id };
  }

  it('keeps a running job whose agent reconnects holding it, and takes its result', async () => {
    const { after, id } = await runningBuild();
    const back = after.connect('a1', 'amd64', { held: [`${id}-1`] });
    expect(back.jobs.has(`${id}-1`)).toBe(true);
    expect(back.assigned()).toEqual([]);
    after.advance(60_000);
    after.orchestrator.checkDeadlines();
    expect(await after.job(`${id}-1`)).toMatchObject({ state: JobState.RUNNING, attempt: 1 });
    after.succeed(back, `${id}-1`);
    expect(await after.buildState(id)).toBe(BuildState.STITCHING);
  });

  it('re-queues at once an orphaned job its agent reconnects without (the assignment never reached it)', async () => {
    const { after, id } = await runningBuild();
    const back = after.connect('a1', 'amd64', { held: [] });
    expect(await after.job(`${id}-1`)).toMatchObject({ attempt: 2, agent: 'a1' });
    expect(back.assigned()).toEqual([`${id}-1`]);
  });

  it('re-queues an orphaned job its agent did not reclaim within the grace period', async () => {
    const { after, id } = await runningBuild();
    after.advance(9_999);
    after.orchestrator.checkDeadlines();
    expect((await after.job(`${id}-1`)).state).toBe(JobState.RUNNING);
    after.advance(1);
    after.orchestrator.checkDeadlines();
    expect(await after.job(`${id}-1`)).toMatchObject({ state: JobState.QUEUED, attempt: 2 });
    const other = after.connect('a2', 'amd64');
    expect(other.assigned()).toEqual([`${id}-1`]);
  });
});

describe('a result', () => {
  it('is acknowledged to its agent only once what it changed is stored', async () => {
    // The store answers commits only when the test lets it: a coordinator that died before then
    // must leave the agent holding the result, to report it again to the next one.
    const held: (() => void)[] = [];
    let holding = false;
    const farm = newFarm({}, undefined, silentRegistry, (store) => {
      const commit = async (writes: readonly StoreWrite[]) => {
        if (holding) await new Promise<void>((resolve) => held.push(resolve));
        return store.commit(writes);
      };
      return asAsyncStore(store, commit);
    });
    const session = farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    farm.running(session, `${id}-1`);
    await farm.orchestrator.live.flushed();
    holding = true;
    const acks = () => session.sent.filter((m) => m?.case === 'ack').length;
    farm.succeed(session, `${id}-1`);
    await new Promise((r) => setImmediate(r));
    expect(held.length).toBeGreaterThan(0);
    expect(acks()).toBe(0);
    holding = false;
    held.splice(0).forEach((resolve) => resolve());
    await farm.orchestrator.live.flushed();
    expect(acks()).toBe(1);
    expect((await farm.store.jobsOf(id))[0]?.state).toBe(JobState.SUCCEEDED);
  });
});

describe('builds a standby stored', () => {
  it('are taken in once, placed, and their events continue after the stored one', async () => {
    const farm = newFarm();
    const session = farm.connect('a1', 'amd64');
    // A standby on the same store: the build, its job and its queued event, nothing in memory.
    const standby = new SqliteBuildStore(farm.dbFile);
    const submission = await prepareSubmission(
      create(BuildSpecSchema, {
        contextDigest: DIGEST,
        platforms: [{ os: 'linux', architecture: 'amd64' }],
        tags: ['127.0.0.1:5000/app:1'],
      }),
      '',
      [],
      {
        contexts: {
          size: () => Promise.resolve(100),
          hasFile: () => Promise.resolve(true),
        } as unknown as ContextStore,
        newId: () => 'bs1',
        clock: () => new Date(),
      },
    );
    await submitToStore(submission, (writes) => standby.commit(writes));
    await standby.close();
    expect(farm.orchestrator.live.build('bs1')).toBeUndefined();

    expect(await farm.orchestrator.adoptStored()).toBe(1);
    expect(session.assigned()).toEqual(['bs1-1']);
    // Taken once: a second sweep finds nothing new.
    expect(await farm.orchestrator.adoptStored()).toBe(0);
    farm.running(session, 'bs1-1');
    farm.succeed(session, 'bs1-1');
    await farm.orchestrator.live.flushed();
    const sequences = (await farm.store.eventsAfter('bs1', 0n, 100)).map((e) => e.sequence);
    expect(sequences).toEqual(sequences.map((_, i) => BigInt(i + 1)));
    expect(sequences.length).toBeGreaterThan(2);
  });

  it('never takes in again a build this leader ended', async () => {
    const farm = newFarm();
    const session = farm.connect('a1', 'amd64');
    expect(await farm.orchestrator.adoptStored()).toBe(0);
    const id = await farm.submit(['amd64']);
    farm.fail(session, `${id}-1`, 'no');
    farm.advance(1);
    const other = farm.connect('a2', 'amd64');
    farm.fail(other, `${id}-1`, 'no again');
    expect(await farm.buildState(id)).toBe(BuildState.FAILED);
    const events = await farm.eventCount(id);
    expect(await farm.orchestrator.adoptStored()).toBe(0);
    expect(farm.orchestrator.live.build(id)).toBeUndefined();
    expect(await farm.eventCount(id)).toBe(events);
  });
});

describe('--check-reproducible', () => {
  it('places the check job after its image job, on another agent', async () => {
    const farm = newFarm();
    const a1 = farm.connect('a1', 'amd64');
    const a2 = farm.connect('a2', 'amd64');
    const id = await farm.submit(['amd64'], { checkReproducible: true, sourceDateEpoch: 1n });
    const image = await farm.job(`${id}-1`);
    const check = await farm.job(`${id}-2`);
    expect(check.role).toBe(JobRole.REPRODUCIBILITY_CHECK);
    expect(image.agent).not.toBe('');
    expect(check.agent).not.toBe('');
    expect(check.agent).not.toBe(image.agent);
    const checkAssign = [...a1.sent, ...a2.sent].find(
      (m) => m?.case === 'assign' && m.value.jobId === check.id,
    );
    expect(checkAssign?.case === 'assign' && checkAssign.value.noCache).toBe(true);
  });

  it('holds the check job until its image job has an agent, then uses the same one when it is the only one', async () => {
    const farm = newFarm();
    const id = await farm
      .submit(['amd64'], { checkReproducible: true, sourceDateEpoch: 1n })
      .catch((err: unknown) => err);
    // Nobody can build it: the submit is refused and nothing stored.
    expect(id).toBeInstanceOf(Error);
    const only = farm.connect('a1', 'amd64', { capacity: 1 });
    const build = await farm.submit(['amd64'], { checkReproducible: true, sourceDateEpoch: 1n });
    expect(only.assigned()).toEqual([`${build}-1`]);
    expect((await farm.job(`${build}-2`)).state).toBe(JobState.QUEUED);
    farm.succeed(only, `${build}-1`, 1);
    expect(only.assigned()).toEqual([`${build}-1`, `${build}-2`]);
    farm.succeed(only, `${build}-2`, 1);
    expect(await farm.buildState(build)).toBe(BuildState.STITCHING);
  });
});

describe('keep-going', () => {
  it('lets the other platforms finish and then fails the build naming the failed one', async () => {
    const farm = newFarm();
    const amd = farm.connect('amd', 'amd64');
    const arm = farm.connect('arm', 'arm64');
    const id = await farm.submit(['amd64', 'arm64'], { keepGoing: true });
    farm.fail(amd, `${id}-1`, 'RUN make: exit 2');
    expect(arm.cancelled()).toEqual([]);
    expect(await farm.buildState(id)).toBe(BuildState.QUEUED);
    farm.succeed(arm, `${id}-2`);
    expect(await farm.buildState(id)).toBe(BuildState.FAILED);
    expect((await farm.build(id))?.error).toBe(
      'linux/amd64: RUN make: exit 2 (1 of 2 platforms succeeded); no tag was moved',
    );
  });
});

describe('the queue', () => {
  it('places queued jobs oldest build first as slots free up', async () => {
    const farm = newFarm();
    const session = farm.connect('a1', 'amd64');
    const [b1, b2, b3] = [
      await farm.submit(['amd64']),
      await farm.submit(['amd64']),
      await farm.submit(['amd64']),
    ];
    expect(session.assigned()).toEqual([`${b1}-1`]);
    expect(farm.orchestrator.queuedJobsByPlatform()).toEqual([
      { platform: { os: 'linux', architecture: 'amd64' }, count: 2 },
    ]);
    farm.succeed(session, `${b1}-1`);
    expect(session.assigned()).toEqual([`${b1}-1`, `${b2}-1`]);
    farm.succeed(session, `${b2}-1`, 2);
    expect(session.assigned()).toEqual([`${b1}-1`, `${b2}-1`, `${b3}-1`]);
    expect(farm.orchestrator.queuedJobsByPlatform()).toEqual([]);
  });

  it('gives a re-queued job its old place, before builds submitted after its own', async () => {
    const farm = newFarm();
    const first = farm.connect('a1', 'amd64');
    const old = await farm.submit(['amd64']);
    const newer = await farm.submit(['amd64']);
    farm.orchestrator.agentLost(first, 'connection lost');
    const second = farm.connect('a2', 'amd64');
    expect(second.assigned()).toEqual([`${old}-1`]);
    expect((await farm.job(`${newer}-1`)).state).toBe(JobState.QUEUED);
  });

  it('does not hold up another platform behind a platform whose agents are full', async () => {
    const farm = newFarm();
    const amd = farm.connect('amd', 'amd64');
    const busy = await farm.submit(['amd64']);
    const waiting = await farm.submit(['amd64']);
    const arm = farm.connect('arm', 'arm64');
    const later = await farm.submit(['arm64']);
    expect(amd.assigned()).toEqual([`${busy}-1`]);
    expect(arm.assigned()).toEqual([`${later}-1`]);
    expect((await farm.job(`${waiting}-1`)).state).toBe(JobState.QUEUED);
  });

  it('keeps only builds in flight in memory', async () => {
    const farm = newFarm();
    const session = farm.connect('a1', 'amd64');
    const done = await farm.submit(['amd64']);
    const cancelled = await farm.submit(['amd64']);
    expect(farm.orchestrator.live.size).toBe(2);
    await farm.orchestrator.cancel(cancelled, 'not needed');
    farm.fail(session, `${done}-1`, 'boom');
    expect(farm.orchestrator.live.size).toBe(0);
    // Ended builds are read from the store.
    expect(await farm.buildState(done)).toBe(BuildState.FAILED);
    expect((await farm.orchestrator.getBuild(cancelled)).state).toBe(BuildState.CANCELLED);
  });

  it('runs at most maxConcurrentStitches stitches at once; the next starts when one ends', async () => {
    const calls: string[] = [];
    const pending: ((err: Error) => void)[] = [];
    const held = new Proxy(
      {},
      {
        get:
          () =>
          (...args: unknown[]) => {
            calls.push(JSON.stringify(args, (_, v: unknown) => (typeof v === 'bigint' ? 0 : v)));
            return new Promise<never>((_, reject) => pending.push(reject));
          },
      },
    ) as unknown as RegistryClient;
    const farm = newFarm({ maxConcurrentStitches: 1 }, undefined, held);
    const amd = farm.connect('amd', 'amd64', { capacity: 2 });
    const first = await farm.submit(['amd64']);
    const second = await farm.submit(['amd64']);
    farm.succeed(amd, `${first}-1`, 1);
    farm.succeed(amd, `${second}-1`, 2);
    await vi.waitFor(() => expect(calls.length).toBeGreaterThan(0));
    expect(await farm.buildState(second)).toBe(BuildState.STITCHING);
    const mentions = (n: number) => calls.filter((c) => c.includes(IMAGE_DIGEST(n))).length;
    expect(mentions(1)).toBeGreaterThan(0);
    expect(mentions(2)).toBe(0);
    // The first stitch fails: its turn passes to the second.
    for (const reject of pending.splice(0)) reject(new Error('registry down'));
    await vi.waitFor(async () => expect(await farm.buildState(first)).toBe(BuildState.FAILED));
    await vi.waitFor(() => expect(mentions(2)).toBeGreaterThan(0));
  });
});

describe('the transition tables', () => {
  const JOB = JobState;
  const BUILD = BuildState;
  // Written out here on purpose: a change to transitions.ts must change this too.
  const legalJobMoves: [JobState, JobState][] = [
    [JOB.QUEUED, JOB.ASSIGNED],
    [JOB.QUEUED, JOB.FAILED],
    [JOB.QUEUED, JOB.CANCELLED],
    [JOB.ASSIGNED, JOB.RUNNING],
    [JOB.ASSIGNED, JOB.SUCCEEDED],
    [JOB.ASSIGNED, JOB.FAILED],
    [JOB.ASSIGNED, JOB.CANCELLED],
    [JOB.ASSIGNED, JOB.QUEUED],
    [JOB.RUNNING, JOB.SUCCEEDED],
    [JOB.RUNNING, JOB.FAILED],
    [JOB.RUNNING, JOB.CANCELLED],
    [JOB.RUNNING, JOB.QUEUED],
  ];
  const legalBuildMoves: [BuildState, BuildState][] = [
    [BUILD.QUEUED, BUILD.RUNNING],
    [BUILD.QUEUED, BUILD.FAILED],
    [BUILD.QUEUED, BUILD.CANCELLED],
    [BUILD.QUEUED, BUILD.TIMED_OUT],
    [BUILD.RUNNING, BUILD.STITCHING],
    [BUILD.RUNNING, BUILD.FAILED],
    [BUILD.RUNNING, BUILD.CANCELLED],
    [BUILD.RUNNING, BUILD.TIMED_OUT],
    [BUILD.STITCHING, BUILD.SUCCEEDED],
    [BUILD.STITCHING, BUILD.FAILED],
  ];
  const jobStates = Object.values(JobState).filter((v): v is JobState => typeof v === 'number');
  const buildStates = Object.values(BuildState).filter(
    (v): v is BuildState => typeof v === 'number',
  );
  const pairs = <S>(states: S[]) =>
    states.flatMap((from) => states.map((to) => [from, to] as const));

  it('refuses every job move not in the table, with a typed error naming both states', () => {
    for (const [from, to] of pairs(jobStates)) {
      const legal = legalJobMoves.some(([f, t]) => f === from && t === to);
      if (legal) expect(() => checkJobMove('j', from, to)).not.toThrow();
      else expect(() => checkJobMove('j', from, to)).toThrow(IllegalTransitionError);
    }
    expect(() => checkJobMove('j1', JOB.SUCCEEDED, JOB.QUEUED)).toThrow(
      'job j1 cannot move from succeeded to queued',
    );
  });

  it('refuses every build move not in the table', () => {
    for (const [from, to] of pairs(buildStates)) {
      const legal = legalBuildMoves.some(([f, t]) => f === from && t === to);
      if (legal) expect(() => checkBuildMove('b', from, to)).not.toThrow();
      else expect(() => checkBuildMove('b', from, to)).toThrow(IllegalTransitionError);
    }
  });

  it('takes the final states from the tables', () => {
    expect([...TERMINAL_JOB_STATES].sort()).toEqual(
      [JOB.SUCCEEDED, JOB.FAILED, JOB.CANCELLED].sort(),
    );
    expect([...TERMINAL_BUILD_STATES].sort()).toEqual(
      [BUILD.SUCCEEDED, BUILD.FAILED, BUILD.CANCELLED, BUILD.TIMED_OUT].sort(),
    );
  });

  it('never moves an ended job: a result after a cancel leaves no new event', async () => {
    const farm = newFarm();
    const session = farm.connect('a1', 'amd64');
    const id = await farm.submit(['amd64']);
    await farm.orchestrator.cancel(id, 'stop');
    const events = await farm.eventCount(id);
    session.jobs.add(`${id}-1`); // as if the cancel never reached it
    farm.succeed(session, `${id}-1`);
    farm.running(session, `${id}-1`);
    expect((await farm.job(`${id}-1`)).state).toBe(JobState.CANCELLED);
    expect(await farm.eventCount(id)).toBe(events);
  });
});
