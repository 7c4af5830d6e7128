/**
 * Start and stop a grpc-js server on one address, with braid's limits.
 */
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { BraidError } from '../errors.js';
import { formatGrpcAddress, isLocalAddress, type GrpcAddress } from './address.js';

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
  /** Allow plaintext on a non-loopback address (TLS is not configured). */
  insecure: boolean;
  limits?: ServerLimits;
  register(server: Server): void;
}

export async function startServer(options: StartServerOptions): Promise<RunningServer> {
  const { address } = options;
  if (!isLocalAddress(address) && !options.insecure) {
    throw new BraidError(
      'invalid_argument',
      `listen address ${formatGrpcAddress(address)} is not loopback: plaintext gRPC there needs --insecure`,
    );
  }
  const limits = options.limits ?? DEFAULT_SERVER_LIMITS;
  const server = new Server({
    'grpc.max_receive_message_length': limits.maxReceiveMessageBytes,
    'grpc.max_send_message_length': limits.maxSendMessageBytes,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
  });
  options.register(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      formatGrpcAddress(address),
      ServerCredentials.createInsecure(),
      (err, bound) =>
        err
          ? reject(
              new BraidError(
                'unavailable',
                `cannot listen on ${formatGrpcAddress(address)}: ${err.message}`,
                { cause: err },
              ),
            )
          : resolve(bound),
    );
  });
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
