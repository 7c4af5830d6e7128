import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { BRAID_BIN, braid, cleanEnv, startTestCoordinator } from '../support/braid-cli.js';
import { requireCommand, requireEngine } from '../support/components.js';
import { recordFault, tagState } from '../support/fault-ledger.js';
import { startTestAgent, waitForAgents } from '../support/farm.js';
import { startProcess } from '../support/process.js';
import { writeHtpasswd } from '../support/registry-auth.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { filesUnder } from '../support/files.js';

const PASSWORD = 'pw-Zq81-never-print-me';

const DOCKERFILE = `ARG BASE
FROM \${BASE}
ARG SLEEP=0
RUN sleep \${SLEEP} && echo ok > /ok
`;

describe('secrets and shutdown', () => {
  let dir: string;
  let open: TestRegistry;
  let base: string;
  let skopeo: string;

  beforeAll(async () => {
    await requireEngine();
    skopeo = await requireCommand('skopeo', 'skopeo');
    dir = await mkdtemp(join(tmpdir(), 'braid-secrets-'));
    open = await startRegistry();
    await pushBaseImage(open.host, 'base/busybox', 'latest');
    base = `${open.host}/base/busybox:latest`;
    await mkdir(join(dir, 'ctx'));
    await writeFile(join(dir, 'ctx', 'Dockerfile'), DOCKERFILE);
  });
  afterAll(async () => {
    await open?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('never writes the registry password to logs, events, output or the store', async () => {
    const locked = await startRegistry({
      auth: { kind: 'htpasswd', file: await writeHtpasswd(dir, 'ci', PASSWORD) },
    });
    const dockerConfig = join(dir, 'docker');
    await mkdir(dockerConfig);
    await writeFile(
      join(dockerConfig, 'config.json'),
      JSON.stringify({
        auths: { [locked.host]: { auth: Buffer.from(`ci:${PASSWORD}`).toString('base64') } },
      }),
    );
    const env = { DOCKER_CONFIG: dockerConfig };
    const coordinator = await startTestCoordinator('127.0.0.1:0', ['--log-level', 'debug'], env);
    const agent = await startTestAgent(coordinator.address, 's1', ['--log-level', 'debug'], env);
    try {
      await waitForAgents(coordinator.address, ['s1']);
      const ok = await braid(
        [
          'build',
          join(dir, 'ctx'),
          '-t',
          `${locked.host}/team/private:1`,
          '--platform',
          'linux/amd64',
          '--build-arg',
          `BASE=${base}`,
          '--progress',
          'json',
          '--coordinator',
          coordinator.address,
        ],
        { timeoutMs: 300_000 },
      );
      const state = await tagState(
        skopeo,
        `${locked.host}/team/private:1`,
        ['linux/amd64'],
        dockerConfig,
      );
      await recordFault({
        fault: 'password-protected registry (secrets)',
        attempted: 1,
        succeeded: ok.code === 0 && state === 'complete' ? 1 : 0,
        failedCleanly: 0,
        incompleteTagMoves: state === 'incomplete' ? 1 : 0,
        rebuiltAfterRestart: 0,
      });
      expect(ok.code, ok.stderr.slice(-2000)).toBe(0);
      expect(state).toBe('complete');
      const builds = await braid([
        'builds',
        '--output',
        'json',
        '--coordinator',
        coordinator.address,
      ]);
      const buildId = (JSON.parse(builds.stdout.split('\n')[0] ?? '{}') as { id: string }).id;
      expect(buildId).toMatch(/^b/);
      const logs = await braid([
        'logs',
        buildId,
        '--progress',
        'json',
        '--coordinator',
        coordinator.address,
      ]);
      expect(logs.code, logs.stderr).toBe(0);
      const events = await braid([
        'events',
        '--output',
        'json',
        '--coordinator',
        coordinator.address,
      ]);
      const outputs = [
        ok.stdout,
        ok.stderr,
        logs.stdout,
        logs.stderr,
        builds.stdout,
        events.stdout,
        coordinator.process.stdout(),
        coordinator.process.stderr(),
        agent.process.stdout(),
        agent.process.stderr(),
      ];
      expect(outputs.join('\n').length).toBeGreaterThan(1000);
      for (const text of outputs) expect(text).not.toContain(PASSWORD);
      const encoded = Buffer.from(`ci:${PASSWORD}`).toString('base64');
      for (const text of outputs) expect(text).not.toContain(encoded);
      for (const file of await filesUnder(coordinator.dataDir)) {
        const bytes = await readFile(file);
        expect(bytes.includes(PASSWORD), file).toBe(false);
        expect(bytes.includes(encoded), file).toBe(false);
      }
    } finally {
      await agent.stop();
      await coordinator.stop();
      await locked.stop();
    }
  });

  it('drains an agent on SIGTERM: the running job finishes, then the agent exits 0', async () => {
    const coordinator = await startTestCoordinator();
    const agent = await startTestAgent(coordinator.address, 'd1');
    try {
      await waitForAgents(coordinator.address, ['d1']);
      const build = startProcess(
        process.execPath,
        [
          BRAID_BIN,
          'build',
          join(dir, 'ctx'),
          '-t',
          `${open.host}/team/drain:1`,
          '--platform',
          'linux/amd64',
          '--build-arg',
          `BASE=${base}`,
          '--build-arg',
          'SLEEP=3',
          '--no-cache',
          '--progress',
          'plain',
          '--coordinator',
          coordinator.address,
        ],
        { env: cleanEnv() },
      );
      const deadline = Date.now() + 60_000;
      while (!/RUN sleep/.test(build.stderr()) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      process.kill(agent.process.pid, 'SIGTERM');
      const agentExit = await agent.process.exited;
      const buildExit = await build.exited;
      const state = await tagState(skopeo, `${open.host}/team/drain:1`, ['linux/amd64']);
      await recordFault({
        fault: 'SIGTERM to an agent mid-build (drain)',
        attempted: 1,
        succeeded: buildExit.code === 0 && state === 'complete' ? 1 : 0,
        failedCleanly: 0,
        incompleteTagMoves: state === 'incomplete' ? 1 : 0,
        rebuiltAfterRestart: 0,
      });
      expect(buildExit.code, build.stderr().slice(-2000)).toBe(0);
      expect(state).toBe('complete');
      expect(agentExit.code).toBe(0);
      expect(agent.process.stderr()).toMatch(/draining/);
    } finally {
      await agent.stop();
      await coordinator.stop();
    }
  });
});
