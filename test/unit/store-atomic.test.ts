/**
 * A state change and its event are one atomic group: one SQLite
 * transaction, and in memory all or nothing. A coordinator that dies
 * between a job's move and its event leaves both or neither.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import {
  AgentHelloSchema,
  JobResultSchema,
  type ConnectResponseSchema,
} from '../../src/gen/braid/v1/agent_pb.js';
import { BuildSpecSchema, BuildState } from '../../src/gen/braid/v1/build_pb.js';
import { JobState } from '../../src/gen/braid/v1/common_pb.js';
import { createLogger } from '../../src/log.js';
import type { RegistryClient } from '../../src/oci/registry.js';
import { AgentRegistry, type AgentSession } from '../../src/coordinator/agent-registry.js';
import type { ContextStore } from '../../src/coordinator/context-store.js';
import { Orchestrator } from '../../src/coordinator/orchestrator.js';
import { LiveBuilds } from '../../src/coordinator/live-builds.js';
import { asAsyncStore } from '../support/async-store.js';
import { SqliteBuildStore } from '../../src/coordinator/sqlite-build-store.js';
import { queuedJob, type BuildStore, type StoreWrite } from '../../src/coordinator/store.js';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDb(): string {
  const dir = mkdtempSync(join(tmpdir(), 'braid-store-'));
  dirs.push(dir);
  return join(dir, 'braid.db');
}

/** A store that dies inside its transaction when it is about to append a chosen event. */
class DyingStore extends SqliteBuildStore {
  dieOn: ((write: StoreWrite & { kind: 'appendEvent' }) => boolean) | undefined;
  /** What another connection saw of the database at the moment of death. */
  seenByOthers: { jobState?: number; buildState?: number } | undefined;

  constructor(private readonly file: string) {
    super(file);
  }

  protected override apply(write: StoreWrite): void {
    if (write.kind === 'appendEvent' && this.dieOn?.(write)) {
      const other = new Database(this.file, { readonly: true });
      try {
        this.seenByOthers = {
          jobState: (
            other
              .prepare('SELECT state FROM jobs WHERE build_id = ? ORDER BY rowid')
              .get(write.buildId) as { state: number } | undefined
          )?.state,
          buildState: (
            other.prepare('SELECT state FROM builds WHERE id = ?').get(write.buildId) as
              { state: number } | undefined
          )?.state,
        };
      } finally {
        other.close();
      }
      throw new Error('coordinator died');
    }
    super.apply(write);
  }
}

/** The event of a job's or build's move, for `dieOn`. */
const moveTo =
  (kind: 'jobState' | 'buildState', state: number) =>
  (write: StoreWrite & { kind: 'appendEvent' }) =>
    write.event.body.case === kind && write.event.body.value.state === state;

function session(name: string, architecture: string): AgentSession {
  return {
    name,
    hello: create(AgentHelloSchema, {
      name,
      nativePlatform: { os: 'linux', architecture },
      capacity: 1,
    }),
    connectedAt: new Date(0),
    lastHeartbeat: new Date(0),
    jobs: new Set(),
    send: (_: MessageInitShape<typeof ConnectResponseSchema>['body']) => undefined,
    close: () => undefined,
  };
}

/** Build b1 of these architectures, each job placed on agent `<arch>`. */
async function placedBuild(store: BuildStore, architectures = ['amd64']) {
  const agents = new AgentRegistry();
  const orchestrator = new Orchestrator({
    store,
    contexts: {
      size: () => Promise.resolve(1),
      hasFile: () => Promise.resolve(true),
    } as unknown as ContextStore,
    agents,
    registry: {} as RegistryClient,
    log: createLogger({ level: 'silent', format: 'json', component: 'test' }),
    newId: () => 'b1',
    cacheAffinity: { enabled: false },
  });
  const sessions = architectures.map((arch) => session(arch, arch));
  for (const agent of sessions) orchestrator.agentConnected(agent);
  await orchestrator.submit(
    create(BuildSpecSchema, {
      contextDigest: `sha256:${'a'.repeat(64)}`,
      platforms: architectures.map((architecture) => ({ os: 'linux', architecture })),
      tags: ['127.0.0.1:5000/app:1'],
    }),
  );
  return { orchestrator, agent: sessions[0] as AgentSession };
}

async function stateEvents(store: BuildStore) {
  return (await store.eventsAfter('b1', 0n, 1000)).flatMap((e) =>
    e.body.case === 'jobState'
      ? [`job ${e.body.value.jobId} ${JobState[e.body.value.state]}`]
      : e.body.case === 'buildState'
        ? [`build ${BuildState[e.body.value.state]}`]
        : [],
  );
}

describe('a state change and its event commit together', () => {
  it("leaves neither the job's move nor its event when the coordinator dies between them", async () => {
    const file = tempDb();
    const store = new DyingStore(file);
    const { orchestrator, agent } = await placedBuild(store);
    store.dieOn = moveTo('jobState', JobState.RUNNING);
    expect(() =>
      orchestrator.jobUpdate(agent, {
        $typeName: 'braid.v1.JobUpdate',
        jobId: 'b1-1',
        state: JobState.RUNNING,
        step: '',
      }),
    ).toThrow('coordinator died');
    // The move was written, but no other connection could see it before its event.
    expect(store.seenByOthers?.jobState).toBe(JobState.ASSIGNED);
    // Memory is as it was, too: the coordinator goes on from the stored state.
    expect(orchestrator.live.job('b1-1')?.state).toBe(JobState.ASSIGNED);
    await store.close();

    const reopened = new SqliteBuildStore(file);
    expect((await reopened.jobsOf('b1'))[0]?.state).toBe(JobState.ASSIGNED);
    expect((await reopened.getBuild('b1'))?.state).toBe(BuildState.QUEUED);
    expect(await stateEvents(reopened)).toEqual(['build QUEUED', 'job b1-1 ASSIGNED']);
    await reopened.close();
  });

  it("leaves neither the job's move nor the build's move it causes when the build's event fails", async () => {
    const file = tempDb();
    const store = new DyingStore(file);
    const { orchestrator, agent } = await placedBuild(store);
    store.dieOn = moveTo('buildState', BuildState.RUNNING);
    expect(() =>
      orchestrator.jobUpdate(agent, {
        $typeName: 'braid.v1.JobUpdate',
        jobId: 'b1-1',
        state: JobState.RUNNING,
        step: '',
      }),
    ).toThrow('coordinator died');
    expect(orchestrator.live.build('b1')?.state).toBe(BuildState.QUEUED);
    await store.close();

    const reopened = new SqliteBuildStore(file);
    expect((await reopened.jobsOf('b1'))[0]?.state).toBe(JobState.ASSIGNED);
    expect((await reopened.getBuild('b1'))?.state).toBe(BuildState.QUEUED);
    expect(await stateEvents(reopened)).toEqual(['build QUEUED', 'job b1-1 ASSIGNED']);
    // The next event takes the sequence the lost ones would have had: no gap.
    const stored = (await reopened.eventsAfter('b1', 0n)).length;
    const live = new LiveBuilds(reopened);
    await live.load(new Date(0));
    expect(
      live.appendEvent('b1', { case: 'log', value: { text: 'x' } }, new Date())?.sequence,
    ).toBe(BigInt(stored + 1));
    await reopened.close();
  });

  it('stores all of a failure (the job, the jobs it stops, the build) or none of it', async () => {
    const file = tempDb();
    const store = new DyingStore(file);
    const { orchestrator, agent } = await placedBuild(store, ['amd64', 'arm64']);
    store.dieOn = moveTo('buildState', BuildState.FAILED);
    expect(() =>
      orchestrator.jobResult(agent, create(JobResultSchema, { jobId: 'b1-1', error: 'boom' })),
    ).toThrow('coordinator died');
    expect(orchestrator.live.jobsOf('b1').map((j) => JobState[j.state])).toEqual([
      'ASSIGNED',
      'ASSIGNED',
    ]);
    await store.close();

    const reopened = new SqliteBuildStore(file);
    expect((await reopened.jobsOf('b1')).map((j) => JobState[j.state])).toEqual([
      'ASSIGNED',
      'ASSIGNED',
    ]);
    expect((await reopened.getBuild('b1'))?.state).toBe(BuildState.QUEUED);
    expect(await stateEvents(reopened)).toEqual([
      'build QUEUED',
      'job b1-1 ASSIGNED',
      'job b1-2 ASSIGNED',
    ]);
    await reopened.close();
  });

  it('stores both once the group commits', async () => {
    const file = tempDb();
    const store = new DyingStore(file);
    const { orchestrator, agent } = await placedBuild(store);
    orchestrator.jobUpdate(agent, {
      $typeName: 'braid.v1.JobUpdate',
      jobId: 'b1-1',
      state: JobState.RUNNING,
      step: '',
    });
    await store.close();
    const reopened = new SqliteBuildStore(file);
    expect((await reopened.jobsOf('b1'))[0]?.state).toBe(JobState.RUNNING);
    expect((await reopened.getBuild('b1'))?.state).toBe(BuildState.RUNNING);
    expect(await stateEvents(reopened)).toEqual([
      'build QUEUED',
      'job b1-1 ASSIGNED',
      'job b1-1 RUNNING',
      'build RUNNING',
    ]);
    await reopened.close();
  });

  it('keeps a process killed (SIGKILL) inside a transaction from leaving half of it', async () => {
    const file = tempDb();
    const setup = new SqliteBuildStore(file);
    await setup.commit([
      {
        kind: 'createBuild',
        build: {
          id: 'b1',
          spec: create(BuildSpecSchema, {}),
          state: BuildState.QUEUED,
          createdAt: new Date(0),
          error: '',
          requestId: '',
        },
        jobs: [queuedJob('b1-1', 'b1', { os: 'linux', architecture: 'amd64' })],
      },
    ]);
    await setup.close();
    const moduleUrl = (path: string) => JSON.stringify(pathToFileURL(resolve(path)).href);
    const script = join(file, '..', 'die.mts');
    writeFileSync(
      script,
      `import { SqliteBuildStore } from ${moduleUrl('src/coordinator/sqlite-build-store.ts')};
import { LiveBuilds } from ${moduleUrl('src/coordinator/live-builds.ts')};
class Killed extends SqliteBuildStore {
  apply(write) {
    // Dies here: the job's move is written, its event is next.
    if (write.kind === 'appendEvent') process.kill(process.pid, 'SIGKILL');
    super.apply(write);
  }
}
const live = new LiveBuilds(new Killed(${JSON.stringify(file)}));
await live.load(new Date(0));
live.atomically(() => {
  live.updateJob('b1-1', { state: 2, agent: 'a1' });
  live.appendEvent('b1', { case: 'log', value: { text: 'never' } }, new Date());
});
`,
    );
    let died: { signal?: string; stderr?: Buffer } = {};
    try {
      execFileSync(process.execPath, ['--import', 'tsx', script], { stdio: 'pipe' });
    } catch (err) {
      died = err as typeof died;
    }
    // Killed where the script says, not failed for another reason.
    expect(died.signal, String(died.stderr)).toBe('SIGKILL');
    const reopened = new SqliteBuildStore(file);
    expect((await reopened.jobsOf('b1'))[0]).toMatchObject({ state: JobState.QUEUED, agent: '' });
    expect(await reopened.eventsAfter('b1', 0n)).toEqual([]);
    await reopened.close();
  });
});

describe('LiveBuilds.atomically', () => {
  async function oneBuild() {
    const store = new SqliteBuildStore(tempDb());
    const live = new LiveBuilds(store);
    live.createBuild(
      {
        id: 'b1',
        spec: create(BuildSpecSchema, {}),
        state: BuildState.QUEUED,
        createdAt: new Date(0),
        error: '',
        requestId: '',
      },
      [queuedJob('b1-1', 'b1', { os: 'linux', architecture: 'amd64' })],
    );
    await live.flushed();
    return { store, live };
  }

  it('joins an inner group to the outer one: a throw after the inner group undoes both, in memory and stored', async () => {
    const { store, live } = await oneBuild();
    const seen: string[] = [];
    live.onJobChange((before, after) => seen.push(`${before?.state} -> ${after?.state}`));
    expect(() =>
      live.atomically(() => {
        live.atomically(() => live.updateBuild('b1', { state: BuildState.RUNNING }));
        live.updateJob('b1-1', { state: JobState.ASSIGNED, agent: 'a1' });
        live.appendEvent('b1', { case: 'log', value: { text: 'a' } }, new Date());
        throw new Error('later');
      }),
    ).toThrow('later');
    expect(live.build('b1')?.state).toBe(BuildState.QUEUED);
    expect(live.job('b1-1')).toMatchObject({ state: JobState.QUEUED, agent: '' });
    // Listeners heard the move and its undoing.
    expect(seen).toEqual([
      `${JobState.QUEUED} -> ${JobState.ASSIGNED}`,
      `${JobState.ASSIGNED} -> ${JobState.QUEUED}`,
    ]);
    expect((await store.getBuild('b1'))?.state).toBe(BuildState.QUEUED);
    expect(await store.eventsAfter('b1', 0n)).toEqual([]);
    // The sequence handed out inside the undone group is handed out again.
    expect(
      live.appendEvent('b1', { case: 'log', value: { text: 'b' } }, new Date())?.sequence,
    ).toBe(1n);
    expect(live.atomically(() => 42)).toBe(42);
    await store.close();
  });

  it('writes a group to the store in one commit, and runs after-commit work only then', async () => {
    const { store, live } = await oneBuild();
    const commits: string[][] = [];
    const commitSync = store.commitSync.bind(store);
    store.commitSync = (writes) => {
      commits.push(writes.map((w) => w.kind));
      commitSync(writes);
    };
    const order: string[] = [];
    live.atomically(() => {
      live.updateJob('b1-1', { state: JobState.ASSIGNED, agent: 'a1' });
      live.afterCommit(() => order.push('after'));
      live.appendEvent('b1', { case: 'log', value: { text: 'assigned' } }, new Date());
      order.push('inside');
    });
    expect(commits).toEqual([['updateJob', 'appendEvent']]);
    expect(order).toEqual(['inside', 'after']);
    await store.close();
  });

  it('holds deferred groups (log lines) for the next commit or the end of the turn, in order', async () => {
    const { store, live } = await oneBuild();
    const commits: string[][] = [];
    const commitSync = store.commitSync.bind(store);
    store.commitSync = (writes) => {
      commits.push(
        writes.map((w) => (w.kind === 'appendEvent' ? `event ${w.event.sequence}` : w.kind)),
      );
      commitSync(writes);
    };
    const log = (text: string) =>
      live.atomically(() => live.appendEvent('b1', { case: 'log', value: { text } }, new Date()), {
        defer: true,
      });
    log('one');
    log('two');
    expect(commits).toEqual([]);
    // A move commits with the lines before it, in one transaction.
    live.updateJob('b1-1', { state: JobState.ASSIGNED, agent: 'a1' });
    expect(commits).toEqual([['event 1', 'event 2', 'updateJob']]);
    log('three');
    await new Promise((resolve) => setImmediate(resolve));
    expect(commits).toEqual([['event 1', 'event 2', 'updateJob'], ['event 3']]);
    expect((await store.eventsAfter('b1', 0n)).map((e) => e.sequence)).toEqual([1n, 2n, 3n]);
    await store.close();
  });

  it('commits in order through an asynchronous store, and tells a refused commit', async () => {
    const { store } = await oneBuild();
    // The same database seen as a store that answers later and has no synchronous path.
    const applied: string[] = [];
    let refuse = false;
    const commit = async (writes: readonly StoreWrite[]) => {
      await new Promise((r) => setTimeout(r, 5));
      if (refuse) throw new Error('disk full');
      applied.push(
        ...writes.map((w) => (w.kind === 'updateJob' ? `job ${w.patch.state}` : w.kind)),
      );
      return store.commit(writes);
    };
    const slow = asAsyncStore(store, commit);
    const failures: unknown[] = [];
    const live = new LiveBuilds(slow, (err) => failures.push(err));
    await live.load(new Date(0));
    const order: string[] = [];
    live.updateJob('b1-1', { state: JobState.ASSIGNED, agent: 'a1' });
    live.afterCommit(() => order.push('first stored'));
    live.updateJob('b1-1', { state: JobState.RUNNING });
    live.afterCommit(() => order.push('second stored'));
    expect(order).toEqual([]);
    await live.flushed();
    expect(order).toEqual(['first stored', 'second stored']);
    expect(applied).toEqual([`job ${JobState.ASSIGNED}`, `job ${JobState.RUNNING}`]);
    refuse = true;
    live.updateJob('b1-1', { currentStep: 'x' });
    await live.flushed();
    expect(String(failures[0])).toContain('disk full');
    await store.close();
  });
});
