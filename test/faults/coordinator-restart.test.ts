import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { BRAID_BIN, braid, cleanEnv } from '../support/braid-cli.js';
import { requireCommand, requireEngine, requireQemu } from '../support/components.js';
import {
  buildStatus,
  startTestAgent,
  waitForAgents,
  type BuildStatusJson,
  type TestAgent,
} from '../support/farm.js';
import { startProcess, type Started } from '../support/process.js';
import { recordFault, tagState } from '../support/fault-ledger.js';
import { freePort, startRegistry, type TestRegistry } from '../support/registry.js';

const DOCKERFILE = `ARG BASE
FROM \${BASE}
ARG TARGETARCH
RUN [ "\${TARGETARCH}" = "amd64" ] || sleep 8
RUN echo "\${TARGETARCH}" > /arch
`;

describe('the coordinator killed and restarted mid-build', () => {
  let registry: TestRegistry;
  let dir: string;
  let address: string;
  let skopeo: string;
  const coordinators: Started[] = [];
  const agents: TestAgent[] = [];

  function startCoordinator(): Started {
    const proc = startProcess(
      process.execPath,
      [
        BRAID_BIN,
        'coordinator',
        '--listen',
        address,
        '--data-dir',
        join(dir, 'data'),
        '--heartbeat-timeout-ms',
        '15000',
        '--log-format',
        'json',
      ],
      { env: cleanEnv() },
    );
    coordinators.push(proc);
    return proc;
  }

  beforeAll(async () => {
    await requireEngine();
    await requireQemu('qemu-aarch64');
    skopeo = await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    dir = await mkdtemp(join(tmpdir(), 'braid-restart-'));
    await writeFile(join(dir, 'Dockerfile'), DOCKERFILE);
    address = `127.0.0.1:${await freePort()}`;
  });
  afterAll(async () => {
    for (const agent of agents) await agent.stop('SIGKILL');
    for (const c of coordinators) await c.stop('SIGKILL');
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const status = (id: string) => buildStatus(address, id);

  it('recovers the build from its store: finished work is not rebuilt, the running job is reclaimed, the watcher loses nothing', async () => {
    await startCoordinator().waitForStdout(/^listening /m, 15_000);
    agents.push(await startTestAgent(address, 'r1'), await startTestAgent(address, 'r2'));
    await waitForAgents(address, ['r1', 'r2']);
    const tag = `${registry.host}/team/survivor:1`;
    const build = startProcess(
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
        '--no-cache',
        '--progress',
        'json',
        '--coordinator',
        address,
      ],
      { env: cleanEnv() },
    );
    const deadline = Date.now() + 120_000;
    let id: string | undefined;
    let before: BuildStatusJson | undefined;
    while (Date.now() < deadline) {
      id ??= (JSON.parse(build.stderr().split('\n')[0] || '{}') as { buildId?: string }).buildId;
      const builds = await braid(['builds', '--coordinator', address, '--output', 'json']);
      id ??= builds.stdout
        ? (JSON.parse(builds.stdout.split('\n')[0] ?? '{}') as { id: string }).id
        : undefined;
      before = id ? await status(id) : undefined;
      const amd64 = before?.jobs.find((j) => j.platform === 'linux/amd64');
      const arm64 = before?.jobs.find((j) => j.platform === 'linux/arm64');
      if (amd64?.state === 'succeeded' && arm64?.state === 'running') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(before?.jobs.map((j) => j.state).sort()).toEqual(['running', 'succeeded']);
    // kill -9 mid-build, then start again on the same data dir and address.
    await coordinators[0]?.stop('SIGKILL');
    await new Promise((r) => setTimeout(r, 1000));
    await startCoordinator().waitForStdout(/^listening /m, 15_000);
    const exit = await build.exited;
    expect(exit.code, build.stderr().slice(-3000)).toBe(0);
    const after = await status(id as string);
    const succeeded = agents.flatMap((a) =>
      a.process
        .stderr()
        .split('\n')
        .filter((l) => l.includes('"job succeeded"')),
    );
    const state = await tagState(skopeo, tag, ['linux/amd64', 'linux/arm64']);
    await recordFault({
      fault: 'coordinator SIGKILLed and restarted',
      attempted: 1,
      succeeded: after?.state === 'succeeded' && state === 'complete' ? 1 : 0,
      failedCleanly: 0,
      incompleteTagMoves: state === 'incomplete' ? 1 : 0,
      rebuiltAfterRestart: succeeded.length - 2,
    });
    expect(after?.state).toBe('succeeded');
    // Nothing ran twice: both jobs finished on their first attempt.
    expect(after?.jobs.map((j) => j.attempt)).toEqual([1, 1]);
    expect(succeeded).toHaveLength(2);
    // The watcher resumed its stream: every sequence arrived once, in order.
    const sequences = build
      .stderr()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => Number((JSON.parse(l) as { sequence: string }).sequence));
    expect(sequences).toEqual(Array.from({ length: sequences.length }, (_, i) => i + 1));
    expect(state).toBe('complete');
  });
});
