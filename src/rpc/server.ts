/**
 * Start and stop a grpc-js server on one address (TLS or plaintext), with
 * braid's limits, and optionally a private plaintext unix socket beside it.
 */
import { Server, ServerCredentials, setLogger } from '@grpc/grpc-js';
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

// grpc-js prints "E No address added ..." on stderr before it fails a bind,
// whose error we report ourselves in one line; its other lines still show.
setLogger({
  error: (message?: unknown, ...rest: unknown[]) => {
    if (!String(message).startsWith('No address added')) console.error(`E ${message}`, ...rest);
  },
  info: (message?: unknown, ...rest: unknown[]) => console.error(`I ${message}`, ...rest),
  debug: (message?: unknown, ...rest: unknown[]) => console.error(`D ${message}`, ...rest),
});

const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EADDRNOTAVAIL: 'address not available on this host',
  EACCES: 'permission denied',
};

function bind(server: Server, target: string, creds: ServerCredentials): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(target, creds, (err, bound) => {
      if (!err) {
        resolve(bound);
        return;
      }
      // "No address added out of total 1 resolved errors: [listen EADDRINUSE: ...]"
      const errno = /\b(E[A-Z]{4,})\b/.exec(err.message)?.[1];
      const reason = (errno && LISTEN_ERRORS[errno]) || err.message;
      reject(
        new BraidError('unavailable', `cannot listen on ${target}: ${reason}`, { cause: err }),
      );
    });
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
  const port = await bind(server, formatGrpcAddress(address), creds).catch((err: unknown) => {
    server.forceShutdown();
    throw err;
  });
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
