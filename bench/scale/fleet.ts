/**
 * The simulated agents of bench:scale, in a process of their own: N agents,
 * each the real agent session loop (src/agent/session.ts: hello, heartbeats
 * at the coordinator's interval, RUNNING update, log chunk, result re-sent
 * until acknowledged) on its own gRPC connection to the coordinator, with a
 * fake engine: a job "builds" for --job-ms and reports the image of its
 * platform the bench pushed to the registry once, so stitches are real.
 *
 * The transport is instrumented, not the session: the moment an AssignJob
 * is read off the stream and the moment a result is handed to it are taken
 * on this process's clock (epoch ms, sub-ms resolution).
 *
 * Given several coordinators, each agent gets them all as a list and finds
 * the leader as `braid agent --coordinator a,b` does
 * (src/agent/coordinator-clients.ts): one client per address.
 *
 * Driven over stdin/stdout, one JSON object a line:
 *   stdin  {"cmd":"counters"} | {"cmd":"report"} | {"cmd":"stop"}
 *   stdout {"event":"ready",...} | {"event":"counters",...} | {"event":"report",...}
 */
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { credentials } from '@grpc/grpc-js';
import { pino } from 'pino';
import { AgentService, type AssignJob } from '../../src/gen/braid/v1/agent_pb.js';
import { AgentSessionLoop } from '../../src/agent/session.js';
import type { JobOutcome } from '../../src/agent/job-runner.js';
import { parsePlatform, type Platform } from '../../src/oci/platform.js';
import { createClient, type ServiceClient } from '../../src/rpc/client.js';
import { toProtoPlatform } from '../../src/rpc/platform.js';

type AgentClient = ServiceClient<(typeof AgentService)['method']>;

export interface FleetImage {
  digest: string;
  sizeBytes: number;
  mediaType: string;
}

export interface FleetConfig {
  /** One coordinator, or several to find the leader among (in this order). */
  coordinators: string[];
  agents: number;
  capacity: number;
  jobMs: number;
  /** The pushed image of each platform ("linux/arm64" -> descriptor). */
  images: Record<string, FleetImage>;
  /** Agents dial in this many at a time. */
  joinBatch: number;
  /** Give up when not every agent joined within this. */
  joinTimeoutMs: number;
  /** Reconnect backoff; unset: the session's default, as a real `braid agent` has. */
  backoff?: { baseMs: number; maxMs: number };
}

export interface FleetCounters {
  heartbeats: number;
  welcomes: number;
  assigns: number;
  results: number;
  /** Sessions that ended while the fleet was not stopping (agent dropped or lost). */
  sessionsEnded: number;
  /** Jobs whose result reported an error (a fake job never fails: the session refused it). */
  failedResults: number;
}

export interface FleetReport {
  counters: FleetCounters;
  /** Per platform: when each agent's slots became free at join (one entry per slot). */
  joinSlots: Record<string, number[]>;
  /** Per platform: when each AssignJob was read off the stream. */
  assigns: Record<string, number[]>;
  /** Per platform: when each result was handed to the stream (the slot is free again). */
  results: Record<string, number[]>;
  /** When each Welcome was read, of every agent and session (joins and rejoins). */
  welcomes: number[];
  /** The fleet process's RSS at the time of the report. */
  rssBytes: number;
}

/** Epoch milliseconds with sub-millisecond resolution (Date.now() has 1 ms). */
const clock = (): number => performance.timeOrigin + performance.now();

const PLATFORM_ORDER = ['linux/amd64', 'linux/arm64', 'linux/ppc64le', 'linux/s390x'];

function out(message: object): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new Error(String(signal.reason)));
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new Error(String(signal.reason)));
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

class Fleet {
  readonly counters: FleetCounters = {
    heartbeats: 0,
    welcomes: 0,
    assigns: 0,
    results: 0,
    sessionsEnded: 0,
    failedResults: 0,
  };
  private readonly joinSlots = new Map<string, number[]>();
  private readonly assigns = new Map<string, number[]>();
  private readonly results = new Map<string, number[]>();
  private readonly welcomes: number[] = [];
  private readonly clients: AgentClient[] = [];
  private readonly abort = new AbortController();
  private readonly loops: Promise<void>[] = [];
  private stopping = false;
  private readonly log = pino({ level: 'error', base: { component: 'bench-fleet' } });

  constructor(private readonly config: FleetConfig) {
    for (const platform of PLATFORM_ORDER) {
      this.joinSlots.set(platform, []);
      this.assigns.set(platform, []);
      this.results.set(platform, []);
    }
  }

  /** Start every agent, a batch at a time; resolves when all have been welcomed. */
  async start(): Promise<number> {
    const started = clock();
    const deadline = started + this.config.joinTimeoutMs;
    for (let i = 0; i < this.config.agents; i++) {
      this.startAgent(i);
      if ((i + 1) % this.config.joinBatch === 0) {
        // Let this batch join before the next dials: a real farm does not start at one instant.
        while (this.counters.welcomes < i + 1 && clock() < deadline)
          await new Promise((r) => setTimeout(r, 10));
      }
    }
    while (this.counters.welcomes < this.config.agents) {
      if (clock() > deadline)
        throw new Error(
          `only ${this.counters.welcomes} of ${this.config.agents} agents joined within ${this.config.joinTimeoutMs} ms`,
        );
      await new Promise((r) => setTimeout(r, 10));
    }
    return clock() - started;
  }

  report(): FleetReport {
    const record = (m: Map<string, number[]>) => Object.fromEntries(m);
    return {
      counters: { ...this.counters },
      joinSlots: record(this.joinSlots),
      assigns: record(this.assigns),
      results: record(this.results),
      welcomes: [...this.welcomes],
      rssBytes: process.memoryUsage.rss(),
    };
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.abort.abort('bench over');
    // Bounded: a loop that does not end within 10 s is left to process exit.
    await Promise.race([Promise.allSettled(this.loops), new Promise((r) => setTimeout(r, 10_000))]);
    for (const client of this.clients) client.close();
  }

  private startAgent(index: number): void {
    const platformText = PLATFORM_ORDER[index % PLATFORM_ORDER.length] as string;
    const native: Platform = parsePlatform(platformText);
    const image = this.config.images[platformText];
    if (!image) throw new Error(`no pushed image for ${platformText}`);
    const name = `sim-${platformText.split('/')[1]}-${String(index).padStart(4, '0')}`;
    // One connection per agent and coordinator, as separate agent processes have: no shared subchannel.
    const clients = this.config.coordinators.map((address) => {
      const client = createClient(AgentService, address, {
        credentials: credentials.createInsecure(),
        transport: 'plaintext',
        channelOptions: {
          'grpc.keepalive_time_ms': 20_000,
          'grpc.keepalive_timeout_ms': 10_000,
          'grpc.use_local_subchannel_pool': 1,
        },
      });
      this.clients.push(client);
      return this.instrument(client, platformText);
    });
    const byAddress = new Map(this.config.coordinators.map((a, i) => [a, clients[i]]));
    const first = clients[0];
    if (!first) throw new Error('the fleet needs at least one coordinator');
    const loop = new AgentSessionLoop({
      name,
      capacity: this.config.capacity,
      labels: { bench: 'scale' },
      native,
      emulated: [],
      engineVersion: 'bench-fake',
      engineId: `bench-fake-${index}`,
      client: first,
      ...(clients.length > 1 && {
        coordinators: {
          addresses: this.config.coordinators,
          connect: (address: string) => {
            // A leader a standby names is one of the list here (each coordinator advertises its listen address).
            const client = byAddress.get(address);
            if (!client) throw new Error(`a standby named ${address}, not one of the fleet's list`);
            return client.connect();
          },
        },
      }),
      log: this.log,
      runJob: (job, report, signal) => this.fakeJob(job, report, signal, native, image, name),
      ...(this.config.backoff && { backoff: this.config.backoff }),
    });
    this.loops.push(
      loop.run(this.abort.signal).catch((err: unknown) => {
        if (!this.stopping)
          process.stderr.write(`agent ${name} stopped: ${(err as Error).message}\n`);
      }),
    );
  }

  /** The client with its Connect call timed: assigns read, results and heartbeats sent. */
  private instrument(client: AgentClient, platform: string): AgentClient {
    const counters = this.counters;
    const assigns = this.assigns.get(platform) as number[];
    const results = this.results.get(platform) as number[];
    const joinSlots = this.joinSlots.get(platform) as number[];
    const welcomes = this.welcomes;
    const capacity = this.config.capacity;
    const stopping = () => this.stopping;
    const connect: AgentClient['connect'] = (options) => {
      const call = client.connect(options);
      return {
        send(request) {
          const kind = request.body?.case;
          if (kind === 'heartbeat') counters.heartbeats++;
          else if (kind === 'result') {
            results.push(clock());
            counters.results++;
            if (request.body?.value && 'error' in request.body.value && request.body.value.error)
              counters.failedResults++;
          }
          return call.send(request);
        },
        end: () => call.end(),
        cancel: () => call.cancel(),
        async *[Symbol.asyncIterator]() {
          try {
            for await (const message of call) {
              if (message.body.case === 'assign') {
                assigns.push(clock());
                counters.assigns++;
              } else if (message.body.case === 'welcome') {
                const at = clock();
                welcomes.push(at);
                for (let s = 0; s < capacity; s++) joinSlots.push(at);
                counters.welcomes++;
              }
              yield message;
            }
          } finally {
            if (!stopping()) counters.sessionsEnded++;
          }
        },
      };
    };
    return { ...client, connect };
  }

  private async fakeJob(
    job: AssignJob,
    report: { step(step: string): void; log(line: string): void },
    signal: AbortSignal,
    platform: Platform,
    image: FleetImage,
    agent: string,
  ): Promise<JobOutcome> {
    const startedAt = Date.now();
    report.step('[1/2] FROM base');
    await sleep(this.config.jobMs, signal);
    report.log(`bench: fake build of ${job.jobId} done`);
    const finishedAt = Date.now();
    return {
      image: { ...image, platform },
      durationMs: finishedAt - startedAt,
      fetchMs: 0,
      buildMs: finishedAt - startedAt,
      pushMs: 0,
      facts: {
        host: agent,
        engineId: `bench-fake-${agent}`,
        engineVersion: 'bench-fake',
        kernel: 'bench',
        builderPlatform: toProtoPlatform(platform),
        startedAt: { seconds: BigInt(Math.floor(startedAt / 1000)), nanos: 0 },
        finishedAt: { seconds: BigInt(Math.floor(finishedAt / 1000)), nanos: 0 },
      },
    };
  }
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '') as FleetConfig;
  const fleet = new Fleet(config);
  const joinMs = await fleet.start();
  out({ event: 'ready', joined: fleet.counters.welcomes, joinMs });
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const { cmd } = JSON.parse(line) as { cmd: string };
    if (cmd === 'counters') out({ event: 'counters', counters: { ...fleet.counters } });
    else if (cmd === 'report') out({ event: 'report', report: fleet.report() });
    else if (cmd === 'stop') break;
  }
  await fleet.stop();
  out({ event: 'stopped' });
  process.exit(0);
}

await main();
