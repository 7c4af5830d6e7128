import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import {
  BRAID_BIN,
  cleanEnv,
  startTestCoordinator,
  type TestCoordinator,
} from '../support/braid-cli.js';
import { requireCommand, requireEngine } from '../support/components.js';
import {
  buildStatus,
  startTestAgent,
  waitForAgents,
  type BuildStatusJson,
  type TestAgent,
} from '../support/farm.js';
import { recordFault, tagState } from '../support/fault-ledger.js';
import { startProcess } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

const DOCKERFILE = `ARG BASE
FROM \${BASE}
RUN sleep 6 && date > /built
`;

describe('an agent that loses the network mid-build (process alive, connection cut)', () => {
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let proxy: TcpProxy;
  let dir: string;
  let skopeo: string;
  const agents: TestAgent[] = [];

  beforeAll(async () => {
    await requireEngine();
    skopeo = await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    dir = await mkdtemp(join(tmpdir(), 'braid-netcut-'));
    await writeFile(join(dir, 'Dockerfile'), DOCKERFILE);
    coordinator = await startTestCoordinator();
    const [host, port] = coordinator.address.split(':');
    proxy = await startTcpProxy({ host: host ?? '127.0.0.1', port: Number(port) });
  });
  afterAll(async () => {
    for (const agent of agents) await agent.stop('SIGKILL');
    await proxy?.stop();
    await coordinator?.stop();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function status(id: string): Promise<BuildStatusJson> {
    const found = await buildStatus(coordinator.address, id);
    expect(found, `braid status ${id}`).toBeDefined();
    return found as BuildStatusJson;
  }

  it('re-queues its job elsewhere, and its late result is recognised and ignored: never both', async () => {
    // Only the cut-off agent is connected when the build starts, so the job is its.
    agents.push(await startTestAgent(proxy.host, 'far'));
    await waitForAgents(coordinator.address, ['far']);
    const tag = `${registry.host}/team/netcut:1`;
    const build = startProcess(
      process.execPath,
      [
        BRAID_BIN,
        'build',
        dir,
        '-t',
        tag,
        '--platform',
        'linux/amd64',
        '--build-arg',
        `BASE=${registry.host}/base/busybox:latest`,
        '--no-cache',
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { env: cleanEnv() },
    );
    const deadline = Date.now() + 60_000;
    let id: string | undefined;
    while (Date.now() < deadline) {
      id ??= /build (b\S+):/.exec(build.stderr())?.[1];
      if (id && (await status(id)).jobs[0]?.state === 'running') break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(id).toBeDefined();
    proxy.cut();
    agents.push(await startTestAgent(coordinator.address, 'near'));
    const exit = await build.exited;
    expect(exit.code, build.stderr().slice(-2000)).toBe(0);
    expect(build.stderr()).toMatch(/agent far was lost .*re-queued \(attempt 2 of 2\)/);
    // The network comes back: the far agent rejoins and delivers its late result.
    proxy.resume();
    await waitForAgents(coordinator.address, ['far', 'near'], 90_000);
    const farDone = agents[0] as TestAgent;
    const lateDeadline = Date.now() + 30_000;
    while (!farDone.process.stderr().includes('"job succeeded"') && Date.now() < lateDeadline) {
      await new Promise((r) => setTimeout(r, 200));
    }
    // The far agent did finish its build: a real late result reached the coordinator.
    expect(farDone.process.stderr()).toContain('"job succeeded"');
    await new Promise((r) => setTimeout(r, 1000));
    const final = await status(id as string);
    const job = final.jobs[0];
    expect(final.state).toBe('succeeded');
    expect(job?.agent).toBe('near');
    expect(job?.attempt).toBe(2);
    const nearDigest = /"digest":"(sha256:[0-9a-f]{64})"[^\n]*"job succeeded"/.exec(
      (agents[1] as TestAgent).process.stderr(),
    )?.[1];
    expect(job?.image?.digest).toBe(nearDigest);
    const state = await tagState(skopeo, tag, ['linux/amd64']);
    await recordFault({
      fault: 'agent network cut mid-build, back later',
      attempted: 1,
      succeeded: final.state === 'succeeded' && state === 'complete' ? 1 : 0,
      failedCleanly: 0,
      incompleteTagMoves: state === 'incomplete' ? 1 : 0,
      rebuiltAfterRestart: 0,
    });
    expect(state).toBe('complete');
  });
});
