/**
 * An agent's own /metrics (braid agent --metrics-listen), scraped with a
 * real HTTP GET from a real agent process joined to a real coordinator on
 * 127.0.0.1, before and after a build that succeeds and one whose push fails.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { braid } from '../support/braid-cli.js';
import { requireEngine } from '../support/components.js';
import {
  startTestAgent,
  startTestCoordinator,
  waitFor,
  waitForAgents,
  type TestAgent,
  type TestCoordinator,
} from '../support/farm.js';
import { scrape } from '../support/prom-text.js';
import { freePort, startRegistry, type TestRegistry } from '../support/registry.js';

const DOCKERFILE = `ARG BASE
FROM \${BASE}
ARG MARK=0
COPY message.txt /message.txt
`;

/** The probe URL the agent logs once it serves it (`metricsListen` on a JSON log line). */
function agentProbeUrl(stderr: string): string | undefined {
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    const entry = JSON.parse(line) as { metricsListen?: unknown };
    if (typeof entry.metricsListen === 'string') return entry.metricsListen;
  }
  return undefined;
}

describe("an agent's /metrics", () => {
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let agent: TestAgent;
  let dir: string;
  let base: string;
  let probe: string;

  beforeAll(async () => {
    await requireEngine();
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    base = `${registry.host}/base/busybox:latest`;
    dir = await mkdtemp(join(tmpdir(), 'braid-agent-metrics-'));
    await writeFile(join(dir, 'Dockerfile'), DOCKERFILE);
    await writeFile(join(dir, 'message.txt'), 'metrics\n');
    // No push check at submit and one attempt per job: the agent's own push failure is counted once.
    coordinator = await startTestCoordinator('127.0.0.1:0', [
      '--no-push-check',
      '--max-job-attempts',
      '1',
    ]);
    agent = await startTestAgent(
      coordinator.address,
      'metered',
      ['--metrics-listen', '127.0.0.1:0', '--capacity', '3'],
      { BRAID_REGISTRY_RETRIES: '1' },
    );
    probe = await waitFor(
      'the agent probe address in its log',
      async () => {
        const url = agentProbeUrl(agent.process.stderr());
        if (!url && /^braid: /m.test(agent.process.stderr()))
          throw new Error(`the agent did not start: ${agent.process.stderr()}`);
        return url;
      },
      30_000,
    );
    await waitForAgents(coordinator.address, ['metered']);
  });
  afterAll(async () => {
    await agent?.stop();
    await coordinator?.stop();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  function build(tag: string) {
    return braid(
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
        `MARK=${Date.now()}-${Math.random()}`,
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 180_000 },
    );
  }

  it('serves Prometheus text on its own loopback port, and says it is ready once joined', async () => {
    expect(probe).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const response = await fetch(new URL('metrics', probe));
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    expect((await fetch(new URL('healthz', probe))).status).toBe(200);
    const ready = await fetch(new URL('readyz', probe));
    expect([ready.status, await ready.text()]).toEqual([200, 'ok\n']);
  });

  it('reports its capacity, no jobs yet, and an engine that answers', async () => {
    const metrics = await scrape(probe);
    expect(metrics.value('braid_agent_info', { agent: 'metered' })).toBe(1);
    expect(metrics.value('braid_agent_capacity')).toBe(3);
    expect(metrics.value('braid_agent_jobs_running')).toBe(0);
    for (const outcome of ['succeeded', 'failed', 'cancelled'])
      expect(metrics.value('braid_agent_jobs_total', { outcome })).toBe(0);
    expect(metrics.family('braid_agent_push_errors_total').type).toBe('counter');
    expect(metrics.family('braid_agent_job_stage_duration_seconds').type).toBe('histogram');
    expect(metrics.value('braid_agent_engine_up')).toBe(1);
    const checked = metrics.value('braid_agent_engine_last_check_timestamp_seconds');
    expect(Date.now() / 1000 - checked).toBeGreaterThanOrEqual(0);
    expect(Date.now() / 1000 - checked).toBeLessThan(120);
    expect(metrics.value('braid_process_resident_memory_bytes')).toBeGreaterThan(0);
  });

  it('counts a build that succeeded, with the time its build and push took', async () => {
    const result = await build(`${registry.host}/team/metered:1`);
    expect(result.code, result.stderr.slice(-2000)).toBe(0);
    const metrics = await scrape(probe);
    expect(metrics.value('braid_agent_jobs_total', { outcome: 'succeeded' })).toBe(1);
    expect(metrics.value('braid_agent_jobs_total', { outcome: 'failed' })).toBe(0);
    for (const stage of ['fetch', 'build', 'push']) {
      expect(
        metrics.value('braid_agent_job_stage_duration_seconds_count', { stage, mode: 'native' }),
      ).toBe(1);
    }
    const buildSeconds = metrics.value('braid_agent_job_stage_duration_seconds_sum', {
      stage: 'build',
      mode: 'native',
    });
    expect(buildSeconds).toBeGreaterThan(0);
    expect(buildSeconds).toBeLessThan(180);
    expect(metrics.sum('braid_agent_push_errors_total')).toBe(0);
    expect(metrics.value('braid_agent_jobs_running')).toBe(0);
  });

  it('counts a push that failed by its error code', async () => {
    // Nothing listens there: the build succeeds and the push is refused.
    const closed = `127.0.0.1:${await freePort()}`;
    const result = await build(`${closed}/team/metered:2`);
    expect(result.code, result.stderr.slice(-2000)).toBe(1);
    const metrics = await scrape(probe);
    expect(metrics.value('braid_agent_jobs_total', { outcome: 'failed' })).toBe(1);
    expect(metrics.value('braid_agent_push_errors_total', { code: 'unavailable' })).toBe(1);
    expect(metrics.sum('braid_agent_push_errors_total')).toBe(1);
    // The build part completed; the failed push is not a duration.
    expect(
      metrics.value('braid_agent_job_stage_duration_seconds_count', {
        stage: 'build',
        mode: 'native',
      }),
    ).toBe(2);
    expect(
      metrics.value('braid_agent_job_stage_duration_seconds_count', {
        stage: 'push',
        mode: 'native',
      }),
    ).toBe(1);
  });
});
