import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { braid, startTestCoordinator, type TestCoordinator } from '../support/braid-cli.js';
import { requireCommand, requireEngine } from '../support/components.js';
import { startTestAgent, waitForAgents, type TestAgent } from '../support/farm.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { recordFault, tagState } from '../support/fault-ledger.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

const DOCKERFILE = `ARG BASE
FROM \${BASE}
ARG MARK
RUN echo "\${MARK}" > /mark
`;

describe('registry faults during push and stitch', () => {
  let registry: TestRegistry;
  let dir: string;
  let base: string;
  let skopeo: string;
  let coordinator: TestCoordinator | undefined;
  let agent: TestAgent | undefined;
  let proxy: FaultProxy | undefined;

  beforeAll(async () => {
    await requireEngine();
    skopeo = await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    base = `${registry.host}/base/busybox:latest`;
    dir = await mkdtemp(join(tmpdir(), 'braid-regfaults-'));
    await writeFile(join(dir, 'Dockerfile'), DOCKERFILE);
  });
  afterEach(async () => {
    await agent?.stop('SIGKILL');
    await coordinator?.stop('SIGKILL');
    await proxy?.stop();
    agent = undefined;
    coordinator = undefined;
    proxy = undefined;
  });
  afterAll(async () => {
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function farm(coordinatorArgs: string[] = []): Promise<string> {
    coordinator = await startTestCoordinator('127.0.0.1:0', coordinatorArgs);
    agent = await startTestAgent(coordinator.address, 'f1');
    await waitForAgents(coordinator.address, ['f1']);
    return coordinator.address;
  }

  it('retries 503s, 429s and dropped connections in the agent push and the stitch, and succeeds', async () => {
    proxy = await startFaultProxy(registry.host, [
      { method: 'HEAD', path: /\/blobs\//, fault: { status: 503 }, times: 2 },
      { method: 'POST', path: /\/blobs\/uploads\/$/, fault: 'drop', times: 1 },
      {
        method: 'PUT',
        path: /\/manifests\/sha256:/,
        fault: { status: 429, retryAfterS: 1 },
        times: 1,
      },
      { method: 'PUT', path: /\/manifests\/v1$/, fault: { status: 502 }, times: 2 },
    ]);
    const address = await farm(['--registry-retries', '6']);
    const tag = `${proxy.host}/team/flaky:v1`;
    const result = await braid(
      [
        'build',
        dir,
        '-t',
        tag,
        '--platform',
        'linux/amd64',
        '--build-arg',
        `BASE=${base}`,
        '--build-arg',
        'MARK=flaky',
        '--no-cache',
        '--progress',
        'plain',
        '--coordinator',
        address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(result.code, result.stderr.slice(-3000)).toBe(0);
    expect(proxy.injected).toEqual([2, 1, 1, 2]);
    const state = await tagState(skopeo, `${registry.host}/team/flaky:v1`, ['linux/amd64']);
    await recordFault({
      fault: 'registry 503/429/drops in push and stitch',
      attempted: 1,
      succeeded: result.code === 0 && state === 'complete' ? 1 : 0,
      failedCleanly: 0,
      incompleteTagMoves: state === 'incomplete' ? 1 : 0,
      rebuiltAfterRestart: 0,
    });
    expect(state).toBe('complete');
  });

  it('fails a build whose tags cannot be pushed with the registry message, and moves no tag', async () => {
    proxy = await startFaultProxy(registry.host, [
      { method: 'PUT', path: /\/manifests\/v2$/, fault: { status: 503 }, times: 1000 },
    ]);
    const address = await farm(['--registry-retries', '2']);
    const tag = `${proxy.host}/team/down:v2`;
    const result = await braid(
      [
        'build',
        dir,
        '-t',
        tag,
        '--platform',
        'linux/amd64',
        '--build-arg',
        `BASE=${base}`,
        '--build-arg',
        'MARK=down',
        '--progress',
        'plain',
        '--coordinator',
        address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^braid: .*PUT manifest .*team\/down:v2: HTTP 503 UNAVAILABLE: injected fault 503/m,
    );
    const state = await tagState(skopeo, `${registry.host}/team/down:v2`, ['linux/amd64']);
    await recordFault({
      fault: 'registry refusing the tag',
      attempted: 1,
      succeeded: 0,
      failedCleanly: result.code === 1 && state === 'absent' ? 1 : 0,
      incompleteTagMoves: state === 'incomplete' ? 1 : 0,
      rebuiltAfterRestart: 0,
    });
    expect(state).toBe('absent');
  });
});
