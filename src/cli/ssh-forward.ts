/**
 * `braid build --ssh`: the CLI's end of SSH agent forwarding. Each
 * connection a build's `RUN --mount=type=ssh` opens arrives here as a byte
 * stream carrying the ssh-agent protocol, and is answered from the sources
 * the user named for its id: a running ssh-agent's socket or private key
 * files. Read-only, as buildx: keys are listed and used to sign, never
 * added, removed or locked.
 */
import type { Duplex } from 'node:stream';
import { BraidError, UsageError } from '../errors.js';
import type { Logger } from '../log.js';
import { serveAgentConnection, type AgentConnection } from './ssh-forward/agent-connection.js';
import { openAgentSocket } from './ssh-forward/agent-socket.js';
import { openKeyFile } from './ssh-forward/key-file.js';
import { SourceProblem, type KeySource, type SourceTimeouts } from './ssh-forward/key-source.js';

import type { SshSpec } from './buildx/ssh.js';

export type { SshSource, SshSpec } from './buildx/ssh.js';

export interface ForwardedAgentsOptions {
  /** Connecting to an agent socket (default 2 s, as BuildKit dials). */
  connectTimeoutMs?: number;
  /** One request to an agent socket, connecting included (default 30 s: a key may need a confirmation). */
  requestTimeoutMs?: number;
  /** Requests in flight on one forwarded connection (default 16). */
  maxPendingRequests?: number;
  log?: Logger;
}

const DEFAULTS = { connectTimeoutMs: 2_000, requestTimeoutMs: 30_000, maxPendingRequests: 16 };

export class ForwardedAgents {
  private readonly connections = new Set<AgentConnection>();
  private closed = false;

  private constructor(
    private readonly sourcesById: ReadonlyMap<string, readonly KeySource[]>,
    private readonly maxPendingRequests: number,
    private readonly log: Logger | undefined,
  ) {}

  /**
   * Checks every source now (the socket exists and answers, the key file
   * parses): a problem is one line naming `--ssh ID`, a UsageError (exit 2).
   */
  static async open(
    specs: readonly SshSpec[],
    options: ForwardedAgentsOptions = {},
  ): Promise<ForwardedAgents> {
    const timeouts: SourceTimeouts = {
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
      requestTimeoutMs: options.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
    };
    const sourcesById = new Map<string, KeySource[]>();
    for (const spec of specs) {
      const flag = `--ssh ${spec.id}`;
      if (sourcesById.has(spec.id)) throw invalid(flag, 'the id is given more than once');
      if (spec.sources.length === 0) throw invalid(flag, 'no agent socket or key file given');
      const sources: KeySource[] = [];
      for (const source of spec.sources) {
        try {
          sources.push(
            source.kind === 'socket'
              ? await openAgentSocket(source.path, timeouts)
              : openKeyFile(source.path, spec.id),
          );
        } catch (err) {
          if (err instanceof SourceProblem) throw invalid(flag, err.message, err);
          throw err;
        }
      }
      sourcesById.set(spec.id, sources);
    }
    return new ForwardedAgents(
      sourcesById,
      options.maxPendingRequests ?? DEFAULTS.maxPendingRequests,
      options.log,
    );
  }

  ids(): string[] {
    return [...this.sourcesById.keys()];
  }

  /** Serves one forwarded connection for `id` on `stream` until either side ends it; never throws (errors end the stream). */
  serve(id: string, stream: Duplex): void {
    const sources = this.sourcesById.get(id);
    if (this.closed || !sources) {
      this.log?.warn({ sshId: id, closed: this.closed }, 'forwarded ssh-agent connection refused');
      // Some Duplex kinds report their own destroy() as an error: not ours to throw.
      stream.on('error', () => undefined);
      stream.destroy();
      return;
    }
    const connection = serveAgentConnection(stream, sources, {
      maxPendingRequests: this.maxPendingRequests,
      log: this.log?.child({ sshId: id }),
    });
    this.connections.add(connection);
    void connection.ended.then(() => this.connections.delete(connection));
  }

  /** Ends every connection being served; later ones are refused. */
  close(): void {
    this.closed = true;
    for (const connection of this.connections) connection.close();
    this.connections.clear();
  }
}

function invalid(flag: string, problem: string, cause?: unknown): BraidError {
  return new UsageError(`${flag}: ${problem}`, { cause });
}
