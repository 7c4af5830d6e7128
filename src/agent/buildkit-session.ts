/**
 * The BuildKit session of one build: the gRPC services BuildKit calls back
 * while it builds — secrets, SSH agent forwarding, registry credentials and
 * the health check that keeps the session alive. The engine driver dials
 * `POST /session` (an upgrade to h2c) and hands the connection here; on it
 * the agent is the gRPC *server* and BuildKit the client, as with the docker
 * CLI's own session. Nothing here knows how the connection was made, so a
 * local socket, TCP and SSH channels all serve alike.
 */
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { Server, ServerCredentials, type ServerOptions } from '@grpc/grpc-js';
import type { DescMethod } from '@bufbuild/protobuf';
import { BraidError, errorLine } from '../errors.js';
import type { Credentials } from '../oci/credentials.js';
import { Auth } from '../gen/moby/filesync/v1/auth_pb.js';
import { Secrets } from '../gen/moby/buildkit/secrets/v1/secrets_pb.js';
import { SSH } from '../gen/moby/sshforward/v1/ssh_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../gen/grpc/health/v1/health_pb.js';
import { addService, methodPath } from '../rpc/service.js';

/** The metadata key that names a forwarded agent (BuildKit's KeySSHID). */
export const SSH_ID_METADATA = 'buildkit.ssh.id';
const DEFAULT_SSH_ID = 'default';

/** One connection to a forwarded ssh-agent: the agent protocol's bytes both ways. */
export type SshAgentConnection = Duplex;

/** Where `RUN --mount=type=ssh` connections go (braid: through the coordinator to the CLI). */
export interface SshForwarder {
  /** The ids the build was given (`--ssh default`, `--ssh gh=...`). */
  readonly ids: readonly string[];
  /** Opens one connection to the agent named `id`; rejects when it cannot be reached. */
  open(id: string, signal: AbortSignal): Promise<SshAgentConnection>;
}

/** What a build's session offers BuildKit. */
export interface SessionProviders {
  /** Secret values by id; BuildKit gets NOT_FOUND for any other id. */
  secrets: ReadonlyMap<string, Uint8Array>;
  /** Registry credentials by host (the agent's docker config); undefined: anonymous. */
  credentials: (host: string) => Promise<Credentials | undefined>;
  ssh?: SshForwarder | undefined;
}

/** A session with nothing to give: no secrets, no SSH, anonymous pulls. */
export const NO_PROVIDERS: SessionProviders = {
  secrets: new Map(),
  credentials: async () => undefined,
};

/** The HTTP headers of `POST /session` that describe a session to the engine. */
export type SessionHeaders = Record<string, string | string[]>;

export class BuildkitSession {
  /** Named in `/build?session=ID`. */
  readonly id: string;
  private readonly sharedKey: string;
  private readonly server: Server;
  private readonly injector: ReturnType<Server['createConnectionInjector']>;
  private readonly methods: string[];
  private readonly calls = new AbortController();
  private closed = false;

  constructor(
    private readonly providers: SessionProviders = NO_PROVIDERS,
    options: { name?: string } = {},
  ) {
    this.id = randomBytes(16).toString('hex');
    // BuildKit keys its local cache of the client's files by this; braid sends none.
    this.sharedKey = options.name ?? 'braid';
    const serverOptions: ServerOptions = {
      'grpc.max_receive_message_length': 4 * 1024 * 1024,
      'grpc.max_send_message_length': 4 * 1024 * 1024,
    };
    this.server = new Server(serverOptions);
    this.methods = [];
    const expose = (service: { methods: readonly DescMethod[] }): void => {
      for (const method of service.methods) this.methods.push(methodPath(method));
    };

    addService(this.server, Health, {
      check: () => ({ status: HealthCheckResponse_ServingStatus.SERVING }),
    });
    expose(Health);

    addService(this.server, Secrets, {
      getSecret: (request) => {
        const value = this.providers.secrets.get(request.id);
        // NOT_FOUND is BuildKit's "no such secret": an optional mount stays empty.
        if (value === undefined)
          throw new BraidError('not_found', `secret ${request.id} was not given to the build`);
        return { data: value };
      },
    });
    expose(Secrets);

    addService(this.server, Auth, {
      credentials: async (request) => {
        let found: Credentials | undefined;
        try {
          found = await this.providers.credentials(request.host);
        } catch (err) {
          // The build then pulls anonymously and the registry says why it refused.
          throw new BraidError('unavailable', `credentials for ${request.host}: ${errorLine(err)}`);
        }
        if (found === undefined) return {};
        return found.kind === 'basic'
          ? { username: found.username, secret: found.password }
          : { username: '', secret: found.token };
      },
      fetchToken: () => {
        throw new BraidError('unimplemented', 'braid keeps no token authority');
      },
      getTokenAuthority: () => {
        throw new BraidError('unimplemented', 'braid keeps no token authority');
      },
      verifyTokenAuthority: () => {
        throw new BraidError('unimplemented', 'braid keeps no token authority');
      },
    });
    // Only Credentials is announced: BuildKit then runs the token flow itself.
    this.methods.push(methodPath(Auth.method.credentials));

    addService(this.server, SSH, {
      checkAgent: (request) => {
        const id = request.id || DEFAULT_SSH_ID;
        if (!this.providers.ssh?.ids.includes(id))
          throw new BraidError(
            'not_found',
            `no SSH agent "${id}" was forwarded to the build (braid build --ssh ${id})`,
          );
        return {};
      },
      forwardAgent: (requests, ctx) => {
        const named = ctx.metadata.get(SSH_ID_METADATA)[0];
        const id = typeof named === 'string' && named !== '' ? named : DEFAULT_SSH_ID;
        return this.forward(id, requests, ctx.signal);
      },
    });
    expose(SSH);

    this.injector = this.server.createConnectionInjector(ServerCredentials.createInsecure());
  }

  /** The headers of `POST /session`: the session's id and every method served. */
  headers(): SessionHeaders {
    return {
      'X-Docker-Expose-Session-Uuid': this.id,
      'X-Docker-Expose-Session-Name': this.sharedKey,
      'X-Docker-Expose-Session-Sharedkey': this.sharedKey,
      'X-Docker-Expose-Session-Grpc-Method': [...this.methods],
    };
  }

  /** Serves the session on the upgraded connection (the engine speaks first, as HTTP/2 client). */
  serve(connection: Duplex): void {
    if (this.closed) {
      connection.destroy();
      return;
    }
    this.injector.injectConnection(connection);
  }

  /** Ends every call and the connection. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.calls.abort(new BraidError('cancelled', 'the build ended'));
    this.injector.destroy();
    this.server.forceShutdown();
  }

  private async *forward(
    id: string,
    requests: AsyncIterable<{ data: Uint8Array }>,
    callSignal: AbortSignal,
  ): AsyncIterable<{ data: Uint8Array }> {
    const ssh = this.providers.ssh;
    if (!ssh?.ids.includes(id))
      throw new BraidError('not_found', `no SSH agent "${id}" was forwarded to the build`);
    const signal = AbortSignal.any([callSignal, this.calls.signal]);
    const connection = await ssh.open(id, signal);
    const stop = (): void => {
      connection.destroy();
    };
    signal.addEventListener('abort', stop, { once: true });
    // BuildKit's side to the agent runs beside the answers read below.
    const upstream = (async () => {
      try {
        for await (const request of requests) {
          if (!connection.write(request.data)) await onceDrained(connection, signal);
        }
        connection.end();
      } catch {
        connection.destroy();
      }
    })();
    try {
      for await (const chunk of connection as AsyncIterable<Buffer>) yield { data: chunk };
    } catch (err) {
      // The step's ssh client reads this as its agent going away, in words.
      throw new BraidError('unavailable', `SSH agent "${id}": ${errorLine(err)}`, { cause: err });
    } finally {
      signal.removeEventListener('abort', stop);
      connection.destroy();
      // Not awaited: BuildKit's side may wait for an answer that will never
      // come; ending this answer stream is what ends its connection.
      void upstream;
    }
  }
}

function onceDrained(stream: Duplex, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    stream.once('drain', done);
    stream.once('close', done);
    signal.addEventListener('abort', done, { once: true });
  });
}
