import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { braid } from '../support/braid-cli.js';
import { requireEngine, requireQemu } from '../support/components.js';
import {
  buildStatus,
  startTestAgent,
  startTestCoordinator,
  waitFor,
  waitForAgents,
  type TestAgent,
  type TestCoordinator,
} from '../support/farm.js';
import { probeUrlFromLog, scrape, type Exposition } from '../support/prom-text.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

const DOCKERFILE = `ARG BASE
FROM \${BASE}
COPY message.txt /message.txt
RUN cat /message.txt > /copied.txt
`;

const AMD64 = { platform: 'linux/amd64', mode: 'native' };
const ARM64 = { platform: 'linux/arm64', mode: 'emulated' };

interface LogLine {
  msg?: string;
  buildId?: string;
  requestId?: string;
}

function logLines(stderr: string): LogLine[] {
  return stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as LogLine);
}

/** What `braid build` says about the context and the build on stderr. */
function cliReport(stderr: string): {
  contextBytes: number;
  uploaded: number;
  buildId: string;
  requestId: string;
} {
  const context =
    /^context sha256:[0-9a-f]{12}: \d+ files, (\d+) bytes, (\d+) bytes uploaded$/m.exec(stderr);
  const build = /^build (b\S+): .* \(request ([A-Za-z0-9._:-]+)\)$/m.exec(stderr);
  if (!context || !build)
    throw new Error(`braid build did not report its context and build:\n${stderr}`);
  return {
    contextBytes: Number(context[1]),
    uploaded: Number(context[2]),
    buildId: build[1] as string,
    requestId: build[2] as string,
  };
}

describe('coordinator metrics after real builds', () => {
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let agents: TestAgent[] = [];
  let probe: string;
  let dir: string;
  let base: string;
  let first: ReturnType<typeof cliReport>;

  async function build(
    tag: string,
    platforms: string,
    extraTags: string[] = [],
    env: Record<string, string> = {},
  ) {
    return braid(
      [
        'build',
        dir,
        '-t',
        tag,
        ...extraTags.flatMap((t) => ['-t', t]),
        '--platform',
        platforms,
        '--build-arg',
        `BASE=${base}`,
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 600_000, env },
    );
  }

  beforeAll(async () => {
    await requireEngine();
    await requireQemu('qemu-aarch64');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    base = `${registry.host}/base/busybox:latest`;
    // Two attempts per registry request: the unreachable registry below fails fast.
    // No push check at submit: the stitch's own registry errors are what is counted.
    coordinator = await startTestCoordinator('127.0.0.1:0', [
      '--metrics-listen',
      '127.0.0.1:0',
      '--registry-retries',
      '2',
      '--no-push-check',
    ]);
    probe = await waitFor(
      'the probe address in the log',
      async () => probeUrlFromLog(coordinator.process.stderr()),
      15_000,
    );
    agents = [
      await startTestAgent(coordinator.address, 'm1'),
      await startTestAgent(coordinator.address, 'm2'),
    ];
    await waitForAgents(coordinator.address, ['m1', 'm2']);
    dir = await mkdtemp(join(tmpdir(), 'braid-metrics-e2e-'));
    await writeFile(join(dir, 'Dockerfile'), DOCKERFILE);
    await writeFile(join(dir, 'message.txt'), `metrics ${Date.now()}\n`);
  });
  afterAll(async () => {
    for (const agent of agents) await agent.stop();
    await coordinator?.stop();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('shows the build, its native and emulated job durations, the agents, the context and an empty queue', async () => {
    const result = await build(`${registry.host}/team/metrics:1`, 'linux/amd64,linux/arm64');
    expect(result.code, result.stderr.slice(-3000)).toBe(0);
    first = cliReport(result.stderr);
    expect(first.uploaded).toBe(first.contextBytes);

    const metrics = await scrape(probe);
    expect(metrics.value('braid_builds_total', { state: 'succeeded' })).toBe(1);
    expect(metrics.value('braid_builds_total', { state: 'failed' })).toBe(0);
    expect(metrics.value('braid_build_duration_seconds_count', { state: 'succeeded' })).toBe(1);
    for (const labels of [AMD64, ARM64]) {
      const job = { ...labels, state: 'succeeded' };
      expect(metrics.value('braid_job_duration_seconds_count', job)).toBe(1);
      expect(metrics.value('braid_job_duration_seconds_sum', job)).toBeGreaterThan(0);
      expect(metrics.value('braid_job_duration_seconds_bucket', { ...job, le: '+Inf' })).toBe(1);
      expect(metrics.value('braid_job_queue_wait_seconds_count', labels)).toBe(1);
    }
    // Both agents run on this machine's amd64 engine and emulate arm64.
    expect(metrics.value('braid_agents_connected', AMD64)).toBe(agents.length);
    expect(metrics.value('braid_agents_connected', ARM64)).toBe(agents.length);
    expect(metrics.sum('braid_agents_connected', { mode: 'native' })).toBe(agents.length);
    expect(metrics.value('braid_jobs_queued', { platform: 'linux/amd64' })).toBe(0);
    expect(metrics.value('braid_jobs_queued', { platform: 'linux/arm64' })).toBe(0);
    expect(metrics.value('braid_context_received_bytes_total')).toBe(first.contextBytes);
    expect(metrics.value('braid_context_deduplicated_bytes_total')).toBe(0);
    expect(metrics.sum('braid_registry_request_errors_total')).toBe(0);

    for (const path of ['healthz', 'readyz']) {
      const response = await fetch(new URL(path, probe));
      expect({ path, status: response.status }).toEqual({ path, status: 200 });
    }
  });

  it('follows the build with one request id from the CLI through the coordinator to the agents', async () => {
    const status = (await buildStatus(coordinator.address, first.buildId)) as unknown as {
      requestId: string | null;
    };
    expect(status.requestId).toBe(first.requestId);

    const coordinatorLines = logLines(coordinator.process.stderr()).filter(
      (l) => l.buildId === first.buildId,
    );
    expect(coordinatorLines.map((l) => l.msg)).toContain('build submitted');
    expect(coordinatorLines.map((l) => l.msg)).toContain('build state');
    expect(new Set(coordinatorLines.map((l) => l.requestId))).toEqual(new Set([first.requestId]));

    const agentLines = agents.flatMap((a) =>
      logLines(a.process.stderr()).filter((l) => l.buildId === first.buildId),
    );
    const agentMessages = agentLines.map((l) => l.msg);
    expect(agentMessages.filter((m) => m === 'job started')).toHaveLength(2);
    expect(agentMessages.filter((m) => m === 'job succeeded')).toHaveLength(2);
    expect(new Set(agentLines.map((l) => l.requestId))).toEqual(new Set([first.requestId]));
  });

  it('counts an identical context as deduplicated, not uploaded again', async () => {
    // As a CI job would: its own run id as the request id (BRAID_REQUEST_ID).
    const result = await build(`${registry.host}/team/metrics:2`, 'linux/amd64', [], {
      BRAID_REQUEST_ID: 'ci-run-4242.1',
    });
    expect(result.code, result.stderr.slice(-3000)).toBe(0);
    const second = cliReport(result.stderr);
    expect(second.uploaded).toBe(0);
    expect(second.contextBytes).toBe(first.contextBytes);
    expect(second.requestId).toBe('ci-run-4242.1');
    const jobLine = /"requestId":"ci-run-4242\.1"[^\n]*"msg":"job succeeded"/;
    expect(agents.some((a) => jobLine.test(a.process.stderr()))).toBe(true);

    const metrics = await scrape(probe);
    expect(metrics.value('braid_context_received_bytes_total')).toBe(first.contextBytes);
    expect(metrics.value('braid_context_deduplicated_bytes_total')).toBe(first.contextBytes);
    expect(metrics.value('braid_builds_total', { state: 'succeeded' })).toBe(2);
    expect(
      metrics.value('braid_job_duration_seconds_count', { ...AMD64, state: 'succeeded' }),
    ).toBe(2);
    expect(
      metrics.value('braid_job_duration_seconds_count', { ...ARM64, state: 'succeeded' }),
    ).toBe(1);
  });

  it('counts the registry errors of a stitch that cannot reach a target registry', async () => {
    // A loopback port that nothing listens on: connections are refused.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));

    // One child to copy (no provenance attestation beside it): one retried and one failed request.
    const result = await build(
      `${registry.host}/team/metrics:3`,
      'linux/amd64',
      [`127.0.0.1:${port}/team/metrics:3`],
      { BUILDX_NO_DEFAULT_ATTESTATIONS: '1' },
    );
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      new RegExp(`^braid: .*127\\.0\\.0\\.1:${port}/team/metrics`, 'm'),
    );

    const metrics: Exposition = await scrape(probe);
    expect(metrics.value('braid_builds_total', { state: 'failed' })).toBe(1);
    expect(metrics.value('braid_builds_total', { state: 'succeeded' })).toBe(2);
    const network = { status: 'network', code: 'none' };
    expect(
      metrics.value('braid_registry_request_errors_total', { outcome: 'retried', ...network }),
    ).toBe(1);
    expect(
      metrics.value('braid_registry_request_errors_total', { outcome: 'failed', ...network }),
    ).toBe(1);
    expect(metrics.sum('braid_jobs_queued')).toBe(0);
  });
});
