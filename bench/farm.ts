/**
 * npm run bench:farm — build examples/hello for linux/amd64, linux/arm64,
 * linux/ppc64le and linux/s390x on a one-box farm (`braid serve`: a
 * coordinator and a local agent on the local engine, native amd64 and QEMU
 * for the rest), and the same work done the seeds' way, in the same run:
 *
 *   braid   `braid build --no-cache` (submit -> index pushed). Wall is the
 *           time of the `braid build` process; each platform's time is the
 *           agent-measured job duration (--metadata-file platforms[].durationMs:
 *           fetch context + build + push by digest). Orchestration overhead =
 *           wall - slowest platform, as a ratio of the slowest platform
 *           (target <= 10%). Where it goes is read from `braid status --output
 *           json` (coordinator timestamps).
 *   seeds   four sequential BuildKit builds through the Engine API (Debian's
 *           docker CLI has no buildx, and the classic builder mixes platforms
 *           up on one engine: design.md), `POST /build?version=2&platform=..&
 *           nocache=1` with a tar of the context, each followed by `docker
 *           push REPO:ARCH-TAG`, then `docker manifest create --insecure` +
 *           `docker manifest push --insecure` (target: braid faster).
 *
 * Same registry, same base image (BASE build arg), no cache on either side,
 * fresh tags every run, alternating which tool goes first. Medians of
 * BENCH_RUNS (default 5) runs. BENCH_WORK (default 200000) is the example's
 * WORK build arg (iterations of a shell loop in the RUN step: the stand-in
 * for a compile). BENCH_CAPACITY (default 4) is the local agent's job
 * capacity: 4 runs the four platforms at once, as four hosts would; the
 * agent's own default (2) queues two of them behind the others.
 *
 * This box may be shared: CPU time is attributed per process (this script's
 * children, dockerd's children, everyone else). Before each measurement the
 * bench waits (up to BENCH_QUIET_WAIT_S, default 120) for the box to be quiet;
 * a run pair during which other processes used > 1 CPU-s is marked, repeated
 * (at most BENCH_RUNS extra pairs) and left out of the medians.
 *
 * BENCH_COMPARE=provenance: braid against itself instead of the seeds, the
 * same build with `--provenance=false` and with the default (`mode=min`: the
 * agent records the build's facts, the coordinator writes one SLSA statement
 * per platform and pushes it as an attestation manifest beside the image at
 * the stitch), alternating which goes first; medians of BENCH_RUNS pairs and
 * the wall-time ratio (target: provenance costs <= 2% of wall time). Every
 * min run is checked to have one attestation per platform in its index, and
 * every off run none.
 *
 * Everything started here is stopped by its handle; images built or pulled
 * through the engine for the bench's registry are removed by reference.
 */
import { request } from 'node:http';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import dockerignore from '@balena/dockerignore';
import tar from 'tar-stream';
import { pushBaseImage } from '../test/support/base-image.js';
import { BRAID_BIN, braid, cleanEnv } from '../test/support/braid-cli.js';
import {
  DOCKER_SOCKET,
  requireCommand,
  requireEngine,
  requireQemu,
} from '../test/support/components.js';
import { waitForAgents } from '../test/support/farm.js';
import { run, startProcess } from '../test/support/process.js';
import { startRegistry } from '../test/support/registry.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const WORK = Number(process.env.BENCH_WORK ?? 200_000);
const CAPACITY = Number(process.env.BENCH_CAPACITY ?? 4);
/** '' (braid against the seeds) or 'provenance' (braid without and with provenance). */
const COMPARE = process.env.BENCH_COMPARE ?? '';
/** Before each measurement: wait up to this long for the box to be quiet. */
const QUIET_MAX_WAIT_MS = Number(process.env.BENCH_QUIET_WAIT_S ?? 120) * 1000;
/** Quiet: other processes and the engine used less than this over 2 s. */
const QUIET_CPU_SECONDS = 0.2;
/** A run during which other processes used more CPU than this is marked. */
const DISTURBED_CPU_SECONDS = 1;
const PLATFORMS = ['linux/amd64', 'linux/arm64', 'linux/ppc64le', 'linux/s390x'] as const;
const QEMU_HANDLERS = ['qemu-aarch64', 'qemu-ppc64le', 'qemu-s390x'];
const CONTEXT_DIR = fileURLToPath(new URL('../examples/hello', import.meta.url));

// Every child and every engine call has a deadline.
const BUILD_TIMEOUT_MS = 20 * 60_000;
const PUSH_TIMEOUT_MS = 5 * 60_000;
const SHORT_TIMEOUT_MS = 2 * 60_000;

type Platform = (typeof PLATFORMS)[number];
const arch = (p: string): string => p.split('/')[1] ?? p;

for (const [name, value] of [
  ['BENCH_RUNS', RUNS],
  ['BENCH_WORK', WORK],
  ['BENCH_CAPACITY', CAPACITY],
] as const) {
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
}
if (!(QUIET_MAX_WAIT_MS >= 0)) throw new Error('BENCH_QUIET_WAIT_S must be a number >= 0');
if (COMPARE !== '' && COMPARE !== 'provenance')
  throw new Error(`BENCH_COMPARE must be "provenance" or unset, not "${COMPARE}"`);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

const now = (): number => Number(process.hrtime.bigint()) / 1e6;
const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
const msText = (ms: number): string => `${Math.round(ms)} ms`;
const pct = (ratio: number): string => `${(ratio * 100).toFixed(1)}%`;

/** CPU seconds by who spent them. */
interface Cpu {
  /** This script, and everything it started: braid, docker CLI, registry. */
  bench: number;
  /** dockerd and its children: BuildKit, runc, the RUN steps under QEMU. */
  engine: number;
  /** Everything else on the box (another job here skews both tools). */
  other: number;
}

const cpuMinus = (a: Cpu, b: Cpu): Cpu => ({
  bench: a.bench - b.bench,
  engine: a.engine - b.engine,
  other: a.other - b.other,
});

/**
 * CPU time per process from /proc/PID/stat, sampled every 250 ms and
 * attributed by ancestry: descendants of this process are the bench's,
 * descendants of dockerd the engine's, the rest another's. A process's
 * last <250 ms before it exits is not seen.
 */
class CpuAccounting {
  private readonly seen = new Map<string, number>();
  private readonly total: Cpu = { bench: 0, engine: 0, other: 0 };
  private readonly timer: NodeJS.Timeout;
  private static readonly TICKS_PER_SECOND = 100; // USER_HZ

  constructor() {
    this.sample(false);
    this.timer = setInterval(() => this.sample(true), 250);
  }

  /** Cumulative CPU seconds so far. */
  now(): Cpu {
    this.sample(true);
    return { ...this.total };
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private sample(count: boolean): void {
    const procs = new Map<number, { ppid: number; comm: string; key: string; ticks: number }>();
    let pids: string[];
    try {
      pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
    } catch {
      return;
    }
    for (const pid of pids) {
      let text: string;
      try {
        text = readFileSync(`/proc/${pid}/stat`, 'utf8');
      } catch {
        continue; // exited meanwhile
      }
      const close = text.lastIndexOf(')');
      const comm = text.slice(text.indexOf('(') + 1, close);
      // Fields after the comm start at field 3 (state): ppid 4, utime 14, stime 15, starttime 22.
      const f = text.slice(close + 2).split(' ');
      procs.set(Number(pid), {
        ppid: Number(f[1]),
        comm,
        key: `${pid}:${f[19]}`,
        ticks: Number(f[11]) + Number(f[12]),
      });
    }
    const owner = new Map<number, keyof Cpu>();
    const ownerOf = (pid: number): keyof Cpu => {
      const known = owner.get(pid);
      if (known) return known;
      const proc = procs.get(pid);
      let who: keyof Cpu;
      if (pid === process.pid) who = 'bench';
      else if (!proc || pid <= 2) who = 'other';
      else if (proc.comm === 'dockerd') who = 'engine';
      else who = ownerOf(proc.ppid);
      owner.set(pid, who);
      return who;
    };
    for (const [pid, proc] of procs) {
      const before = this.seen.get(proc.key);
      this.seen.set(proc.key, proc.ticks);
      if (count)
        this.total[ownerOf(pid)] += (proc.ticks - (before ?? 0)) / CpuAccounting.TICKS_PER_SECOND;
    }
  }
}

/**
 * Waits (bounded) until neither other processes nor the engine are busy, so
 * a run does not start on top of someone else's work. Returns the wait.
 */
async function waitQuiet(cpu: CpuAccounting): Promise<{ waitedMs: number; quiet: boolean }> {
  const start = now();
  for (;;) {
    const before = cpu.now();
    await new Promise((r) => setTimeout(r, 2000));
    const used = cpuMinus(cpu.now(), before);
    if (used.other + used.engine < QUIET_CPU_SECONDS)
      return { waitedMs: now() - start, quiet: true };
    if (now() - start > QUIET_MAX_WAIT_MS) return { waitedMs: now() - start, quiet: false };
  }
}

async function mustRun(
  label: string,
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<{ stdout: string; ms: number }> {
  const start = now();
  const result = await run(command, args, { env, timeoutMs });
  const ms = now() - start;
  if (result.code !== 0) {
    throw new Error(
      `${label} failed (exit ${result.code ?? 'killed'} after ${msText(ms)}): ${command} ${args.join(' ')}\n` +
        `${result.stderr.slice(-4000)}${result.stdout.slice(-2000)}`,
    );
  }
  return { stdout: result.stdout, ms };
}

// --- the Engine API over the unix socket -----------------------------------------

interface EngineResponse {
  status: number;
  body: string;
}

function engine(
  method: string,
  path: string,
  timeoutMs: number,
  body?: Buffer,
  onLine?: (line: string) => void,
): Promise<EngineResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath: DOCKER_SOCKET,
        method,
        path,
        headers: body ? { 'Content-Type': 'application/x-tar', 'Content-Length': body.length } : {},
        signal: AbortSignal.timeout(timeoutMs),
      },
      (res) => {
        let text = '';
        let pending = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          if (!onLine) {
            text += chunk;
            return;
          }
          pending += chunk;
          let nl: number;
          while ((nl = pending.indexOf('\n')) >= 0) {
            const line = pending.slice(0, nl).trim();
            pending = pending.slice(nl + 1);
            if (line) onLine(line);
          }
        });
        res.on('end', () => {
          if (onLine && pending.trim()) onLine(pending.trim());
          resolve({ status: res.statusCode ?? 0, body: text });
        });
        res.on('error', reject);
      },
    );
    req.on('error', (err) => reject(new Error(`engine ${method} ${path}: ${err.message}`)));
    req.end(body);
  });
}

/** The context as the docker CLI sends it: the tree minus .dockerignore matches, real modes and times. */
async function contextTar(dir: string): Promise<Buffer> {
  let ignore = dockerignore.default({ ignorecase: false });
  try {
    ignore = ignore.add(await readFile(join(dir, '.dockerignore'), 'utf8'));
  } catch {
    // no .dockerignore
  }
  const files: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const entry of (await readdir(d, { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : 1,
    )) {
      const full = join(d, entry.name);
      const rel = relative(dir, full);
      if (ignore.ignores(rel) && rel !== 'Dockerfile' && rel !== '.dockerignore') continue;
      if (entry.isDirectory()) await walk(full);
      else if (entry.isFile()) files.push(rel);
    }
  };
  await walk(dir);
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => chunks.push(c as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  for (const rel of files) {
    const full = join(dir, rel);
    const [bytes, info] = await Promise.all([readFile(full), stat(full)]);
    await new Promise<void>((resolve, reject) =>
      pack.entry({ name: rel, mode: info.mode & 0o7777, mtime: info.mtime }, bytes, (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  }
  pack.finalize();
  await ended;
  return Buffer.concat(chunks);
}

/** BuildKit through the Engine API; every JSON line is read, errorDetail fails the build. */
async function engineBuild(
  platform: Platform,
  tag: string,
  buildArgs: Record<string, string>,
): Promise<string> {
  const query = new URLSearchParams({
    version: '2',
    platform,
    t: tag,
    networkmode: 'none',
    nocache: '1',
    buildargs: JSON.stringify(buildArgs),
  });
  let imageId = '';
  let error = '';
  const body = await contextTar(CONTEXT_DIR);
  const res = await engine('POST', `/build?${query}`, BUILD_TIMEOUT_MS, body, (line) => {
    let message: { errorDetail?: { message?: string }; error?: string; id?: string; aux?: unknown };
    try {
      message = JSON.parse(line) as typeof message;
    } catch {
      error ||= `unparseable build output: ${line.slice(0, 200)}`;
      return;
    }
    if (message.errorDetail || message.error)
      error ||= message.errorDetail?.message ?? message.error ?? 'error';
    if (message.id === 'moby.image.id') {
      const aux = message.aux as { ID?: string } | undefined;
      if (aux?.ID) imageId = aux.ID;
    }
  });
  if (res.status !== 200) throw new Error(`engine build ${platform}: HTTP ${res.status}`);
  if (error) throw new Error(`engine build ${platform}: ${error}`);
  if (!imageId) throw new Error(`engine build ${platform}: no image id in the build output`);
  return imageId;
}

interface EngineImage {
  Id: string;
  RepoTags: string[] | null;
  RepoDigests: string[] | null;
}

async function engineImages(): Promise<EngineImage[]> {
  const res = await engine('GET', '/images/json?all=1', SHORT_TIMEOUT_MS);
  if (res.status !== 200) throw new Error(`engine image list: HTTP ${res.status}`);
  return JSON.parse(res.body) as EngineImage[];
}

/** Removes one reference (tag or repo digest): the image goes only with its last reference. */
async function removeImageRef(ref: string): Promise<void> {
  const res = await engine('DELETE', `/images/${encodeURIComponent(ref)}`, SHORT_TIMEOUT_MS);
  if (res.status !== 200 && res.status !== 404)
    console.warn(`warning: could not remove image ${ref}: HTTP ${res.status} ${res.body.trim()}`);
}

/** Every image reference the engine holds for the bench's registry. */
async function removeImagesOf(registryHost: string): Promise<number> {
  const refs = new Set<string>();
  for (const image of await engineImages()) {
    for (const ref of [...(image.RepoTags ?? []), ...(image.RepoDigests ?? [])])
      if (ref.startsWith(`${registryHost}/`)) refs.add(ref);
  }
  for (const ref of refs) await removeImageRef(ref);
  return refs.size;
}

// --- one run of each tool ------------------------------------------------------------

interface BraidRun {
  wallMs: number;
  platforms: Record<
    Platform,
    { ms: number; emulated: boolean; agent: string; buildMs: number; pushMs: number }
  >;
  slowest: Platform;
  /** wall - slowest platform's duration, split by the coordinator's timestamps. */
  parts: Record<OverheadPart, number>;
  cpu: Cpu;
  quiet: { waitedMs: number; quiet: boolean };
  /** Attestation manifests in the pushed index. */
  attestations: number;
}

/** braid build's --provenance: 'min' is its default, 'off' is --provenance=false. */
type ProvenanceSetting = 'min' | 'off';

const OVERHEAD_PARTS = [
  'client start, pack, upload, submit',
  'submit -> slowest job running',
  'slowest job: coordinator span - agent duration',
  'wait for the other platforms',
  'stitch + index push',
  'build done -> client exit',
] as const;
type OverheadPart = (typeof OVERHEAD_PARTS)[number];

interface SeedsRun {
  totalMs: number;
  platforms: Record<Platform, { buildMs: number; pushMs: number }>;
  manifestMs: number;
  cpu: Cpu;
  quiet: { waitedMs: number; quiet: boolean };
}

interface Farm {
  coordinator: string;
  cpu: CpuAccounting;
  /** The agent's structured log so far (serve's stderr, JSON lines). */
  agentLog: () => string;
  registryHost: string;
  baseRef: string;
  workDir: string;
  env: NodeJS.ProcessEnv;
}

interface StatusJson {
  createdAt: string;
  finishedAt: string | null;
  state: string;
  jobs: {
    platform: string;
    startedAt: string | null;
    finishedAt: string | null;
    durationMs: number | null;
  }[];
}

async function braidRun(
  farm: Farm,
  runIndex: number,
  provenance: ProvenanceSetting = 'min',
): Promise<BraidRun> {
  const quiet = await waitQuiet(farm.cpu);
  const name = `r${runIndex}${COMPARE ? `-${provenance}` : ''}`;
  const tag = `${farm.registryHost}/bench/braid-hello:${name}`;
  const metadataFile = join(farm.workDir, `metadata-${name}.json`);
  const cpuBefore = farm.cpu.now();
  const startEpoch = Date.now();
  const { ms: wallMs } = await mustRun(
    'braid build',
    process.execPath,
    [
      BRAID_BIN,
      'build',
      CONTEXT_DIR,
      '-t',
      tag,
      '--platform',
      PLATFORMS.join(','),
      '--build-arg',
      `BASE=${farm.baseRef}`,
      '--build-arg',
      `WORK=${WORK}`,
      '--no-cache',
      '--progress',
      'plain',
      '--metadata-file',
      metadataFile,
      ...(provenance === 'off' ? ['--provenance=false'] : []),
      '--coordinator',
      farm.coordinator,
    ],
    farm.env,
    BUILD_TIMEOUT_MS,
  );
  const cpu = cpuMinus(farm.cpu.now(), cpuBefore);
  // Not timed: the index as pushed, to count its attestation manifests.
  const attestations = await attestationCount(farm.registryHost, 'bench/braid-hello', name);
  const endEpoch = startEpoch + wallMs;
  const metadata = JSON.parse(await readFile(metadataFile, 'utf8')) as {
    'braid.build.id': string;
    'containerimage.digest'?: string;
    platforms: { platform: string; durationMs: number | null; emulated: boolean; agent: string }[];
  };
  if (!metadata['containerimage.digest'])
    throw new Error(`braid build r${runIndex}: no index digest in the metadata file`);
  // The agent's own split of each job: `job succeeded` log lines carry buildMs and pushMs.
  const buildId = metadata['braid.build.id'];
  const split = new Map<string, { buildMs: number; pushMs: number }>();
  for (const text of farm.agentLog().split('\n')) {
    if (!text.includes(buildId) || !text.includes('job succeeded')) continue;
    const entry = JSON.parse(text) as { platform: string; buildMs: number; pushMs: number };
    split.set(entry.platform, { buildMs: entry.buildMs, pushMs: entry.pushMs });
  }
  const platforms = {} as BraidRun['platforms'];
  for (const p of PLATFORMS) {
    const entry = metadata.platforms.find((e) => e.platform === p);
    if (!entry?.durationMs) throw new Error(`braid build r${runIndex}: no durationMs for ${p}`);
    const parts = split.get(p) ?? { buildMs: NaN, pushMs: NaN };
    platforms[p] = {
      ms: entry.durationMs,
      emulated: entry.emulated,
      agent: entry.agent,
      ...parts,
    };
  }
  const slowest = PLATFORMS.reduce((a, b) => (platforms[b].ms > platforms[a].ms ? b : a));

  const status = await braid(
    ['status', metadata['braid.build.id'], '--output', 'json', '--coordinator', farm.coordinator],
    { timeoutMs: SHORT_TIMEOUT_MS },
  );
  if (status.code !== 0) throw new Error(`braid status failed: ${status.stderr}`);
  const build = JSON.parse(status.stdout) as StatusJson;
  const t = (iso: string | null | undefined, what: string): number => {
    if (!iso) throw new Error(`braid status r${runIndex}: no ${what}`);
    return Date.parse(iso);
  };
  const job = build.jobs.find((j) => j.platform === slowest);
  const created = t(build.createdAt, 'createdAt');
  const jobStart = t(job?.startedAt, `${slowest} startedAt`);
  const jobEnd = t(job?.finishedAt, `${slowest} finishedAt`);
  const lastJobEnd = Math.max(
    ...build.jobs.map((j) => t(j.finishedAt, `${j.platform} finishedAt`)),
  );
  const finished = t(build.finishedAt, 'finishedAt');
  const parts: Record<OverheadPart, number> = {
    'client start, pack, upload, submit': created - startEpoch,
    'submit -> slowest job running': jobStart - created,
    'slowest job: coordinator span - agent duration': jobEnd - jobStart - platforms[slowest].ms,
    'wait for the other platforms': lastJobEnd - jobEnd,
    'stitch + index push': finished - lastJobEnd,
    'build done -> client exit': endEpoch - finished,
  };
  return { wallMs, platforms, slowest, parts, cpu, quiet, attestations };
}

/** Attestation manifests in the index under `tag`, read straight from the registry. */
async function attestationCount(host: string, repository: string, tag: string): Promise<number> {
  const res = await fetch(`http://${host}/v2/${repository}/manifests/${tag}`, {
    headers: {
      accept:
        'application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json',
    },
    signal: AbortSignal.timeout(SHORT_TIMEOUT_MS),
  });
  if (res.status !== 200) throw new Error(`GET ${repository}:${tag}: HTTP ${res.status}`);
  const index = (await res.json()) as { manifests?: { annotations?: Record<string, string> }[] };
  return (index.manifests ?? []).filter(
    (m) => m.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest',
  ).length;
}

async function seedsRun(farm: Farm, runIndex: number): Promise<SeedsRun> {
  const quiet = await waitQuiet(farm.cpu);
  const repo = `${farm.registryHost}/bench/seeds-hello`;
  const tag = `r${runIndex}`;
  const archTags = PLATFORMS.map((p) => `${repo}:${tag}-${arch(p)}`);
  const buildArgs = { BASE: farm.baseRef, WORK: String(WORK) };
  const platforms = {} as SeedsRun['platforms'];
  const cpuBefore = farm.cpu.now();
  const start = now();
  try {
    for (const [i, p] of PLATFORMS.entries()) {
      const archTag = archTags[i] as string;
      const buildStart = now();
      await engineBuild(p, archTag, buildArgs);
      const buildMs = now() - buildStart;
      const { ms: pushMs } = await mustRun(
        `docker push ${archTag}`,
        'docker',
        ['push', '--quiet', archTag],
        farm.env,
        PUSH_TIMEOUT_MS,
      );
      platforms[p] = { buildMs, pushMs };
    }
    const manifestStart = now();
    await mustRun(
      'docker manifest create',
      'docker',
      ['manifest', 'create', '--insecure', `${repo}:${tag}`, ...archTags],
      farm.env,
      SHORT_TIMEOUT_MS,
    );
    await mustRun(
      'docker manifest push',
      'docker',
      ['manifest', 'push', '--insecure', `${repo}:${tag}`],
      farm.env,
      SHORT_TIMEOUT_MS,
    );
    const manifestMs = now() - manifestStart;
    const totalMs = now() - start;
    const cpu = cpuMinus(farm.cpu.now(), cpuBefore);
    return { totalMs, platforms, manifestMs, cpu, quiet };
  } finally {
    // Not timed: the per-arch images the engine built.
    for (const archTag of archTags) await removeImageRef(archTag);
  }
}

interface Pair {
  /** Attempt number (1-based), used in tags. */
  attempt: number;
  first: 'braid' | 'seeds';
  braid: BraidRun;
  seeds: SeedsRun;
}

const disturbed = (r: { cpu: Cpu; quiet: { quiet: boolean } }): boolean =>
  r.cpu.other > DISTURBED_CPU_SECONDS || !r.quiet.quiet;
const pairDisturbed = (p: Pair): boolean => disturbed(p.braid) || disturbed(p.seeds);

/** BENCH_COMPARE=provenance: the same build without and with provenance. */
interface ProvenancePair {
  attempt: number;
  first: ProvenanceSetting;
  off: BraidRun;
  min: BraidRun;
}

const provenancePairDisturbed = (p: ProvenancePair): boolean =>
  disturbed(p.off) || disturbed(p.min);

// --- the report ------------------------------------------------------------------------

function report(used: Pair[], attempts: Pair[], engineVersion: string): void {
  const braidRuns = used.map((p) => p.braid);
  const seedsRuns = used.map((p) => p.seeds);
  const out: string[] = [];
  const line = (text = '') => out.push(text);
  const med = <T>(runs: T[], f: (r: T) => number) => median(runs.map(f));
  const slowestMs = (r: BraidRun) => r.platforms[r.slowest].ms;
  const overhead = (r: BraidRun) => r.wallMs - slowestMs(r);
  const ratio = (r: BraidRun) => overhead(r) / slowestMs(r);
  const wall = med(braidRuns, (r) => r.wallMs);
  const overheadRatio = med(braidRuns, ratio);
  const seedsTotal = med(seedsRuns, (r) => r.totalMs);
  const speed = wall / seedsTotal;
  const ncpu = cpus().length;
  const cpuShort = (c: Cpu) =>
    `engine+QEMU ${c.engine.toFixed(1)}, tools ${c.bench.toFixed(1)}, other processes ${c.other.toFixed(1)} CPU-s`;
  const cpuText = (c: Cpu, ms: number) =>
    `${((c.engine + c.bench) / (ms / 1000)).toFixed(2)} of ${ncpu} CPUs busy (${cpuShort(c)})`;
  const medCpu = <T extends { cpu: Cpu }>(runs: T[]): Cpu => ({
    bench: med(runs, (r) => r.cpu.bench),
    engine: med(runs, (r) => r.cpu.engine),
    other: med(runs, (r) => r.cpu.other),
  });
  const mark = (r: { cpu: Cpu; quiet: { quiet: boolean; waitedMs: number } }) =>
    `${disturbed(r) ? '  << DISTURBED' : ''}` +
    `${r.quiet.quiet ? '' : ` (box not quiet after ${secs(r.quiet.waitedMs)})`}`;
  const braidMode = (p: Platform) =>
    [...new Set(braidRuns.map((r) => (r.platforms[p].emulated ? 'qemu' : 'native')))].join('/');
  const hostArch = { x64: 'amd64', arm64: 'arm64', ppc64: 'ppc64le', s390x: 's390x' }[
    process.arch as string
  ];
  const seedsMode = (p: Platform) => (arch(p) === hostArch ? 'native' : 'qemu');
  const s8 = (ms: number) => secs(ms).padStart(8);
  const label = (text: string) => `  ${text.padEnd(42)}`;

  line(
    `bench:farm — examples/hello for ${PLATFORMS.join(', ')}; build arg WORK=${WORK}; ` +
      `no cache; medians of ${used.length} runs`,
  );
  line(
    `  one box: ${ncpu} CPUs, Docker engine ${engineVersion} (BuildKit), loopback docker-registry; ` +
      `braid serve: coordinator + one local agent, capacity ${CAPACITY}, build network none`,
  );
  line();
  line('braid build (submit -> index pushed)');
  line(`${label('wall')}${s8(wall)}`);
  for (const p of PLATFORMS) {
    line(
      `${label(`${p.padEnd(14)} ${braidMode(p).padEnd(6)} job duration`)}${s8(med(braidRuns, (r) => r.platforms[p].ms))}` +
        `   (engine build ${s8(med(braidRuns, (r) => r.platforms[p].buildMs))},` +
        ` push by digest ${s8(med(braidRuns, (r) => r.platforms[p].pushMs))})`,
    );
  }
  line(
    `${label('slowest platform')}${s8(med(braidRuns, slowestMs))}   (per run: ${braidRuns.map((r) => arch(r.slowest)).join(', ')})`,
  );
  line(
    `${label('orchestration overhead = wall - slowest')}${s8(med(braidRuns, overhead))}` +
      `   = ${pct(overheadRatio)} of the slowest platform (median of per-run ratios; ` +
      `target <= 10%: ${overheadRatio <= 0.1 ? 'met' : 'NOT met'})`,
  );
  line('    where it goes (medians; coordinator timestamps, 1 ms resolution):');
  for (const part of OVERHEAD_PARTS) {
    line(`      ${part.padEnd(48)} ${msText(med(braidRuns, (r) => r.parts[part])).padStart(7)}`);
  }
  line(`${label('CPU during the build')}${cpuText(medCpu(braidRuns), wall)}`);
  line();
  line(
    "seeds' way (sequential per platform: Engine API BuildKit build + docker push; then docker manifest create + push)",
  );
  line(`${label('total')}${s8(seedsTotal)}`);
  for (const p of PLATFORMS) {
    line(
      `${label(`${p.padEnd(14)} ${seedsMode(p).padEnd(6)} build + push`)}` +
        `${s8(med(seedsRuns, (r) => r.platforms[p].buildMs + r.platforms[p].pushMs))}` +
        `   (engine build ${s8(med(seedsRuns, (r) => r.platforms[p].buildMs))},` +
        ` docker push ${s8(med(seedsRuns, (r) => r.platforms[p].pushMs))})`,
    );
  }
  line(`${label('docker manifest create + push')}${s8(med(seedsRuns, (r) => r.manifestMs))}`);
  line(`${label('CPU during the work')}${cpuText(medCpu(seedsRuns), seedsTotal)}`);
  line();
  line(
    `ratio braid/seeds (median wall / median total): ${speed.toFixed(2)} ` +
      `(target < 1.00, braid faster: ${speed < 1 ? 'met' : 'NOT met'}; braid ${(seedsTotal / wall).toFixed(2)}x as fast)`,
  );
  const left = attempts.filter((p) => !used.includes(p));
  const usedDisturbed = used.filter(pairDisturbed).length;
  line(
    `${used.length} runs in the medians${usedDisturbed ? `, ${usedDisturbed} of them DISTURBED (not enough clean runs)` : ', none disturbed'}` +
      `${left.length ? `; ${left.length} disturbed run(s) left out and repeated` : ''}. Disturbed: other processes on ` +
      `this box used > ${DISTURBED_CPU_SECONDS} CPU-s during braid's or the seeds' measurement, or the box was not quiet before it.`,
  );
  line();
  line('raw runs (seconds; CPU-s spent during each measurement):');
  for (const pair of attempts) {
    const { braid: b, seeds: sd } = pair;
    const plat = (f: (p: Platform) => number) =>
      PLATFORMS.map((p) => `${arch(p)} ${(f(p) / 1000).toFixed(2)}`).join(', ');
    line(
      `  run ${pair.attempt} (${pair.first} first)${used.includes(pair) ? '' : '  -- left out of the medians'}`,
    );
    line(
      `    braid  wall  ${(b.wallMs / 1000).toFixed(2)}  jobs: ${plat((p) => b.platforms[p].ms)}; ` +
        `overhead ${(overhead(b) / 1000).toFixed(2)} (${pct(ratio(b))}); ${cpuShort(b.cpu)}${mark(b)}`,
    );
    line(
      `    seeds  total ${(sd.totalMs / 1000).toFixed(2)}  build+push: ` +
        `${plat((p) => sd.platforms[p].buildMs + sd.platforms[p].pushMs)}; ` +
        `manifest ${(sd.manifestMs / 1000).toFixed(2)}; ${cpuShort(sd.cpu)}${mark(sd)}`,
    );
  }
  console.log(out.join('\n'));
}

function reportProvenance(
  used: ProvenancePair[],
  attempts: ProvenancePair[],
  engineVersion: string,
): void {
  const out: string[] = [];
  const line = (text = '') => out.push(text);
  const med = (runs: BraidRun[], f: (r: BraidRun) => number) => median(runs.map(f));
  const offRuns = used.map((p) => p.off);
  const minRuns = used.map((p) => p.min);
  const stitch = (r: BraidRun) => r.parts['stitch + index push'];
  const slowestMs = (r: BraidRun) => r.platforms[r.slowest].ms;
  const pushMs = (r: BraidRun) => Math.max(...PLATFORMS.map((p) => r.platforms[p].pushMs));
  const offWall = med(offRuns, (r) => r.wallMs);
  const minWall = med(minRuns, (r) => r.wallMs);
  const cost = minWall / offWall - 1;
  const pairCost = median(used.map((p) => p.min.wallMs / p.off.wallMs - 1));
  const stitchCost = med(minRuns, stitch) - med(offRuns, stitch);
  const ms8 = (ms: number) => msText(ms).padStart(9);
  const row = (label: string, f: (r: BraidRun) => number) =>
    line(
      `  ${label.padEnd(44)}${ms8(med(offRuns, f))}${ms8(med(minRuns, f))}${ms8(med(minRuns, f) - med(offRuns, f))}`,
    );

  line(
    `bench:farm BENCH_COMPARE=provenance — examples/hello for ${PLATFORMS.join(', ')}; build arg WORK=${WORK}; ` +
      `no cache; medians of ${used.length} pairs`,
  );
  line(
    `  one box: ${cpus().length} CPUs, Docker engine ${engineVersion} (BuildKit), loopback docker-registry; ` +
      `braid serve: coordinator + one local agent, capacity ${CAPACITY}, build network none`,
  );
  line();
  line(`  ${''.padEnd(44)}${'off'.padStart(9)}${'min'.padStart(9)}${'min-off'.padStart(9)}`);
  row('wall (braid build process)', (r) => r.wallMs);
  row('slowest platform job (agent)', slowestMs);
  row('longest push by digest (agent)', pushMs);
  row('stitch + index push (coordinator)', stitch);
  line(
    `  ${'attestation manifests per index'.padEnd(44)}${String(median(offRuns.map((r) => r.attestations))).padStart(9)}${String(median(minRuns.map((r) => r.attestations))).padStart(9)}`,
  );
  line();
  line(
    `provenance cost (median wall min / median wall off - 1): ${pct(cost)} ` +
      `(target <= 2%: ${cost <= 0.02 ? 'met' : 'NOT met'}); median of per-pair ratios ${pct(pairCost)}`,
  );
  line(
    `  of which at the stitch (statements written and pushed by the coordinator): ${msText(stitchCost)} ` +
      `= ${pct(stitchCost / offWall)} of the wall time`,
  );
  const left = attempts.filter((p) => !used.includes(p));
  const usedDisturbed = used.filter(provenancePairDisturbed).length;
  line(
    `${used.length} pairs in the medians${usedDisturbed ? `, ${usedDisturbed} of them DISTURBED (not enough clean pairs)` : ', none disturbed'}` +
      `${left.length ? `; ${left.length} disturbed pair(s) left out and repeated` : ''}. Disturbed: other processes on ` +
      `this box used > ${DISTURBED_CPU_SECONDS} CPU-s during a measurement, or the box was not quiet before it.`,
  );
  line();
  line('raw runs (seconds; CPU-s spent during each measurement):');
  const cpuShort = (c: Cpu) =>
    `engine+QEMU ${c.engine.toFixed(1)}, tools ${c.bench.toFixed(1)}, other ${c.other.toFixed(1)} CPU-s`;
  for (const pair of attempts) {
    line(
      `  pair ${pair.attempt} (${pair.first} first)${used.includes(pair) ? '' : '  -- left out of the medians'}`,
    );
    for (const [label, r] of [
      ['off', pair.off],
      ['min', pair.min],
    ] as const) {
      line(
        `    ${label}  wall ${(r.wallMs / 1000).toFixed(2)}  slowest ${arch(r.slowest)} ${(slowestMs(r) / 1000).toFixed(2)}; ` +
          `stitch ${msText(stitch(r))}; ${r.attestations} attestations; ${cpuShort(r.cpu)}` +
          `${disturbed(r) ? '  << DISTURBED' : ''}`,
      );
    }
  }
  console.log(out.join('\n'));
}

/** BENCH_COMPARE=provenance: pairs of braid runs, off and min, alternating who goes first. */
async function provenancePairs(farm: Farm, engineVersion: string): Promise<void> {
  const attempts: ProvenancePair[] = [];
  for (
    let i = 1;
    attempts.filter((p) => !provenancePairDisturbed(p)).length < RUNS && i <= 2 * RUNS;
    i++
  ) {
    const first: ProvenanceSetting = i % 2 === 1 ? 'off' : 'min';
    const runs: Partial<Record<ProvenanceSetting, BraidRun>> = {};
    for (const setting of first === 'off' ? (['off', 'min'] as const) : (['min', 'off'] as const))
      runs[setting] = await braidRun(farm, i, setting);
    const pair: ProvenancePair = {
      attempt: i,
      first,
      off: runs.off as BraidRun,
      min: runs.min as BraidRun,
    };
    // The comparison means nothing unless the min run wrote provenance and the off run none.
    if (pair.off.attestations !== 0 || pair.min.attestations !== PLATFORMS.length) {
      throw new Error(
        `pair ${i}: ${pair.off.attestations} attestations with --provenance=false, ` +
          `${pair.min.attestations} with min (want 0 and ${PLATFORMS.length})`,
      );
    }
    attempts.push(pair);
    console.error(
      `pair ${i}: off ${secs(pair.off.wallMs)}, min ${secs(pair.min.wallMs)}` +
        `${provenancePairDisturbed(pair) ? ' -- disturbed by other processes' : ''}`,
    );
  }
  const clean = attempts.filter((p) => !provenancePairDisturbed(p));
  const used =
    clean.length >= RUNS
      ? clean.slice(0, RUNS)
      : [...clean, ...attempts.filter(provenancePairDisturbed).slice(0, RUNS - clean.length)].sort(
          (x, y) => x.attempt - y.attempt,
        );
  reportProvenance(used, attempts, engineVersion);
}

// --- main ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  await requireCommand('docker', 'docker.io');
  await requireCommand('skopeo', 'skopeo');
  await requireEngine();
  for (const handler of QEMU_HANDLERS) await requireQemu(handler);
  const versionRes = await engine('GET', '/version', SHORT_TIMEOUT_MS);
  const engineVersion = (JSON.parse(versionRes.body) as { Version?: string }).Version ?? '?';

  const workDir = await mkdtemp(join(tmpdir(), 'braid-bench-farm-'));
  const dockerConfig = join(workDir, 'docker-config');
  await mkdir(dockerConfig);
  const env = cleanEnv({ DOCKER_CONFIG: dockerConfig });
  const registry = await startRegistry();
  let serve: ReturnType<typeof startProcess> | undefined;
  const cpu = new CpuAccounting();
  let cleaned: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaned ??= (async () => {
      cpu.stop();
      if (serve) await serve.stop('SIGTERM', 15_000);
      // The per-arch images are gone already; what is left is the base BuildKit pulled.
      await removeImagesOf(registry.host).catch((err: unknown) =>
        console.warn(`warning: image cleanup failed: ${(err as Error).message}`),
      );
      await registry.stop();
      await rm(workDir, { recursive: true, force: true });
    })());
  // Interrupted: the same cleanup, then exit.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.error(`${signal}: stopping the farm and the registry, removing images and temp dirs`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  try {
    await pushBaseImage(registry.host, 'braid/busybox', 'latest');
    serve = startProcess(
      process.execPath,
      [
        BRAID_BIN,
        'serve',
        '--listen',
        '127.0.0.1:0',
        '--name',
        'bench',
        '--capacity',
        String(CAPACITY),
        '--data-dir',
        join(workDir, 'data'),
        '--cache-dir',
        join(workDir, 'cache'),
        '--build-network',
        'none',
        '--log-format',
        'json',
        '--log-level',
        'info',
      ],
      { env },
    );
    const listening = await serve.waitForStdout(/^listening (\S+)$/m, 30_000);
    const coordinator = listening[1] as string;
    await waitForAgents(coordinator, ['bench'], 60_000);
    const started = serve;
    const farm: Farm = {
      coordinator,
      cpu,
      agentLog: () => started.stderr(),
      registryHost: registry.host,
      baseRef: `${registry.host}/braid/busybox:latest`,
      workDir,
      env,
    };

    if (COMPARE === 'provenance') {
      await provenancePairs(farm, engineVersion);
      return;
    }
    // A pair in which another process on the box took CPU is repeated (at most
    // BENCH_RUNS extra pairs) and left out of the medians, unless too few clean ones.
    const attempts: Pair[] = [];
    for (let i = 1; attempts.filter((p) => !pairDisturbed(p)).length < RUNS && i <= 2 * RUNS; i++) {
      // Alternate who goes first so drift on a shared machine hits both alike.
      const first = i % 2 === 1 ? 'braid' : 'seeds';
      let b: BraidRun | undefined;
      let sd: SeedsRun | undefined;
      const doBraid = async () => void (b = await braidRun(farm, i));
      const doSeeds = async () => void (sd = await seedsRun(farm, i));
      for (const job of first === 'braid' ? [doBraid, doSeeds] : [doSeeds, doBraid]) await job();
      const pair: Pair = { attempt: i, first, braid: b as BraidRun, seeds: sd as SeedsRun };
      attempts.push(pair);
      console.error(
        `run ${i}: braid ${secs(pair.braid.wallMs)} (slowest ${pair.braid.slowest} ` +
          `${secs(pair.braid.platforms[pair.braid.slowest].ms)}), seeds ${secs(pair.seeds.totalMs)}` +
          `${pairDisturbed(pair) ? ' -- disturbed by other processes' : ''}`,
      );
    }
    const clean = attempts.filter((p) => !pairDisturbed(p));
    const used =
      clean.length >= RUNS
        ? clean.slice(0, RUNS)
        : [...clean, ...attempts.filter(pairDisturbed).slice(0, RUNS - clean.length)].sort(
            (x, y) => x.attempt - y.attempt,
          );
    report(used, attempts, engineVersion);
  } finally {
    await cleanup();
  }
}

await main();
