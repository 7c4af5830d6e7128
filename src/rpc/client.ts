/**
 * Typed grpc-js clients for protobuf-es services. Unary calls are promises,
 * server streams are async iterables, client streams take an iterable, and
 * bidi calls return a handle to send on and iterate over.
 */
import {
  Client,
  Metadata,
  type CallOptions as GrpcCallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  type ClientDuplexStream,
  type ClientReadableStream,
  type ServiceError,
} from '@grpc/grpc-js';
import type { DescMethod, MessageInitShape, MessageShape } from '@bufbuild/protobuf';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import { once } from 'node:events';
import { BraidError, RpcError } from '../errors.js';
import { deserializer, methodPath, serializer } from './service.js';
import { fromServiceError } from './status.js';

type MethodShape = Pick<DescMethod, 'input' | 'output' | 'methodKind'>;
type InInit<M extends MethodShape> = MessageInitShape<M['input']>;
type Out<M extends MethodShape> = MessageShape<M['output']>;

export interface CallOptions {
  /** Deadline for the whole call, in milliseconds from now. */
  timeoutMs?: number;
  /** Cancels the call when aborted. */
  signal?: AbortSignal;
  /** Extra request metadata (e.g. authorization). */
  metadata?: Record<string, string>;
}

/** A bidirectional call: send requests, iterate responses. */
export interface BidiCall<I, O> extends AsyncIterable<O> {
  /** Send one request; resolves when the transport accepted it (backpressure). */
  send(request: I): Promise<void>;
  /** Half-close: no more requests. */
  end(): void;
  /** Cancel the call; the iterator then ends without error. */
  cancel(): void;
}

export type ClientMethod<M extends MethodShape> = M['methodKind'] extends 'unary'
  ? (request: InInit<M>, options?: CallOptions) => Promise<Out<M>>
  : M['methodKind'] extends 'server_streaming'
    ? (request: InInit<M>, options?: CallOptions) => AsyncIterable<Out<M>>
    : M['methodKind'] extends 'client_streaming'
      ? (
          requests: AsyncIterable<InInit<M>> | Iterable<InInit<M>>,
          options?: CallOptions,
        ) => Promise<Out<M>>
      : (options?: CallOptions) => BidiCall<InInit<M>, Out<M>>;

export type ServiceClient<T extends GenServiceMethods> = {
  [K in keyof T]: ClientMethod<T[K]>;
} & {
  /** Close the channel (idempotent). */
  close(): void;
};

export interface ClientOptions {
  credentials: ChannelCredentials;
  channelOptions?: ChannelOptions;
  /** Metadata sent with every call (e.g. `authorization`); per-call metadata wins. */
  metadata?: Record<string, string>;
  /** What the credentials are: connection failures then hint at the likely TLS mismatch. */
  transport?: 'plaintext' | 'tls';
}

function grpcOptions(
  defaults: Record<string, string> | undefined,
  options: CallOptions | undefined,
): {
  metadata: Metadata;
  callOptions: GrpcCallOptions;
} {
  const metadata = new Metadata();
  for (const [key, value] of Object.entries({ ...defaults, ...options?.metadata })) {
    metadata.set(key, value);
  }
  const callOptions: GrpcCallOptions = {};
  if (options?.timeoutMs !== undefined) callOptions.deadline = Date.now() + options.timeoutMs;
  return { metadata, callOptions };
}

function linkSignal(signal: AbortSignal | undefined, cancel: () => void): () => void {
  if (!signal) return () => undefined;
  if (signal.aborted) {
    cancel();
    return () => undefined;
  }
  signal.addEventListener('abort', cancel, { once: true });
  return () => signal.removeEventListener('abort', cancel);
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number';
}

/** Read a client-side response stream, mapping errors; a local cancel ends it quietly. */
async function* readResponses<O>(
  call: ClientReadableStream<O> | ClientDuplexStream<unknown, O>,
  path: string,
  target: string,
  cancelled: () => boolean,
  mapError: (err: ServiceError) => RpcError,
): AsyncGenerator<O> {
  try {
    for await (const message of call) yield message as O;
  } catch (err) {
    if (cancelled()) return;
    if (isServiceError(err)) throw mapError(err);
    throw err;
  } finally {
    // Leaving the loop early (break, throw in the consumer) cancels the call.
    call.cancel();
  }
}

/** A typed client for `service` at `target` (`host:port` or `unix:/path`). */
export function createClient<T extends GenServiceMethods>(
  service: GenService<T>,
  target: string,
  options: ClientOptions,
): ServiceClient<T> {
  const client = new Client(target, options.credentials, options.channelOptions);
  const methods: Record<string, unknown> = {};
  const grpcOptionsFor = (opts: CallOptions | undefined) => grpcOptions(options.metadata, opts);
  for (const method of service.methods) {
    const path = methodPath(method);
    const mapError = (err: ServiceError) => fromServiceError(err, path, target, options.transport);
    const serialize = serializer(method.input) as (value: unknown) => Buffer;
    const deserialize = deserializer(method.output);
    switch (method.methodKind) {
      case 'unary':
        methods[method.localName] = (request: unknown, opts?: CallOptions) =>
          new Promise((resolve, reject) => {
            const { metadata, callOptions } = grpcOptionsFor(opts);
            const call = client.makeUnaryRequest(
              path,
              serialize,
              deserialize,
              request,
              metadata,
              callOptions,
              (err, response) => {
                unlink();
                if (err) reject(mapError(err));
                else resolve(response);
              },
            );
            const unlink = linkSignal(opts?.signal, () => call.cancel());
          });
        break;
      case 'server_streaming':
        methods[method.localName] = (request: unknown, opts?: CallOptions) => {
          const { metadata, callOptions } = grpcOptionsFor(opts);
          const call = client.makeServerStreamRequest(
            path,
            serialize,
            deserialize,
            request,
            metadata,
            callOptions,
          );
          let cancelled = false;
          const unlink = linkSignal(opts?.signal, () => {
            cancelled = true;
            call.cancel();
          });
          const responses = readResponses(call, path, target, () => cancelled, mapError);
          return {
            async *[Symbol.asyncIterator]() {
              try {
                yield* responses;
              } finally {
                unlink();
              }
            },
          };
        };
        break;
      case 'client_streaming':
        methods[method.localName] = (
          requests: AsyncIterable<unknown> | Iterable<unknown>,
          opts?: CallOptions,
        ) =>
          new Promise((resolve, reject) => {
            const { metadata, callOptions } = grpcOptionsFor(opts);
            let settled = false;
            const call = client.makeClientStreamRequest(
              path,
              serialize,
              deserialize,
              metadata,
              callOptions,
              (err, response) => {
                settled = true;
                unlink();
                if (err) reject(mapError(err));
                else resolve(response);
              },
            );
            const unlink = linkSignal(opts?.signal, () => call.cancel());
            void (async () => {
              try {
                for await (const request of requests) {
                  if (settled) return;
                  if (!call.write(request)) await once(call, 'drain');
                }
                call.end();
              } catch (err) {
                call.cancel();
                if (!settled) {
                  settled = true;
                  unlink();
                  reject(err instanceof Error ? err : new BraidError('internal', String(err)));
                }
              }
            })();
          });
        break;
      case 'bidi_streaming':
        methods[method.localName] = (opts?: CallOptions) => {
          const { metadata, callOptions } = grpcOptionsFor(opts);
          const call = client.makeBidiStreamRequest(
            path,
            serialize,
            deserialize,
            metadata,
            callOptions,
          );
          let cancelled = false;
          const cancel = () => {
            cancelled = true;
            call.cancel();
          };
          const unlink = linkSignal(opts?.signal, cancel);
          const responses = readResponses(call, path, target, () => cancelled, mapError);
          const bidi: BidiCall<unknown, unknown> = {
            async send(request) {
              if (cancelled) throw new RpcError('cancelled', path, target, 'call cancelled');
              if (!call.write(request)) await once(call, 'drain');
            },
            end: () => call.end(),
            cancel,
            async *[Symbol.asyncIterator]() {
              try {
                yield* responses;
              } finally {
                unlink();
              }
            },
          };
          return bidi;
        };
        break;
    }
  }
  methods.close = () => client.close();
  return methods as ServiceClient<T>;
}
