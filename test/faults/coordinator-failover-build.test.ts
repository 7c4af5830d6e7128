/**
 * The leader of two coordinators on one PostgreSQL store killed (SIGKILL)
 * with three builds in flight: the standby takes over, the agents (given
 * both addresses) reconnect to it and report the jobs they hold, and every
 * build succeeds through it. No finished job is built again, every tag
 * points at a complete index, and each `braid build` watching its build
 * (also given both addresses) sees every event once, in order.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

describe('the leading coordinator killed with builds in flight, a standby on the same PostgreSQL', () => {
  let postgres: PostgresCluster;
  let registry: TestRegistry;
  let dir: string;
  let skopeo: string;
  const coordinators: { address: string; process: Started }[] = [];
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

  it('finishes all three builds through the standby, rebuilding nothing', async () => {
    const url = await postgres.createDatabase();
    for (const name of ['a', 'b']) {
      const address = `127.0.0.1:${await freePort()}`;
      const proc = startProcess(
        process.execPath,
        [
          BRAID_BIN,
          'coordinator',
          '--listen',
          address,
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
      coordinators.push({ address, process: proc });
      await proc.waitForStdout(/^listening /m, 30_000);
    }
    const both = coordinators.map((c) => c.address).join(',');
    agents.push(await startTestAgent(both, 'f1'), await startTestAgent(both, 'f2'));
    await waitForAgents(both, ['f1', 'f2']);
    const leaderOf = async () => {
      for (const c of coordinators) {
        const listed = await braid(['agents', '--output', 'json', '--coordinator', c.address]);
        if (listed.code === 0 && listed.stdout.includes('"f1"')) return c;
      }
      return undefined;
    };
    const leader = await leaderOf();
    expect(leader, 'a coordinator with both agents joined').toBeDefined();

    const tags = Array.from({ length: BUILDS }, (_, i) => `${registry.host}/team/failover:${i}`);
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
    // Killed once some platform has finished and some is still building.
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
    await leader?.process.stop('SIGKILL');

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
      fault: 'leader coordinator SIGKILLed mid-build; standby on PostgreSQL takes over',
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
    // Each watcher resumed its stream at the new leader: every sequence once, in order.
    for (const build of builds) {
      const sequences = build
        .stderr()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => Number((JSON.parse(l) as { sequence: string }).sequence));
      expect(sequences).toEqual(Array.from({ length: sequences.length }, (_, i) => i + 1));
    }
  });
});
