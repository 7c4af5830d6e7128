/**
 * npm run bench:scale — one real coordinator (`braid coordinator` from
 * dist/, 127.0.0.1, temp store, /metrics on) against N simulated agents in
 * a process of their own (bench/scale/fleet.ts: the real agent session
 * loop, one gRPC connection each, a fake engine whose job "builds" for
 * --job-ms and reports an image this bench pushed once per platform to a
 * loopback docker-registry, so every stitch is real). Then B builds of 4
 * platforms are submitted in a burst (one context, uploaded once) while W
 * clients follow builds with WatchBuild. At each scale point it prints:
 *
 *   placement   job placeable -> AssignJob read by the agent, p50/p99/max
 *               (generator's clocks; bench/scale/placement.ts says how);
 *               the coordinator's own queue-wait histogram beside it
 *   submit      builds/s over the burst, submit latency, time to drain
 *   heartbeats  N agents at the coordinator's 5 s interval: CPU per
 *               heartbeat while idle, the oldest heartbeat the coordinator
 *               had seen of any agent during the burst, sessions lost
 *   resources   coordinator RSS and CPU (from /proc/<pid>) idle before the
 *               burst, at peak, and idle after it; one real `braid agent`'s
 *               RSS while idle (real engine)
 *   postgres    on PostgreSQL: the database's commits, rows and WAL while idle and over
 *               the burst (pg_stat_database), and its server processes' CPU
 *
 * and a table of how each figure grows with agents and jobs (with several
 * stores, also each point's stores side by side).
 *
 *   --agents 100,300,1000   scale points (agents; a quarter per platform)
 *   --stores sqlite,postgres  the coordinator's store at each point, one run per store in turn
 *                           (default sqlite; --store postgres the same); postgres: a real cluster
 *                           (test/support/postgres.ts), a fresh database per point
 *   --builds-per-agent 2.5  builds at each point (2,500 at 1,000 agents)
 *   --watchers-per-agent 0.2
 *   --job-ms 2000           how long a fake job "builds"
 *   --capacity 2            jobs per agent at once (the agent's default)
 *   --concurrency 64        submits in flight
 *   --idle-s 15             idle windows (3 heartbeat intervals)
 *   --deadline-min 25       the whole bench fails loudly after this
 *   --cpu-prof DIR          profile the coordinator (node --cpu-prof) and print its hot functions
 *   --no-provenance         submit builds with --provenance=false (default: buildx's min, as users get)
 *   --no-real-agent         skip the real agent's RSS
 *   --quick                 20 and 60 agents, 500 ms jobs, 6 s idle windows
 *   --coordinator-arg ARG   pass ARG to `braid coordinator` (repeatable), e.g. --coordinator-arg=--no-arch-check
 *   --keep                  keep the work dir (coordinator, fleet and agent logs) and print its path
 *
 * Everything listens on 127.0.0.1; every process is stopped by its pid.
 */
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { setMaxListeners } from 'node:events';
import { parseArgs } from 'node:util';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import type { Build } from '../src/gen/braid/v1/build_pb.js';
import { requireCommand, requireEngine } from '../test/support/components.js';
import { scrape, type Exposition } from '../test/support/prom-text.js';
import type { PostgresCluster } from '../test/support/postgres.js';
import {
  bounded,
  buildClient,
  buildSpec,
  PLATFORMS,
  pushImages,
  REPOSITORY,
  uploadContext,
  type BuildClient,
} from './scale/builds.js';
import type { FleetConfig, FleetCounters, FleetImage, FleetReport } from './scale/fleet.js';
import { placementLatencies, summarize, type Summary } from './scale/placement.js';
import {
  startCoordinator,
  startFleet,
  startRealAgent,
  type Child,
  waitForLeader,
  type CoordinatorProcess,
} from './scale/processes.js';
import { boxCpuSeconds, ProcSampler, readProc, type ProcWindow } from './scale/proc.js';
import { hotFunctions } from './scale/profile.js';
import { startBenchRun } from './scale/bench-run.js';
import {
  pgServerCpuSeconds,
  pgWritesBetween,
  readPgWrites,
  type PgWrites,
} from './scale/pg-stats.js';

type StoreKind = 'sqlite' | 'postgres';

const MB = 1024 * 1024;
const WATCH_RESUMES = 10;
const DRAIN_STALL_MS = 300_000;

// --- options -------------------------------------------------------------------------

const { values: flags } = parseArgs({
  options: {
    agents: { type: 'string' },
    stores: { type: 'string', default: 'sqlite' },
    store: { type: 'string' },
    'builds-per-agent': { type: 'string', default: '2.5' },
    'watchers-per-agent': { type: 'string', default: '0.2' },
    'job-ms': { type: 'string' },
    capacity: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '64' },
    'idle-s': { type: 'string' },
    'deadline-min': { type: 'string', default: '25' },
    'cpu-prof': { type: 'string' },
    'no-provenance': { type: 'boolean', default: false },
    'no-real-agent': { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    'coordinator-arg': { type: 'string', multiple: true },
  },
  strict: true,
});

function positive(
  name: string,
  text: string | undefined,
  fallback: number,
  integer = true,
): number {
  const value = text === undefined ? fallback : Number(text);
  if (!(value > 0) || (integer && !Number.isInteger(value)))
    throw new Error(`--${name} must be a positive ${integer ? 'integer' : 'number'}, not ${text}`);
  return value;
}

const quick = flags.quick === true;
const OPTIONS = {
  agents: (flags.agents ?? (quick ? '20,60' : '100,300,1000'))
    .split(',')
    .map((a) => positive('agents', a, 0)),
  buildsPerAgent: positive('builds-per-agent', flags['builds-per-agent'], 2.5, false),
  watchersPerAgent: Number(flags['watchers-per-agent']),
  jobMs: positive('job-ms', flags['job-ms'], quick ? 500 : 2000),
  capacity: positive('capacity', flags.capacity, 2),
  concurrency: positive('concurrency', flags.concurrency, 64),
  idleMs: positive('idle-s', flags['idle-s'], quick ? 6 : 15) * 1000,
  deadlineMs: positive('deadline-min', flags['deadline-min'], 25, false) * 60_000,
  cpuProfDir: flags['cpu-prof'],
  provenance: flags['no-provenance'] !== true,
  realAgent: flags['no-real-agent'] !== true,
  keep: flags.keep === true,
  coordinatorArgs: flags['coordinator-arg'] ?? [],
  stores: (flags.store ?? flags.stores ?? 'sqlite').split(',').map((s): StoreKind => {
    if (s !== 'sqlite' && s !== 'postgres')
      throw new Error(`--stores takes sqlite and/or postgres, not ${s}`);
    return s;
  }),
};
if (!(OPTIONS.watchersPerAgent >= 0)) throw new Error('--watchers-per-agent must be >= 0');

// --- small helpers ---------------------------------------------------------------------

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mb = (bytes: number) => `${(bytes / MB).toFixed(0)} MB`;
const ms1 = (ms: number) => (Number.isFinite(ms) ? `${ms.toFixed(1)} ms` : 'n/a');
const log = (text: string) => process.stderr.write(`bench:scale: ${text}\n`);

const TERMINAL = ['succeeded', 'failed', 'cancelled', 'timed_out'];

function buildsFinished(metrics: Exposition): Record<string, number> {
  const byState: Record<string, number> = {};
  for (const state of TERMINAL) byState[state] = metrics.sum('braid_builds_total', { state });
  return byState;
}

/** Share of queue waits the coordinator counted at or under `le` seconds. */
function queueWaitShare(metrics: Exposition, le: string): { count: number; share: number } {
  const count = metrics.sum('braid_job_queue_wait_seconds_count');
  const within = metrics.sum('braid_job_queue_wait_seconds_bucket', { le });
  return { count, share: count ? within / count : NaN };
}

async function oldestHeartbeatMs(client: BuildClient): Promise<number> {
  const { agents } = await client.listAgents({}, { timeoutMs: 30_000 });
  const now = Date.now();
  let oldest = 0;
  for (const agent of agents)
    if (agent.lastHeartbeat) oldest = Math.max(oldest, now - timestampMs(agent.lastHeartbeat));
  return oldest;
}

// --- one scale point -------------------------------------------------------------------

interface PointResult {
  store: StoreKind;
  agents: number;
  builds: number;
  jobs: number;
  watchers: number;
  joinMs: number;
  placement: Summary;
  placementQueueBound: number;
  placementSlotBound: number;
  placementUnexplained: number;
  coordinatorQueueWait10ms: number;
  submitPerSecond: number;
  submitFailures: string[];
  /** Builds the coordinator accepted, and of those how many reached a final state. */
  accepted: number;
  finished: number;
  submitLatency: Summary;
  submitToStored: Summary;
  storedToAnswer: Summary;
  burstMs: number;
  drainMs: number;
  idealDrainMs: number;
  heartbeatsPerSecond: number;
  idleCpuCores: number;
  cpuMsPerHeartbeat: number;
  oldestHeartbeatMs: number;
  sessionsEnded: number;
  watchEvents: number;
  /** Watch streams that broke (and were resumed, up to WATCH_RESUMES times). */
  watchResets: number;
  watchFailures: string[];
  watchLag: Summary;
  idleBefore: ProcWindow;
  burst: ProcWindow;
  idleAfter: ProcWindow;
  otherCpuCores: number;
  fleetRssBytes: number;
  outcomes: Record<string, number>;
  realAgentRssBytes?: number;
  profile?: string[];
  pg?: PgCost;
}

interface Context {
  registryHost: string;
  images: Record<string, FleetImage>;
  workDir: string;
  started: Set<Child>;
  deadline: number;
  /** The cluster of the points on PostgreSQL (set when postgres is among --stores). */
  postgres?: PostgresCluster;
}

/** What a point on PostgreSQL cost the database (pg-stats.ts). */
interface PgCost {
  /** Writes while idle with N agents (heartbeats only). */
  idle: PgWrites;
  /** Writes from the first submit to the end of the idle window after it (the lease renewal, 1 commit/s, included). */
  burst: PgWrites;
  /** CPU of the server's processes, in CPUs, over those windows. */
  idleCpuCores: number;
  burstCpuCores: number;
}

/** A point's directory and profile name: n300, or n300-postgres when several stores run. */
function pointName(agents: number, store: StoreKind): string {
  return OPTIONS.stores.length > 1 ? `n${agents}-${store}` : `n${agents}`;
}

async function runPoint(
  ctx: Context,
  agents: number,
  store: StoreKind,
  withRealAgent: boolean,
): Promise<PointResult> {
  const builds = Math.round(agents * OPTIONS.buildsPerAgent);
  const watchers = Math.min(builds, Math.round(agents * OPTIONS.watchersPerAgent));
  const dir = join(ctx.workDir, pointName(agents, store));
  await mkdir(dir, { recursive: true });
  const remaining = () => ctx.deadline - Date.now();
  log(
    `${agents} agents, ${builds} builds (${builds * 4} jobs), ${watchers} watchers, store ${store}`,
  );

  const profDir = OPTIONS.cpuProfDir
    ? join(OPTIONS.cpuProfDir, pointName(agents, store))
    : undefined;
  let storeUrl: string | undefined;
  if (store === 'postgres') {
    if (!ctx.postgres) throw new Error('no PostgreSQL cluster was started');
    storeUrl = await ctx.postgres.createDatabase();
  }
  const coordinator: CoordinatorProcess = await startCoordinator({
    dataDir: join(dir, 'data'),
    logFile: join(dir, 'coordinator.log'),
    ...(profDir && { cpuProfDir: profDir }),
    ...(storeUrl && { store: storeUrl }),
    extraArgs: OPTIONS.coordinatorArgs,
  });
  ctx.started.add(coordinator);
  // On PostgreSQL a lone coordinator still wins the election before it takes agents.
  if (storeUrl) await waitForLeader([coordinator], 30_000);
  const client = buildClient(coordinator.address);
  const fleetConfig: FleetConfig = {
    coordinators: [coordinator.address],
    agents,
    capacity: OPTIONS.capacity,
    jobMs: OPTIONS.jobMs,
    images: ctx.images,
    joinBatch: 50,
    joinTimeoutMs: Math.min(remaining(), 5 * 60_000),
    backoff: { baseMs: 500, maxMs: 5000 },
  };
  const { fleet, joinMs } = await startFleet(
    fleetConfig,
    join(dir, 'fleet.log'),
    fleetConfig.joinTimeoutMs + 10_000,
  );
  ctx.started.add(fleet);
  log(`  ${agents} agents joined in ${(joinMs / 1000).toFixed(1)} s`);
  try {
    // Idle with N agents: what heartbeats alone cost. One interval to settle first; on
    // PostgreSQL also the 10 s an idle backend may hold its statistics (the schema's, the joins').
    await sleep(Math.min(5000, OPTIONS.idleMs) + (storeUrl ? 10_000 : 0));
    const countersBefore = (
      await fleet.ask<{ counters: FleetCounters }>('counters', 'counters', 30_000)
    ).counters;
    const pgCpu = () => (ctx.postgres ? pgServerCpuSeconds(ctx.postgres.port) : NaN);
    const pgIdleBefore = storeUrl ? await readPgWrites(storeUrl) : undefined;
    const pgIdleCpuBefore = pgCpu();
    const idleSampler = new ProcSampler(coordinator.pid);
    await sleep(OPTIONS.idleMs);
    const idleBefore = idleSampler.stop();
    const pgIdleCpu = pgCpu() - pgIdleCpuBefore;
    const pgIdleAfter = storeUrl ? await readPgWrites(storeUrl) : undefined;
    const countersAfter = (
      await fleet.ask<{ counters: FleetCounters }>('counters', 'counters', 30_000)
    ).counters;
    const heartbeats = countersAfter.heartbeats - countersBefore.heartbeats;
    const heartbeatsPerSecond = heartbeats / idleBefore.seconds;

    // The burst.
    const context = await uploadContext(client);
    const submitClients = Array.from({ length: 4 }, () => buildClient(coordinator.address));
    const watchClients = Array.from({ length: Math.min(watchers, 50) }, () =>
      buildClient(coordinator.address),
    );
    const createdAt: number[] = [];
    const submitLatencies: number[] = [];
    const submitFailures: string[] = [];
    /** Submit sent -> build stored (createdAt), and stored -> answer read. */
    const submitToStored: number[] = [];
    const storedToAnswer: number[] = [];
    const watchLags: number[] = [];
    let watchEvents = 0;
    const watchFailures: string[] = [];
    const watching: Promise<void>[] = [];
    const watchAbort = new AbortController();
    // One signal for every watch stream: each adds a listener.
    setMaxListeners(watchers + 10, watchAbort.signal);
    let watchResets = 0;
    const watch = (buildId: string, index: number) => {
      const watchClient = watchClients[index % watchClients.length] as BuildClient;
      watching.push(
        (async () => {
          const since = Date.now();
          let after = 0n;
          // A dropped stream resumes where it stopped, as `braid build` does; bounded.
          for (let attempt = 0; attempt <= WATCH_RESUMES; attempt++) {
            try {
              for await (const { event } of watchClient.watchBuild(
                { buildId, afterSequence: after, follow: true },
                { signal: watchAbort.signal },
              )) {
                if (!event) continue;
                after = event.sequence;
                watchEvents++;
                // Events replayed from before the watch began are history, not delivery lag.
                const at = event.time ? timestampMs(event.time) : NaN;
                if (at >= since) watchLags.push(Date.now() - at);
              }
              return;
            } catch (err) {
              watchResets++;
              if (attempt === WATCH_RESUMES || watchAbort.signal.aborted) {
                watchFailures.push(`${buildId}: ${(err as Error).message}`);
                return;
              }
              await sleep(Math.min(5000, 250 * 2 ** attempt));
            }
          }
        })(),
      );
    };
    const spec = buildSpec(context, ctx.registryHost, OPTIONS.provenance);
    const boxBefore = boxCpuSeconds();
    const fleetCpuBefore = readProc(fleet.pid)?.cpuSeconds ?? 0;
    const selfCpuBefore = process.cpuUsage();
    const pgBurstBefore = storeUrl ? await readPgWrites(storeUrl) : undefined;
    const pgBurstCpuBefore = pgCpu();
    const burstSampler = new ProcSampler(coordinator.pid);
    const burstStart = Date.now();
    let next = 0;
    let oldestHeartbeat = 0;
    const heartbeatWatch = setInterval(() => {
      oldestHeartbeatMs(client)
        .then((age) => (oldestHeartbeat = Math.max(oldestHeartbeat, age)))
        .catch(() => undefined);
    }, 2500);
    const submitter = async (worker: number) => {
      const submitClient = submitClients[worker % submitClients.length] as BuildClient;
      for (;;) {
        const i = next++;
        if (i >= builds) return;
        const sent = Date.now();
        let build: Build | undefined;
        try {
          ({ build } = await submitClient.submitBuild(
            { spec: { ...spec, tags: [`${ctx.registryHost}/${REPOSITORY}:n${agents}-b${i}`] } },
            { timeoutMs: 120_000 },
          ));
        } catch (err) {
          // A refused submit is a figure of the run, not the end of it.
          submitFailures.push((err as Error).message);
          continue;
        }
        const answered = Date.now();
        submitLatencies.push(answered - sent);
        if (!build?.createdAt) throw new Error(`submit ${i}: no build in the answer`);
        const created = timestampMs(build.createdAt);
        createdAt.push(created);
        submitToStored.push(created - sent);
        storedToAnswer.push(answered - created);
        if (i < watchers) watch(build.id, i);
      }
    };
    await bounded(
      'the submit burst',
      remaining(),
      Promise.all(Array.from({ length: OPTIONS.concurrency }, (_, w) => submitter(w))),
    );
    const burstMs = Date.now() - burstStart;
    log(`  ${builds} builds submitted in ${(burstMs / 1000).toFixed(1)} s; draining`);

    // Drained: every accepted build in a final state, by the coordinator's own counters;
    // a coordinator that finishes nothing for DRAIN_STALL_MS is reported, not waited for.
    const accepted = createdAt.length;
    let outcomes: Record<string, number> = {};
    let done = 0;
    let progressAt = Date.now();
    for (;;) {
      try {
        outcomes = buildsFinished(await scrape(coordinator.probeUrl));
      } catch {
        // A coordinator too busy to answer /metrics: try again.
      }
      const now = Object.values(outcomes).reduce((a, b) => a + b, 0);
      if (now > done) progressAt = Date.now();
      done = now;
      if (done >= accepted) break;
      if (Date.now() - progressAt > DRAIN_STALL_MS) {
        log(
          `  no build finished for ${DRAIN_STALL_MS / 1000} s: ${done} of ${accepted} done; reporting`,
        );
        break;
      }
      if (remaining() < 0)
        throw new Error(
          `global deadline: ${done} of ${accepted} builds finished at ${agents} agents`,
        );
      // Once a second: a scrape of a 1,000-agent coordinator costs it tens of ms (Prometheus scrapes every 15-30 s).
      await sleep(1000);
    }
    const drainMs = Date.now() - burstStart;
    clearInterval(heartbeatWatch);
    const burst = burstSampler.stop();
    const pgBurstCpu = pgCpu() - pgBurstCpuBefore;
    const otherCpuCores =
      (boxCpuSeconds() -
        boxBefore -
        burst.cpuSeconds -
        ((readProc(fleet.pid)?.cpuSeconds ?? 0) - fleetCpuBefore) -
        (() => {
          const used = process.cpuUsage(selfCpuBefore);
          return (used.user + used.system) / 1e6;
        })()) /
      burst.seconds;
    // Watchers of builds that never finished are stopped, not waited for.
    if (done < accepted) watchAbort.abort();
    await Promise.race([Promise.allSettled(watching), sleep(60_000)]);
    watchAbort.abort();
    const metrics = await scrape(coordinator.probeUrl);
    const report = (await fleet.ask<{ report: FleetReport }>('report', 'report', 60_000)).report;
    const placement = placementLatencies(
      PLATFORMS.map((p) => ({
        queued: createdAt,
        slotsFree: [...(report.joinSlots[p] ?? []), ...(report.results[p] ?? [])],
        assigned: report.assigns[p] ?? [],
      })),
    );

    // Idle after the burst: what the coordinator keeps.
    await sleep(Math.min(5000, OPTIONS.idleMs));
    const afterSampler = new ProcSampler(coordinator.pid);
    await sleep(OPTIONS.idleMs);
    const idleAfter = afterSampler.stop();
    // Read after the idle window: by then every backend has flushed the burst's statistics.
    const pgBurstAfter = storeUrl ? await readPgWrites(storeUrl) : undefined;
    const pg: PgCost | undefined =
      pgIdleBefore && pgIdleAfter && pgBurstBefore && pgBurstAfter
        ? {
            idle: pgWritesBetween(pgIdleBefore, pgIdleAfter),
            burst: pgWritesBetween(pgBurstBefore, pgBurstAfter),
            idleCpuCores: pgIdleCpu / idleBefore.seconds,
            burstCpuCores: pgBurstCpu / burst.seconds,
          }
        : undefined;
    let realAgentRssBytes: number | undefined;
    if (withRealAgent) realAgentRssBytes = await realAgentRss(ctx, coordinator, client, dir);

    for (const c of [...submitClients, ...watchClients]) c.close();
    const jobsPerPlatform = builds;
    const slots = (agents / 4) * OPTIONS.capacity;
    return {
      store,
      agents,
      builds,
      jobs: builds * 4,
      watchers,
      joinMs,
      placement: summarize(placement.latenciesMs),
      placementQueueBound: placement.queueBound,
      placementSlotBound: placement.slotBound,
      placementUnexplained: placement.unexplained,
      coordinatorQueueWait10ms: queueWaitShare(metrics, '0.01').share,
      submitPerSecond: accepted / (burstMs / 1000),
      submitFailures,
      finished: done,
      accepted,
      submitLatency: summarize(submitLatencies),
      submitToStored: summarize(submitToStored),
      storedToAnswer: summarize(storedToAnswer),
      burstMs,
      drainMs,
      idealDrainMs: Math.ceil(jobsPerPlatform / slots) * OPTIONS.jobMs,
      heartbeatsPerSecond,
      idleCpuCores: idleBefore.cpuCores,
      cpuMsPerHeartbeat: heartbeats ? (idleBefore.cpuSeconds * 1000) / heartbeats : NaN,
      oldestHeartbeatMs: oldestHeartbeat,
      sessionsEnded: report.counters.sessionsEnded,
      watchEvents,
      watchResets,
      watchFailures,
      watchLag: summarize(watchLags),
      idleBefore,
      burst,
      idleAfter,
      otherCpuCores,
      fleetRssBytes: report.rssBytes,
      outcomes,
      ...(realAgentRssBytes !== undefined && { realAgentRssBytes }),
      ...(pg && { pg }),
    };
  } finally {
    client.close();
    await fleet.stop();
    ctx.started.delete(fleet);
    await coordinator.stop(30_000);
    ctx.started.delete(coordinator);
  }
}

/** A real `braid agent` on the local engine joins, idles 10 s; its RSS. */
async function realAgentRss(
  ctx: Context,
  coordinator: CoordinatorProcess,
  client: BuildClient,
  dir: string,
): Promise<number> {
  const name = 'real-idle';
  const agent = startRealAgent({
    coordinator: coordinator.address,
    name,
    cacheDir: join(dir, 'real-agent-cache'),
    logFile: join(dir, 'real-agent.log'),
  });
  ctx.started.add(agent);
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const { agents } = await client.listAgents({}, { timeoutMs: 10_000 });
      if (agents.some((a) => a.name === name)) break;
      if (Date.now() > deadline) {
        const text = await readFile(agent.logFile, 'utf8');
        throw new Error(`the real agent did not join within 60 s: ${text.slice(-2000)}`);
      }
      await sleep(250);
    }
    const sampler = new ProcSampler(agent.pid);
    await sleep(10_000);
    const window = sampler.stop();
    return window.lastRssBytes;
  } finally {
    await agent.stop(15_000);
    ctx.started.delete(agent);
  }
}

// --- the report ------------------------------------------------------------------------

const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');

function header(): void {
  console.log(
    `bench:scale — ${cpus().length} CPUs; fake jobs of ${OPTIONS.jobMs} ms, agent capacity ${OPTIONS.capacity}, ` +
      `${OPTIONS.concurrency} submits in flight, provenance ${OPTIONS.provenance ? 'min (default)' : 'off'}, ` +
      `heartbeats every 5 s (coordinator default)` +
      (OPTIONS.coordinatorArgs.length ? `; coordinator ${OPTIONS.coordinatorArgs.join(' ')}` : ''),
  );
}

/** One scale point's figures, printed as soon as it is done. */
function reportPoint(p: PointResult): void {
  const out: string[] = [];
  const line = (text = '') => out.push(text);
  {
    line();
    line(
      `${p.agents} agents on ${p.store === 'postgres' ? 'PostgreSQL' : 'SQLite'}, ${p.builds} builds x 4 platforms = ${p.jobs} jobs, ${p.watchers} watchers` +
        ` (agents joined in ${(p.joinMs / 1000).toFixed(1)} s)`,
    );
    line(
      `  outcomes           ${Object.entries(p.outcomes)
        .filter(([, n]) => n > 0)
        .map(([s, n]) => `${n} ${s}`)
        .join(', ')}`,
    );
    line(
      `  placement          p50 ${ms1(p.placement.p50)}, p99 ${ms1(p.placement.p99)}, max ${ms1(p.placement.max)}` +
        ` over ${p.placement.count} assignments (${p.placementQueueBound} waited for their submit, ${p.placementSlotBound} for a slot` +
        `${p.placementUnexplained ? `, ${p.placementUnexplained} UNEXPLAINED` : ''}); ` +
        `coordinator's histogram: ${(p.coordinatorQueueWait10ms * 100).toFixed(1)}% of queue waits <= 10 ms` +
        `   [target p99 <= 5 ms: ${verdict(p.placement.p99 <= 5)}]`,
    );
    line(
      `  submit             ${p.submitPerSecond.toFixed(0)} builds/s (${p.accepted} accepted` +
        `${p.submitFailures.length ? `, ${p.submitFailures.length} REFUSED: ${p.submitFailures[0]}` : ''} in ${(p.burstMs / 1000).toFixed(1)} s; ` +
        `latency p50 ${ms1(p.submitLatency.p50)}, p99 ${ms1(p.submitLatency.p99)}; ` +
        `sent -> stored p50 ${ms1(p.submitToStored.p50)}, stored -> answer read p50 ${ms1(p.storedToAnswer.p50)})` +
        `   [target >= 200/s: ${verdict(p.submitPerSecond >= 200)}]`,
    );
    line(
      `  drain              ${p.finished < p.accepted ? `NOT DRAINED: ${p.finished} of ${p.accepted} builds finished; ` : ''}` +
        `${(p.drainMs / 1000).toFixed(1)} s from the first submit to the last build's end ` +
        `(jobs alone need >= ${(p.idealDrainMs / 1000).toFixed(1)} s on ${(p.agents / 4) * OPTIONS.capacity} slots per platform)`,
    );
    line(
      `  heartbeats         ${p.heartbeatsPerSecond.toFixed(0)}/s; idle coordinator ${(p.idleCpuCores * 100).toFixed(1)}% of a CPU = ` +
        `${p.cpuMsPerHeartbeat.toFixed(2)} ms CPU per heartbeat; oldest heartbeat seen during the burst ` +
        `${(p.oldestHeartbeatMs / 1000).toFixed(1)} s (timeout 15 s); sessions lost ${p.sessionsEnded}`,
    );
    line(
      `  watchers           ${p.watchEvents} events, delivery lag p50 ${ms1(p.watchLag.p50)}, p99 ${ms1(p.watchLag.p99)}, max ${ms1(p.watchLag.max)}; ` +
        `${p.watchResets} streams broke and were resumed${p.watchFailures.length ? `, ${p.watchFailures.length} GAVE UP (${p.watchFailures[0]})` : ''}`,
    );
    line(
      `  coordinator        idle before: ${mb(p.idleBefore.lastRssBytes)}, ${(p.idleBefore.cpuCores * 100).toFixed(1)}% CPU` +
        `   [target <= 120 MB: ${verdict(p.idleBefore.lastRssBytes <= 120 * MB)}]`,
    );
    line(
      `                     burst: peak ${mb(p.burst.peakRssBytes)}, CPU mean ${(p.burst.cpuCores * 100).toFixed(0)}%, peak ${(p.burst.peakCpuCores * 100).toFixed(0)}% (1 s)` +
        `   [target <= 300 MB: ${verdict(p.burst.peakRssBytes <= 300 * MB)}]`,
    );
    line(
      `                     idle after: ${mb(p.idleAfter.lastRssBytes)}, ${(p.idleAfter.cpuCores * 100).toFixed(1)}% CPU` +
        `   [target <= 120 MB: ${verdict(p.idleAfter.lastRssBytes <= 120 * MB)}]`,
    );
    line(
      `  box                the fleet process ${mb(p.fleetRssBytes)}; other processes used ${(p.otherCpuCores * 100).toFixed(0)}% of a CPU during the burst (generator's clients, registry, others)`,
    );
    if (p.realAgentRssBytes !== undefined)
      line(
        `  real agent         idle RSS ${mb(p.realAgentRssBytes)}   [target <= 80 MB: ${verdict(p.realAgentRssBytes <= 80 * MB)}]`,
      );
    if (p.pg) {
      const { idle, burst } = p.pg;
      const perBuild = (n: number) => (p.finished ? (n / p.finished).toFixed(1) : 'n/a');
      line(
        `  postgres           idle: ${(idle.commits / idle.at).toFixed(1)} commits/s (${(idle.writeTransactions / idle.at).toFixed(1)} writing), ${((idle.inserted + idle.updated) / idle.at).toFixed(1)} rows written/s, ` +
          `${(idle.walBytes / idle.at / 1024).toFixed(1)} KB WAL/s, server ${(p.pg.idleCpuCores * 100).toFixed(1)}% CPU`,
      );
      line(
        `                     burst: ${burst.commits} commits (${burst.writeTransactions} writing), ${burst.inserted} rows inserted, ${burst.updated} updated, ${burst.deleted} deleted, ` +
          `${mb(burst.walBytes)} WAL = per build ${perBuild(burst.commits)} commits (${perBuild(burst.writeTransactions)} writing), ${perBuild(burst.inserted)} inserts, ` +
          `${perBuild(burst.updated)} updates, ${p.finished ? (burst.walBytes / p.finished / 1024).toFixed(0) : 'n/a'} KB WAL; ` +
          `server ${(p.pg.burstCpuCores * 100).toFixed(0)}% CPU (mean)`,
      );
    }
    if (p.profile) {
      line('  coordinator CPU profile over the whole run, self time:');
      for (const entry of p.profile) line(`    ${entry}`);
    }
  }
  console.log(out.join('\n'));
}

/** How each figure grows with agents and jobs. */
function reportGrowth(points: PointResult[]): void {
  const out: string[] = [];
  const line = (text = '') => out.push(text);
  line();
  line('growth');
  const several = OPTIONS.stores.length > 1;
  const header = [
    ...(several ? ['store'] : []),
    'agents',
    'jobs',
    'place p50',
    'place p99',
    'place max',
    'submits/s',
    'drain s',
    'hb CPU ms',
    'idle MB',
    'peak MB',
    'after MB',
    'peak CPU',
  ];
  const rows = points.map((p) => [
    ...(several ? [p.store] : []),
    String(p.agents),
    String(p.jobs),
    p.placement.p50.toFixed(1),
    p.placement.p99.toFixed(1),
    p.placement.max.toFixed(0),
    p.submitPerSecond.toFixed(0),
    `${p.finished < p.accepted ? '>' : ''}${(p.drainMs / 1000).toFixed(1)}`,
    p.cpuMsPerHeartbeat.toFixed(2),
    (p.idleBefore.lastRssBytes / MB).toFixed(0),
    (p.burst.peakRssBytes / MB).toFixed(0),
    (p.idleAfter.lastRssBytes / MB).toFixed(0),
    `${(p.burst.peakCpuCores * 100).toFixed(0)}%`,
  ]);
  for (const text of table(header, rows)) line(text);
  console.log(out.join('\n'));
}

/** A markdown table, cells right-aligned. */
function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => (r[i] as string).length)),
  );
  const row = (cells: string[]) =>
    `| ${cells.map((c, i) => c.padStart(widths[i] as number)).join(' | ')} |`;
  return [row(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(row)];
}

/** SQLite and PostgreSQL side by side at each scale point, measured in the same run. */
function reportStores(points: PointResult[]): void {
  const out: string[] = [
    '',
    'stores side by side (postgres / sqlite: above 1 is PostgreSQL slower or bigger)',
  ];
  const figures: [string, (p: PointResult) => number, number][] = [
    ['placement p50 ms', (p) => p.placement.p50, 1],
    ['placement p99 ms', (p) => p.placement.p99, 1],
    ['submits/s', (p) => p.submitPerSecond, 0],
    ['sent -> stored p50 ms', (p) => p.submitToStored.p50, 1],
    ['drain s', (p) => p.drainMs / 1000, 1],
    ['idle CPU ms per heartbeat', (p) => p.cpuMsPerHeartbeat, 2],
    ['coordinator CPU in burst %', (p) => p.burst.cpuCores * 100, 0],
    ['coordinator RSS peak MB', (p) => p.burst.peakRssBytes / MB, 0],
    ['coordinator RSS idle after MB', (p) => p.idleAfter.lastRssBytes / MB, 0],
    ['oldest heartbeat s', (p) => p.oldestHeartbeatMs / 1000, 1],
    ['sessions lost', (p) => p.sessionsEnded, 0],
  ];
  for (const agents of OPTIONS.agents) {
    const sqlite = points.find((p) => p.agents === agents && p.store === 'sqlite');
    const postgres = points.find((p) => p.agents === agents && p.store === 'postgres');
    if (!sqlite || !postgres) continue;
    out.push('', `${agents} agents, ${sqlite.builds} builds`);
    const rows = figures.map(([name, of, digits]) => {
      const a = of(sqlite);
      const b = of(postgres);
      return [name, a.toFixed(digits), b.toFixed(digits), a > 0 ? (b / a).toFixed(2) : 'n/a'];
    });
    out.push(...table(['figure', 'sqlite', 'postgres', 'ratio'], rows));
  }
  console.log(out.join('\n'));
}

// --- main ------------------------------------------------------------------------------

async function main(): Promise<void> {
  await requireCommand('docker-registry', 'docker-registry');
  await requireCommand('skopeo', 'skopeo');
  if (OPTIONS.realAgent) await requireEngine();
  const run = await startBenchRun({
    name: 'scale',
    deadlineMs: OPTIONS.deadlineMs,
    keep: OPTIONS.keep,
    postgres: OPTIONS.stores.includes('postgres'),
    log,
  });
  const { workDir, started, deadline, registry, postgres } = run;
  try {
    const images = await pushImages(registry.host);
    const ctx: Context = {
      registryHost: registry.host,
      images,
      workDir,
      started,
      deadline,
      ...(postgres && { postgres }),
    };
    const points: PointResult[] = [];
    header();
    for (const [i, agents] of OPTIONS.agents.entries()) {
      // With several stores, who goes first alternates from point to point.
      const stores = i % 2 === 0 ? OPTIONS.stores : [...OPTIONS.stores].reverse();
      for (const [j, store] of stores.entries()) {
        const point = await runPoint(ctx, agents, store, OPTIONS.realAgent && i === 0 && j === 0);
        if (OPTIONS.cpuProfDir) {
          const profDir = join(OPTIONS.cpuProfDir, pointName(agents, store));
          const files = (await readdir(profDir)).filter((f) => f.endsWith('.cpuprofile'));
          if (files[0]) point.profile = await hotFunctions(join(profDir, files[0]), 12);
        }
        points.push(point);
        reportPoint(point);
      }
    }
    reportGrowth(points);
    if (OPTIONS.stores.length > 1) reportStores(points);
    const failed = points.filter((p) => (p.outcomes.succeeded ?? 0) !== p.builds);
    // Every figure is printed either way; a run in which builds were lost exits 1.
    if (failed.length > 0) {
      log(
        `builds did not all succeed at ${failed.map((p) => `${p.agents} agents (${p.store})`).join(', ')}`,
      );
      process.exitCode = 1;
    }
  } finally {
    await run.cleanup();
  }
}

await main();
