/**
 * Start and stop a grpc-js server on one address (TLS or plaintext), with
 * braid's limits, and optionally a private plaintext unix socket beside it.
 */
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { BraidError } from '../errors.js';
import { formatGrpcAddress, type GrpcAddress } from './address.js';
import { serverCredentials, type ServerTls } from './credentials.js';

export interface ServerLimits {
  /** Largest message the server accepts. */
  maxReceiveMessageBytes: number;
  /** Largest message the server sends. */
  maxSendMessageBytes: number;
}

export const DEFAULT_SERVER_LIMITS: ServerLimits = {
  maxReceiveMessageBytes: 8 * 1024 * 1024,
  maxSendMessageBytes: 8 * 1024 * 1024,
};

export interface RunningServer {
  readonly server: Server;
  /** The bound address, with the real port when port 0 was asked for. */
  readonly address: GrpcAddress;
  /** Stop accepting calls; after `graceMs`, cancel the ones still running. */
  stop(graceMs: number): Promise<void>;
}

export interface StartServerOptions {
  address: GrpcAddress;
  /** Allow plaintext on a non-loopback address (when TLS is not configured). */
  insecure: boolean;
  /** Serve TLS (and with `tls.ca`, require client certificates). */
  tls?: ServerTls | undefined;
  /**
   * Also serve plaintext on this unix socket path (for an agent in the same
   * process; the caller keeps the path in a directory only it can enter).
   */
  privateSocket?: string | undefined;
  limits?: ServerLimits;
  register(server: Server): void;
}

function bind(server: Server, target: string, creds: ServerCredentials): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(target, creds, (err, bound) =>
      err
        ? reject(
            new BraidError('unavailable', `cannot listen on ${target}: ${err.message}`, {
              cause: err,
            }),
          )
        : resolve(bound),
    );
  });
}

export async function startServer(options: StartServerOptions): Promise<RunningServer> {
  const { address } = options;
  const creds = serverCredentials(address, { insecure: options.insecure, tls: options.tls });
  const limits = options.limits ?? DEFAULT_SERVER_LIMITS;
  const server = new Server({
    'grpc.max_receive_message_length': limits.maxReceiveMessageBytes,
    'grpc.max_send_message_length': limits.maxSendMessageBytes,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
  });
  options.register(server);
  const port = await bind(server, formatGrpcAddress(address), creds);
  if (options.privateSocket) {
    await bind(server, `unix:${options.privateSocket}`, ServerCredentials.createInsecure()).catch(
      (err: unknown) => {
        server.forceShutdown();
        throw err;
      },
    );
  }
  const bound: GrpcAddress = address.kind === 'tcp' ? { ...address, port } : address;
  let stopping: Promise<void> | undefined;
  return {
    server,
    address: bound,
    stop(graceMs) {
      if (stopping && graceMs === 0) server.forceShutdown();
      stopping ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.forceShutdown(), graceMs);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      return stopping;
    },
  };
}
