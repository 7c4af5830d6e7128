/**
 * Two coordinators on one PostgreSQL store: exactly one leads (its /readyz
 * answers 200, the standby's 503 naming the leader). The leader killed
 * (SIGKILL) is replaced by the standby; a leader paused (SIGSTOP) past its
 * lease is taken over from, and once resumed (SIGCONT) it stands by
 * instead of leading twice; a standby killed changes nothing.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { credentials } from '@grpc/grpc-js';
import { create } from '@bufbuild/protobuf';
import { AgentService } from '../../src/gen/braid/v1/agent_pb.js';
import {
  BuildEventSchema,
  BuildService,
  BuildSpecSchema,
  BuildState,
} from '../../src/gen/braid/v1/build_pb.js';
import { PgBuildStore } from '../../src/coordinator/pg-build-store.js';
import { queuedJob } from '../../src/coordinator/store.js';
import { createClient } from '../../src/rpc/client.js';
import { BRAID_BIN, cleanEnv } from '../support/braid-cli.js';
import { recordFault } from '../support/fault-ledger.js';
import { startPostgres, type PostgresCluster } from '../support/postgres.js';
import { startProcess, type Started } from '../support/process.js';
import { freePort } from '../support/registry.js';

const POLL_MS = 300;
const LEASE_MS = 3000;

interface Node {
  name: string;
  address: string;
  probe: string;
  process: Started;
}

describe('coordinators taking over from each other on PostgreSQL', () => {
  let postgres: PostgresCluster;
  let dir: string;
  const started: Started[] = [];

  beforeAll(async () => {
    postgres = await startPostgres();
    dir = await mkdtemp(join(tmpdir(), 'braid-failover-'));
  }, 120_000);

  afterAll(async () => {
    for (const proc of started) await proc.stop('SIGKILL').catch(() => undefined);
    await postgres?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function startNode(name: string, url: string): Promise<Node> {
    const address = `127.0.0.1:${await freePort()}`;
    const probePort = await freePort();
    const proc = startProcess(
      process.execPath,
      [
        BRAID_BIN,
        'coordinator',
        '--listen',
        address,
        '--data-dir',
        join(dir, `${name}-${Date.now()}`),
        '--store',
        url,
        '--metrics-listen',
        `127.0.0.1:${probePort}`,
        '--leader-poll-ms',
        String(POLL_MS),
        '--leader-lease-ms',
        String(LEASE_MS),
        '--log-format',
        'json',
      ],
      { env: cleanEnv() },
    );
    started.push(proc);
    await proc.waitForStdout(/^listening /m, 30_000);
    return { name, address, probe: `http://127.0.0.1:${probePort}/`, process: proc };
  }

  /** 'leader', or the standby's reason ('standby: the leader is ...'). */
  async function role(node: Node): Promise<string> {
    const response = await fetch(new URL('readyz', node.probe)).catch(() => undefined);
    if (!response) return 'unreachable';
    const text = (await response.text()).trim();
    return response.status === 200 ? 'leader' : text;
  }

  async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (await check()) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
  }

  async function pair(): Promise<{ leader: Node; standby: Node }> {
    const url = await postgres.createDatabase();
    // Started at the same instant.
    const [a, b] = await Promise.all([startNode('a', url), startNode('b', url)]);
    await waitFor(
      'one of two coordinators to lead',
      async () => (await role(a)) === 'leader' || (await role(b)) === 'leader',
      15_000,
    );
    const leader = (await role(a)) === 'leader' ? a : b;
    const standby = leader === a ? b : a;
    return { leader, standby };
  }

  it('lets exactly one of two coordinators started together lead; the standby names it', async () => {
    const { leader, standby } = await pair();
    // Several lease periods later, still one leader.
    await new Promise((r) => setTimeout(r, LEASE_MS * 2));
    expect(await role(leader)).toBe('leader');
    expect(await role(standby)).toContain(`standby: the leader is ${leader.address}`);
  });

  it('replaces a leader killed with SIGKILL within the target of 10 s', async () => {
    const { leader, standby } = await pair();
    const killedAt = Date.now();
    await leader.process.stop('SIGKILL');
    await waitFor('the standby to lead', async () => (await role(standby)) === 'leader', 10_000);
    const tookMs = Date.now() - killedAt;
    await recordFault({
      fault: 'leader coordinator SIGKILLed (PostgreSQL, standby)',
      attempted: 1,
      succeeded: tookMs <= 10_000 ? 1 : 0,
      failedCleanly: 0,
      incompleteTagMoves: 0,
      rebuiltAfterRestart: 0,
    });
    expect(tookMs).toBeLessThanOrEqual(10_000);
  });

  it('takes over from a leader paused past its lease, which stands by once resumed', async () => {
    const { leader, standby } = await pair();
    const pid = leader.process.child.pid as number;
    process.kill(pid, 'SIGSTOP');
    try {
      await waitFor(
        'the standby to take over from the paused leader',
        async () => (await role(standby)) === 'leader',
        LEASE_MS + 10_000,
      );
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    // Resumed, the old leader learns it lost and stands by, naming the new one.
    await waitFor(
      'the resumed leader to stand by',
      async () => (await role(leader)).includes(`the leader is ${standby.address}`),
      10_000,
    );
    expect(await role(standby)).toBe('leader');
    await recordFault({
      fault: 'leader coordinator SIGSTOPped past its lease, then SIGCONT',
      attempted: 1,
      succeeded: 1,
      failedCleanly: 0,
      incompleteTagMoves: 0,
      rebuiltAfterRestart: 0,
    });
  });

  it('answers reads from the store while standing by, and refuses agents naming the leader', async () => {
    const url = await postgres.createDatabase();
    // A finished build, as a leader would have stored it.
    const store = await PgBuildStore.open(url);
    try {
      await store.commit([
        {
          kind: 'createBuild',
          build: {
            id: 'bstored',
            spec: create(BuildSpecSchema, { tags: ['127.0.0.1:5000/app:1'] }),
            state: BuildState.QUEUED,
            createdAt: new Date(),
            error: '',
            requestId: '',
          },
          jobs: [queuedJob('bstored-1', 'bstored', { os: 'linux', architecture: 'amd64' })],
        },
        { kind: 'updateBuild', id: 'bstored', patch: { state: BuildState.CANCELLED, error: 'x' } },
        {
          kind: 'appendEvent',
          buildId: 'bstored',
          event: create(BuildEventSchema, {
            sequence: 1n,
            body: { case: 'buildState', value: { state: BuildState.CANCELLED, message: 'x' } },
          }),
        },
      ]);
    } finally {
      await store.close();
    }
    const [a, b] = await Promise.all([startNode('a', url), startNode('b', url)]);
    await waitFor(
      'one of two coordinators to lead',
      async () => (await role(a)) === 'leader' || (await role(b)) === 'leader',
      15_000,
    );
    const leader = (await role(a)) === 'leader' ? a : b;
    const standby = leader === a ? b : a;
    // Straight to the standby, without following any hint.
    const options = { credentials: credentials.createInsecure() };
    const builds = createClient(BuildService, standby.address, options);
    const { build } = await builds.getBuild({ buildId: 'bstored' });
    expect(build?.state).toBe(BuildState.CANCELLED);
    const { builds: listed } = await builds.listBuilds({});
    expect(listed.map((l) => l.id)).toEqual(['bstored']);
    const events: bigint[] = [];
    for await (const { event } of builds.watchBuild({ buildId: 'bstored', follow: true }))
      events.push(event?.sequence ?? 0n);
    expect(events).toEqual([1n]);
    const agents = createClient(AgentService, standby.address, options);
    const session = agents.connect();
    await session.send({
      body: {
        case: 'hello',
        value: { name: 'x1', nativePlatform: { os: 'linux', architecture: 'amd64' }, capacity: 1 },
      },
    });
    await expect(
      (async () => {
        for await (const _ of session) return 'answered';
        return 'ended';
      })(),
    ).rejects.toThrow(`standby coordinator: the leader is ${leader.address}`);
    session.cancel();
  });

  it('changes nothing when the standby is killed', async () => {
    const { leader, standby } = await pair();
    await standby.process.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, LEASE_MS));
    expect(await role(leader)).toBe('leader');
  });
});
