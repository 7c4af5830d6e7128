/**
 * A private Docker engine for tests and benches: `dockerd` with its own
 * --data-root, --exec-root, --pidfile and unix socket under a temp dir,
 * `--bridge=none --iptables=false --ip-forward=false`, and the containerd it
 * supervises. Its BuildKit cache and image store are its own, so it is a
 * "cold host" next to the shared engine. Started and stopped by pid; needs
 * root. The shared engine of the machine is never touched.
 */
import { request } from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireCommand } from './components.js';
import { run, startProcess, type Started } from './process.js';

const START_TIMEOUT_MS = 60_000;
const CALL_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;

export interface EngineAnswer {
  status: number;
  body: string;
}

export interface PrivateEngine {
  readonly name: string;
  /** The temp dir that holds everything of this engine. */
  readonly dir: string;
  readonly socket: string;
  /** `unix://SOCKET`, as `braid agent --engine` takes it. */
  readonly url: string;
  readonly process: Started;
  /** One Engine API call; the body as text. */
  call(method: string, path: string, timeoutMs?: number): Promise<EngineAnswer>;
  /** Nothing warm: every image removed, all build cache pruned. */
  reset(): Promise<void>;
  /** What the engine holds: images and build-cache records (0 and 0 when cold). */
  contents(): Promise<{ images: number; buildCacheRecords: number }>;
  version(): Promise<string>;
  /** Stop dockerd (and the containerd it started) by pid; remove the temp dir. */
  stop(): Promise<void>;
}

export async function startPrivateEngine(name: string): Promise<PrivateEngine> {
  if (process.getuid?.() !== 0) {
    throw new Error(`private engine ${name}: dockerd must be started as root`);
  }
  const dockerd = await requireCommand('dockerd', 'docker.io');
  const dir = await mkdtemp(join(tmpdir(), `braid-engine-${name}-`));
  const socket = join(dir, 'docker.sock');
  const url = `unix://${socket}`;
  // An empty daemon.json keeps the host's /etc/docker/daemon.json (if any) out of it.
  await writeFile(join(dir, 'daemon.json'), '{}\n');
  const proc = startProcess(dockerd, [
    '--config-file',
    join(dir, 'daemon.json'),
    '--data-root',
    join(dir, 'data'),
    '--exec-root',
    join(dir, 'exec'),
    '--pidfile',
    join(dir, 'docker.pid'),
    '-H',
    url,
    '--bridge=none',
    '--iptables=false',
    '--ip-forward=false',
    '--log-level',
    'warn',
  ]);

  const call = (method: string, path: string, timeoutMs = CALL_TIMEOUT_MS) =>
    new Promise<EngineAnswer>((resolve, reject) => {
      const req = request(
        { socketPath: socket, method, path, signal: AbortSignal.timeout(timeoutMs) },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
          res.on('error', reject);
        },
      );
      req.on('error', (err) =>
        reject(new Error(`engine ${name} ${method} ${path}: ${err.message}`)),
      );
      req.end();
    });

  const stop = async (): Promise<void> => {
    // dockerd stops the containerd it supervises; one left behind (dockerd killed) goes by its pid.
    const containerdPid = await readPid(join(dir, 'exec', 'containerd', 'containerd.pid'));
    await proc.stop('SIGTERM', STOP_TIMEOUT_MS);
    if (containerdPid !== undefined && (await isOurs(containerdPid, dir))) {
      process.kill(containerdPid, 'SIGTERM');
      await waitGone(containerdPid, STOP_TIMEOUT_MS);
    }
    // A mount left under the dir (dockerd killed mid-build) would make rm fail or reach below it.
    const left = await mountsUnder(dir);
    for (const mount of left.reverse()) await run('umount', ['-l', mount], { timeoutMs: 30_000 });
    if ((await mountsUnder(dir)).length > 0) {
      console.warn(`warning: mounts left under ${dir}; not removing it`);
      return;
    }
    await rm(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const ping = await call('GET', '/_ping', 2000).catch(() => undefined);
    if (ping?.status === 200) break;
    const exited = await Promise.race([
      proc.exited.then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), 250)),
    ]);
    if (exited || Date.now() > deadline) {
      const why = proc.stderr().slice(-2000);
      await stop();
      throw new Error(
        `private engine ${name} did not answer on ${socket} within ${START_TIMEOUT_MS} ms: ${why}`,
      );
    }
  }

  const json = async <T>(path: string): Promise<T> => {
    const res = await call('GET', path);
    if (res.status !== 200)
      throw new Error(`engine ${name}: GET ${path}: HTTP ${res.status} ${res.body}`);
    return JSON.parse(res.body) as T;
  };

  return {
    name,
    dir,
    socket,
    url,
    process: proc,
    call,
    async reset() {
      for (const image of await json<{ Id: string }[]>('/images/json?all=1')) {
        const res = await call('DELETE', `/images/${encodeURIComponent(image.Id)}?force=1`);
        if (res.status !== 200 && res.status !== 404) {
          throw new Error(`engine ${name}: removing ${image.Id}: HTTP ${res.status} ${res.body}`);
        }
      }
      const pruned = await call('POST', '/build/prune?all=1');
      if (pruned.status !== 200) {
        throw new Error(`engine ${name}: build prune: HTTP ${pruned.status} ${pruned.body}`);
      }
    },
    async contents() {
      const df = await json<{ Images: unknown[] | null; BuildCache: unknown[] | null }>(
        '/system/df',
      );
      return { images: df.Images?.length ?? 0, buildCacheRecords: df.BuildCache?.length ?? 0 };
    },
    async version() {
      return (await json<{ Version?: string }>('/version')).Version ?? '?';
    },
    stop,
  };
}

async function readPid(file: string): Promise<number | undefined> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** The pid is alive and its command line names our dir (not a pid reused since). */
async function isOurs(pid: number, dir: string): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.includes(dir);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) {
      process.kill(pid, 'SIGKILL');
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Mount points at or below `dir`, in /proc/mounts order. */
async function mountsUnder(dir: string): Promise<string[]> {
  const mounts = await readFile('/proc/mounts', 'utf8').catch(() => '');
  return mounts
    .split('\n')
    .map((line) => line.split(' ')[1] ?? '')
    .filter((point) => point === dir || point.startsWith(`${dir}/`));
}
