/**
 * npm run bench:cache — what cache-aware scheduling buys: the second build
 * of examples/hello after a one-line source change, on a farm of two capable
 * agents whose engines keep SEPARATE BuildKit caches, with cache affinity on
 * and off.
 *
 * The farm: two private Docker engines started here (dockerd with its own
 * --data-root, --exec-root, --pidfile and unix socket, --bridge=none
 * --iptables=false --ip-forward=false, its own supervised containerd), one
 * agent on each (build network none), a fresh coordinator per measurement,
 * a loopback docker-registry holding the multi-arch busybox base image. The
 * shared engine of this machine is not touched.
 *
 * One measurement (affinity on or off):
 *   1. both private engines are reset: every image removed, build cache
 *      pruned (`POST /build/prune?all=1`) — nothing is warm;
 *   2. a fresh coordinator (`--no-cache-affinity` for off) and only agent
 *      `agent-b` are started; build 1 of a fresh copy of examples/hello runs
 *      on it (its engine is now warm for the lineage);
 *   3. agent `agent-a` (the other engine: cold) joins;
 *   4. one line of one source file is changed; build 2 is timed from the
 *      `braid build` process start to its exit.
 * With affinity on, build 2 goes to agent-b (cache affinity). With it off,
 * the least-loaded rule ties (both idle) and breaks the tie by name, so it
 * goes to agent-a: the cold engine. That is the deterministic "off" path
 * measured here; each measurement checks the placement (agent and
 * placementReason in `braid status --output json`) and fails otherwise.
 * Which private engine holds build 1 alternates from run to run, and so
 * does the order of on and off, so neither engine nor drift favours a side.
 *
 * Two edits are measured (BENCH_EDITS, default both):
 *   hello.sh     the script copied in the final stage: a warm engine reuses
 *                the compile stand-in (the RUN loop of WORK iterations);
 *   message.txt  the compile's input: the RUN reruns everywhere, a warm
 *                engine saves only the base image pull and unchanged layers.
 * BENCH_RUNS (default 5) runs per edit and mode; BENCH_WORK (default
 * 1000000) is the example's WORK build arg. Medians are reported, with every
 * raw run. BENCH_DEADLINE_S (default 3600) bounds the whole bench.
 *
 * Needs root (it starts dockerd). Everything started here is stopped by its
 * handle (pid), the private engines' directories are removed.
 */
import { request } from 'node:http';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
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
import { startProcess, type Started } from '../test/support/process.js';
import { startRegistry } from '../test/support/registry.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const WORK = Number(process.env.BENCH_WORK ?? 1_000_000);
const DEADLINE_MS = Number(process.env.BENCH_DEADLINE_S ?? 3600) * 1000;
const EDITS = (process.env.BENCH_EDITS ?? 'hello.sh,message.txt')
  .split(',')
  .map((e) => e.trim())
  .filter(Boolean);
const KNOWN_EDITS: Record<string, { where: string; line: (n: string) => string }> = {
  'hello.sh': {
    where: 'the script copied after the RUN step',
    line: (n) => `echo "hello from $(uname -m) (edit ${n})"`,
  },
  'message.txt': {
    where: "the RUN step's input: it reruns on every engine",
    line: (n) => `braid example (edit ${n})`,
  },
};
const CONTEXT_DIR = fileURLToPath(new URL('../examples/hello', import.meta.url));
const PLATFORM = 'linux/amd64';

const BUILD_TIMEOUT_MS = 15 * 60_000;
const SHORT_TIMEOUT_MS = 60_000;
const ENGINE_START_MS = 60_000;

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
const now = (): number => Number(process.hrtime.bigint()) / 1e6;
const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

// --- a private Docker engine -------------------------------------------------------------

class PrivateEngine {
  private process: Started | undefined;
  readonly socket: string;

  constructor(
    readonly name: string,
    private readonly dir: string,
  ) {
    this.socket = join(dir, 'docker.sock');
  }

  get url(): string {
    return `unix://${this.socket}`;
  }

  async start(): Promise<void> {
    // An empty daemon.json keeps the host's /etc/docker/daemon.json (if any) out of it.
    await writeFile(join(this.dir, 'daemon.json'), '{}\n');
    this.process = startProcess('dockerd', [
      '--config-file',
      join(this.dir, 'daemon.json'),
      '--data-root',
      join(this.dir, 'data'),
      '--exec-root',
      join(this.dir, 'exec'),
      '--pidfile',
      join(this.dir, 'docker.pid'),
      '-H',
      this.url,
      '--bridge=none',
      '--iptables=false',
      '--ip-forward=false',
      '--log-level',
      'warn',
    ]);
    const deadline = Date.now() + ENGINE_START_MS;
    for (;;) {
      const ping = await this.call('GET', '/_ping', 2000).catch(() => undefined);
      if (ping?.status === 200) return;
      const exited = await Promise.race([
        this.process.exited.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 250)),
      ]);
      if (exited || Date.now() > deadline) {
        throw new Error(
          `private engine ${this.name} did not answer on ${this.socket} within ${ENGINE_START_MS} ms: ` +
            this.process.stderr().slice(-2000),
        );
      }
    }
  }

  call(method: string, path: string, timeoutMs: number): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = request(
        { socketPath: this.socket, method, path, signal: AbortSignal.timeout(timeoutMs) },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          res.on('error', reject);
        },
      );
      req.on('error', (err) =>
        reject(new Error(`engine ${this.name} ${method} ${path}: ${err.message}`)),
      );
      req.end();
    });
  }

  /** Nothing warm: every image removed, all build cache pruned. */
  async reset(): Promise<void> {
    const list = await this.call('GET', '/images/json?all=1', SHORT_TIMEOUT_MS);
    for (const image of JSON.parse(list.body) as { Id: string }[]) {
      const res = await this.call(
        'DELETE',
        `/images/${encodeURIComponent(image.Id)}?force=1`,
        SHORT_TIMEOUT_MS,
      );
      if (res.status !== 200 && res.status !== 404) {
        throw new Error(
          `engine ${this.name}: removing ${image.Id}: HTTP ${res.status} ${res.body}`,
        );
      }
    }
    const pruned = await this.call('POST', '/build/prune?all=1', SHORT_TIMEOUT_MS);
    if (pruned.status !== 200) {
      throw new Error(`engine ${this.name}: build prune: HTTP ${pruned.status} ${pruned.body}`);
    }
  }

  async version(): Promise<string> {
    const res = await this.call('GET', '/version', SHORT_TIMEOUT_MS);
    return (JSON.parse(res.body) as { Version?: string }).Version ?? '?';
  }

  async stop(): Promise<void> {
    if (this.process) await this.process.stop('SIGTERM', 30_000);
    // dockerd unmounts its layers on the way out; a mount left behind keeps the dir.
    const mounts = await readFile('/proc/mounts', 'utf8').catch(() => '');
    if (mounts.includes(this.dir)) {
      console.warn(`warning: mounts left under ${this.dir}; not removing it`);
      return;
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

// --- one measurement -----------------------------------------------------------------------

type Mode = 'on' | 'off';

interface Measurement {
  edit: string;
  mode: Mode;
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
): Promise<{ ms: number; buildId: string }> {
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
  return { ms, buildId: String(metadata['braid.build.id']) };
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

async function measure(edit: string, mode: Mode, run: number): Promise<Measurement> {
  if (Date.now() - started > DEADLINE_MS) {
    throw new Error(
      `BENCH_DEADLINE_S (${DEADLINE_MS / 1000} s) reached before ${edit} ${mode} run ${run}`,
    );
  }
  const [e1, e2] = bench.engines;
  const [warm, cold] = run % 2 === 1 ? [e1, e2] : [e2, e1];
  await Promise.all([e1.reset(), e2.reset()]);
  const dir = await mkdtemp(join(bench.workDir, `ctx-${mode}-r${run}-`));
  await cp(CONTEXT_DIR, dir, { recursive: true });
  const repo = `${bench.registryHost}/bench/hello-${edit.replace(/\W/g, '')}-${mode}-r${run}`;
  let coordinator: TestCoordinator | undefined;
  const agents: TestAgent[] = [];
  try {
    coordinator = await startTestCoordinator(
      '127.0.0.1:0',
      mode === 'off' ? ['--no-cache-affinity'] : [],
    );
    agents.push(await startTestAgent(coordinator.address, 'agent-b', ['--engine', warm.url]));
    await waitForAgents(coordinator.address, ['agent-b'], SHORT_TIMEOUT_MS);
    const first = await timedBuild(
      coordinator,
      dir,
      `${repo}:1`,
      join(bench.workDir, `${edit}-${mode}-r${run}-1.json`),
    );

    agents.push(await startTestAgent(coordinator.address, 'agent-a', ['--engine', cold.url]));
    await waitForAgents(coordinator.address, ['agent-a', 'agent-b'], SHORT_TIMEOUT_MS);
    // The one-line change: the file's last line.
    const file = join(dir, edit);
    const lines = (await readFile(file, 'utf8')).trimEnd().split('\n');
    lines[lines.length - 1] = KNOWN_EDITS[edit]?.line(`${mode}-r${run}`) ?? '';
    await writeFile(file, `${lines.join('\n')}\n`);

    const second = await timedBuild(
      coordinator,
      dir,
      `${repo}:2`,
      join(bench.workDir, `${edit}-${mode}-r${run}-2.json`),
    );
    const job = await placement(coordinator, second.buildId);
    const expected = mode === 'on' ? ['agent-b', 'cache-affinity'] : ['agent-a', 'least-loaded'];
    if (job.agent !== expected[0] || job.placementReason !== expected[1]) {
      throw new Error(
        `affinity ${mode}: build 2 went to ${job.agent} (${job.placementReason}), expected ${expected.join(' (')})`,
      );
    }
    return {
      edit,
      mode,
      run,
      warmEngine: warm.name,
      build1Ms: first.ms,
      build2Ms: second.ms,
      job2Ms: job.durationMs ?? NaN,
      agent: job.agent,
      placementReason: job.placementReason,
    };
  } finally {
    for (const agent of agents) await agent.stop();
    await coordinator?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

// --- the report ------------------------------------------------------------------------------

function report(results: Measurement[], engineVersion: string): void {
  const out: string[] = [];
  const line = (text = '') => out.push(text);
  const of = (edit: string, mode: Mode) =>
    results.filter((r) => r.edit === edit && r.mode === mode);
  const med = (rs: Measurement[], f: (r: Measurement) => number) => median(rs.map(f));
  const s8 = (ms: number) => secs(ms).padStart(9);
  const label = (text: string) => `  ${text.padEnd(40)}`;

  line(
    `bench:cache — 2nd build of examples/hello after a one-line edit, ${PLATFORM}, WORK=${WORK}; ` +
      `medians of ${RUNS} runs per cell`,
  );
  line(
    `  two agents, each on its own private Docker engine ${engineVersion} (separate BuildKit caches), ` +
      `loopback docker-registry; ${cpus().length} CPUs`,
  );
  line(
    '  build 1 ran on agent-b (only agent connected); then agent-a (cold engine) joined; build 2 timed from CLI start to exit',
  );
  line();
  line(`${label('')}${'affinity on'.padStart(13)}${'affinity off'.padStart(14)}   off/on`);
  for (const edit of EDITS) {
    const on = of(edit, 'on');
    const off = of(edit, 'off');
    line(`edit ${edit} (${KNOWN_EDITS[edit]?.where})`);
    const row = (what: string, f: (r: Measurement) => number) => {
      const a = med(on, f);
      const b = med(off, f);
      line(`${label(what)}${s8(a)}    ${s8(b)}    ${(b / a).toFixed(2)}x`);
    };
    row('build 2 wall (median)', (r) => r.build2Ms);
    row('build 2 agent job duration (median)', (r) => r.job2Ms);
    row('build 1 wall, cold (control: same work)', (r) => r.build1Ms);
    const where = (rs: Measurement[]) =>
      [...new Set(rs.map((r) => `${r.agent} (${r.placementReason})`))].join(', ');
    line(`${label('build 2 placed on')}  on: ${where(on)}; off: ${where(off)}`);
    line(
      `${label('build 2 wall min..max')}  on: ${secs(Math.min(...on.map((r) => r.build2Ms)))}..${secs(Math.max(...on.map((r) => r.build2Ms)))}` +
        `; off: ${secs(Math.min(...off.map((r) => r.build2Ms)))}..${secs(Math.max(...off.map((r) => r.build2Ms)))}`,
    );
    line();
  }
  line('raw runs (seconds):');
  for (const r of results) {
    line(
      `  ${r.edit.padEnd(12)} affinity ${r.mode.padEnd(3)} run ${r.run}: build 1 ${(r.build1Ms / 1000).toFixed(2)} on ${r.warmEngine}, ` +
        `build 2 ${(r.build2Ms / 1000).toFixed(2)} (job ${(r.job2Ms / 1000).toFixed(2)}) on ${r.agent} (${r.placementReason})`,
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
  await requireCommand('dockerd', 'docker.io');
  await requireCommand('docker-registry', 'docker-registry');
  const workDir = await mkdtemp(join(tmpdir(), 'braid-bench-cache-'));
  const engines: [PrivateEngine, PrivateEngine] = [
    new PrivateEngine('engine-1', await mkdtemp(join(tmpdir(), 'braid-bench-engine1-'))),
    new PrivateEngine('engine-2', await mkdtemp(join(tmpdir(), 'braid-bench-engine2-'))),
  ];
  const registry = await startRegistry();
  let cleaned: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaned ??= (async () => {
      for (const engine of engines) {
        await engine
          .stop()
          .catch((err: unknown) =>
            console.warn(`warning: stopping ${engine.name}: ${(err as Error).message}`),
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
    for (const engine of engines) await engine.start();
    await pushBaseImage(registry.host, 'braid/busybox', 'latest');
    bench = {
      registryHost: registry.host,
      baseRef: `${registry.host}/braid/busybox:latest`,
      engines,
      workDir,
    };
    const results: Measurement[] = [];
    for (const edit of EDITS) {
      for (let run = 1; run <= RUNS; run++) {
        // Alternate which mode goes first, so drift on a shared machine hits both alike.
        const order: Mode[] = run % 2 === 1 ? ['on', 'off'] : ['off', 'on'];
        for (const mode of order) {
          const m = await measure(edit, mode, run);
          results.push(m);
          console.error(
            `${edit} affinity ${mode} run ${run}: build 2 ${secs(m.build2Ms)} on ${m.agent} ` +
              `(${m.placementReason}); build 1 ${secs(m.build1Ms)} on ${m.warmEngine}`,
          );
        }
      }
    }
    report(results, await engines[0].version());
  } finally {
    await cleanup();
  }
}

await main();
