/**
 * The agent's Prometheus metrics: a private registry (never the global
 * default) with its jobs by outcome, the time each part of a job took,
 * push errors by code, whether its engine answers, and its load, plus the
 * process defaults. The load gauges are read at scrape time.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AssignJob } from '../gen/braid/v1/agent_pb.js';
import { BRAID_VERSION } from '../version.js';
import type { JobOutcome, JobStage } from './job-runner.js';

export type JobOutcomeLabel = 'succeeded' | 'failed' | 'cancelled';

/** Where the scrape-time gauges read the agent's state. */
export interface AgentMetricsSources {
  /** Jobs running now. */
  runningJobs(): number;
  /** Whether the engine answered its last check, and when that was (ms since the epoch; 0: never). */
  engine(): { up: boolean; checkedAtMs: number };
}

/** Seconds: a push or a cached build takes under one, an emulated compile hours. */
const STAGE_BUCKETS = [0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400];

const STAGES: readonly JobStage[] = ['fetch', 'build', 'push'];

export function outcomeLabel(outcome: JobOutcome): JobOutcomeLabel {
  if (outcome.image) return 'succeeded';
  return outcome.failure?.code === 'cancelled' ? 'cancelled' : 'failed';
}

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly jobs: Counter<'outcome'>;
  private readonly stageDuration: Histogram<'stage' | 'mode'>;
  private readonly pushErrors: Counter<'code'>;

  constructor(
    agent: string,
    capacity: number,
    sources: AgentMetricsSources,
    options: { processMetrics?: boolean } = {},
  ) {
    const registers = [this.registry];
    new Gauge({
      name: 'braid_agent_info',
      help: 'Always 1; the agent name and version as labels',
      labelNames: ['agent', 'version'],
      registers,
    }).set({ agent, version: BRAID_VERSION }, 1);
    this.jobs = new Counter({
      name: 'braid_agent_jobs_total',
      help: 'Jobs this agent ran to the end, by outcome (succeeded, failed, cancelled)',
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of ['succeeded', 'failed', 'cancelled'] as const)
      this.jobs.inc({ outcome }, 0);
    this.stageDuration = new Histogram({
      name: 'braid_agent_job_stage_duration_seconds',
      help: 'Time a completed part of a job took on this agent: fetch (the context), build (BuildKit) or push (by digest), by mode (native or emulated)',
      labelNames: ['stage', 'mode'],
      buckets: STAGE_BUCKETS,
      registers,
    });
    this.pushErrors = new Counter({
      name: 'braid_agent_push_errors_total',
      help: "Jobs whose push failed, by braid's error code (unauthenticated, permission_denied, unavailable, ...)",
      labelNames: ['code'],
      registers,
    });
    new Gauge({
      name: 'braid_agent_jobs_running',
      help: 'Jobs running on this agent now',
      registers,
      collect() {
        this.set(sources.runningJobs());
      },
    });
    new Gauge({
      name: 'braid_agent_capacity',
      help: 'Jobs this agent runs at once at most',
      registers,
    }).set(capacity);
    new Gauge({
      name: 'braid_agent_engine_up',
      help: "1 when the agent's engine answered its last check, else 0",
      registers,
      collect() {
        this.set(sources.engine().up ? 1 : 0);
      },
    });
    new Gauge({
      name: 'braid_agent_engine_last_check_timestamp_seconds',
      help: 'When the agent last checked its engine (Unix time; 0: never)',
      registers,
      collect() {
        this.set(sources.engine().checkedAtMs / 1000);
      },
    });
    if (options.processMetrics)
      collectDefaultMetrics({ register: this.registry, prefix: 'braid_' });
  }

  /** The exposition text of every metric. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** A job ended with this outcome. */
  jobFinished(job: Pick<AssignJob, 'emulated'>, outcome: JobOutcome): void {
    this.jobs.inc({ outcome: outcomeLabel(outcome) });
    const mode = job.emulated ? 'emulated' : 'native';
    const ms: Record<JobStage, number> = {
      fetch: outcome.fetchMs,
      build: outcome.buildMs,
      push: outcome.pushMs,
    };
    // The parts that completed: all of a job that succeeded, those before the failed part.
    const failedAt = outcome.failure ? STAGES.indexOf(outcome.failure.stage) : STAGES.length;
    for (const stage of STAGES.slice(0, failedAt))
      this.stageDuration.observe({ stage, mode }, ms[stage] / 1000);
    const failure = outcome.failure;
    if (failure?.stage === 'push' && failure.code !== 'cancelled') {
      this.pushErrors.inc({ code: failure.code });
    }
  }
}
