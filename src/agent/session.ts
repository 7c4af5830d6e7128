/**
 * The agent's session with the coordinator: dial out, say hello, keep
 * heartbeats going, run assigned jobs within capacity, and reconnect with
 * capped, jittered backoff when the coordinator goes away. Errors a retry
 * cannot fix (bad name, name in use, refused credentials) end the loop.
 */
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { AgentService, ConnectRequestSchema, type AssignJob } from '../gen/braid/v1/agent_pb.js';
import { LogSource } from '../gen/braid/v1/build_pb.js';
import { ImageDescriptorSchema, JobState } from '../gen/braid/v1/common_pb.js';
import { BraidError, RpcError, errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import { formatPlatform, type Platform } from '../oci/platform.js';
import type { ServiceClient } from '../rpc/client.js';
import { fromProtoPlatform, toProtoPlatform } from '../rpc/platform.js';
import { BRAID_VERSION } from '../version.js';
import type { EmulatedPlatform } from './capabilities.js';
import { LogShipper } from './log-shipper.js';
import type { JobOutcome, JobReporter } from './job-runner.js';

type AgentClient = ServiceClient<(typeof AgentService)['method']>;
type Call = ReturnType<AgentClient['connect']>;
type ConnectRequestInit = MessageInitShape<typeof ConnectRequestSchema>;

const MAX_UNACKED = 256;

export interface SessionOptions {
  name: string;
  capacity: number;
  labels: Record<string, string>;
  native: Platform;
  emulated: EmulatedPlatform[];
  engineVersion: string;
  /** The engine's identity (Docker /info ID), for the coordinator's cache affinity. */
  engineId?: string;
  client: AgentClient;
  log: Logger;
  runJob: (job: AssignJob, report: JobReporter, signal: AbortSignal) => Promise<JobOutcome>;
  /** Reconnect backoff. */
  backoff?: { baseMs: number; maxMs: number };
  random?: () => number;
}

const FATAL_CODES = new Set([
  'unauthenticated',
  'permission_denied',
  'unimplemented',
  'invalid_argument',
  'already_exists',
]);

export class AgentSessionLoop {
  private readonly running = new Map<string, AbortController>();
  /** Results sent but not yet acknowledged: re-sent on every new session. */
  private readonly unacked = new Map<string, ConnectRequestInit>();
  private call: Call | undefined;
  private draining = false;
  private stopped = false;

  constructor(private readonly options: SessionOptions) {}

  /** Run until stopped or a fatal error; resolves on stop, rejects on fatal. */
  async run(signal: AbortSignal): Promise<void> {
    const backoff = this.options.backoff ?? { baseMs: 500, maxMs: 60_000 };
    const random = this.options.random ?? Math.random;
    let failures = 0;
    signal.addEventListener('abort', () => this.stop(), { once: true });
    while (!this.stopped) {
      const connectedAt = Date.now();
      try {
        await this.session();
        if (this.stopped) return;
        this.options.log.warn('coordinator ended the session; reconnecting');
      } catch (err) {
        if (this.stopped) return;
        const code = err instanceof BraidError ? err.code : 'unavailable';
        if (FATAL_CODES.has(code)) throw err;
        this.options.log.warn({ err: errorLine(err) }, 'session lost; reconnecting');
      }
      // A session that lasted is not a failure streak.
      failures = Date.now() - connectedAt > 30_000 ? 1 : failures + 1;
      const ceiling = Math.min(backoff.maxMs, backoff.baseMs * 2 ** Math.min(failures - 1, 16));
      const delay = Math.round(ceiling / 2 + random() * (ceiling / 2));
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        signal.addEventListener(
          'abort',
          () => {
            clearTimeout(timer);
            resolve();
          },
          { once: true },
        );
      });
    }
  }

  /** Stop taking jobs; finish the running ones within `graceMs`, then cancel them. */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    const deadline = Date.now() + graceMs;
    while (this.running.size > 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    for (const controller of this.running.values()) controller.abort('agent shutting down');
    while (this.running.size > 0) await new Promise((r) => setTimeout(r, 50));
    this.stop();
  }

  stop(): void {
    this.stopped = true;
    for (const controller of this.running.values()) controller.abort('agent stopped');
    this.call?.cancel();
  }

  private send(message: ConnectRequestInit): Promise<void> {
    const call = this.call;
    if (!call) return Promise.resolve();
    return call.send(message).catch(() => undefined);
  }

  private async session(): Promise<void> {
    const { options } = this;
    const call = options.client.connect();
    this.call = call;
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
          options.log.info(
            {
              coordinatorVersion: body.value.coordinatorVersion,
              native: formatPlatform(options.native),
              emulated: options.emulated.map((e) => formatPlatform(e.platform)),
              capacity: options.capacity,
            },
            'joined the coordinator',
          );
          const interval = Math.max(100, body.value.heartbeatIntervalMs || 5000);
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
        } else if (body.case === 'assign') {
          void this.startJob(body.value);
        } else if (body.case === 'cancel') {
          const controller = this.running.get(body.value.jobId);
          if (controller) {
            options.log.info(
              { jobId: body.value.jobId, reason: body.value.reason },
              'job cancelled by the coordinator',
            );
            controller.abort(body.value.reason || 'cancelled');
          }
        }
      }
    } catch (err) {
      if (err instanceof RpcError && err.code === 'cancelled' && this.stopped) return;
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

  private async startJob(job: AssignJob): Promise<void> {
    const { options } = this;
    const controller = new AbortController();
    this.running.set(job.jobId, controller);
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
      if (this.draining)
        throw new BraidError('unavailable', `agent ${options.name} is shutting down`);
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
      const outcome = await options.runJob(job, report, controller.signal);
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
    } finally {
      this.running.delete(job.jobId);
    }
  }
}
