/**
 * The leader of two coordinators on one PostgreSQL store killed (SIGKILL)
 * with three builds in flight: the standby takes over, the agents (given
 * both addresses) reconnect to it and report the jobs they hold, and every
 * build succeeds through it. No finished job is built again, every tag
 * points at a complete index, and each `braid build` watching its build
 * (also given both addresses) sees every event once, in order. Then the
 * same with the database itself stopped for 30 s mid-build: no coordinator
 * is ready while it is down, and every build still succeeds once.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { BRAID_BIN, braid, cleanEnv } from '../support/braid-cli.js';
import { requireCommand, requireEngine, requireQemu } from '../support/components.js';
import { recordFault, tagState } from '../support/fault-ledger.js';
import { buildStatus, startTestAgent, waitForAgents, type TestAgent } from '../support/farm.js';
import { startPostgres, type PostgresCluster } from '../support/postgres.js';
import { startProcess, type Started } from '../support/process.js';
import { freePort, startRegistry, type TestRegistry } from '../support/registry.js';

const DOCKERFILE = `ARG BASE
FROM \${BASE}
ARG TARGETARCH
ARG N
RUN [ "\${TARGETARCH}" = "amd64" ] || sleep 10
RUN echo "\${TARGETARCH} \${N}" > /arch
`;

const BUILDS = 3;

interface Coordinator {
  address: string;
  /** Its /readyz and /metrics, HOST:PORT. */
  probe: string;
  process: Started;
}

describe('the leading coordinator killed with builds in flight, a standby on the same PostgreSQL', () => {
  let postgres: PostgresCluster;
  let registry: TestRegistry;
  let dir: string;
  let skopeo: string;
  const coordinators: Coordinator[] = [];
  const agents: TestAgent[] = [];
  const builds: Started[] = [];

  beforeAll(async () => {
    await requireEngine();
    await requireQemu('qemu-aarch64');
    skopeo = await requireCommand('skopeo', 'skopeo');
    postgres = await startPostgres();
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    dir = await mkdtemp(join(tmpdir(), 'braid-failover-build-'));
    await writeFile(join(dir, 'Dockerfile'), DOCKERFILE);
  }, 600_000);

  afterAll(async () => {
    for (const build of builds) await build.stop('SIGKILL').catch(() => undefined);
    for (const agent of agents) await agent.stop('SIGKILL').catch(() => undefined);
    for (const c of coordinators) await c.process.stop('SIGKILL').catch(() => undefined);
    await registry?.stop();
    await postgres?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Two coordinators on one new database, two agents given both; returns the leader. */
  async function startFarm(): Promise<{ both: string; leader: Coordinator }> {
    const url = await postgres.createDatabase();
    for (const name of ['a', 'b']) {
      const address = `127.0.0.1:${await freePort()}`;
      const probe = `127.0.0.1:${await freePort()}`;
      const proc = startProcess(
        process.execPath,
        [
          BRAID_BIN,
          'coordinator',
          '--listen',
          address,
          '--metrics-listen',
          probe,
          '--data-dir',
          join(dir, `data-${name}`),
          '--store',
          url,
          '--leader-poll-ms',
          '500',
          '--leader-lease-ms',
          '3000',
          '--heartbeat-timeout-ms',
          '15000',
          '--log-format',
          'json',
        ],
        { env: cleanEnv() },
      );
      coordinators.push({ address, probe, process: proc });
      await proc.waitForStdout(/^listening /m, 30_000);
    }
    const both = coordinators.map((c) => c.address).join(',');
    agents.push(await startTestAgent(both, 'f1'), await startTestAgent(both, 'f2'));
    await waitForAgents(both, ['f1', 'f2']);
    for (const c of coordinators) {
      const listed = await braid(['agents', '--output', 'json', '--coordinator', c.address]);
      if (listed.code === 0 && listed.stdout.includes('"f1"')) return { both, leader: c };
    }
    throw new Error('no coordinator has both agents joined');
  }

  /** BUILDS builds of two platforms, each followed by `braid build` given both addresses. */
  function submitBuilds(both: string, name: string): string[] {
    const tags = Array.from({ length: BUILDS }, (_, i) => `${registry.host}/team/${name}:${i}`);
    for (const [i, tag] of tags.entries()) {
      builds.push(
        startProcess(
          process.execPath,
          [
            BRAID_BIN,
            'build',
            dir,
            '-t',
            tag,
            '--platform',
            'linux/amd64,linux/arm64',
            '--build-arg',
            `BASE=${registry.host}/base/busybox:latest`,
            '--build-arg',
            `N=${i}`,
            '--no-cache',
            '--progress',
            'json',
            '--coordinator',
            both,
          ],
          { env: cleanEnv() },
        ),
      );
    }
    return tags;
  }

  /** The builds' ids, once some platform has finished and some is still building. */
  async function midBuild(both: string): Promise<Set<string>> {
    const ids = new Set<string>();
    const deadline = Date.now() + 180_000;
    let states: string[] = [];
    while (Date.now() < deadline) {
      const listed = await braid(['builds', '--output', 'json', '--coordinator', both]);
      for (const line of listed.stdout.split('\n').filter(Boolean))
        ids.add((JSON.parse(line) as { id: string }).id);
      states = [];
      for (const id of ids) {
        const status = await buildStatus(both, id);
        states.push(...(status?.jobs.map((j) => j.state) ?? []));
      }
      if (ids.size === BUILDS && states.includes('succeeded') && states.includes('running')) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(states).toContain('succeeded');
    expect(states).toContain('running');
    return ids;
  }

  /** Every build succeeded once, each tag on a complete index, each watcher saw every event once. */
  async function expectAllSucceeded(
    fault: string,
    both: string,
    ids: Set<string>,
    tags: string[],
  ): Promise<void> {
    const exits = await Promise.all(builds.map((b) => b.exited));
    const statuses = await Promise.all([...ids].map((id) => buildStatus(both, id)));
    const tagStates = await Promise.all(
      tags.map((tag) => tagState(skopeo, tag, ['linux/amd64', 'linux/arm64'])),
    );
    const succeededLines = agents.flatMap((a) =>
      a.process
        .stderr()
        .split('\n')
        .filter((l) => l.includes('"job succeeded"')),
    );
    await recordFault({
      fault,
      attempted: BUILDS,
      succeeded: statuses.filter((s) => s?.state === 'succeeded').length,
      failedCleanly: 0,
      incompleteTagMoves: tagStates.filter((s) => s === 'incomplete').length,
      rebuiltAfterRestart: succeededLines.length - BUILDS * 2,
    });
    for (const [i, exit] of exits.entries())
      expect(exit.code, builds[i]?.stderr().slice(-3000)).toBe(0);
    expect(statuses.map((s) => s?.state)).toEqual(Array(BUILDS).fill('succeeded'));
    expect(tagStates).toEqual(Array(BUILDS).fill('complete'));
    // Nothing ran twice: every job finished on its first attempt, each once.
    for (const status of statuses) expect(status?.jobs.map((j) => j.attempt)).toEqual([1, 1]);
    expect(succeededLines).toHaveLength(BUILDS * 2);
    // Each watcher resumed its stream: every sequence once, in order.
    for (const build of builds) {
      const sequences = build
        .stderr()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => Number((JSON.parse(l) as { sequence: string }).sequence));
      expect(sequences).toEqual(Array.from({ length: sequences.length }, (_, i) => i + 1));
    }
  }

  /** What a coordinator's /readyz answers: its status code. */
  async function readyz(c: Coordinator): Promise<number> {
    const response = await fetch(`http://${c.probe}/readyz`, {
      signal: AbortSignal.timeout(5000),
    });
    await response.text();
    return response.status;
  }

  afterEach(async () => {
    for (const build of builds.splice(0)) await build.stop('SIGKILL').catch(() => undefined);
    for (const agent of agents.splice(0)) await agent.stop('SIGKILL').catch(() => undefined);
    for (const c of coordinators.splice(0)) await c.process.stop('SIGKILL').catch(() => undefined);
  });

  it('finishes all three builds through the standby, rebuilding nothing', async () => {
    const { both, leader } = await startFarm();
    const tags = submitBuilds(both, 'failover');
    const ids = await midBuild(both);
    await leader.process.stop('SIGKILL');
    await expectAllSucceeded(
      'leader coordinator SIGKILLed mid-build; standby on PostgreSQL takes over',
      both,
      ids,
      tags,
    );
  });

  it('carries every build through PostgreSQL stopped for 30 s mid-build, not ready meanwhile', async () => {
    const { both } = await startFarm();
    const tags = submitBuilds(both, 'pg-restart');
    const ids = await midBuild(both);
    await postgres.down();
    const downAt = Date.now();
    // Without its database no coordinator is ready: a load balancer sends nothing to it.
    const answers: number[] = [];
    try {
      while (Date.now() - downAt < 30_000) {
        answers.push(...(await Promise.all(coordinators.map(readyz))));
        await new Promise((r) => setTimeout(r, 1000));
      }
    } finally {
      await postgres.up();
    }
    // The first answers may come before the coordinators noticed; after that, none is ready.
    expect(answers.slice(-2 * coordinators.length)).toEqual(
      Array(2 * coordinators.length).fill(503),
    );
    await expectAllSucceeded('PostgreSQL stopped for 30 s mid-build', both, ids, tags);
  });
});
