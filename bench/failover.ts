/**
 * npm run bench:failover — how long a farm on PostgreSQL stands still when
 * its leading coordinator dies. Per run: a fresh database on a real
 * cluster (test/support/postgres.ts), two real `braid coordinator`s from
 * dist/ on it (127.0.0.1, `--advertise`, the default leader settings:
 * poll 1 s, lease 5 s), N simulated agents (bench/scale/fleet.ts: the real
 * agent session loop, given both coordinators as a list, the agent's own
 * reconnect backoff) and B builds of 4 platforms submitted to the leader,
 * so that jobs run on agents and more wait in the queue. Then the leader
 * is killed (SIGKILL) and the bench measures, from the kill:
 *
 *   lock        the standby's log line "leading the farm" (it won the advisory lock)
 *   recovered   its "recovered builds in flight" (the term began from the store)
 *   ready       its /readyz answering 200 (polled every 50 ms)
 *   agent back  the first Welcome an agent read from the new leader
 *   assigned    the new leader's first "job state ... assigned" log line (placement decided)
 *   placed      the first AssignJob an agent read from the new leader   <- target <= 10 s
 *   all back    every agent welcomed again
 *
 * and checks that every build still succeeds through the new leader,
 * counting AssignJobs beyond one per job (work placed twice) and the jobs
 * the new leader re-queued because no agent claimed them. Each
 * run's parts, then the medians and the target's verdict.
 *
 *   --runs 5                runs (each a fresh database, coordinators and fleet)
 *   --agents 40             simulated agents (a quarter per platform)
 *   --builds 40             builds submitted before the kill (4 jobs each)
 *   --job-ms 3000           how long a fake job "builds"
 *   --capacity 2            jobs per agent at once
 *   --settle-s 31           agents stay joined this long before the burst; a session that
 *                           lasted 30 s resets the agent's backoff, as in a farm that ran a while
 *   --kill-after-ms 1000    the leader is killed this long after the last submit was answered
 *   --target-s 10           the issue's target for kill -> first job placed
 *   --deadline-min 20       the whole bench fails loudly after this
 *   --coordinator-arg ARG   pass ARG to both coordinators (repeatable), e.g. --coordinator-arg=--leader-poll-ms=500
 *   --keep                  keep the work dir (coordinator and fleet logs) and print its path
 *
 * Everything listens on 127.0.0.1; every process is stopped by its pid.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BuildState } from '../src/gen/braid/v1/build_pb.js';
import { requireCommand } from '../test/support/components.js';
import type { PostgresCluster } from '../test/support/postgres.js';
import { freePort } from '../test/support/registry.js';
import {
  bounded,
  buildClient,
  buildSpec,
  pushImages,
  REPOSITORY,
  uploadContext,
} from './scale/builds.js';
import type { FleetConfig, FleetCounters, FleetImage, FleetReport } from './scale/fleet.js';
import { startBenchRun } from './scale/bench-run.js';
import { quantile } from './scale/placement.js';
import {
  role,
  startCoordinator,
  startFleet,
  waitForLeader,
  type Child,
  type CoordinatorProcess,
} from './scale/processes.js';

// --- options -------------------------------------------------------------------------

const { values: flags } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    agents: { type: 'string', default: '40' },
    builds: { type: 'string', default: '40' },
    'job-ms': { type: 'string', default: '3000' },
    capacity: { type: 'string', default: '2' },
    'settle-s': { type: 'string', default: '31' },
    'kill-after-ms': { type: 'string', default: '1000' },
    'target-s': { type: 'string', default: '10' },
    'deadline-min': { type: 'string', default: '20' },
    'coordinator-arg': { type: 'string', multiple: true },
    keep: { type: 'boolean', default: false },
  },
  strict: true,
});

function number(name: string, text: string | undefined, { integer = true, zero = false } = {}) {
  const value = Number(text);
  if (!(value > 0 || (zero && value === 0)) || (integer && !Number.isInteger(value)))
    throw new Error(
      `--${name} must be a ${zero ? 'non-negative' : 'positive'} number, not ${text}`,
    );
  return value;
}

const OPTIONS = {
  runs: number('runs', flags.runs),
  agents: number('agents', flags.agents),
  builds: number('builds', flags.builds),
  jobMs: number('job-ms', flags['job-ms']),
  capacity: number('capacity', flags.capacity),
  settleMs: number('settle-s', flags['settle-s'], { integer: false, zero: true }) * 1000,
  killAfterMs: number('kill-after-ms', flags['kill-after-ms'], { zero: true }),
  targetMs: number('target-s', flags['target-s'], { integer: false }) * 1000,
  deadlineMs: number('deadline-min', flags['deadline-min'], { integer: false }) * 60_000,
  coordinatorArgs: flags['coordinator-arg'] ?? [],
  keep: flags.keep === true,
};

/** How long each wait after the kill may take before the run is reported as failed. */
const AFTER_KILL_MS = 120_000;
const BUILDS_DONE_MS = 300_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (text: string) => process.stderr.write(`bench:failover: ${text}\n`);
const seconds = (ms: number | undefined) =>
  ms === undefined || !Number.isFinite(ms) ? 'n/a' : `${(ms / 1000).toFixed(2)} s`;

// --- one run ---------------------------------------------------------------------------

interface Context {
  postgres: PostgresCluster;
  registryHost: string;
  images: Record<string, FleetImage>;
  workDir: string;
  started: Set<Child>;
  deadline: number;
}

/** Milliseconds from the kill to each part; undefined: not seen. */
interface RunResult {
  run: number;
  leaderWas: string;
  runningAtKill: number;
  queuedAtKill: number;
  lockMs?: number;
  recoveredMs?: number;
  readyMs?: number;
  firstAgentMs?: number;
  /** The new leader's first "job state ... to assigned" log line (its decision, before the send). */
  assignedMs?: number;
  placedMs?: number;
  /** Jobs the new leader put back in the queue (orphans no agent claimed), and when the first was. */
  requeued: number;
  requeuedAfterMs?: number;
  allAgentsMs?: number;
  succeeded: number;
  builds: number;
  /** AssignJobs beyond one per job: jobs placed again after the kill. */
  placedAgain: number;
  loadAverage: number;
}

type LogEntry = { msg?: string; time?: string; from?: string; to?: string };

/** Epoch ms of each line of a coordinator's JSON log that `wanted` picks. */
async function logTimes(file: string, wanted: (entry: LogEntry) => boolean): Promise<number[]> {
  const times: number[] = [];
  for (const line of (await readFile(file, 'utf8')).split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const entry = JSON.parse(line) as LogEntry;
      if (wanted(entry) && entry.time) times.push(Date.parse(entry.time));
    } catch {
      // Not a log line.
    }
  }
  return times;
}

/** Polls `probe` every `everyMs` until it returns a value; undefined after `timeoutMs`. */
async function poll<T>(
  timeoutMs: number,
  everyMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await sleep(everyMs);
  }
  return undefined;
}

const firstAfter = (times: readonly number[], after: number) =>
  times.filter((t) => t >= after).sort((a, b) => a - b)[0];

async function runOnce(ctx: Context, run: number): Promise<RunResult> {
  const dir = join(ctx.workDir, `run${run}`);
  await mkdir(dir, { recursive: true });
  const url = await ctx.postgres.createDatabase(`failover_${run}`);
  const start = async (name: string) => {
    const listen = `127.0.0.1:${await freePort()}`;
    const coordinator = await startCoordinator({
      dataDir: join(dir, `data-${name}`),
      logFile: join(dir, `coordinator-${name}.log`),
      listen,
      store: url,
      extraArgs: OPTIONS.coordinatorArgs,
    });
    ctx.started.add(coordinator);
    return coordinator;
  };
  const stop = async (child: Child, graceMs = 15_000) => {
    await child.stop(graceMs);
    ctx.started.delete(child);
  };
  const pair = await Promise.all([start('a'), start('b')]);
  const leader = await waitForLeader(pair, 30_000);
  const standby = (leader === pair[0] ? pair[1] : pair[0]) as CoordinatorProcess;
  // The standby learns who leads at its next poll.
  const named = await poll(10_000, 100, async () =>
    (await role(standby.probeUrl)).includes(`the leader is ${leader.address}`) ? true : undefined,
  );
  if (!named)
    throw new Error(`the standby does not name the leader: ${await role(standby.probeUrl)}`);

  const fleetConfig: FleetConfig = {
    coordinators: pair.map((c) => c.address),
    agents: OPTIONS.agents,
    capacity: OPTIONS.capacity,
    jobMs: OPTIONS.jobMs,
    images: ctx.images,
    joinBatch: 50,
    joinTimeoutMs: 60_000,
  };
  const { fleet } = await startFleet(fleetConfig, join(dir, 'fleet.log'), 70_000);
  ctx.started.add(fleet);
  const client = buildClient(leader.address);
  const after = buildClient(standby.address);
  try {
    await sleep(OPTIONS.settleMs);
    const context = await uploadContext(client);
    const spec = buildSpec(context, ctx.registryHost, true);
    const ids: string[] = [];
    let next = 0;
    const submitter = async () => {
      for (let i = next++; i < OPTIONS.builds; i = next++) {
        const { build } = await client.submitBuild(
          { spec: { ...spec, tags: [`${ctx.registryHost}/${REPOSITORY}:run${run}-b${i}`] } },
          { timeoutMs: 60_000 },
        );
        if (!build) throw new Error(`submit ${i}: no build in the answer`);
        ids.push(build.id);
      }
    };
    await bounded(
      'the submits',
      120_000,
      Promise.all(Array.from({ length: 8 }, () => submitter())),
    );
    await sleep(OPTIONS.killAfterMs);
    const atKill = (await fleet.ask<{ counters: FleetCounters }>('counters', 'counters', 30_000))
      .counters;
    const loadAverage = loadavg()[0] ?? NaN;

    // The kill.
    const killedAt = Date.now();
    process.kill(leader.pid, 'SIGKILL');
    await bounded('the killed leader to exit', 10_000, leader.exited);
    ctx.started.delete(leader);
    log(`run ${run}: leader ${leader.address} killed; standby ${standby.address}`);

    const readyAt = await poll(AFTER_KILL_MS, 50, async () =>
      (await role(standby.probeUrl)) === 'leader' ? Date.now() : undefined,
    );
    const report = () =>
      fleet.ask<{ report: FleetReport }>('report', 'report', 30_000).then((r) => r.report);
    const assignedAt = (r: FleetReport) => firstAfter(Object.values(r.assigns).flat(), killedAt);
    const placedAt = await poll(AFTER_KILL_MS, 100, async () => assignedAt(await report()));

    // Every build through the new leader.
    const states = new Map<string, BuildState>();
    const finished = (s: BuildState | undefined) =>
      s === BuildState.SUCCEEDED ||
      s === BuildState.FAILED ||
      s === BuildState.CANCELLED ||
      s === BuildState.TIMED_OUT;
    await poll(BUILDS_DONE_MS, 1000, async () => {
      for (const id of ids) {
        if (finished(states.get(id))) continue;
        try {
          const { build } = await after.getBuild({ buildId: id }, { timeoutMs: 10_000 });
          if (build) states.set(id, build.state);
        } catch {
          // Not answering yet: asked again next round.
        }
      }
      return ids.every((id) => finished(states.get(id))) ? true : undefined;
    });
    const final = await report();
    const welcomesAfter = final.welcomes.filter((t) => t >= killedAt).sort((a, b) => a - b);
    const msg = (text: string) => (e: LogEntry) => e.msg === text;
    const lockAt = firstAfter(await logTimes(standby.logFile, msg('leading the farm')), killedAt);
    const recoveredAt = firstAfter(
      await logTimes(standby.logFile, msg('recovered builds in flight')),
      killedAt,
    );
    const jobMove = (to: string) => (e: LogEntry) => e.msg === 'job state' && e.to === to;
    const assignedLoggedAt = firstAfter(
      await logTimes(standby.logFile, jobMove('assigned')),
      killedAt,
    );
    const requeued = (await logTimes(standby.logFile, jobMove('queued'))).filter(
      (t) => t >= killedAt,
    );
    const since = (t: number | undefined) => (t === undefined ? undefined : t - killedAt);
    const jobs = OPTIONS.builds * 4;
    return {
      run,
      leaderWas: leader.address,
      runningAtKill: atKill.assigns - atKill.results,
      queuedAtKill: jobs - atKill.assigns,
      lockMs: since(lockAt),
      recoveredMs: since(recoveredAt),
      readyMs: since(readyAt),
      firstAgentMs: since(welcomesAfter[0]),
      assignedMs: since(assignedLoggedAt),
      placedMs: since(placedAt),
      requeued: requeued.length,
      requeuedAfterMs: requeued.length ? Math.min(...requeued) - killedAt : undefined,
      allAgentsMs: since(welcomesAfter[OPTIONS.agents - 1]),
      succeeded: [...states.values()].filter((s) => s === BuildState.SUCCEEDED).length,
      builds: ids.length,
      placedAgain: final.counters.assigns - jobs,
      loadAverage,
    };
  } finally {
    client.close();
    after.close();
    await stop(fleet);
    for (const c of pair) if (ctx.started.has(c)) await stop(c);
  }
}

// --- the report ------------------------------------------------------------------------

const PARTS: [string, keyof RunResult][] = [
  ['lock', 'lockMs'],
  ['recovered', 'recoveredMs'],
  ['ready', 'readyMs'],
  ['agent back', 'firstAgentMs'],
  ['assigned (log)', 'assignedMs'],
  ['placed', 'placedMs'],
  ['all back', 'allAgentsMs'],
];

function reportRun(r: RunResult): void {
  const parts = PARTS.map(([name, key]) => `${name} ${seconds(r[key] as number | undefined)}`);
  console.log(
    `run ${r.run}: kill -> ${parts.join(', ')}; ${r.succeeded} of ${r.builds} builds succeeded, ` +
      `${r.placedAgain} jobs placed again (${r.requeued} re-queued by the new leader${r.requeuedAfterMs === undefined ? '' : `, the first ${seconds(r.requeuedAfterMs)} after the kill`}); at the kill ${r.runningAtKill} jobs on agents, ${r.queuedAtKill} queued; ` +
      `load ${r.loadAverage.toFixed(1)}` +
      `   [placed <= ${OPTIONS.targetMs / 1000} s: ${verdict(r.placedMs)}]`,
  );
}

const verdict = (ms: number | undefined) =>
  ms !== undefined && ms <= OPTIONS.targetMs ? 'met' : 'MISSED';

function reportAll(results: RunResult[]): void {
  const header = ['run', ...PARTS.map(([name]) => `${name} s`), 'builds ok', 'load'];
  const cell = (ms: number | undefined) =>
    ms === undefined || !Number.isFinite(ms) ? 'n/a' : (ms / 1000).toFixed(2);
  const rows = results.map((r) => [
    String(r.run),
    ...PARTS.map(([, key]) => cell(r[key] as number | undefined)),
    `${r.succeeded}/${r.builds}`,
    r.loadAverage.toFixed(1),
  ]);
  const median = (key: keyof RunResult) => {
    const values = results.map((r) => r[key] as number | undefined);
    // A part not seen in a run counts as endless: the median is not flattered by leaving it out.
    return quantile(
      values.map((v) => v ?? Number.POSITIVE_INFINITY),
      0.5,
    );
  };
  rows.push(['median', ...PARTS.map(([, key]) => cell(median(key))), '', '']);
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => (r[i] as string).length)),
  );
  const row = (cells: string[]) =>
    `| ${cells.map((c, i) => c.padStart(widths[i] as number)).join(' | ')} |`;
  console.log('');
  console.log(row(header));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const r of rows) console.log(row(r));
  const placed = median('placedMs');
  const worst = Math.max(...results.map((r) => r.placedMs ?? Number.POSITIVE_INFINITY));
  console.log(
    `\nkill -> first job placed by the new leader: median ${cell(placed)} s, worst ${cell(worst)} s` +
      `   [target <= ${OPTIONS.targetMs / 1000} s with default settings: median ${verdict(placed)}, ` +
      `${results.filter((r) => verdict(r.placedMs) === 'met').length} of ${results.length} runs met]`,
  );
}

// --- main ------------------------------------------------------------------------------

async function main(): Promise<void> {
  await requireCommand('docker-registry', 'docker-registry');
  const run = await startBenchRun({
    name: 'failover',
    deadlineMs: OPTIONS.deadlineMs,
    keep: OPTIONS.keep,
    postgres: true,
    log,
  });
  const { workDir, started, deadline, registry, postgres } = run;
  try {
    if (!postgres) throw new Error('no PostgreSQL cluster');
    const images = await pushImages(registry.host);
    const ctx: Context = {
      postgres,
      registryHost: registry.host,
      images,
      workDir,
      started,
      deadline,
    };
    console.log(
      `bench:failover — ${cpus().length} CPUs, load ${loadavg()[0]?.toFixed(1)}; two coordinators on one PostgreSQL database, ` +
        `leader settings ${OPTIONS.coordinatorArgs.length ? OPTIONS.coordinatorArgs.join(' ') : 'default (poll 1 s, lease 5 s)'}; ` +
        `${OPTIONS.agents} agents (capacity ${OPTIONS.capacity}, the agent's own backoff), ${OPTIONS.builds} builds of 4 platforms, ` +
        `fake jobs of ${OPTIONS.jobMs} ms; the leader SIGKILLed ${OPTIONS.killAfterMs} ms after the last submit`,
    );
    const results: RunResult[] = [];
    for (let run = 1; run <= OPTIONS.runs; run++) {
      if (Date.now() > ctx.deadline) throw new Error(`global deadline: ${run - 1} runs done`);
      const result = await runOnce(ctx, run);
      results.push(result);
      reportRun(result);
    }
    reportAll(results);
    // Every figure is printed either way; lost builds or a part never seen exit 1.
    const broken = results.filter(
      (r) => r.succeeded !== r.builds || r.placedMs === undefined || r.readyMs === undefined,
    );
    if (broken.length > 0) {
      log(`runs ${broken.map((r) => r.run).join(', ')}: builds lost or the farm never resumed`);
      process.exitCode = 1;
    }
  } finally {
    await run.cleanup();
  }
}

await main();
