/**
 * The processes bench:scale starts: the coordinator (`braid coordinator`
 * from dist/), the simulated fleet, and one real `braid agent`. Logs go to
 * files (a 1,000-agent run writes tens of MB); each is stopped by its pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { BRAID_BIN, cleanEnv } from '../../test/support/braid-cli.js';
import { probeUrlFromLog } from '../../test/support/prom-text.js';

export interface Child {
  readonly pid: number;
  readonly logFile: string;
  readonly exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves on exit. */
  stop(graceMs?: number): Promise<void>;
}

function start(
  command: string,
  args: string[],
  logFile: string,
  env: NodeJS.ProcessEnv,
  stdin: 'ignore' | 'pipe',
): { child: ChildProcess; handle: Child } {
  const fd = openSync(logFile, 'a');
  const child = spawn(command, args, { env, stdio: [stdin, 'pipe', fd] });
  closeSync(fd);
  if (child.pid === undefined) throw new Error(`cannot start ${command}`);
  const pid = child.pid;
  let done = false;
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      done = true;
      resolve(code);
    });
    child.once('error', () => {
      done = true;
      resolve(null);
    });
  });
  return {
    child,
    handle: {
      pid,
      logFile,
      exited,
      async stop(graceMs = 15_000) {
        if (done) return;
        process.kill(pid, 'SIGTERM');
        const timer = setTimeout(() => {
          if (!done) process.kill(pid, 'SIGKILL');
        }, graceMs);
        await exited;
        clearTimeout(timer);
      },
    },
  };
}

async function waitFor<T>(
  what: string,
  timeoutMs: number,
  exited: Promise<unknown>,
  probe: () => T | undefined,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void exited.then(() => (gone = true));
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (gone) throw new Error(`${what}: the process exited first`);
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface CoordinatorProcess extends Child {
  /** gRPC address, `127.0.0.1:PORT`. */
  readonly address: string;
  /** Base URL of /metrics. */
  readonly probeUrl: string;
}

export async function startCoordinator(options: {
  dataDir: string;
  logFile: string;
  /** Write a V8 CPU profile into this directory at exit (node --cpu-prof). */
  cpuProfDir?: string;
  /** gRPC listen address (default 127.0.0.1:0); also advertised to standbys' callers. */
  listen?: string;
  /** A PostgreSQL store URL (default: SQLite in the data dir). */
  store?: string;
  extraArgs?: string[];
}): Promise<CoordinatorProcess> {
  const nodeArgs = options.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', options.cpuProfDir] : [];
  const { child, handle } = start(
    process.execPath,
    [
      ...nodeArgs,
      BRAID_BIN,
      'coordinator',
      '--listen',
      options.listen ?? '127.0.0.1:0',
      ...(options.listen ? ['--advertise', options.listen] : []),
      ...(options.store ? ['--store', options.store] : []),
      '--metrics-listen',
      '127.0.0.1:0',
      '--data-dir',
      options.dataDir,
      '--log-format',
      'json',
      '--log-level',
      'info',
      ...(options.extraArgs ?? []),
    ],
    options.logFile,
    cleanEnv(),
    'ignore',
  );
  let stdout = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  try {
    const address = await waitFor(
      'coordinator listening',
      30_000,
      handle.exited,
      () => /^listening (\S+)$/m.exec(stdout)?.[1],
    );
    const probeUrl = await waitFor('coordinator /metrics', 30_000, handle.exited, () =>
      probeUrlFromLog(readFileSync(options.logFile, 'utf8')),
    );
    return { ...handle, address, probeUrl };
  } catch (err) {
    await handle.stop(2000);
    throw new Error(
      `${(err as Error).message}\n${readFileSync(options.logFile, 'utf8').slice(-3000)}`,
    );
  }
}

/** 'leader', or why not: a standby's /readyz text ('standby: the leader is ...'), 'unreachable'. */
export async function role(probeUrl: string): Promise<string> {
  try {
    const response = await fetch(new URL('readyz', probeUrl), {
      signal: AbortSignal.timeout(5000),
    });
    const text = (await response.text()).trim();
    return response.status === 200 ? 'leader' : text;
  } catch {
    return 'unreachable';
  }
}

/** The first of `coordinators` whose /readyz says it leads, polled every 50 ms up to `timeoutMs`. */
export async function waitForLeader<T extends CoordinatorProcess>(
  coordinators: readonly T[],
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let roles: string[] = [];
  while (Date.now() < deadline) {
    roles = await Promise.all(coordinators.map((c) => role(c.probeUrl)));
    const leader = coordinators[roles.indexOf('leader')];
    if (leader) return leader;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no coordinator leads after ${timeoutMs} ms: ${roles.join('; ')}`);
}

/** The simulated agents' process (fleet.ts), driven one JSON line at a time. */
export interface FleetProcess extends Child {
  /** Send a command and wait for the answer of that kind. */
  ask<T>(cmd: string, answer: string, timeoutMs: number): Promise<T>;
}

const FLEET_SCRIPT = fileURLToPath(new URL('./fleet.ts', import.meta.url));

export async function startFleet(
  config: object,
  logFile: string,
  readyTimeoutMs: number,
): Promise<{ fleet: FleetProcess; joinMs: number }> {
  const { child, handle } = start(
    process.execPath,
    ['--import', 'tsx', FLEET_SCRIPT, JSON.stringify(config)],
    logFile,
    process.env,
    'pipe',
  );
  const waiting = new Map<string, (message: Record<string, unknown>) => void>();
  const early: Record<string, unknown>[] = [];
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    const resolve = waiting.get(String(message.event));
    if (resolve) {
      waiting.delete(String(message.event));
      resolve(message);
    } else early.push(message);
  });
  const next = (event: string, timeoutMs: number): Promise<Record<string, unknown>> => {
    const found = early.findIndex((m) => m.event === event);
    if (found >= 0) return Promise.resolve(early.splice(found, 1)[0] as Record<string, unknown>);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        waiting.delete(event);
        reject(
          new Error(
            `fleet: no "${event}" within ${timeoutMs} ms\n${readFileSync(logFile, 'utf8').slice(-3000)}`,
          ),
        );
      }, timeoutMs);
      void handle.exited.then(() => {
        clearTimeout(timer);
        if (waiting.delete(event))
          reject(new Error(`fleet exited\n${readFileSync(logFile, 'utf8').slice(-3000)}`));
      });
      waiting.set(event, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
    });
  };
  const fleet: FleetProcess = {
    ...handle,
    async ask<T>(cmd: string, answer: string, timeoutMs: number): Promise<T> {
      const reply = next(answer, timeoutMs);
      child.stdin?.write(`${JSON.stringify({ cmd })}\n`);
      return (await reply) as T;
    },
    async stop(graceMs = 15_000) {
      child.stdin?.write(`${JSON.stringify({ cmd: 'stop' })}\n`);
      const timer = setTimeout(() => void handle.stop(2000), graceMs);
      await handle.exited;
      clearTimeout(timer);
    },
  };
  try {
    const ready = await next('ready', readyTimeoutMs);
    return { fleet, joinMs: Number(ready.joinMs) };
  } catch (err) {
    await handle.stop(2000);
    throw err;
  }
}

/** One real `braid agent` on the local engine (its RSS idle is a target). */
export function startRealAgent(options: {
  coordinator: string;
  name: string;
  cacheDir: string;
  logFile: string;
}): Child {
  return start(
    process.execPath,
    [
      BRAID_BIN,
      'agent',
      '--coordinator',
      options.coordinator,
      '--name',
      options.name,
      '--build-network',
      'none',
      '--cache-dir',
      options.cacheDir,
      '--log-format',
      'json',
    ],
    options.logFile,
    cleanEnv(),
    'ignore',
  ).handle;
}
