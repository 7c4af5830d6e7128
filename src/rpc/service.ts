/**
 * The grpc-js <-> protobuf-es bridge: a protoc-gen-es `GenService` descriptor
 * becomes a grpc-js ServiceDefinition, and a typed implementation object is
 * registered on a grpc-js server. Handlers are async functions and async
 * iterables; errors they throw reach the client as mapped status codes.
 * An optional guard runs before every handler: what it throws is the call's
 * status and the handler never runs; what it returns is `ctx.identity`.
 */
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import {
  type Metadata,
  type MethodDefinition,
  type Server,
  type ServerDuplexStream,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type UntypedHandleCall,
  type sendUnaryData,
} from '@grpc/grpc-js';
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethod,
  type MessageInitShape,
  type MessageShape,
} from '@bufbuild/protobuf';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import { BraidError } from '../errors.js';
import { toStatusObject } from './status.js';

type MethodShape = Pick<DescMethod, 'input' | 'output' | 'methodKind'>;
type In<M extends MethodShape> = MessageShape<M['input']>;
type OutInit<M extends MethodShape> = MessageInitShape<M['output']>;

/** Who is calling, as the guard established it (e.g. the token used). */
export interface CallIdentity {
  readonly id: string;
  readonly name: string;
  readonly kind: string;
}

/** What a handler knows about its call. */
export interface CallContext {
  /** Full RPC path, e.g. `/braid.v1.SystemService/Version`. */
  readonly method: string;
  readonly peer: string;
  readonly metadata: Metadata;
  /** Aborted when the client cancels, the deadline passes, or the server stops. */
  readonly signal: AbortSignal;
  /** The caller, when the guard identified one. */
  readonly identity: CallIdentity | undefined;
}

/** The call as a guard sees it, before any handler runs. */
export interface GuardedCall {
  readonly method: string;
  readonly peer: string;
  readonly metadata: Metadata;
}

/**
 * Admits or refuses a call before its handler runs: throws (a BraidError,
 * e.g. `unauthenticated`) to refuse, returns the caller's identity (or
 * undefined for an anonymous caller) to admit.
 */
export type CallGuard = (call: GuardedCall) => CallIdentity | undefined;

export type ServerMethod<M extends MethodShape> = M['methodKind'] extends 'unary'
  ? (request: In<M>, ctx: CallContext) => Promise<OutInit<M>> | OutInit<M>
  : M['methodKind'] extends 'server_streaming'
    ? (request: In<M>, ctx: CallContext) => AsyncIterable<OutInit<M>>
    : M['methodKind'] extends 'client_streaming'
      ? (requests: AsyncIterable<In<M>>, ctx: CallContext) => Promise<OutInit<M>>
      : (requests: AsyncIterable<In<M>>, ctx: CallContext) => AsyncIterable<OutInit<M>>;

/** A typed implementation of every method of a service. */
export type ServiceImpl<T extends GenServiceMethods> = {
  [K in keyof T]: ServerMethod<T[K]>;
};

export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

export function serializer<D extends DescMessage>(
  schema: D,
): (value: MessageInitShape<D> | MessageShape<D>) => Buffer {
  return (value) => {
    const bytes = toBinary(schema, create(schema, value as MessageInitShape<D>));
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

export function deserializer<D extends DescMessage>(schema: D): (bytes: Buffer) => MessageShape<D> {
  return (bytes) => fromBinary(schema, bytes);
}

/** The grpc-js ServiceDefinition of a protobuf-es service, keyed by local method name. */
export function serviceDefinition(service: GenService<GenServiceMethods>): ServiceDefinition {
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: methodPath(method),
      originalName: method.name,
      requestStream:
        method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming',
      responseStream:
        method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming',
      requestSerialize: serializer(method.input) as (value: unknown) => Buffer,
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output) as (value: unknown) => Buffer,
      responseDeserialize: deserializer(method.output),
    };
  }
  return definition;
}

type AnyCall =
  | ServerUnaryCall<unknown, unknown>
  | ServerReadableStream<unknown, unknown>
  | ServerWritableStream<unknown, unknown>
  | ServerDuplexStream<unknown, unknown>;

/** The call's context; throws what the guard throws, before anything is set up. */
function contextOf(call: AnyCall, path: string, guard: CallGuard | undefined): CallContext {
  const identity = guard?.({ method: path, peer: call.getPeer(), metadata: call.metadata });
  const controller = new AbortController();
  // Every grpc-js server call emits 'cancelled'; the union of their typings hides it.
  (call as NodeJS.EventEmitter).on('cancelled', () =>
    controller.abort(new BraidError('cancelled', 'call cancelled')),
  );
  return {
    method: path,
    peer: call.getPeer(),
    metadata: call.metadata,
    signal: controller.signal,
    identity,
  };
}

/** Write one message, waiting for the peer when the stream's buffer is full. */
async function writeWithBackpressure(
  stream: Writable,
  message: unknown,
  signal: AbortSignal,
): Promise<void> {
  if (stream.write(message)) return;
  await once(stream, 'drain', { signal });
}

async function pipeResponses(
  call: ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>,
  responses: AsyncIterable<unknown>,
  ctx: CallContext,
): Promise<void> {
  try {
    for await (const response of responses) {
      if (ctx.signal.aborted) return;
      await writeWithBackpressure(call, response, ctx.signal);
    }
    if (!ctx.signal.aborted) call.end();
  } catch (err) {
    if (ctx.signal.aborted) return;
    call.emit('error', toStatusObject(err));
  }
}

/**
 * The request side of a streaming call. The default async iterator destroys
 * the stream when the requests end, which on a duplex call would also drop
 * the responses still to come and the final status.
 */
function requestsOf(
  call: ServerReadableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>,
): AsyncIterable<unknown> {
  return call.iterator({ destroyOnReturn: false });
}

function handlerFor(
  method: DescMethod,
  impl: (...args: never[]) => unknown,
  guard: CallGuard | undefined,
): UntypedHandleCall {
  const path = methodPath(method);
  const fn = impl as (request: unknown, ctx: CallContext) => unknown;
  switch (method.methodKind) {
    case 'unary':
      return (call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) => {
        Promise.resolve()
          .then(() => fn(call.request, contextOf(call, path, guard)))
          .then(
            (response) => callback(null, response),
            (err: unknown) => callback(toStatusObject(err)),
          );
      };
    case 'server_streaming':
      return (call: ServerWritableStream<unknown, unknown>) => {
        let ctx: CallContext;
        let responses: AsyncIterable<unknown>;
        try {
          ctx = contextOf(call, path, guard);
          responses = fn(call.request, ctx) as AsyncIterable<unknown>;
        } catch (err) {
          call.emit('error', toStatusObject(err));
          return;
        }
        void pipeResponses(call, responses, ctx);
      };
    case 'client_streaming':
      return (call: ServerReadableStream<unknown, unknown>, callback: sendUnaryData<unknown>) => {
        Promise.resolve()
          .then(() => fn(requestsOf(call), contextOf(call, path, guard)))
          .then(
            (response) => callback(null, response),
            (err: unknown) => callback(toStatusObject(err)),
          );
      };
    case 'bidi_streaming':
      return (call: ServerDuplexStream<unknown, unknown>) => {
        let ctx: CallContext;
        let responses: AsyncIterable<unknown>;
        try {
          ctx = contextOf(call, path, guard);
          responses = fn(requestsOf(call), ctx) as AsyncIterable<unknown>;
        } catch (err) {
          call.emit('error', toStatusObject(err));
          return;
        }
        void pipeResponses(call, responses, ctx);
      };
  }
}

/** Register a typed implementation of `service` on a grpc-js server, behind `guard`. */
export function addService<T extends GenServiceMethods>(
  server: Server,
  service: GenService<T>,
  impl: ServiceImpl<T>,
  options: { guard?: CallGuard } = {},
): void {
  const handlers: Record<string, UntypedHandleCall> = {};
  for (const method of service.methods) {
    const fn = (impl as Record<string, ((...args: never[]) => unknown) | undefined>)[
      method.localName
    ];
    if (!fn) throw new BraidError('internal', `no handler for ${methodPath(method)}`);
    handlers[method.localName] = handlerFor(method, fn, options.guard);
  }
  server.addService(serviceDefinition(service as GenService<GenServiceMethods>), handlers);
}

/** The implementation type of a generated service: `ImplOf<typeof SystemService>`. */
export type ImplOf<S> = S extends GenService<infer T> ? ServiceImpl<T> : never;
