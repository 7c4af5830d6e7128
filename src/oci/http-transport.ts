/**
 * HTTP for the registry client: one request in, status, headers and body
 * out. The default transport is node:http/https with keep-alive pools; it
 * starts in a few milliseconds where the first `fetch` of a process costs
 * ~100 ms of undici start-up, which a one-shot CLI such as `braid manifest
 * create` pays in full. `fetchTransport` adapts any `fetch` (tests inject one
 * to play a misbehaving registry).
 *
 * Deadlines are idle deadlines: `timeoutMs` bounds the wait for the answer
 * and every pause while the body streams, never the whole transfer.
 */
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Readable, Transform } from 'node:stream';

export interface HttpRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  /** A replayable Buffer, or a stream sent once. */
  body?: Buffer | Readable;
  /** Give the body as a stream (`body`) instead of reading it into `bytes`. */
  stream: boolean;
  timeoutMs: number;
}

export interface HttpHeaders {
  get(name: string): string | null;
}

export interface HttpResponse {
  status: number;
  statusText: string;
  headers: HttpHeaders;
  /** The body of a streamed request; the caller reads it or calls `discard`. */
  body?: Readable;
  /** The whole body of a request that did not ask for a stream. */
  bytes: Buffer;
  /** Drops an unread streamed body (the connection is not reused). */
  discard(): void;
}

export type HttpTransport = (request: HttpRequest) => Promise<HttpResponse>;

/** The error of a request whose answer, or a pause in its body, outlasted `timeoutMs`. */
export class HttpTimeoutError extends Error {
  override readonly name = 'TimeoutError';
}

/** A body the caller did not ask to stream is read whole up to this size (errors, JSON). */
const MAX_BUFFERED_BYTES = 8 * 1024 * 1024;
const MAX_REDIRECTS = 5;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

function headersOf(message: IncomingMessage): HttpHeaders {
  return {
    get(name: string): string | null {
      const value = message.headers[name.toLowerCase()];
      if (value === undefined) return null;
      return Array.isArray(value) ? value.join(', ') : value;
    },
  };
}

/** node:http/https with keep-alive pools of `maxSockets` connections per host. */
export function nodeHttpTransport(options: { maxSockets?: number } = {}): HttpTransport {
  const pool = { keepAlive: true, maxSockets: options.maxSockets ?? 16 };
  const agents = { http: new HttpAgent(pool), https: new HttpsAgent(pool) };

  const once = (request: HttpRequest, url: URL): Promise<IncomingMessage> =>
    new Promise((resolve, reject) => {
      const secure = url.protocol === 'https:';
      const req = (secure ? httpsRequest : httpRequest)(url, {
        method: request.method,
        headers: request.headers,
        agent: secure ? agents.https : agents.http,
        timeout: request.timeoutMs,
      });
      // The socket's idle timer covers the wait for the answer and each pause of the body.
      let answer: IncomingMessage | undefined;
      req.on('timeout', () => {
        const err = new HttpTimeoutError(`no answer within ${request.timeoutMs} ms`);
        if (answer) answer.destroy(err);
        req.destroy(err);
      });
      req.on('error', reject);
      req.on('response', (message: IncomingMessage) => {
        answer = message;
        resolve(message);
      });
      if (request.body instanceof Readable) {
        request.body.on('error', (err) => req.destroy(err));
        request.body.pipe(req);
      } else {
        req.end(request.body);
      }
    });

  return async (request) => {
    let url = new URL(request.url);
    let headers = request.headers;
    for (let hops = 0; ; hops++) {
      const message = await once({ ...request, headers }, url);
      const location = message.headers.location;
      const replayable = !(request.body instanceof Readable);
      if (REDIRECTS.has(message.statusCode ?? 0) && location && replayable) {
        message.resume();
        if (hops >= MAX_REDIRECTS) {
          throw new Error(`more than ${MAX_REDIRECTS} redirects from ${request.url}`);
        }
        const next = new URL(location, url);
        // Credentials for the registry are not handed to another origin (blob storage).
        if (next.origin !== url.origin) {
          headers = Object.fromEntries(
            Object.entries(headers).filter(([name]) => name.toLowerCase() !== 'authorization'),
          );
        }
        url = next;
        continue;
      }
      const response: HttpResponse = {
        status: message.statusCode ?? 0,
        statusText: message.statusMessage ?? '',
        headers: headersOf(message),
        bytes: Buffer.alloc(0),
        discard: () => message.destroy(),
      };
      if (request.stream && request.method !== 'HEAD') {
        response.body = message;
        return response;
      }
      response.bytes = await readAll(message, MAX_BUFFERED_BYTES);
      return response;
    }
  };
}

/** The whole stream, or undefined (and the stream destroyed) once it passes `maxBytes`. */
export async function readCapped(
  stream: AsyncIterable<unknown> & { destroy(): void },
  maxBytes: number,
): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    total += (chunk as Buffer).length;
    if (total > maxBytes) {
      stream.destroy();
      return undefined;
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

async function readAll(stream: Readable, maxBytes: number): Promise<Buffer> {
  const bytes = await readCapped(stream, maxBytes);
  if (bytes === undefined) throw new Error(`answer larger than ${maxBytes} bytes`);
  return bytes;
}

/** Adapts a `fetch` (tests inject one to play a registry that misbehaves). */
export function fetchTransport(fetchFn: typeof fetch): HttpTransport {
  return async (request) => {
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const idle = (): void => {
      clearTimeout(timer);
      timer = setTimeout(
        () => controller.abort(new HttpTimeoutError(`no answer within ${request.timeoutMs} ms`)),
        request.timeoutMs,
      );
    };
    idle();
    const streamed = request.body instanceof Readable;
    let answer: Response;
    try {
      answer = await fetchFn(request.url, {
        method: request.method,
        headers: request.headers,
        body: (streamed
          ? Readable.toWeb(request.body as Readable)
          : request.body) as RequestInit['body'],
        signal: controller.signal,
        redirect: 'follow',
        ...(streamed ? { duplex: 'half' } : {}),
      } as RequestInit);
    } catch (err) {
      clearTimeout(timer);
      throw controller.signal.aborted ? controller.signal.reason : err;
    }
    const source = answer.body
      ? Readable.fromWeb(answer.body as import('node:stream/web').ReadableStream<Uint8Array>)
      : Readable.from([]);
    const body = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        idle();
        done(null, chunk);
      },
    });
    source.on('error', (err) =>
      body.destroy(controller.signal.aborted ? controller.signal.reason : err),
    );
    body.on('close', () => {
      clearTimeout(timer);
      source.destroy();
    });
    body.on('end', () => clearTimeout(timer));
    source.pipe(body);
    const response: HttpResponse = {
      status: answer.status,
      statusText: answer.statusText,
      headers: answer.headers,
      bytes: Buffer.alloc(0),
      discard: () => body.destroy(),
    };
    if (request.stream && request.method !== 'HEAD') {
      response.body = body;
      return response;
    }
    try {
      response.bytes = await readAll(body, MAX_BUFFERED_BYTES);
    } catch (err) {
      throw controller.signal.aborted ? controller.signal.reason : err;
    }
    return response;
  };
}
