/**
 * SSH agent forwarding through the coordinator: a build step's connection
 * to its forwarded ssh-agent arrives from an agent (AgentService.ForwardSsh)
 * and is relayed to the client that submitted the build, which serves the
 * agent from its own machine (BuildService.ForwardSsh). The coordinator only
 * moves bytes; it never holds a key. A build's forwarding ends with it.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import type {
  AgentServiceForwardSshRequest,
  AgentServiceForwardSshResponseSchema,
} from '../gen/braid/v1/agent_pb.js';
import type { ForwardSshRequest, ForwardSshResponseSchema } from '../gen/braid/v1/build_pb.js';
import type { Platform as ProtoPlatform } from '../gen/braid/v1/common_pb.js';
import { BraidError, errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import { AsyncQueue } from '../rpc/async-queue.js';
import type { CallIdentity } from '../rpc/service.js';

type ClientMessage = MessageInitShape<typeof ForwardSshResponseSchema>;
type AgentMessage = MessageInitShape<typeof AgentServiceForwardSshResponseSchema>;

/** The ssh-agent protocol's own cap on a message, and braid's on one chunk. */
export const MAX_SSH_CHUNK_BYTES = 256 * 1024;
/** Connections one build may have open at once (a RUN step opens a few). */
const MAX_CONNECTIONS_PER_BUILD = 64;
/** How long a step's connection waits for the submitting client to attach. */
const ATTACH_WAIT_MS = 10_000;

/** What the relay needs to know of a job an agent names. */
export interface SshJob {
  buildId: string;
  sshIds: readonly string[];
  platform: ProtoPlatform | undefined;
}

interface Provider {
  identity: CallIdentity | undefined;
  outbound: AsyncQueue<ClientMessage>;
  connections: Map<bigint, AsyncQueue<AgentMessage>>;
  nextId: bigint;
}

interface Expected {
  /** Who submitted the build: only they may serve its agents. */
  submitter: CallIdentity | undefined;
  provider?: Provider;
}

function sameCaller(a: CallIdentity | undefined, b: CallIdentity | undefined): boolean {
  return a === undefined || b === undefined ? a === b : a.id === b.id;
}

export class SshRelay {
  private readonly builds = new Map<string, Expected>();

  constructor(private readonly log: Logger) {}

  /** A build with ssh ids was submitted by `submitter`; its client will serve them. */
  expect(buildId: string, submitter: CallIdentity | undefined): void {
    this.builds.set(buildId, { submitter });
  }

  /** Whether this process relays the build's SSH agents (false after a restart). */
  expects(buildId: string): boolean {
    return this.builds.has(buildId);
  }

  /** The build ended: its client's stream ends, and every open connection with it. */
  forget(buildId: string): void {
    const expected = this.builds.get(buildId);
    this.builds.delete(buildId);
    const provider = expected?.provider;
    if (!provider) return;
    for (const connection of provider.connections.values()) connection.close();
    provider.connections.clear();
    provider.outbound.close();
  }

  /**
   * The client serving a build's agents; a step that connects before the
   * client attached (it does so right after its submit) waits for it, within a bound.
   */
  private async providerOf(buildId: string, signal: AbortSignal): Promise<Provider | undefined> {
    const deadline = Date.now() + ATTACH_WAIT_MS;
    for (;;) {
      const provider = this.builds.get(buildId)?.provider;
      if (provider && !provider.outbound.isClosed) return provider;
      if (Date.now() >= deadline || signal.aborted || !this.builds.has(buildId)) return undefined;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** BuildService.ForwardSsh: the submitting client serves its build's SSH agents. */
  serveClient(
    requests: AsyncIterable<ForwardSshRequest>,
    identity: CallIdentity | undefined,
    signal: AbortSignal,
  ): AsyncIterable<ClientMessage> {
    return this.clientStream(requests, identity, signal);
  }

  /** Registers the client as its build's provider, or throws why it may not be. */
  private attach(buildId: string, provider: Provider): void {
    const expected = this.builds.get(buildId);
    if (!expected)
      throw new BraidError(
        'failed_precondition',
        `build "${buildId}" forwards no SSH agent, or it has ended`,
      );
    if (!sameCaller(expected.submitter, provider.identity))
      throw new BraidError(
        'permission_denied',
        `only the client that submitted build ${buildId} may forward its SSH agents`,
      );
    if (expected.provider && !expected.provider.outbound.isClosed)
      throw new BraidError(
        'already_exists',
        `build ${buildId} already has a client forwarding its SSH agents`,
      );
    expected.provider = provider;
    this.log.info({ buildId }, 'client forwards SSH agents');
  }

  private async *clientStream(
    requests: AsyncIterable<ForwardSshRequest>,
    identity: CallIdentity | undefined,
    signal: AbortSignal,
  ): AsyncGenerator<ClientMessage> {
    const iterator = requests[Symbol.asyncIterator]();
    const hello = await iterator.next();
    if (hello.done || hello.value.body.case !== 'hello')
      throw new BraidError('invalid_argument', 'a ForwardSsh stream must start with a hello');
    const buildId = hello.value.body.value.buildId;
    const outbound = new AsyncQueue<ClientMessage>();
    const provider: Provider = { identity, outbound, connections: new Map(), nextId: 1n };
    this.attach(buildId, provider);
    // The client's bytes and closes, read beside the messages sent to it below.
    const pumping = (async () => {
      for (;;) {
        const next = await iterator.next();
        if (next.done) break;
        const body = next.value.body;
        if (body.case === 'data') {
          const connection = provider.connections.get(body.value.connectionId);
          if (body.value.data.length > MAX_SSH_CHUNK_BYTES) connection?.close();
          else connection?.push({ data: body.value.data });
        } else if (body.case === 'closed') {
          const connection = provider.connections.get(body.value.connectionId);
          provider.connections.delete(body.value.connectionId);
          connection?.close();
        }
      }
    })().catch((err: unknown) => {
      this.log.warn({ buildId, err: errorLine(err) }, 'SSH forwarding client stream failed');
      outbound.close();
    });
    const onAbort = (): void => outbound.close();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const message of outbound) yield message;
    } finally {
      signal.removeEventListener('abort', onAbort);
      outbound.close();
      for (const connection of provider.connections.values()) connection.close();
      provider.connections.clear();
      const expected = this.builds.get(buildId);
      if (expected?.provider === provider) expected.provider = undefined;
      void pumping;
    }
  }

  /**
   * AgentService.ForwardSsh: one connection of a job's build step. `resolve`
   * names the job's build when the calling agent runs that job (else throws).
   */
  relayAgent(
    requests: AsyncIterable<AgentServiceForwardSshRequest>,
    resolve: (jobId: string) => SshJob,
    signal: AbortSignal,
  ): AsyncIterable<AgentMessage> {
    return this.agentConnection(requests, resolve, signal);
  }

  private async *agentConnection(
    requests: AsyncIterable<AgentServiceForwardSshRequest>,
    resolve: (jobId: string) => SshJob,
    signal: AbortSignal,
  ): AsyncGenerator<AgentMessage> {
    const iterator = requests[Symbol.asyncIterator]();
    const first = await iterator.next();
    if (first.done || first.value.body.case !== 'open')
      throw new BraidError('invalid_argument', 'a ForwardSsh call must start with open');
    const { jobId, sshId } = first.value.body.value;
    const job = resolve(jobId);
    if (!job.sshIds.includes(sshId))
      throw new BraidError(
        'not_found',
        `the build of job ${jobId} forwards no SSH agent "${sshId}"`,
      );
    const provider = await this.providerOf(job.buildId, signal);
    if (!provider)
      throw new BraidError(
        'failed_precondition',
        `no braid build is attached to forward SSH agent "${sshId}" of build ${job.buildId}: --ssh needs the submitting client to stay attached`,
      );
    if (provider.connections.size >= MAX_CONNECTIONS_PER_BUILD)
      throw new BraidError(
        'resource_exhausted',
        `build ${job.buildId} has ${MAX_CONNECTIONS_PER_BUILD} SSH connections open`,
      );
    const connectionId = provider.nextId++;
    const inbound = new AsyncQueue<AgentMessage>();
    provider.connections.set(connectionId, inbound);
    provider.outbound.push({
      body: { case: 'opened', value: { connectionId, sshId, platform: job.platform } },
    });
    let error = '';
    const upstream = (async () => {
      try {
        for (;;) {
          const next = await iterator.next();
          if (next.done) break;
          const body = next.value.body;
          if (body.case !== 'data') continue;
          if (body.value.length > MAX_SSH_CHUNK_BYTES)
            throw new BraidError('invalid_argument', 'an SSH chunk over 256 KiB');
          provider.outbound.push({
            body: { case: 'data', value: { connectionId, data: body.value } },
          });
        }
      } catch (err) {
        error = errorLine(err);
      } finally {
        inbound.close();
      }
    })();
    const onAbort = (): void => inbound.close();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const message of inbound) yield message;
    } finally {
      signal.removeEventListener('abort', onAbort);
      // Tell the client unless it ended the connection itself.
      if (provider.connections.delete(connectionId))
        provider.outbound.push({ body: { case: 'closed', value: { connectionId, error } } });
      // The agent's side ends when this answer stream does; no wait for it here.
      void upstream;
    }
  }
}
