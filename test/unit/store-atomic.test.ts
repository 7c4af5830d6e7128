/**
 * A state change and its event are one SQLite transaction: a coordinator
 * that dies between a job's move and its event leaves both or neither.
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
import {
  BuildEventSchema,
  BuildSpecSchema,
  BuildState,
  type BuildEvent,
} from '../../src/gen/braid/v1/build_pb.js';
import { JobState } from '../../src/gen/braid/v1/common_pb.js';
import { createLogger } from '../../src/log.js';
import type { RegistryClient } from '../../src/oci/registry.js';
import { AgentRegistry, type AgentSession } from '../../src/coordinator/agent-registry.js';
import type { ContextStore } from '../../src/coordinator/context-store.js';
import { Orchestrator } from '../../src/coordinator/orchestrator.js';
import { BuildStore } from '../../src/coordinator/store.js';

type EventBody = MessageInitShape<typeof BuildEventSchema>['body'];

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDb(): string {
  const dir = mkdtempSync(join(tmpdir(), 'braid-store-'));
  dirs.push(dir);
  return join(dir, 'braid.db');
}

/** A store that dies when it is about to append a chosen event. */
class DyingStore extends BuildStore {
  dieOn: ((body: EventBody) => boolean) | undefined;
  /** What another connection saw of the database at the moment of death. */
  seenByOthers: { jobState?: number; buildState?: number } | undefined;

  constructor(private readonly file: string) {
    super(file);
  }

  override appendEvent(buildId: string, body: EventBody, time?: Date): BuildEvent {
    if (this.dieOn?.(body)) {
      const other = new Database(this.file, { readonly: true });
      try {
        this.seenByOthers = {
          jobState: (
            other
              .prepare('SELECT state FROM jobs WHERE build_id = ? ORDER BY rowid')
              .get(buildId) as { state: number } | undefined
          )?.state,
          buildState: (
            other.prepare('SELECT state FROM builds WHERE id = ?').get(buildId) as
              { state: number } | undefined
          )?.state,
        };
      } finally {
        other.close();
      }
      throw new Error('coordinator died');
    }
    return super.appendEvent(buildId, body, time);
  }
}

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

function stateEvents(store: BuildStore) {
  return store
    .eventsAfter('b1', 0n, 1000)
    .flatMap((e) =>
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
    store.dieOn = (body) => body?.case === 'jobState' && body.value.state === JobState.RUNNING;
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
    store.close();

    const reopened = new BuildStore(file);
    expect(reopened.getJob('b1-1')?.state).toBe(JobState.ASSIGNED);
    expect(reopened.getBuildRecord('b1')?.state).toBe(BuildState.QUEUED);
    expect(stateEvents(reopened)).toEqual(['build QUEUED', 'job b1-1 ASSIGNED']);
    reopened.close();
  });

  it("leaves neither the job's move nor the build's move it causes when the build's event fails", async () => {
    const file = tempDb();
    const store = new DyingStore(file);
    const { orchestrator, agent } = await placedBuild(store);
    store.dieOn = (body) => body?.case === 'buildState' && body.value.state === BuildState.RUNNING;
    expect(() =>
      orchestrator.jobUpdate(agent, {
        $typeName: 'braid.v1.JobUpdate',
        jobId: 'b1-1',
        state: JobState.RUNNING,
        step: '',
      }),
    ).toThrow('coordinator died');
    store.close();

    const reopened = new BuildStore(file);
    expect(reopened.getJob('b1-1')?.state).toBe(JobState.ASSIGNED);
    expect(reopened.getBuildRecord('b1')?.state).toBe(BuildState.QUEUED);
    expect(stateEvents(reopened)).toEqual(['build QUEUED', 'job b1-1 ASSIGNED']);
    // The next event takes the sequence the lost ones would have had: no gap.
    const stored = reopened.eventsAfter('b1', 0n).length;
    expect(reopened.appendEvent('b1', { case: 'log', value: { text: 'x' } }).sequence).toBe(
      BigInt(stored + 1),
    );
    reopened.close();
  });

  it('stores all of a failure (the job, the jobs it stops, the build) or none of it', async () => {
    const file = tempDb();
    const store = new DyingStore(file);
    const { orchestrator, agent } = await placedBuild(store, ['amd64', 'arm64']);
    store.dieOn = (body) => body?.case === 'buildState' && body.value.state === BuildState.FAILED;
    expect(() =>
      orchestrator.jobResult(agent, create(JobResultSchema, { jobId: 'b1-1', error: 'boom' })),
    ).toThrow('coordinator died');
    store.close();

    const reopened = new BuildStore(file);
    expect(reopened.jobsOf('b1').map((j) => JobState[j.state])).toEqual(['ASSIGNED', 'ASSIGNED']);
    expect(reopened.getBuildRecord('b1')?.state).toBe(BuildState.QUEUED);
    expect(stateEvents(reopened)).toEqual([
      'build QUEUED',
      'job b1-1 ASSIGNED',
      'job b1-2 ASSIGNED',
    ]);
    reopened.close();
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
    store.close();
    const reopened = new BuildStore(file);
    expect(reopened.getJob('b1-1')?.state).toBe(JobState.RUNNING);
    expect(reopened.getBuildRecord('b1')?.state).toBe(BuildState.RUNNING);
    expect(stateEvents(reopened)).toEqual([
      'build QUEUED',
      'job b1-1 ASSIGNED',
      'job b1-1 RUNNING',
      'build RUNNING',
    ]);
    reopened.close();
  });

  it('keeps a process killed (SIGKILL) inside a group from leaving half of it', () => {
    const file = tempDb();
    const setup = new BuildStore(file);
    setup.createBuild(
      {
        id: 'b1',
        spec: create(BuildSpecSchema, {}),
        state: BuildState.QUEUED,
        createdAt: new Date(0),
        error: '',
        requestId: '',
      },
      [
        {
          id: 'b1-1',
          buildId: 'b1',
          platform: { os: 'linux', architecture: 'amd64' },
          state: JobState.QUEUED,
          agent: '',
          emulated: false,
          emulator: '',
          currentStep: '',
          durationMs: 0,
          attempt: 1,
          error: '',
        },
      ],
    );
    setup.close();
    const storeUrl = pathToFileURL(resolve('src/coordinator/store.ts')).href;
    const script = join(file, '..', 'die.ts');
    writeFileSync(
      script,
      `import { BuildStore } from ${JSON.stringify(storeUrl)};
const store = new BuildStore(${JSON.stringify(file)});
store.atomically(() => {
  store.updateJob('b1-1', { state: 2, agent: 'a1' });
  // Dies here: after the job's move, before its event.
  process.kill(process.pid, 'SIGKILL');
  store.appendEvent('b1', { case: 'log', value: { text: 'never' } });
});
`,
    );
    expect(() =>
      execFileSync(process.execPath, ['--import', 'tsx', script], { stdio: 'pipe' }),
    ).toThrow();
    const reopened = new BuildStore(file);
    expect(reopened.getJob('b1-1')).toMatchObject({ state: JobState.QUEUED, agent: '' });
    expect(reopened.eventsAfter('b1', 0n)).toEqual([]);
    reopened.close();
  });
});

describe('store.atomically', () => {
  it('joins an inner group to the outer one: a throw after the inner group undoes both', () => {
    const store = new BuildStore(tempDb());
    store.createBuild(
      {
        id: 'b1',
        spec: create(BuildSpecSchema, {}),
        state: BuildState.QUEUED,
        createdAt: new Date(0),
        error: '',
        requestId: '',
      },
      [],
    );
    expect(() =>
      store.atomically(() => {
        store.atomically(() => store.updateBuild('b1', { state: BuildState.RUNNING }));
        store.appendEvent('b1', { case: 'log', value: { text: 'a' } });
        throw new Error('later');
      }),
    ).toThrow('later');
    expect(store.getBuildRecord('b1')?.state).toBe(BuildState.QUEUED);
    expect(store.eventsAfter('b1', 0n)).toEqual([]);
    // The sequence handed out inside the rolled-back group is handed out again.
    expect(store.appendEvent('b1', { case: 'log', value: { text: 'b' } }).sequence).toBe(1n);
    expect(store.atomically(() => 42)).toBe(42);
    store.close();
  });
});
