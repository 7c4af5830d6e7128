/**
 * npm run bench:startup — how long a `braid` gRPC command takes from process
 * start to exit, against the floor: `node -e 0` (Node's own start) plus one
 * loopback round trip (a fresh gRPC channel's connect and one GetBuild,
 * timed inside this process). Target (issue 14): `braid status ID` within
 * 1.3x of that sum.
 *
 * A local coordinator (`braid coordinator`, 127.0.0.1, no push check) holds
 * one running build, submitted with `braid build --detach`: its job went to
 * an agent session this bench opens itself (a hello, then silence; the
 * heartbeat timeout is set long), so nothing builds and nothing else runs. The commands are run in turn, round after round, so
 * a noisy neighbour slows each about equally; medians of wall time, and of
 * CPU time (user + system of the child, from /usr/bin/time when present),
 * which a shared machine's load disturbs less.
 *
 * Run without NODE_EXTRA_CA_CERTS, as bench:stitch explains. BENCH_NODE
 * names another Node binary for the measured commands (the coordinator
 * keeps this one: its SQLite module is built for it), e.g. a Node 22 to
 * see its compile cache (`module.enableCompileCache`, which bin/braid.js
 * turns on where it exists).
 *
 * BENCH_INSTRUCTIONS=1 also runs each command once under valgrind's
 * cachegrind (when installed) and prints the instructions it executed: a
 * count a noisy neighbour barely moves, unlike wall or CPU time, so it
 * compares two builds on a shared machine. (Slow: ~10 s per command.)
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentService } from '../src/gen/braid/v1/agent_pb.js';
import { BuildService } from '../src/gen/braid/v1/build_pb.js';
import { createClient } from '../src/rpc/client.js';
import { credentials } from '@grpc/grpc-js';
import { BRAID_BIN, cleanEnv, startTestCoordinator } from '../test/support/braid-cli.js';
import { run } from '../test/support/process.js';
import { BRAID_VERSION } from '../src/version.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 15);
const TIME = '/usr/bin/time';

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

interface Sample {
  wallMs: number;
  cpuMs: number | undefined;
}

/** One run of `argv` from spawn to exit; CPU time from /usr/bin/time when it exists. */
function timed(argv: string[], env: NodeJS.ProcessEnv): Promise<Sample> {
  const withTime = existsSync(TIME);
  const [file, args] = withTime
    ? [TIME, ['-f', 'braid-bench-cpu %U %S', ...argv]]
    : [argv[0] as string, argv.slice(1)];
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(file, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const wallMs = Number(process.hrtime.bigint() - start) / 1e6;
      if (code !== 0) {
        reject(new Error(`${argv.join(' ')} exited ${code}: ${stderr.trim()}`));
        return;
      }
      const cpu = /braid-bench-cpu (\S+) (\S+)/.exec(stderr);
      resolve({
        wallMs,
        cpuMs: cpu ? (Number(cpu[1]) + Number(cpu[2])) * 1000 : undefined,
      });
    });
  });
}

const VALGRIND = '/usr/bin/valgrind';

/** Instructions `argv` executes from start to exit, all threads, under cachegrind. */
function instructions(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const args = ['--tool=cachegrind', '--cache-sim=no', '--cachegrind-out-file=/dev/null', ...argv];
  return new Promise((resolve, reject) => {
    const child = spawn(VALGRIND, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const refs = /I\s+refs:\s+([\d,]+)/.exec(stderr)?.[1];
      if (code !== 0 || refs === undefined) {
        reject(new Error(`valgrind ${argv.join(' ')} exited ${code}: ${stderr.trim()}`));
        return;
      }
      resolve(Number(refs.replaceAll(',', '')));
    });
  });
}

/** A fresh channel's connect and one GetBuild: what a new process cannot avoid. */
async function roundTrip(address: string, buildId: string): Promise<number> {
  const client = createClient(BuildService, address, {
    credentials: credentials.createInsecure(),
    transport: 'plaintext',
  });
  const start = process.hrtime.bigint();
  await client.getBuild({ buildId }, { timeoutMs: 10_000 });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  client.close();
  return ms;
}

async function main(): Promise<void> {
  const env = cleanEnv();
  delete env.NODE_EXTRA_CA_CERTS;
  const dir = await mkdtemp(join(tmpdir(), 'braid-bench-startup-'));
  const coordinator = await startTestCoordinator('127.0.0.1:0', [
    '--no-push-check',
    '--heartbeat-timeout-ms',
    '3600000',
  ]);
  const agents = createClient(AgentService, coordinator.address, {
    credentials: credentials.createInsecure(),
  });
  const session = agents.connect();
  try {
    await session.send({
      body: {
        case: 'hello',
        value: {
          name: 'bench-startup',
          version: BRAID_VERSION,
          nativePlatform: { os: 'linux', architecture: 'amd64' },
          capacity: 1,
        },
      },
    });
    const welcome = await session[Symbol.asyncIterator]().next();
    if (welcome.done) throw new Error('the coordinator ended the agent session at once');
    await writeFile(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY Dockerfile /\n');
    const submitted = await run(
      process.execPath,
      [
        BRAID_BIN,
        'build',
        '--coordinator',
        coordinator.address,
        '--platform',
        'linux/amd64',
        '--tag',
        '127.0.0.1:9/bench/startup:1',
        '--detach',
        dir,
      ],
      { env, timeoutMs: 60_000 },
    );
    const buildId = /\b(b[0-9a-z]+)\b/.exec(submitted.stdout)?.[1];
    if (submitted.code !== 0 || !buildId) {
      throw new Error(`braid build --detach: ${submitted.stderr || submitted.stdout}`);
    }
    const node = process.env.BENCH_NODE || process.execPath;
    const commands: Record<string, string[]> = {
      'node -e 0': [node, '-e', '0'],
      'braid version': [node, BRAID_BIN, 'version', '--coordinator', coordinator.address],
      'braid status ID': [node, BRAID_BIN, 'status', buildId, '--coordinator', coordinator.address],
    };
    // One unmeasured round: the page cache, and Node 22's compile cache, are warm after it.
    for (const argv of Object.values(commands)) await timed(argv, env);
    const samples = new Map<string, Sample[]>(Object.keys(commands).map((name) => [name, []]));
    const trips: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      for (const [name, argv] of Object.entries(commands)) {
        samples.get(name)?.push(await timed(argv, env));
      }
      trips.push(await roundTrip(coordinator.address, buildId));
    }
    const wall = (name: string) => median((samples.get(name) ?? []).map((s) => s.wallMs));
    const cpu = (name: string) => {
      const values = (samples.get(name) ?? []).flatMap((s) =>
        s.cpuMs === undefined ? [] : [s.cpuMs],
      );
      return values.length > 0 ? median(values) : undefined;
    };
    const trip = median(trips);
    const floor = wall('node -e 0') + trip;
    const lines = [
      `Node ${node === process.execPath ? process.version : node}, ${RUNS} runs, medians; loopback round trip (fresh channel + GetBuild) ${trip.toFixed(1)} ms`,
      '',
      '| command | wall | CPU (user+sys) | wall / node -e 0 | wall / (node -e 0 + round trip) |',
      '| --- | --- | --- | --- | --- |',
      ...Object.keys(commands).map((name) => {
        const c = cpu(name);
        return `| \`${name}\` | ${wall(name).toFixed(0)} ms | ${c === undefined ? '-' : `${c.toFixed(0)} ms`} | ${(wall(name) / wall('node -e 0')).toFixed(2)} | ${(wall(name) / floor).toFixed(2)} |`;
      }),
      '',
      `target: braid status ID <= 1.3 x (node -e 0 + round trip): ${(wall('braid status ID') / floor).toFixed(2)}`,
    ];
    if (process.env.BENCH_INSTRUCTIONS === '1' && existsSync(VALGRIND)) {
      const counts = new Map<string, number>();
      for (const [name, argv] of Object.entries(commands)) {
        counts.set(name, await instructions(argv, env));
      }
      const base = counts.get('node -e 0') ?? 1;
      lines.push(
        '',
        '| command | instructions (cachegrind, one run) | / node -e 0 |',
        '| --- | --- | --- |',
        ...[...counts].map(
          ([name, n]) => `| \`${name}\` | ${(n / 1e6).toFixed(0)} M | ${(n / base).toFixed(2)} |`,
        ),
      );
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    session.cancel();
    agents.close();
    await coordinator.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
