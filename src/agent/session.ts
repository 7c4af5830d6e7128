/**
 * The agent's session with the coordinator: dial out, say hello, keep
 * heartbeats going, run assigned jobs within capacity, and reconnect with
 * capped, jittered backoff when the coordinator goes away. Errors a retry
 * cannot fix (bad name, name in use, refused credentials) end the loop.
 *
 * Given several coordinators, the session looks for the leader
 * (src/rpc/leader-search.ts): a standby's refusal naming the leader sends
 * it there at once, an unreachable one to the next address; only when every
 * address failed does it wait out the backoff.
 *
 * The session is in one state at a time (SessionState). `move` is the only
 * way from one to another: it refuses a move the table does not allow with
 * IllegalSessionMoveError and logs each move once.
 */
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import {
  ConnectRequestSchema,
  type AssignJob,
  type ConnectResponse,
} from '../gen/braid/v1/agent_pb.js';
import { LogSource } from '../gen/braid/v1/build_pb.js';
import { ImageDescriptorSchema, JobState } from '../gen/braid/v1/common_pb.js';
import { BraidError, errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import { formatPlatform, type Platform } from '../oci/platform.js';
import { backoffDelayMs } from '../oci/retry.js';
import { fromProtoPlatform, toProtoPlatform } from '../rpc/platform.js';
import { LeaderSearch } from '../rpc/leader-search.js';
import { isUnrecoverable } from '../rpc/retryable.js';
import { BRAID_VERSION } from '../version.js';
import type { EmulatedPlatform } from './capabilities.js';
import { LogShipper } from './log-shipper.js';
import type { JobOutcome, JobReporter } from './job-runner.js';
import { abortableSleep } from '../abortable-sleep.js';

type ConnectRequestInit = MessageInitShape<typeof ConnectRequestSchema>;

/** The session's stream to the coordinator: AgentService.Connect, or a test's fake. */
export interface SessionCall extends AsyncIterable<ConnectResponse> {
  /** Send one message; resolves when the transport took it. */
  send(message: ConnectRequestInit): Promise<void>;
  /** End the call from this side; the iteration then ends without error. */
  cancel(): void;
}

export type SessionState =
  /** Dialling and saying hello; `attempt` counts from 1 after each stable session. */
  | { kind: 'connecting'; attempt: number }
  /** Welcomed by the coordinator: taking jobs. */
  | { kind: 'joined'; since: number }
  /** The session ended; the next attempt comes after `delayMs`. */
  | { kind: 'waiting'; attempt: number; delayMs: number; lastError: string }
  /** No new jobs; the running ones finish by `deadline`, then are cancelled. Reconnects still deliver their results. */
  | { kind: 'draining'; deadline: number }
  /** For good; `fatal` when an unrecoverable error ended it. */
  | { kind: 'stopped'; reason: string; fatal: boolean };

export type SessionStateKind = SessionState['kind'];

/** The moves the session may make; every other one is a bug. */
const MOVES: { readonly [K in SessionStateKind]: readonly SessionStateKind[] } = {
  connecting: ['joined', 'waiting', 'draining', 'stopped'],
  joined: ['waiting', 'draining', 'stopped'],
  waiting: ['connecting', 'draining', 'stopped'],
  draining: ['stopped'],
  stopped: [],
};

export class IllegalSessionMoveError extends BraidError {
  constructor(
    readonly from: SessionStateKind,
    readonly to: SessionStateKind,
  ) {
    super('failed_precondition', `the agent session cannot move from ${from} to ${to}`);
  }
}

export interface SessionOptions {
  name: string;
  capacity: number;
  labels: Record<string, string>;
  native: Platform;
  emulated: EmulatedPlatform[];
  engineVersion: string;
  /** The engine's identity (Docker /info ID), for the coordinator's cache affinity. */
  engineId?: string;
  /** Opens session streams: the AgentService client, or a test's fake. */
  client: { connect(): SessionCall };
  /**
   * Several coordinators to find the leader among: their addresses in
   * order (canonical), and how to open a session stream to any address (a
   * leader a standby names need not be listed). Unset: `client` alone.
   */
  coordinators?: { addresses: readonly string[]; connect(address: string): SessionCall };
  log: Logger;
  runJob: (job: AssignJob, report: JobReporter, signal: AbortSignal) => Promise<JobOutcome>;
  /** Reconnect backoff: `baseMs` doubling to `maxMs`, jittered (default 500 ms to 60 s). */
  backoff?: { baseMs: number; maxMs: number };
  /** A joined session that lasted this long resets the backoff (default 30 s). */
  stableAfterMs?: number;
  random?: () => number;
  now?: () => number;
  /** How long a drain waits for the coordinator to acknowledge the last results (default 5 s). */
  ackWaitMs?: number;
  /** Waits `ms`, or less when `signal` aborts; never rejects. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

const MAX_UNACKED = 256;

export { abortableSleep };

interface RunningJob {
  readonly controller: AbortController;
  /** Settles once the job's result was handed to the transport. */
  readonly done: Promise<void>;
}

export class AgentSessionLoop {
  private current: SessionState = { kind: 'connecting', attempt: 1 };
  private readonly running = new Map<string, RunningJob>();
  /** Results sent but not yet acknowledged: re-sent on every new session. */
  private readonly unacked = new Map<string, ConnectRequestInit>();
  /** Aborted on stop: ends a backoff wait at once. */
  private readonly stopping = new AbortController();
  private call: SessionCall | undefined;
  private drained: Promise<void> | undefined;
  /** Told when the coordinator acknowledges a result. */
  private readonly ackListeners = new Set<() => void>();
  /** When the session in progress was welcomed (undefined before). */
  private joinedAt: number | undefined;
  private readonly now: () => number;
  private readonly sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Where the leader is looked for; undefined with one coordinator. */
  private readonly search: LeaderSearch | undefined;

  constructor(private readonly options: SessionOptions) {
    this.now = options.now ?? Date.now;
    this.sleep = options.sleep ?? abortableSleep;
    this.search =
      options.coordinators && options.coordinators.addresses.length > 0
        ? new LeaderSearch(options.coordinators.addresses)
        : undefined;
  }

  /** The coordinator the session talks to (or dials next); undefined: the client's one. */
  get coordinator(): string | undefined {
    return this.search?.current;
  }

  get state(): SessionStateKind {
    return this.current.kind;
  }

  /** Not narrowed by the compiler: the state changes across every await. */
  private isStopped(): boolean {
    return this.current.kind === 'stopped';
  }

  /** Jobs running now. */
  get runningJobs(): number {
    return this.running.size;
  }

  /** Run until stopped or an unrecoverable error; resolves on stop, rejects with that error. */
  async run(signal: AbortSignal): Promise<void> {
    const { options } = this;
    const backoff = options.backoff ?? { baseMs: 500, maxMs: 60_000 };
    const stableAfterMs = options.stableAfterMs ?? 30_000;
    const random = options.random ?? Math.random;
    const onAbort = () => this.stop('the agent is stopping');
    signal.addEventListener('abort', onAbort, { once: true });
    if (signal.aborted) onAbort();
    /** Sessions in a row that failed or did not last. */
    let failures = 0;
    try {
      while (this.current.kind !== 'stopped') {
        if (this.current.kind === 'waiting')
          this.move({ kind: 'connecting', attempt: this.current.attempt });
        let lost: string;
        let joinedAt: number | undefined;
        let failure: unknown;
        try {
          joinedAt = await this.session();
          lost = 'the coordinator ended the session';
        } catch (err) {
          if (this.isStopped()) break;
          if (isUnrecoverable(err)) {
            this.end(errorLine(err), true);
            throw err;
          }
          lost = errorLine(err);
          failure = err;
          joinedAt = this.joinedAt;
        }
        if (this.isStopped()) break;
        if (this.nextCoordinator(joinedAt, failure ?? new BraidError('unavailable', lost))) {
          continue;
        }
        failures =
          joinedAt !== undefined && this.now() - joinedAt >= stableAfterMs ? 1 : failures + 1;
        const delayMs = backoffDelayMs(
          {
            maxAttempts: Number.POSITIVE_INFINITY,
            baseDelayMs: backoff.baseMs,
            maxDelayMs: backoff.maxMs,
          },
          Math.min(failures, 30),
          random,
        );
        if (this.current.kind === 'draining') {
          // Draining stays draining: reconnect only to hand in the running jobs' results.
          options.log.warn(
            { err: lost, retryInMs: delayMs },
            'session lost while draining; reconnecting to deliver results',
          );
        } else {
          this.move({ kind: 'waiting', attempt: failures + 1, delayMs, lastError: lost });
        }
        await this.sleep(delayMs, this.stopping.signal);
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * With several coordinators, after a session that ended: true when
   * another one is to be dialled now (a standby named the leader, or this
   * one could not be reached and some other was not tried yet); false when
   * the backoff comes first. A session that was welcomed starts a new round
   * at the same coordinator.
   */
  private nextCoordinator(joinedAt: number | undefined, failure: unknown): boolean {
    const search = this.search;
    if (!search) return false;
    const from = search.current;
    if (joinedAt !== undefined) {
      search.newRound(from);
      return false;
    }
    const next = search.failed(failure);
    if (!next) {
      this.options.log.warn(
        { coordinators: search.attempts.map((a) => `${a.address} (${a.reason})`) },
        'no coordinator took the session; waiting before the next round',
      );
      search.newRound();
      return false;
    }
    if (next.hinted) {
      this.options.log.info(
        {
          coordinator: from,
          leader: next.address,
          ...(!search.addresses.includes(next.address) && { listed: false }),
        },
        'a standby coordinator named the leader; connecting to it',
      );
    } else {
      this.options.log.info(
        { coordinator: from, err: errorLine(failure), next: next.address },
        'coordinator did not take the session; trying the next one',
      );
    }
    return true;
  }

  /**
   * Stop taking jobs; wait for the running ones up to `graceMs`, then cancel
   * them and wait for their results; then stop. A second call waits for the first.
   */
  drain(graceMs: number): Promise<void> {
    if (this.drained) return this.drained;
    if (this.current.kind === 'stopped') return Promise.resolve();
    this.move(
      { kind: 'draining', deadline: this.now() + graceMs },
      { runningJobs: this.running.size, graceMs },
    );
    const jobIds = [...this.running.keys()];
    const jobs = [...this.running.values()];
    const finished = Promise.allSettled(jobs.map((job) => job.done));
    this.drained = (async () => {
      const inTime = await this.within(
        graceMs,
        finished.then(() => true),
      );
      if (!inTime) {
        for (const job of jobs) job.controller.abort('agent shutting down');
        await finished;
      }
      // A result handed to the transport is not yet received: stopping now
      // would cancel the stream under it, and the coordinator would re-queue the job.
      await this.within(this.options.ackWaitMs ?? 5_000, this.acknowledged(jobIds));
      this.stop('drained');
    })();
    return this.drained;
  }

  /** `promise`'s value, or undefined once `ms` passed (or the session stopped). */
  private async within<T>(ms: number, promise: Promise<T>): Promise<T | undefined> {
    const timer = new AbortController();
    const stopped = this.stopping.signal;
    const onStop = () => timer.abort();
    stopped.addEventListener('abort', onStop, { once: true });
    try {
      return await Promise.race([promise, this.sleep(ms, timer.signal).then(() => undefined)]);
    } finally {
      timer.abort();
      stopped.removeEventListener('abort', onStop);
    }
  }

  /** Resolves once the coordinator acknowledged the results of all of `jobIds`. */
  private acknowledged(jobIds: readonly string[]): Promise<void> {
    return new Promise<void>((resolve) => {
      const check = () => {
        if (jobIds.some((id) => this.unacked.has(id))) return;
        this.ackListeners.delete(check);
        resolve();
      };
      this.ackListeners.add(check);
      check();
    });
  }

  /** Cancel the running jobs and leave now. Idempotent. */
  stop(reason = 'stopped'): void {
    this.end(reason, false);
  }

  private end(reason: string, fatal: boolean): void {
    if (this.current.kind === 'stopped') return;
    this.move({ kind: 'stopped', reason, fatal });
    this.stopping.abort();
    this.ackListeners.clear();
    for (const job of this.running.values()) job.controller.abort('agent stopped');
    this.call?.cancel();
  }

  /** The only way between states: refuses moves MOVES does not allow, logs each move once. */
  private move(next: SessionState, fields: Record<string, unknown> = {}): void {
    const from = this.current.kind;
    if (!MOVES[from].includes(next.kind)) throw new IllegalSessionMoveError(from, next.kind);
    this.current = next;
    const log = this.options.log;
    switch (next.kind) {
      case 'connecting':
        log.debug({ attempt: next.attempt }, 'connecting to the coordinator');
        break;
      case 'joined':
        log.info(fields, 'joined the coordinator');
        break;
      case 'waiting':
        log.warn(
          { err: next.lastError, attempt: next.attempt, retryInMs: next.delayMs },
          'session lost; reconnecting',
        );
        break;
      case 'draining':
        log.info(fields, 'session draining: no new jobs; running jobs may finish');
        break;
      case 'stopped':
        if (next.fatal) log.error({ err: next.reason }, 'session stopped: not retrying');
        else log.info({ reason: next.reason }, 'session stopped');
        break;
    }
  }

  private send(message: ConnectRequestInit): Promise<void> {
    const call = this.call;
    if (!call) return Promise.resolve();
    return call.send(message).catch(() => undefined);
  }

  /** One session, hello to end; resolves with when it was welcomed (undefined: never). */
  private async session(): Promise<number | undefined> {
    const { options } = this;
    const call =
      this.search && options.coordinators
        ? options.coordinators.connect(this.search.current)
        : options.client.connect();
    this.call = call;
    this.joinedAt = undefined;
    let heartbeat: NodeJS.Timeout | undefined;
    try {
      await call.send(
        create(ConnectRequestSchema, {
          body: {
            case: 'hello',
            value: {
              name: options.name,
              version: BRAID_VERSION,
              nativePlatform: toProtoPlatform(options.native),
              emulatedPlatforms: options.emulated.map((e) => ({
                platform: toProtoPlatform(e.platform),
                handler: e.handler,
              })),
              capacity: options.capacity,
              labels: options.labels,
              engineVersion: options.engineVersion,
              engineId: options.engineId ?? '',
              heldJobIds: [...this.running.keys(), ...this.unacked.keys()],
            },
          },
        }),
      );
      for await (const message of call) {
        const body = message.body;
        if (body.case === 'welcome') {
          this.joinedAt = this.now();
          if (this.current.kind === 'connecting') {
            this.move(
              { kind: 'joined', since: this.joinedAt },
              {
                ...(this.search && { coordinator: this.search.current }),
                coordinatorVersion: body.value.coordinatorVersion,
                native: formatPlatform(options.native),
                emulated: options.emulated.map((e) => formatPlatform(e.platform)),
                capacity: options.capacity,
              },
            );
          }
          const interval = Math.max(100, body.value.heartbeatIntervalMs || 5000);
          if (heartbeat) clearInterval(heartbeat);
          heartbeat = setInterval(() => {
            void this.send({
              body: {
                case: 'heartbeat',
                value: {
                  sentAt: timestampFromDate(new Date()),
                  runningJobIds: [...this.running.keys()],
                },
              },
            });
          }, interval);
          // Results the last coordinator (or session) never acknowledged go again.
          for (const result of this.unacked.values()) void this.send(result);
        } else if (body.case === 'ack') {
          this.unacked.delete(body.value.jobId);
          for (const listener of [...this.ackListeners]) listener();
        } else if (body.case === 'assign') {
          this.startJob(body.value);
        } else if (body.case === 'cancel') {
          const job = this.running.get(body.value.jobId);
          if (job) {
            options.log.info(
              { jobId: body.value.jobId, reason: body.value.reason },
              'job cancelled by the coordinator',
            );
            job.controller.abort(body.value.reason || 'cancelled');
          }
        }
      }
      return this.joinedAt;
    } catch (err) {
      if (this.isStopped()) return this.joinedAt;
      throw err;
    } finally {
      if (heartbeat) clearInterval(heartbeat);
      this.call = undefined;
    }
  }

  /** Send a job's result and keep it until the coordinator acknowledges it. */
  private sendResult(message: ConnectRequestInit & { body: { case: 'result' } }): Promise<void> {
    const jobId = message.body.value.jobId ?? '';
    // Bounded: a coordinator that never acknowledges cannot grow this forever.
    if (this.unacked.size >= MAX_UNACKED)
      this.unacked.delete(this.unacked.keys().next().value as string);
    this.unacked.set(jobId, message);
    return this.send(message);
  }

  private startJob(job: AssignJob): void {
    if (this.current.kind === 'draining' || this.current.kind === 'stopped') {
      // Handed back: the coordinator places it elsewhere.
      void this.sendResult({
        body: {
          case: 'result',
          value: {
            jobId: job.jobId,
            error: `agent ${this.options.name} is shutting down`,
          },
        },
      });
      return;
    }
    const controller = new AbortController();
    const done = this.runJob(job, controller.signal).finally(() => {
      this.running.delete(job.jobId);
    });
    this.running.set(job.jobId, { controller, done });
  }

  private async runJob(job: AssignJob, signal: AbortSignal): Promise<void> {
    const { options } = this;
    const shipper = new LogShipper({
      jobId: job.jobId,
      send: (chunk) => this.send({ body: { case: 'log', value: chunk } }),
    });
    let lastStep = '';
    const report: JobReporter = {
      step: (step) => {
        if (step === lastStep) return;
        lastStep = step;
        void this.send({
          body: { case: 'update', value: { jobId: job.jobId, state: JobState.RUNNING, step } },
        });
      },
      log: (line, source = LogSource.BUILD) => shipper.add(line, source),
    };
    try {
      await this.send({
        body: {
          case: 'update',
          value: { jobId: job.jobId, state: JobState.RUNNING, step: 'starting' },
        },
      });
      report.log(
        `${job.emulated ? 'emulated' : 'native'} build of ${formatPlatform(fromProtoPlatform(job.platform))} on agent ${options.name}`,
        LogSource.AGENT,
      );
      const outcome = await options.runJob(job, report, signal);
      await shipper.flush();
      await this.sendResult({
        body: {
          case: 'result',
          value: {
            jobId: job.jobId,
            image: outcome.image
              ? create(ImageDescriptorSchema, {
                  digest: outcome.image.digest,
                  sizeBytes: BigInt(outcome.image.sizeBytes),
                  mediaType: outcome.image.mediaType,
                  platform: toProtoPlatform(outcome.image.platform),
                })
              : undefined,
            error: outcome.error ?? '',
            durationMs: BigInt(outcome.durationMs),
            emulated: job.emulated,
            fetchMs: BigInt(outcome.fetchMs),
            buildMs: BigInt(outcome.buildMs),
            pushMs: BigInt(outcome.pushMs),
            facts: outcome.facts,
          },
        },
      });
    } catch (err) {
      await shipper.flush().catch(() => undefined);
      await this.sendResult({
        body: { case: 'result', value: { jobId: job.jobId, error: errorLine(err) } },
      });
    }
  }
}
