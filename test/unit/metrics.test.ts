import { describe, expect, it } from 'vitest';
import { BuildState, BuildSpecSchema } from '../../src/gen/braid/v1/build_pb.js';
import { JobState } from '../../src/gen/braid/v1/common_pb.js';
import { create } from '@bufbuild/protobuf';
import { register as globalRegistry } from 'prom-client';
import { probeAnswer, type Readiness } from '../../src/coordinator/http-probe-server.js';
import {
  CoordinatorMetrics,
  meteredRegistry,
  registryErrorLabels,
  retryReasonLabels,
  type MetricsSources,
} from '../../src/coordinator/metrics.js';
import { requestIdFor } from '../../src/rpc/request-id.js';
import type { BuildRecord, JobRecord } from '../../src/coordinator/store.js';
import { RegistryError } from '../../src/oci/errors.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { RegistryClient } from '../../src/oci/registry.js';
import { parsePromText } from '../support/prom-text.js';

const AMD64 = parsePlatform('linux/amd64');
const ARM64 = parsePlatform('linux/arm64');

function job(id: string, patch: Partial<JobRecord> = {}): JobRecord {
  return {
    id,
    buildId: 'b1',
    platform: AMD64,
    state: JobState.QUEUED,
    agent: '',
    emulated: false,
    emulator: '',
    currentStep: '',
    durationMs: 0,
    attempt: 1,
    error: '',
    ...patch,
  };
}

function build(patch: Partial<BuildRecord> = {}): BuildRecord {
  return {
    id: 'b1',
    spec: create(BuildSpecSchema, {}),
    state: BuildState.QUEUED,
    createdAt: new Date(0),
    error: '',
    requestId: 'r1',
    ...patch,
  };
}

function sources(overrides: Partial<MetricsSources> = {}): MetricsSources {
  return { queuedJobs: () => [], agents: () => [], ...overrides };
}

const at = (ms: number) => new Date(ms);

describe('the Prometheus text parser', () => {
  it('reads families, label escapes, histograms and special values', () => {
    const text = [
      '# HELP braid_x_total Things, with a \\\\ backslash',
      '# TYPE braid_x_total counter',
      'braid_x_total{state="succeeded"} 3',
      'braid_x_total{state="odd \\"quoted\\"\\nline",other="a,b"} 1.5e3',
      '# TYPE braid_d_seconds histogram',
      'braid_d_seconds_bucket{le="1"} 0',
      'braid_d_seconds_bucket{le="+Inf"} 2',
      'braid_d_seconds_sum 7.25',
      'braid_d_seconds_count 2',
      'untyped_thing NaN 1700000000000',
      '',
    ].join('\n');
    const parsed = parsePromText(text);
    expect(parsed.family('braid_x_total').type).toBe('counter');
    expect(parsed.family('braid_x_total').help).toBe('Things, with a \\ backslash');
    expect(parsed.value('braid_x_total', { state: 'succeeded' })).toBe(3);
    expect(parsed.value('braid_x_total', { state: 'odd "quoted"\nline' })).toBe(1500);
    expect(parsed.samples('braid_x_total', { other: 'a,b' })).toHaveLength(1);
    expect(parsed.family('braid_d_seconds').samples.map((s) => s.name)).toEqual([
      'braid_d_seconds_bucket',
      'braid_d_seconds_bucket',
      'braid_d_seconds_sum',
      'braid_d_seconds_count',
    ]);
    expect(parsed.value('braid_d_seconds_bucket', { le: '+Inf' })).toBe(2);
    expect(parsed.value('braid_d_seconds_sum')).toBe(7.25);
    expect(parsed.value('untyped_thing')).toBeNaN();
    expect(parsed.sum('braid_x_total')).toBe(1503);
    expect(() => parsed.value('braid_x_total')).toThrow(/found 2/);
  });

  it('refuses a line it cannot read, naming it', () => {
    expect(() => parsePromText('braid_x{state="open} 1')).toThrow(/unterminated.*braid_x/);
    expect(() => parsePromText('braid_x{state="a"} soon')).toThrow(/bad sample value "soon"/);
  });
});

describe('the coordinator metrics', () => {
  it('counts finished builds by state and times them from submit', async () => {
    const metrics = new CoordinatorMetrics(sources());
    metrics.buildMoved(build({ state: BuildState.RUNNING }), BuildState.STITCHING, at(5_000));
    metrics.buildMoved(build({ state: BuildState.STITCHING }), BuildState.SUCCEEDED, at(42_000));
    metrics.buildMoved(build({ state: BuildState.QUEUED }), BuildState.CANCELLED, at(1_000));
    const parsed = parsePromText(await metrics.text());
    expect(parsed.value('braid_builds_total', { state: 'succeeded' })).toBe(1);
    expect(parsed.value('braid_builds_total', { state: 'cancelled' })).toBe(1);
    expect(parsed.value('braid_builds_total', { state: 'failed' })).toBe(0);
    expect(parsed.value('braid_builds_total', { state: 'timed_out' })).toBe(0);
    expect(parsed.value('braid_build_duration_seconds_sum', { state: 'succeeded' })).toBe(42);
    expect(parsed.value('braid_build_duration_seconds_count', { state: 'succeeded' })).toBe(1);
  });

  it('observes queue wait at assignment and run time at the end, split native and emulated', async () => {
    const metrics = new CoordinatorMetrics(sources());
    const native = job('b1-1');
    const emulated = job('b1-2', { platform: ARM64 });
    metrics.jobsQueued([native, emulated], at(1_000));
    const nativeAssigned = { ...native, state: JobState.ASSIGNED, agent: 'a1' };
    metrics.jobMoved(native, nativeAssigned, at(1_500));
    const emulatedAssigned = { ...emulated, state: JobState.ASSIGNED, agent: 'a1', emulated: true };
    metrics.jobMoved(emulated, emulatedAssigned, at(4_000));
    const running = { ...nativeAssigned, state: JobState.RUNNING, startedAt: at(2_000) };
    metrics.jobMoved(nativeAssigned, running, at(2_000));
    // The agent's own measure wins; without one, started to now.
    metrics.jobMoved(
      running,
      { ...running, state: JobState.SUCCEEDED, durationMs: 12_500 },
      at(9_000),
    );
    const emulatedRunning = { ...emulatedAssigned, state: JobState.RUNNING, startedAt: at(4_000) };
    metrics.jobMoved(emulatedAssigned, emulatedRunning, at(4_000));
    metrics.jobMoved(emulatedRunning, { ...emulatedRunning, state: JobState.FAILED }, at(64_000));
    const parsed = parsePromText(await metrics.text());
    const nativeLabels = { platform: 'linux/amd64', mode: 'native' };
    expect(parsed.value('braid_job_queue_wait_seconds_sum', nativeLabels)).toBe(0.5);
    expect(
      parsed.value('braid_job_queue_wait_seconds_sum', {
        platform: 'linux/arm64',
        mode: 'emulated',
      }),
    ).toBe(3);
    expect(
      parsed.value('braid_job_duration_seconds_count', { ...nativeLabels, state: 'succeeded' }),
    ).toBe(1);
    expect(
      parsed.value('braid_job_duration_seconds_sum', { ...nativeLabels, state: 'succeeded' }),
    ).toBe(12.5);
    expect(
      parsed.value('braid_job_duration_seconds_sum', {
        platform: 'linux/arm64',
        mode: 'emulated',
        state: 'failed',
      }),
    ).toBe(60);
    expect(parsed.value('braid_job_duration_seconds_bucket', { ...nativeLabels, le: '10' })).toBe(
      0,
    );
    expect(parsed.value('braid_job_duration_seconds_bucket', { ...nativeLabels, le: '30' })).toBe(
      1,
    );
  });

  it('does not time a job that never ran, and times a re-queued job from its return to the queue', async () => {
    const metrics = new CoordinatorMetrics(sources());
    const queued = job('b1-1');
    metrics.jobsQueued([queued], at(0));
    metrics.jobMoved(queued, { ...queued, state: JobState.CANCELLED }, at(10_000));
    const lost = job('b1-2', { state: JobState.RUNNING, agent: 'a1', startedAt: at(0) });
    const requeued = { ...lost, state: JobState.QUEUED, agent: '', attempt: 2 };
    metrics.jobMoved(lost, requeued, at(20_000));
    metrics.jobMoved(requeued, { ...requeued, state: JobState.ASSIGNED, agent: 'a2' }, at(20_250));
    const parsed = parsePromText(await metrics.text());
    expect(parsed.sum('braid_job_duration_seconds_count')).toBe(0);
    expect(parsed.value('braid_job_queue_wait_seconds_count', { platform: 'linux/amd64' })).toBe(1);
    expect(parsed.value('braid_job_queue_wait_seconds_sum', { platform: 'linux/amd64' })).toBe(
      0.25,
    );
  });

  it('reads queue depth and agents at scrape time; an emptied queue reads 0', async () => {
    let queued = [{ platform: 'linux/arm64', count: 3 }];
    const metrics = new CoordinatorMetrics(
      sources({
        queuedJobs: () => queued,
        agents: () => [
          { native: 'linux/amd64', emulated: ['linux/arm64', 'linux/s390x'] },
          { native: 'linux/amd64', emulated: ['linux/arm64'] },
          { native: 'linux/arm64', emulated: [] },
        ],
      }),
    );
    let parsed = parsePromText(await metrics.text());
    expect(parsed.value('braid_jobs_queued', { platform: 'linux/arm64' })).toBe(3);
    expect(
      parsed.value('braid_agents_connected', { platform: 'linux/amd64', mode: 'native' }),
    ).toBe(2);
    expect(
      parsed.value('braid_agents_connected', { platform: 'linux/arm64', mode: 'native' }),
    ).toBe(1);
    expect(
      parsed.value('braid_agents_connected', { platform: 'linux/arm64', mode: 'emulated' }),
    ).toBe(2);
    expect(
      parsed.value('braid_agents_connected', { platform: 'linux/s390x', mode: 'emulated' }),
    ).toBe(1);
    queued = [];
    parsed = parsePromText(await metrics.text());
    expect(parsed.value('braid_jobs_queued', { platform: 'linux/arm64' })).toBe(0);
  });

  it('counts context bytes received and deduplicated', async () => {
    const metrics = new CoordinatorMetrics(sources());
    metrics.contextBytes('received', 2048);
    metrics.contextBytes('deduplicated', 2048);
    metrics.contextBytes('deduplicated', 100);
    const parsed = parsePromText(await metrics.text());
    expect(parsed.value('braid_context_received_bytes_total')).toBe(2048);
    expect(parsed.value('braid_context_deduplicated_bytes_total')).toBe(2148);
  });

  it('keeps its series in its own registry, with process metrics only when asked', async () => {
    const bare = parsePromText(await new CoordinatorMetrics(sources()).text());
    const full = parsePromText(
      await new CoordinatorMetrics(sources(), { processMetrics: true }).text(),
    );
    expect(bare.families.has('braid_process_cpu_seconds_total')).toBe(false);
    expect(full.family('braid_process_cpu_seconds_total').samples[0]?.value).toBeGreaterThan(0);
    expect([...full.families.keys()].every((name) => name.startsWith('braid_'))).toBe(true);
    expect(globalRegistry.getMetricsAsArray()).toHaveLength(0);
  });
});

describe('registry error labels', () => {
  const error = (
    details: Partial<ConstructorParameters<typeof RegistryError>[1]>,
    code = 'not_found',
  ) =>
    new RegistryError(code as never, {
      operation: 'GET manifest',
      reference: 'r/x:1',
      message: 'm',
      ...details,
    });

  it('name the HTTP status and a known registry code, and bound the rest', () => {
    expect(registryErrorLabels(error({ status: 404, registryCode: 'MANIFEST_UNKNOWN' }))).toEqual({
      status: '404',
      code: 'MANIFEST_UNKNOWN',
    });
    expect(
      registryErrorLabels(error({ status: 400, registryCode: 'made-up-by-a-registry' })),
    ).toEqual({ status: '400', code: 'OTHER' });
    expect(registryErrorLabels(error({ message: 'ECONNREFUSED' }, 'unavailable'))).toEqual({
      status: 'network',
      code: 'none',
    });
    expect(
      registryErrorLabels(
        error({ message: 'no answer within 100 ms (after 2 attempts)' }, 'unavailable'),
      ),
    ).toEqual({ status: 'timeout', code: 'none' });
    expect(registryErrorLabels(error({ message: 'digest mismatch' }, 'internal'))).toEqual({
      status: 'invalid_response',
      code: 'none',
    });
  });

  it('read a retry reason', () => {
    expect(retryReasonLabels('HTTP 503')).toEqual({ status: '503', code: 'none' });
    expect(retryReasonLabels('ECONNRESET')).toEqual({ status: 'network', code: 'none' });
    expect(retryReasonLabels('no answer within 30000 ms')).toEqual({
      status: 'timeout',
      code: 'none',
    });
  });

  it('are counted per failed operation and per retried attempt', async () => {
    const metrics = new CoordinatorMetrics(sources());
    // The registry's side, in-process: every manifest is unknown, every blob HEAD a 503.
    const answers: number[] = [];
    const fakeFetch = (async (_url: string | URL | Request, init?: RequestInit) => {
      const method = init?.method ?? 'GET';
      const status = method === 'HEAD' ? 503 : 404;
      answers.push(status);
      return new Response(
        method === 'HEAD'
          ? null
          : JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }),
        { status, headers: { 'content-type': 'application/json' } },
      );
    }) as typeof fetch;
    const client = meteredRegistry(
      new RegistryClient({
        fetch: fakeFetch,
        sleep: async () => undefined,
        retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 1 },
        onRetry: metrics.onRegistryRetry,
      }),
      (err) => metrics.registryFailed(err),
    );
    const repo = { domain: '127.0.0.1:5000', repository: 'team/app' };
    await expect(client.getManifest(repo, 'v1')).rejects.toThrow(/MANIFEST_UNKNOWN/);
    await expect(client.headBlob(repo, `sha256:${'a'.repeat(64)}`)).rejects.toThrow(/503/);
    expect(client.isPlainHttp('127.0.0.1:5000')).toBe(true);
    const parsed = parsePromText(await metrics.text());
    expect(
      parsed.value('braid_registry_request_errors_total', {
        outcome: 'failed',
        status: '404',
        code: 'MANIFEST_UNKNOWN',
      }),
    ).toBe(1);
    expect(
      parsed.value('braid_registry_request_errors_total', { outcome: 'retried', status: '503' }),
    ).toBe(2);
    expect(
      parsed.value('braid_registry_request_errors_total', { outcome: 'failed', status: '503' }),
    ).toBe(1);
    expect(answers.filter((s) => s === 503)).toHaveLength(3);
  });
});

describe('the probe endpoints', () => {
  const ready: Readiness = { ready: true };
  const metrics = { text: async () => 'braid_x 1\n', contentType: 'text/plain; version=0.0.4' };

  it('answer /healthz, /readyz and /metrics to GET and HEAD', async () => {
    const options = { metrics, readiness: () => ready };
    expect(await probeAnswer('GET', '/healthz', options)).toMatchObject({
      status: 200,
      body: 'ok\n',
    });
    expect(await probeAnswer('HEAD', '/readyz', options)).toMatchObject({ status: 200 });
    expect(await probeAnswer('GET', '/metrics?x=1', options)).toEqual({
      status: 200,
      body: 'braid_x 1\n',
      contentType: 'text/plain; version=0.0.4',
    });
  });

  it('say why the coordinator is not ready', async () => {
    const answer = await probeAnswer('GET', '/readyz', {
      metrics,
      readiness: () => ({ ready: false, reason: 'draining: the coordinator is stopping' }),
    });
    expect(answer).toMatchObject({
      status: 503,
      body: 'not ready: draining: the coordinator is stopping\n',
    });
  });

  it('refuse other methods and unknown paths', async () => {
    const options = { metrics, readiness: () => ready };
    expect(await probeAnswer('POST', '/metrics', options)).toMatchObject({
      status: 405,
      headers: { allow: 'GET, HEAD' },
    });
    expect(await probeAnswer('GET', '/', options)).toMatchObject({ status: 404 });
    expect(await probeAnswer('GET', '/metrics/../healthz', options)).toMatchObject({ status: 404 });
    expect(await probeAnswer('GET', '/metrics', { readiness: () => ready })).toMatchObject({
      status: 404,
    });
  });
});

describe('request ids', () => {
  it('keep the client one, make one when it sent none, and refuse a malformed one naming it', () => {
    expect(requestIdFor('ci-run-4711.2')).toBe('ci-run-4711.2');
    expect(requestIdFor('', () => 'made')).toBe('made');
    expect(requestIdFor('')).toMatch(/^[0-9a-f]{16}$/);
    expect(() => requestIdFor('has space')).toThrow('request id "has space"');
    expect(() => requestIdFor('x'.repeat(65))).toThrow(/expected 1 to 64/);
  });
});
