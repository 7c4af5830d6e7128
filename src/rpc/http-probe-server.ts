/**
 * The operations endpoint of a braid process (coordinator, agent), on its
 * own listen address apart from gRPC: `/metrics` (Prometheus text),
 * `/healthz` (the process answers) and `/readyz` (it takes work now).
 * GET and HEAD only.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BraidError, errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import type { GrpcAddress } from './address.js';

export type Readiness = { ready: true } | { ready: false; reason: string };

export interface ProbeServerOptions {
  address: GrpcAddress;
  /** The metrics exposition, or undefined to answer /metrics with 404. */
  metrics?: { text(): Promise<string>; readonly contentType: string } | undefined;
  readiness(): Readiness;
  log: Logger;
}

export interface ProbeServer {
  /** The bound address (the real port when port 0 was asked for). */
  readonly address: GrpcAddress;
  /** "http://HOST:PORT/" or "unix:/path". */
  readonly url: string;
  stop(): Promise<void>;
}

interface Answer {
  status: number;
  body: string;
  contentType?: string;
  headers?: Record<string, string>;
}

const TEXT = 'text/plain; charset=utf-8';

/** The answer to one request: pure but for the metrics text and readiness. */
export async function probeAnswer(
  method: string,
  url: string,
  options: Pick<ProbeServerOptions, 'metrics' | 'readiness'>,
): Promise<Answer> {
  const path = url.split('?')[0];
  const known =
    path === '/healthz' || path === '/readyz' || (path === '/metrics' && options.metrics);
  if (!known) return { status: 404, body: `not found: ${path}\n` };
  if (method !== 'GET' && method !== 'HEAD') {
    return { status: 405, body: `method ${method} not allowed\n`, headers: { allow: 'GET, HEAD' } };
  }
  if (path === '/healthz') return { status: 200, body: 'ok\n' };
  if (path === '/readyz') {
    const readiness = options.readiness();
    return readiness.ready
      ? { status: 200, body: 'ok\n' }
      : { status: 503, body: `not ready: ${readiness.reason}\n` };
  }
  const metrics = options.metrics as NonNullable<ProbeServerOptions['metrics']>;
  return { status: 200, body: await metrics.text(), contentType: metrics.contentType };
}

export async function startProbeServer(options: ProbeServerOptions): Promise<ProbeServer> {
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const method = request.method ?? 'GET';
    probeAnswer(method, request.url ?? '/', options)
      .catch((err: unknown): Answer => {
        options.log.warn({ err: errorLine(err), path: request.url }, 'probe request failed');
        return { status: 500, body: `error: ${errorLine(err)}\n` };
      })
      .then(
        (answer) => {
          response.writeHead(answer.status, {
            'content-type': answer.contentType ?? TEXT,
            'content-length': Buffer.byteLength(answer.body),
            'cache-control': 'no-store',
            ...answer.headers,
          });
          response.end(method === 'HEAD' ? undefined : answer.body);
        },
        () => response.destroy(),
      );
    request.resume();
  });
  // Scrapers are short requests: idle connections must not hold up a stop.
  server.keepAliveTimeout = 5_000;
  server.requestTimeout = 30_000;
  const { address } = options;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) =>
      reject(
        new BraidError(
          'unavailable',
          `cannot listen on ${describe(address)} for metrics: ${err.code ?? err.message}`,
          { cause: err },
        ),
      );
    server.once('error', onError);
    const ready = () => {
      server.off('error', onError);
      resolve();
    };
    if (address.kind === 'unix') server.listen(address.path, ready);
    else server.listen(address.port, address.host, ready);
  });
  server.on('error', (err) => options.log.warn({ err: errorLine(err) }, 'probe server error'));
  const bound: GrpcAddress =
    address.kind === 'tcp' ? { ...address, port: (server.address() as AddressInfo).port } : address;
  let stopping: Promise<void> | undefined;
  return {
    address: bound,
    url: describe(bound),
    stop() {
      stopping ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return stopping;
    },
  };
}

function describe(address: GrpcAddress): string {
  if (address.kind === 'unix') return `unix:${address.path}`;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `http://${host}:${address.port}/`;
}
