/**
 * The coordinator's Prometheus metrics: a private registry (never the
 * global default) with braid's build, job, queue, agent, context and
 * registry series, plus the process defaults. Gauges of the farm's state
 * are computed at scrape time from their sources, so they are right even
 * after a restart.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { BuildState } from '../gen/braid/v1/build_pb.js';
import { JobState } from '../gen/braid/v1/common_pb.js';
import { formatPlatform } from '../oci/platform.js';
import { RegistryError } from '../oci/errors.js';
import type { RegistryClient, RegistryClientOptions } from '../oci/registry.js';
import { BRAID_VERSION } from '../version.js';
import type { BuildRecord, JobRecord } from './store.js';
import {
  buildStateName,
  jobStateName,
  TERMINAL_BUILD_STATES,
  TERMINAL_JOB_STATES,
} from './transitions.js';

/** Where the scrape-time gauges read the farm's state. */
export interface MetricsSources {
  /** Jobs waiting for an agent, by platform ("linux/arm64"). */
  queuedJobs(): readonly { platform: string; count: number }[];
  /** Connected agents: native platform and the platforms they emulate. */
  agents(): readonly { native: string; emulated: readonly string[] }[];
}

/** What the orchestrator reports as builds and jobs move. */
export interface BuildObserver {
  /** A build was submitted with these jobs, all queued. */
  jobsQueued(jobs: readonly JobRecord[], at: Date): void;
  /** A job moved from `before` to `after` (its new state and fields). */
  jobMoved(before: JobRecord, after: JobRecord, at: Date): void;
  buildMoved(before: BuildRecord, to: BuildState, at: Date): void;
}

/** Seconds: a job runs from seconds (cached) to hours (emulated compiles). */
const JOB_DURATION_BUCKETS = [1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400];
/** Seconds a job waits for an agent: usually none, up to the wait-for-agent bound. */
const QUEUE_WAIT_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600];

/** Error codes of the OCI distribution spec; anything else a registry sends counts as OTHER. */
const REGISTRY_CODES = new Set([
  'BLOB_UNKNOWN',
  'BLOB_UPLOAD_INVALID',
  'BLOB_UPLOAD_UNKNOWN',
  'DIGEST_INVALID',
  'MANIFEST_BLOB_UNKNOWN',
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'MANIFEST_UNVERIFIED',
  'NAME_INVALID',
  'NAME_UNKNOWN',
  'SIZE_INVALID',
  'TAG_INVALID',
  'UNAUTHORIZED',
  'DENIED',
  'UNSUPPORTED',
  'TOOMANYREQUESTS',
  'RANGE_INVALID',
  'PAGINATION_NUMBER_INVALID',
  'UNKNOWN',
]);

/** Labels of one registry request error: a bounded set whatever the registry says. */
export interface RegistryErrorLabels {
  /** HTTP status ("503"), or "timeout", "network", "invalid_response" when there is none. */
  status: string;
  /** The registry's error code (MANIFEST_UNKNOWN, ...), "OTHER", or "none". */
  code: string;
}

/** Labels of an error a registry operation failed with (after its retries). */
export function registryErrorLabels(err: RegistryError): RegistryErrorLabels {
  let status: string;
  if (err.status !== undefined) status = String(err.status);
  else if (err.code === 'unavailable')
    status = /no answer within/.test(err.message) ? 'timeout' : 'network';
  else status = 'invalid_response';
  const code = err.registryCode
    ? REGISTRY_CODES.has(err.registryCode.toUpperCase())
      ? err.registryCode.toUpperCase()
      : 'OTHER'
    : 'none';
  return { status, code };
}

/** Labels of a retried attempt, from the client's onRetry reason ("HTTP 503", "ECONNRESET", ...). */
export function retryReasonLabels(reason: string): RegistryErrorLabels {
  const http = /^HTTP (\d{3})\b/.exec(reason);
  if (http) return { status: http[1] as string, code: 'none' };
  return { status: /^no answer within/.test(reason) ? 'timeout' : 'network', code: 'none' };
}

export function modeLabel(emulated: boolean): 'native' | 'emulated' {
  return emulated ? 'emulated' : 'native';
}

/** How long a job ran, in seconds; undefined when it never ran on an agent. */
export function jobRunSeconds(job: JobRecord, at: Date): number | undefined {
  if (job.durationMs > 0) return job.durationMs / 1000;
  if (!job.startedAt) return undefined;
  return Math.max(0, at.getTime() - job.startedAt.getTime()) / 1000;
}

export interface CoordinatorMetricsOptions {
  /** Also export the process metrics (CPU, memory, event loop, GC). */
  processMetrics?: boolean;
}

export class CoordinatorMetrics implements BuildObserver {
  readonly registry = new Registry();
  private readonly builds: Counter<'state'>;
  private readonly buildDuration: Histogram<'state'>;
  private readonly jobDuration: Histogram<'platform' | 'mode' | 'state'>;
  private readonly queueWait: Histogram<'platform' | 'mode'>;
  private readonly contextReceived: Counter;
  private readonly contextDeduplicated: Counter;
  private readonly registryErrors: Counter<'outcome' | 'status' | 'code'>;
  /** When each queued job entered the queue (ms), for the wait histogram. */
  private readonly queuedSince = new Map<string, number>();
  /** Platforms ever queued: their queue gauge reads 0 rather than vanishing. */
  private readonly queuedPlatforms = new Set<string>();

  constructor(sources: MetricsSources, options: CoordinatorMetricsOptions = {}) {
    const registers = [this.registry];
    const queuedPlatforms = this.queuedPlatforms;
    new Gauge({
      name: 'braid_coordinator_info',
      help: 'Always 1; the coordinator version as a label',
      labelNames: ['version'],
      registers,
    }).set({ version: BRAID_VERSION }, 1);
    this.builds = new Counter({
      name: 'braid_builds_total',
      help: 'Builds that reached a final state, by that state',
      labelNames: ['state'],
      registers,
    });
    for (const state of TERMINAL_BUILD_STATES) this.builds.inc({ state: buildStateName(state) }, 0);
    this.buildDuration = new Histogram({
      name: 'braid_build_duration_seconds',
      help: 'Time from submit to final state, by final state',
      labelNames: ['state'],
      buckets: JOB_DURATION_BUCKETS,
      registers,
    });
    this.jobDuration = new Histogram({
      name: 'braid_job_duration_seconds',
      help: 'Time a job ran on its agent (fetch, build, push), by platform, mode (native or emulated) and final state',
      labelNames: ['platform', 'mode', 'state'],
      buckets: JOB_DURATION_BUCKETS,
      registers,
    });
    this.queueWait = new Histogram({
      name: 'braid_job_queue_wait_seconds',
      help: 'Time a job waited in the queue before it was assigned to an agent, by platform and mode',
      labelNames: ['platform', 'mode'],
      buckets: QUEUE_WAIT_BUCKETS,
      registers,
    });
    new Gauge({
      name: 'braid_jobs_queued',
      help: 'Jobs waiting for an agent now, by platform',
      labelNames: ['platform'],
      registers,
      collect() {
        this.reset();
        for (const platform of queuedPlatforms) this.set({ platform }, 0);
        for (const { platform, count } of sources.queuedJobs()) {
          queuedPlatforms.add(platform);
          this.set({ platform }, count);
        }
      },
    });
    new Gauge({
      name: 'braid_agents_connected',
      help: 'Connected agents that can build a platform, by platform and mode (native or emulated)',
      labelNames: ['platform', 'mode'],
      registers,
      collect() {
        // Counted first, then set once per series: a farm has many agents and few platforms.
        const counts = new Map<string, { platform: string; mode: string; n: number }>();
        const count = (platform: string, mode: string) => {
          const key = `${platform} ${mode}`;
          const entry = counts.get(key) ?? { platform, mode, n: 0 };
          entry.n += 1;
          counts.set(key, entry);
        };
        for (const agent of sources.agents()) {
          count(agent.native, 'native');
          for (const platform of new Set(agent.emulated)) count(platform, 'emulated');
        }
        this.reset();
        for (const { platform, mode, n } of counts.values()) this.set({ platform, mode }, n);
      },
    });
    this.contextReceived = new Counter({
      name: 'braid_context_received_bytes_total',
      help: 'Build context bytes uploaded by clients and stored',
      registers,
    });
    this.contextDeduplicated = new Counter({
      name: 'braid_context_deduplicated_bytes_total',
      help: 'Build context bytes not stored again because a context of that digest already was',
      registers,
    });
    this.registryErrors = new Counter({
      name: 'braid_registry_request_errors_total',
      help: 'Failed registry requests of the coordinator (stitch, arch guard): outcome retried (the attempt is tried again) or failed (the operation gave up), by HTTP status and registry error code',
      labelNames: ['outcome', 'status', 'code'],
      registers,
    });
    if (options.processMetrics)
      collectDefaultMetrics({ register: this.registry, prefix: 'braid_' });
  }

  /** The exposition text of every metric. */
  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  // --- builds and jobs ---------------------------------------------------------

  jobsQueued(jobs: readonly JobRecord[], at: Date): void {
    for (const job of jobs) this.enterQueue(job, at);
  }

  jobMoved(before: JobRecord, after: JobRecord, at: Date): void {
    if (before.state === after.state) return;
    const platform = formatPlatform(after.platform);
    if (after.state === JobState.QUEUED) {
      this.enterQueue(after, at);
      return;
    }
    const since = this.queuedSince.get(after.id);
    this.queuedSince.delete(after.id);
    if (after.state === JobState.ASSIGNED && since !== undefined) {
      this.queueWait.observe(
        { platform, mode: modeLabel(after.emulated) },
        Math.max(0, at.getTime() - since) / 1000,
      );
    }
    if (TERMINAL_JOB_STATES.has(after.state)) {
      const seconds = jobRunSeconds(after, at);
      if (seconds !== undefined) {
        this.jobDuration.observe(
          { platform, mode: modeLabel(after.emulated), state: jobStateName(after.state) },
          seconds,
        );
      }
    }
  }

  buildMoved(before: BuildRecord, to: BuildState, at: Date): void {
    if (!TERMINAL_BUILD_STATES.has(to) || TERMINAL_BUILD_STATES.has(before.state)) return;
    const state = buildStateName(to);
    this.builds.inc({ state });
    this.buildDuration.observe(
      { state },
      Math.max(0, at.getTime() - before.createdAt.getTime()) / 1000,
    );
  }

  private enterQueue(job: JobRecord, at: Date): void {
    this.queuedSince.set(job.id, at.getTime());
    this.queuedPlatforms.add(formatPlatform(job.platform));
  }

  // --- contexts ----------------------------------------------------------------

  /** A context upload was stored (`received`) or was already stored (`deduplicated`). */
  contextBytes(kind: 'received' | 'deduplicated', bytes: number): void {
    if (bytes <= 0) return;
    (kind === 'received' ? this.contextReceived : this.contextDeduplicated).inc(bytes);
  }

  // --- registry ----------------------------------------------------------------

  /** For RegistryClientOptions.onRetry: an attempt failed and is tried again. */
  readonly onRegistryRetry: NonNullable<RegistryClientOptions['onRetry']> = (info) => {
    this.registryErrors.inc({ outcome: 'retried', ...retryReasonLabels(info.reason) });
  };

  /** A registry operation failed for good. */
  registryFailed(err: RegistryError): void {
    this.registryErrors.inc({ outcome: 'failed', ...registryErrorLabels(err) });
  }
}

/**
 * The same client, counting every operation that fails with a
 * RegistryError. Calls are made on the client itself, so an operation
 * that uses another inside (a copy that reads a blob) counts once.
 */
export function meteredRegistry(
  client: RegistryClient,
  onError: (err: RegistryError) => void,
): RegistryClient {
  const count = (err: unknown) => {
    if (err instanceof RegistryError) onError(err);
  };
  return new Proxy(client, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]): unknown => {
        let result: unknown;
        try {
          result = (value as (...a: unknown[]) => unknown).apply(target, args);
        } catch (err) {
          count(err);
          throw err;
        }
        if (result instanceof Promise) {
          return result.catch((err: unknown) => {
            count(err);
            throw err;
          });
        }
        return result;
      };
    },
  });
}
