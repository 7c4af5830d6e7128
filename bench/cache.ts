/**
 * npm run bench:cache — what a warm cache buys the second build of
 * examples/hello after a one-line source change, on a farm of two capable
 * agents whose engines keep SEPARATE BuildKit caches. Three ways to build 2:
 *
 *   warm       cache affinity on: build 2 goes back to the agent whose engine
 *              built build 1;
 *   cold       affinity off (`--no-cache-affinity`): build 2 goes to the
 *              other agent, whose engine never built the lineage, no cache;
 *   registry   the same cold agent, but build 1 ran with `--cache-to
 *              type=registry,ref=REPO:buildcache` and build 2 with
 *              `--cache-from REPO:buildcache`: BuildKit on the cold engine
 *              reuses the layers the other engine built, from the registry.
 *
 * Targets (issue 12): registry within 1.5x of warm, and cold at least 2x
 * registry.
 *
 * The farm: two private Docker engines (test/support/private-engine.ts:
 * dockerd with its own data root, exec root, socket and containerd), one
 * agent on each (build network none), a fresh coordinator per measurement,
 * a loopback docker-registry holding the multi-arch busybox base image. The
 * shared engine of this machine is not touched.
 *
 * One measurement:
 *   1. both private engines are reset: every image removed, build cache
 *      pruned (`POST /build/prune?all=1`) — nothing is warm;
 *   2. a fresh coordinator (`--no-cache-affinity` for cold and registry) and
 *      only agent `agent-b` are started; build 1 of a fresh copy of
 *      examples/hello runs on it (with --cache-to for registry);
 *   3. agent `agent-a` (the other engine: cold) joins;
 *   4. one line of one source file is changed; build 2 (with --cache-from
 *      for registry) is timed from the `braid build` process start to its
 *      exit.
 * Without affinity the least-loaded rule ties (both idle) and breaks the tie
 * by name, so build 2 goes to agent-a, the cold engine; each measurement
 * checks the placement (agent and placementReason in `braid status --output
 * json`) and, for registry, that the cold engine imported the cache, and
 * fails otherwise. Which private engine holds build 1 alternates from run to
 * run, and the order of the three ways rotates, so neither engine nor drift
 * favours one.
 *
 * Two edits are measured (BENCH_EDITS, default both):
 *   hello.sh     the script copied in the final stage: a warm engine (or the
 *                registry cache) reuses the compile stand-in (the RUN loop of
 *                WORK iterations);
 *   message.txt  the compile's input: the RUN reruns everywhere, a warm
 *                engine saves only the base image pull and unchanged layers.
 * BENCH_RUNS (default 5) runs per edit and way; BENCH_WORK (default 1000000)
 * is the example's WORK build arg. Medians are reported, with every raw run.
 * BENCH_DEADLINE_S (default 3600) bounds the whole bench: past it no round
 * (one run of every edit and way) starts, and the rounds done so far are
 * reported, so the cells stay even.
 *
 * Needs root (it starts dockerd). Everything started here is stopped by its
 * handle (pid), the private engines' directories are removed.
 */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pushBaseImage } from '../test/support/base-image.js';
import { braid } from '../test/support/braid-cli.js';
import { requireCommand } from '../test/support/components.js';
import {
  startTestAgent,
  startTestCoordinator,
  waitForAgents,
  type TestAgent,
  type TestCoordinator,
} from '../test/support/farm.js';
import { startPrivateEngine, type PrivateEngine } from '../test/support/private-engine.js';
import { startRegistry } from '../test/support/registry.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const WORK = Number(process.env.BENCH_WORK ?? 1_000_000);
const DEADLINE_MS = Number(process.env.BENCH_DEADLINE_S ?? 3600) * 1000;
const EDITS = (process.env.BENCH_EDITS ?? 'hello.sh,message.txt')
  .split(',')
  .map((e) => e.trim())
  .filter(Boolean);
interface Edit {
  where: string;
  line: (n: string) => string;
  /** A cache can reuse the RUN step (the targets apply). */
  reusable: boolean;
}
const KNOWN_EDITS: Record<string, Edit> = {
  'hello.sh': {
    where: 'the script copied after the RUN step',
    line: (n) => `echo "hello from $(uname -m) (edit ${n})"`,
    reusable: true,
  },
  'message.txt': {
    where: "the RUN step's input: it reruns on every engine",
    line: (n) => `braid example (edit ${n})`,
    reusable: false,
  },
};
const CONTEXT_DIR = fileURLToPath(new URL('../examples/hello', import.meta.url));
const PLATFORM = 'linux/amd64';

const BUILD_TIMEOUT_MS = 15 * 60_000;
const SHORT_TIMEOUT_MS = 60_000;

for (const [name, value] of [
  ['BENCH_RUNS', RUNS],
  ['BENCH_WORK', WORK],
  ['BENCH_DEADLINE_S', DEADLINE_MS],
] as const) {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
}
for (const edit of EDITS) {
  if (!KNOWN_EDITS[edit]) {
    throw new Error(`BENCH_EDITS: "${edit}" is not one of ${Object.keys(KNOWN_EDITS).join(', ')}`);
  }
}

const started = Date.now();
const loadAtStart = loadavg()
  .map((l) => l.toFixed(1))
  .join(' ');
const now = (): number => Number(process.hrtime.bigint()) / 1e6;
const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

// --- one measurement -----------------------------------------------------------------------

type Way = 'warm' | 'cold' | 'registry';
const WAYS: readonly Way[] = ['warm', 'cold', 'registry'];
const WAY_TITLES: Record<Way, string> = {
  warm: 'warm, affinity',
  cold: 'cold, no cache',
  registry: 'cold, registry',
};
/** Where build 2 must land, and why. */
const EXPECTED_PLACEMENT: Record<Way, [agent: string, reason: string]> = {
  warm: ['agent-b', 'cache-affinity'],
  cold: ['agent-a', 'least-loaded'],
  registry: ['agent-a', 'least-loaded'],
};

interface Measurement {
  edit: string;
  way: Way;
  run: number;
  /** The engine that held build 1 (warm). */
  warmEngine: string;
  build1Ms: number;
  /** `braid build` process start to exit. */
  build2Ms: number;
  /** The agent's own job duration (fetch + build + push). */
  job2Ms: number;
  agent: string;
  placementReason: string;
  /** Whether build 2's RUN step (the compile stand-in) was reused or ran. */
  runStep: 'cached' | 'ran';
}

interface Bench {
  registryHost: string;
  baseRef: string;
  engines: [PrivateEngine, PrivateEngine];
  workDir: string;
}

interface StatusJson {
  jobs: { agent: string | null; placementReason: string | null; durationMs: number | null }[];
}

async function timedBuild(
  coordinator: TestCoordinator,
  dir: string,
  tag: string,
  metadataFile: string,
  extraArgs: string[],
): Promise<{ ms: number; buildId: string; progress: string }> {
  const start = now();
  const result = await braid(
    [
      'build',
      dir,
      '-t',
      tag,
      '--platform',
      PLATFORM,
      '--build-arg',
      `BASE=${bench.baseRef}`,
      '--build-arg',
      `WORK=${WORK}`,
      '--progress',
      'plain',
      '--metadata-file',
      metadataFile,
      '--coordinator',
      coordinator.address,
      ...extraArgs,
    ],
    { timeoutMs: BUILD_TIMEOUT_MS },
  );
  const ms = now() - start;
  if (result.code !== 0) {
    throw new Error(
      `braid build ${tag} failed (exit ${result.code ?? 'killed'}): ${result.stderr.slice(-3000)}`,
    );
  }
  const metadata = JSON.parse(await readFile(metadataFile, 'utf8')) as Record<string, unknown>;
  // Plain progress goes to stderr.
  return { ms, buildId: String(metadata['braid.build.id']), progress: result.stderr };
}

async function placement(
  coordinator: TestCoordinator,
  buildId: string,
): Promise<StatusJson['jobs'][number]> {
  const status = await braid(
    ['status', buildId, '--output', 'json', '--coordinator', coordinator.address],
    { timeoutMs: SHORT_TIMEOUT_MS },
  );
  if (status.code !== 0) throw new Error(`braid status ${buildId} failed: ${status.stderr}`);
  const job = (JSON.parse(status.stdout) as StatusJson).jobs[0];
  if (!job) throw new Error(`braid status ${buildId}: no job`);
  return job;
}

/** The RUN step of build 2, as plain progress printed it: reused (`... CACHED`) or run. */
function runStepOf(progress: string): Measurement['runStep'] {
  const line = progress
    .split('\n')
    .find((l) => l.startsWith(`[${PLATFORM}] [build `) && / RUN /.test(l));
  if (line === undefined) throw new Error(`no RUN step in the progress of build 2:\n${progress}`);
  return line.endsWith(' CACHED') ? 'cached' : 'ran';
}

async function measure(edit: string, way: Way, run: number): Promise<Measurement> {
  const [e1, e2] = bench.engines;
  const [warm, cold] = run % 2 === 1 ? [e1, e2] : [e2, e1];
  await Promise.all([e1.reset(), e2.reset()]);
  const dir = await mkdtemp(join(bench.workDir, `ctx-${way}-r${run}-`));
  await cp(CONTEXT_DIR, dir, { recursive: true });
  const repo = `${bench.registryHost}/bench/hello-${edit.replace(/\W/g, '')}-${way}-r${run}`;
  const cacheRef = `${repo}:buildcache`;
  let coordinator: TestCoordinator | undefined;
  const agents: TestAgent[] = [];
  try {
    coordinator = await startTestCoordinator(
      '127.0.0.1:0',
      way === 'warm' ? [] : ['--no-cache-affinity'],
    );
    agents.push(await startTestAgent(coordinator.address, 'agent-b', ['--engine', warm.url]));
    await waitForAgents(coordinator.address, ['agent-b'], SHORT_TIMEOUT_MS);
    const first = await timedBuild(
      coordinator,
      dir,
      `${repo}:1`,
      join(bench.workDir, `${edit}-${way}-r${run}-1.json`),
      way === 'registry' ? ['--cache-to', `type=registry,ref=${cacheRef}`] : [],
    );

    agents.push(await startTestAgent(coordinator.address, 'agent-a', ['--engine', cold.url]));
    await waitForAgents(coordinator.address, ['agent-a', 'agent-b'], SHORT_TIMEOUT_MS);
    // The one-line change: the file's last line.
    const file = join(dir, edit);
    const lines = (await readFile(file, 'utf8')).trimEnd().split('\n');
    lines[lines.length - 1] = KNOWN_EDITS[edit]?.line(`${way}-r${run}`) ?? '';
    await writeFile(file, `${lines.join('\n')}\n`);

    const second = await timedBuild(
      coordinator,
      dir,
      `${repo}:2`,
      join(bench.workDir, `${edit}-${way}-r${run}-2.json`),
      way === 'registry' ? ['--cache-from', cacheRef] : [],
    );
    const job = await placement(coordinator, second.buildId);
    const expected = EXPECTED_PLACEMENT[way];
    if (job.agent !== expected[0] || job.placementReason !== expected[1]) {
      throw new Error(
        `${way}: build 2 went to ${job.agent} (${job.placementReason}), expected ${expected.join(' (')})`,
      );
    }
    if (
      way === 'registry' &&
      !second.progress.includes(`importing cache manifest from ${cacheRef}`)
    ) {
      throw new Error(`registry: build 2 did not import ${cacheRef}:\n${second.progress}`);
    }
    return {
      edit,
      way,
      run,
      warmEngine: warm.name,
      build1Ms: first.ms,
      build2Ms: second.ms,
      job2Ms: job.durationMs ?? NaN,
      agent: job.agent,
      placementReason: job.placementReason,
      runStep: runStepOf(second.progress),
    };
  } finally {
    for (const agent of agents) await agent.stop();
    await coordinator?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

// --- the report ------------------------------------------------------------------------------

function report(results: Measurement[], engineVersion: string, cut: string | undefined): void {
  const out: string[] = [];
  const line = (text = '') => out.push(text);
  const of = (edit: string, way: Way) => results.filter((r) => r.edit === edit && r.way === way);
  const med = (rs: Measurement[], f: (r: Measurement) => number) => median(rs.map(f));
  const cell = (ms: number) => secs(ms).padStart(16);
  const label = (text: string) => `  ${text.padEnd(40)}`;
  const runs = Math.max(0, ...results.map((r) => r.run));

  line(
    `bench:cache — 2nd build of examples/hello after a one-line edit, ${PLATFORM}, WORK=${WORK}; ` +
      `medians of ${runs} run(s) per cell${cut ? ` (${cut})` : ''}`,
  );
  line(
    `  two agents, each on its own private Docker engine ${engineVersion} (separate BuildKit caches), ` +
      `loopback docker-registry; ${cpus().length} CPUs; ${new Date().toISOString()}`,
  );
  line(
    `  load average at the start ${loadAtStart}, at the end ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')} (1, 5, 15 min; a shared box)`,
  );
  line(
    '  build 1 ran on agent-b (only agent connected); then agent-a (cold engine) joined; build 2 timed from CLI start to exit',
  );
  line();
  line(
    `${label('')}${WAYS.map((w) => WAY_TITLES[w].padStart(16)).join('')}   registry/warm  cold/registry  cold/warm`,
  );
  for (const edit of EDITS) {
    const cells = WAYS.map((w) => of(edit, w));
    if (cells.some((c) => c.length === 0)) continue;
    line(`edit ${edit} (${KNOWN_EDITS[edit]?.where})`);
    const row = (what: string, f: (r: Measurement) => number, ratios: boolean) => {
      const [warm, cold, registry] = cells.map((c) => med(c, f)) as [number, number, number];
      const r = ratios
        ? `   ${`${(registry / warm).toFixed(2)}x`.padStart(13)}  ${`${(cold / registry).toFixed(2)}x`.padStart(13)}  ${`${(cold / warm).toFixed(2)}x`.padStart(9)}`
        : '';
      line(`${label(what)}${cell(warm)}${cell(cold)}${cell(registry)}${r}`);
    };
    row('build 2 wall (median)', (r) => r.build2Ms, true);
    row('build 2 agent job duration (median)', (r) => r.job2Ms, true);
    row('build 1 wall, cold engine (control)', (r) => r.build1Ms, false);
    const runSteps = cells
      .map((c) => [...new Set(c.map((r) => r.runStep))].join('/').padStart(16))
      .join('');
    line(`${label("build 2's RUN step")}${runSteps}`);
    const spread = cells
      .map((c) => {
        const ms = c.map((r) => r.build2Ms);
        return `${(Math.min(...ms) / 1000).toFixed(2)}..${(Math.max(...ms) / 1000).toFixed(2)}`.padStart(
          16,
        );
      })
      .join('');
    line(`${label('build 2 wall min..max (s)')}${spread}`);
    const [warm, cold, registry] = cells.map((c) => med(c, (r) => r.build2Ms)) as [
      number,
      number,
      number,
    ];
    const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
    line(
      KNOWN_EDITS[edit]?.reusable
        ? `  targets: registry within 1.5x of warm: ${(registry / warm).toFixed(2)}x, ${verdict(registry <= 1.5 * warm)}; ` +
            `cold at least 2x registry: ${(cold / registry).toFixed(2)}x, ${verdict(cold >= 2 * registry)}`
        : '  targets: not applicable (the edit changes what the RUN step reads: no cache can reuse it)',
    );
    line();
  }
  line('raw runs (seconds):');
  for (const r of results) {
    line(
      `  ${r.edit.padEnd(12)} ${r.way.padEnd(8)} run ${r.run}: build 1 ${(r.build1Ms / 1000).toFixed(2)} on ${r.warmEngine}, ` +
        `build 2 ${(r.build2Ms / 1000).toFixed(2)} (job ${(r.job2Ms / 1000).toFixed(2)}, RUN ${r.runStep}) on ${r.agent} (${r.placementReason})`,
    );
  }
  console.log(out.join('\n'));
}

// --- main ------------------------------------------------------------------------------------

let bench: Bench;

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new Error('bench:cache starts private Docker engines (dockerd) and must run as root');
  }
  await requireCommand('docker-registry', 'docker-registry');
  const workDir = await mkdtemp(join(tmpdir(), 'braid-bench-cache-'));
  const engines: PrivateEngine[] = [];
  const registry = await startRegistry();
  let cleaned: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaned ??= (async () => {
      for (const engine of engines) {
        await engine
          .stop()
          .catch((err: unknown) =>
            console.warn(`warning: stopping engine ${engine.name}: ${(err as Error).message}`),
          );
      }
      await registry.stop();
      await rm(workDir, { recursive: true, force: true });
    })());
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.error(`${signal}: stopping the farm, the engines and the registry`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  try {
    engines.push(await startPrivateEngine('e1'));
    engines.push(await startPrivateEngine('e2'));
    await pushBaseImage(registry.host, 'braid/busybox', 'latest');
    bench = {
      registryHost: registry.host,
      baseRef: `${registry.host}/braid/busybox:latest`,
      engines: engines as [PrivateEngine, PrivateEngine],
      workDir,
    };
    const results: Measurement[] = [];
    let cut: string | undefined;
    rounds: for (let run = 1; run <= RUNS; run++) {
      // Every edit and way once per round, so a deadline leaves the cells even.
      if (Date.now() - started > DEADLINE_MS) {
        cut = `BENCH_DEADLINE_S (${DEADLINE_MS / 1000} s) reached after ${run - 1} run(s)`;
        break rounds;
      }
      for (const edit of EDITS) {
        // Rotate which way goes first, so drift on a shared machine hits all alike.
        const order = WAYS.map((_, i) => WAYS[(i + run - 1) % WAYS.length] as Way);
        for (const way of order) {
          const m = await measure(edit, way, run);
          results.push(m);
          console.error(
            `${edit} ${way} run ${run}: build 2 ${secs(m.build2Ms)} on ${m.agent} ` +
              `(${m.placementReason}, RUN ${m.runStep}); build 1 ${secs(m.build1Ms)} on ${m.warmEngine}`,
          );
        }
      }
    }
    report(results, await bench.engines[0].version(), cut);
  } finally {
    await cleanup();
  }
}

await main();
