/**
 * The agent's engine reachability, as its metrics show it: the last
 * check's answer and time, a check with a deadline, one check at a time.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { EngineWatch } from '../../src/agent/engine-watch.js';
import { AgentMetrics } from '../../src/agent/agent-metrics.js';
import type { EngineInfo } from '../../src/agent/engine.js';

const log = pino({ level: 'silent' });
const INFO = {} as EngineInfo;

function engine(answer: () => Promise<EngineInfo>) {
  let calls = 0;
  return {
    url: 'unix:///fake.sock',
    get calls() {
      return calls;
    },
    info: () => {
      calls++;
      return answer();
    },
  };
}

describe("the agent's engine watch", () => {
  it('has checked nothing before its first check', () => {
    const watch = new EngineWatch(
      engine(() => Promise.resolve(INFO)),
      { log },
    );
    expect(watch.last).toEqual({ up: false, checkedAtMs: 0 });
  });

  it('records the answer and when it came, down and up again', async () => {
    let clock = 1_000;
    let up = true;
    const fake = engine(() => (up ? Promise.resolve(INFO) : Promise.reject(new Error('ENOENT'))));
    const watch = new EngineWatch(fake, { log, now: () => clock });
    await watch.check();
    expect(watch.last).toEqual({ up: true, checkedAtMs: 1_000 });
    up = false;
    clock = 2_000;
    await watch.check();
    expect(watch.last).toEqual({ up: false, checkedAtMs: 2_000 });
    up = true;
    clock = 3_000;
    await watch.check();
    expect(watch.last).toEqual({ up: true, checkedAtMs: 3_000 });
  });

  it('counts an engine that does not answer within the deadline as down', async () => {
    const watch = new EngineWatch(
      engine(() => new Promise<EngineInfo>(() => undefined)),
      { log, timeoutMs: 5 },
    );
    await watch.check();
    expect(watch.last.up).toBe(false);
    expect(watch.last.checkedAtMs).toBeGreaterThan(0);
  });

  it('asks once while a check is under way', async () => {
    let answer: (info: EngineInfo) => void = () => undefined;
    const fake = engine(() => new Promise<EngineInfo>((resolve) => (answer = resolve)));
    const watch = new EngineWatch(fake, { log });
    const first = watch.check();
    const second = watch.check();
    answer(INFO);
    await Promise.all([first, second]);
    expect(fake.calls).toBe(1);
  });

  it('shows in the metrics as engine_up and the check time in seconds', async () => {
    const watch = new EngineWatch(
      engine(() => Promise.resolve(INFO)),
      { log, now: () => 42_500 },
    );
    await watch.check();
    const metrics = new AgentMetrics('a1', 2, { runningJobs: () => 1, engine: () => watch.last });
    const text = await metrics.text();
    expect(text).toMatch(/^braid_agent_engine_up 1$/m);
    expect(text).toMatch(/^braid_agent_engine_last_check_timestamp_seconds 42\.5$/m);
    expect(text).toMatch(/^braid_agent_jobs_running 1$/m);
    expect(text).toMatch(/^braid_agent_capacity 2$/m);
  });
});

describe("the agent's job metrics", () => {
  const base = { durationMs: 10, fetchMs: 1000, buildMs: 2000, pushMs: 500 };

  it('counts a push failure by code, and only the parts before it as durations', async () => {
    const metrics = new AgentMetrics('a1', 2, {
      runningJobs: () => 0,
      engine: () => ({ up: true, checkedAtMs: 0 }),
    });
    metrics.jobFinished(
      { emulated: true },
      {
        ...base,
        pushMs: 0,
        error: 'denied',
        failure: { stage: 'push', code: 'permission_denied' },
      },
    );
    metrics.jobFinished(
      { emulated: false },
      { ...base, error: 'cancelled: x', failure: { stage: 'push', code: 'cancelled' } },
    );
    const text = await metrics.text();
    expect(text).toMatch(/^braid_agent_push_errors_total\{code="permission_denied"\} 1$/m);
    expect(text).not.toMatch(/push_errors_total\{code="cancelled"\}/);
    expect(text).toMatch(/^braid_agent_jobs_total\{outcome="failed"\} 1$/m);
    expect(text).toMatch(/^braid_agent_jobs_total\{outcome="cancelled"\} 1$/m);
    expect(text).toMatch(
      /^braid_agent_job_stage_duration_seconds_count\{stage="build",mode="emulated"\} 1$/m,
    );
    expect(text).not.toMatch(/stage_duration_seconds_count\{stage="push",mode="emulated"\}/);
  });
});
