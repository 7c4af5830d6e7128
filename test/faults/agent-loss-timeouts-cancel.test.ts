import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, afterAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { braid, startTestCoordinator, type TestCoordinator } from '../support/braid-cli.js';
import { requireCommand, requireEngine } from '../support/components.js';
import {
  buildStatus,
  startTestAgent,
  waitFor,
  waitForAgents,
  type BuildStatusJson,
  type TestAgent,
} from '../support/farm.js';
import { run, startProcess } from '../support/process.js';
import { recordFault, tagState } from '../support/fault-ledger.js';
import { BRAID_BIN, cleanEnv } from '../support/braid-cli.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

const DOCKERFILE = `ARG BASE
FROM \${BASE}
ARG SLEEP=0
ARG MARK=none
RUN echo "start \${MARK}" && sleep \${SLEEP} && echo done > /done
CMD ["cat", "/done"]
`;

describe('faults on real processes', () => {
  let registry: TestRegistry;
  let dir: string;
  let base: string;
  let skopeo: string;
  let docker: string;
  let coordinator: TestCoordinator | undefined;
  let agents: TestAgent[] = [];

  beforeAll(async () => {
    await requireEngine();
    skopeo = await requireCommand('skopeo', 'skopeo');
    docker = await requireCommand('docker', 'docker.io');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    base = `${registry.host}/base/busybox:latest`;
    dir = await mkdtemp(join(tmpdir(), 'braid-faults-'));
    await writeFile(join(dir, 'Dockerfile'), DOCKERFILE);
  });
  afterEach(async () => {
    for (const agent of agents) await agent.stop('SIGKILL');
    agents = [];
    await coordinator?.stop('SIGKILL');
    coordinator = undefined;
  });
  afterAll(async () => {
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function status(id: string): Promise<BuildStatusJson> {
    const found = await buildStatus(coordinator?.address ?? '', id);
    expect(found, `braid status ${id}`).toBeDefined();
    return found as BuildStatusJson;
  }

  /** Whether the RUN step's `sleep SECONDS` runs on this machine (the engine's containers are visible to ps). */
  async function sleeping(seconds: number): Promise<boolean> {
    const ps = await run('ps', ['-eo', 'args']);
    return ps.stdout.split('\n').some((line) => line.trim() === `sleep ${seconds}`);
  }

  function submit(tag: string, args: string[]) {
    return startProcess(
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
        `BASE=${base}`,
        '--progress',
        'plain',
        '--coordinator',
        coordinator?.address ?? '',
        ...args,
      ],
      { env: cleanEnv() },
    );
  }

  it('re-queues the job of an agent killed mid-build on another agent, and the build succeeds', async () => {
    coordinator = await startTestCoordinator();
    agents = [
      await startTestAgent(coordinator.address, 'k1', ['--capacity', '1']),
      await startTestAgent(coordinator.address, 'k2', ['--capacity', '1']),
    ];
    await waitForAgents(coordinator.address, ['k1', 'k2']);
    const tag = `${registry.host}/team/requeue:1`;
    const build = submit(tag, ['--build-arg', 'SLEEP=4', '--build-arg', 'MARK=requeue']);
    const id = await waitFor('build id', async () => /build (b\S+):/.exec(build.stderr())?.[1]);
    const first = await waitFor('the job to run', async () => {
      const s = await status(id);
      const job = s.jobs[0];
      return job?.state === 'running' && job.agent ? job.agent : undefined;
    });
    const victim = agents.find((a) => a.name === first);
    await victim?.process.stop('SIGKILL');
    const exit = await build.exited;
    expect(exit.code, build.stderr().slice(-2000)).toBe(0);
    expect(build.stderr()).toMatch(
      new RegExp(`agent ${first} was lost .*re-queued \\(attempt 2 of 2\\)`),
    );
    const final = await status(id);
    expect(final.state).toBe('succeeded');
    expect(final.jobs[0]?.agent).not.toBe(first);
    expect(final.jobs[0]?.attempt).toBe(2);
    const state = await tagState(skopeo, tag, ['linux/amd64']);
    await recordFault({
      fault: 'agent SIGKILLed mid-build',
      attempted: 1,
      succeeded: final.state === 'succeeded' && state === 'complete' ? 1 : 0,
      failedCleanly: 0,
      incompleteTagMoves: state === 'incomplete' ? 1 : 0,
      rebuiltAfterRestart: 0,
    });
    expect(state).toBe('complete');
  });

  it('ends a stuck build TIMED_OUT naming the platform, stops the engine build, and moves no tag', async () => {
    coordinator = await startTestCoordinator('127.0.0.1:0', ['--job-timeout-ms', '3000']);
    agents = [await startTestAgent(coordinator.address, 't1')];
    await waitForAgents(coordinator.address, ['t1']);
    const tag = `${registry.host}/team/stuck:1`;
    const build = submit(tag, ['--build-arg', 'SLEEP=117', '--build-arg', 'MARK=stuck']);
    await waitFor('the RUN step to start', async () => ((await sleeping(117)) ? true : undefined));
    const exit = await build.exited;
    expect(exit.code).toBe(1);
    expect(build.stderr()).toMatch(/^braid: .*timed out.*linux\/amd64/m);
    const state = await tagState(skopeo, tag, ['linux/amd64']);
    await recordFault({
      fault: 'stuck build (job timeout)',
      attempted: 1,
      succeeded: 0,
      failedCleanly: exit.code === 1 && state === 'absent' ? 1 : 0,
      incompleteTagMoves: state === 'incomplete' ? 1 : 0,
      rebuiltAfterRestart: 0,
    });
    expect(state).toBe('absent');
    await waitFor(
      'the engine build to stop',
      async () => (!(await sleeping(117)) ? true : undefined),
      30_000,
    );
  });

  it('cancels a running build with braid cancel: the engine build stops and no tag moves', async () => {
    coordinator = await startTestCoordinator();
    agents = [await startTestAgent(coordinator.address, 'c1')];
    await waitForAgents(coordinator.address, ['c1']);
    const tag = `${registry.host}/team/cancelled:1`;
    const build = submit(tag, ['--build-arg', 'SLEEP=119', '--build-arg', 'MARK=cancelme']);
    const id = await waitFor('build id', async () => /build (b\S+):/.exec(build.stderr())?.[1]);
    await waitFor('the RUN step to start', async () => ((await sleeping(119)) ? true : undefined));
    const cancel = await braid([
      'cancel',
      id,
      '--reason',
      'test',
      '--coordinator',
      coordinator.address,
    ]);
    expect(cancel.code, cancel.stderr).toBe(0);
    const exit = await build.exited;
    expect(exit.code).toBe(1);
    expect((await status(id)).state).toBe('cancelled');
    const state = await tagState(skopeo, tag, ['linux/amd64']);
    await recordFault({
      fault: 'braid cancel mid-build',
      attempted: 1,
      succeeded: 0,
      failedCleanly: exit.code === 1 && state === 'absent' ? 1 : 0,
      incompleteTagMoves: state === 'incomplete' ? 1 : 0,
      rebuiltAfterRestart: 0,
    });
    expect(state).toBe('absent');
    await waitFor(
      'the engine build to stop',
      async () => (!(await sleeping(119)) ? true : undefined),
      30_000,
    );
    const images = await run(docker, [
      'images',
      '--quiet',
      '--filter',
      `label=io.braid.build-id=${id}`,
    ]);
    expect(images.stdout.trim()).toBe('');
  });

  it('on Ctrl-C or SIGTERM without a terminal cancels the build; with --detach-on-interrupt leaves it running', async () => {
    coordinator = await startTestCoordinator();
    agents = [await startTestAgent(coordinator.address, 'i1', ['--capacity', '2'])];
    await waitForAgents(coordinator.address, ['i1']);
    // SIGTERM is what a CI runner or a supervisor sends when it stops the step.
    for (const [signal, seconds] of [
      ['SIGINT', 113],
      ['SIGTERM', 117],
    ] as const) {
      const cancelled = submit(`${registry.host}/team/interrupted-${seconds}:1`, [
        '--build-arg',
        `SLEEP=${seconds}`,
      ]);
      const cancelledId = await waitFor(
        'build id',
        async () => /build (b\S+):/.exec(cancelled.stderr())?.[1],
      );
      await waitFor('the RUN step to start', async () =>
        (await sleeping(seconds)) ? true : undefined,
      );
      process.kill(cancelled.pid, signal);
      expect((await cancelled.exited).code, signal).toBe(1);
      expect(cancelled.stderr()).toContain(`cancelling build ${cancelledId}`);
      expect((await status(cancelledId)).state).toBe('cancelled');
    }

    const detached = submit(`${registry.host}/team/detached:1`, [
      '--build-arg',
      'SLEEP=111',
      '--detach-on-interrupt',
    ]);
    const detachedId = await waitFor(
      'build id',
      async () => /build (b\S+):/.exec(detached.stderr())?.[1],
    );
    await waitFor('the RUN step to start', async () => ((await sleeping(111)) ? true : undefined));
    process.kill(detached.pid, 'SIGINT');
    expect((await detached.exited).code).toBe(130);
    expect(detached.stderr()).toContain(`detached; build ${detachedId} goes on`);
    expect((await status(detachedId)).state).toBe('running');
    expect(await sleeping(111)).toBe(true);
    const cancel = await braid(['cancel', detachedId, '--coordinator', coordinator.address]);
    expect(cancel.code, cancel.stderr).toBe(0);
    await waitFor(
      'the engine build to stop',
      async () => (!(await sleeping(111)) ? true : undefined),
      30_000,
    );
    const states = await Promise.all([
      tagState(skopeo, `${registry.host}/team/interrupted-113:1`, ['linux/amd64']),
      tagState(skopeo, `${registry.host}/team/interrupted-117:1`, ['linux/amd64']),
      tagState(skopeo, `${registry.host}/team/detached:1`, ['linux/amd64']),
    ]);
    await recordFault({
      fault: 'Ctrl-C / SIGTERM on braid build (cancel, detach)',
      attempted: 3,
      succeeded: 0,
      failedCleanly: states.filter((st) => st === 'absent').length,
      incompleteTagMoves: states.filter((st) => st === 'incomplete').length,
      rebuiltAfterRestart: 0,
    });
    expect(states).toEqual(['absent', 'absent', 'absent']);
  });
});
