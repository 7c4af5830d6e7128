/**
 * Clients the CLI uses to reach a coordinator, from the compiled client
 * config: TLS as configured (or by default off the machine), and the API
 * token on every call.
 *
 * Given several coordinators (`--coordinator a:7465,b:7465`), a call that
 * fails UNAVAILABLE (unreachable, or a standby's refusal) goes next to the
 * leader the standby named, else to the next address, each at most once
 * per call (src/rpc/leader-search.ts); the address that answered is tried
 * first by the calls after it. A response stream that broke after its
 * first message is not replayed (its caller resumes it, as `braid build`
 * does from its last event), but its caller's next call goes elsewhere.
 */
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import type { ClientConfig } from '../config/settings.js';
import { clientTlsFiles } from '../config/tls-files.js';
import { BraidError, RpcError } from '../errors.js';
import { formatGrpcAddress, parseGrpcAddress, type GrpcAddress } from '../rpc/address.js';
import { createClient, type ServiceClient } from '../rpc/client.js';
import { ClientPool } from '../rpc/client-pool.js';
import { clientTransport } from '../rpc/credentials.js';
import { methodPath } from '../rpc/service.js';
import { LeaderSearch, describeAttempts } from '../rpc/leader-search.js';
import { givenTlsSettings, withTlsSettingsNamed } from './tls-hint.js';

/** A client of the coordinators, and the address that answered last (or is tried first). */
export type CoordinatorClient<T extends GenServiceMethods> = ServiceClient<T> & {
  /** The coordinator the next call goes to first: the one that answered last. */
  coordinator(): string;
};

type Config = Omit<ClientConfig, 'coordinators'> & Partial<Pick<ClientConfig, 'coordinators'>>;

export function coordinatorClient<T extends GenServiceMethods>(
  service: GenService<T>,
  config: Config,
): CoordinatorClient<T> {
  const addresses = config.coordinators ?? [config.coordinator];
  if (addresses.length <= 1) {
    // One coordinator: one client, exactly as before lists existed.
    const address = formatGrpcAddress(config.coordinator);
    return Object.assign(clientOf(service, config, config.coordinator), {
      coordinator: () => address,
    });
  }
  return leaderSeekingClient(service, config, addresses.map(formatGrpcAddress));
}

function clientOf<T extends GenServiceMethods>(
  service: GenService<T>,
  config: Config,
  coordinator: GrpcAddress,
): ServiceClient<T> {
  const transport = clientTransport(coordinator, {
    insecure: config.insecure,
    tls: clientTlsFiles(config),
  });
  if (transport.warning) process.stderr.write(`braid: warning: ${transport.warning}\n`);
  const client = createClient(service, formatGrpcAddress(coordinator), {
    credentials: transport.credentials,
    transport: transport.secure ? 'tls' : 'plaintext',
    metadata: config.token ? { authorization: `Bearer ${config.token}` } : {},
  });
  if (!transport.secure) return client;
  // TLS advice in connection errors names BRAID_TLS_CA etc. as the user set them.
  const given = givenTlsSettings(config);
  return mapErrors(client, (err) => withTlsSettingsNamed(err, given, true));
}

/** A call worth sending to another coordinator: it failed UNAVAILABLE. */
function isUnavailable(err: unknown): boolean {
  return err instanceof BraidError && err.code === 'unavailable';
}

/** The one line a user sees when every coordinator failed the call. */
function noneAnswered(search: LeaderSearch, operation: string, last: unknown): RpcError {
  const tried = search.attempts.map((a) => a.address);
  return new RpcError(
    'unavailable',
    operation,
    tried.join(','),
    `no coordinator could serve the call: ${describeAttempts(search.attempts)}`,
    { cause: last },
  );
}

type AnyMethod = (...args: unknown[]) => unknown;

/** A client over several coordinators that finds, per call, one that serves it. */
function leaderSeekingClient<T extends GenServiceMethods>(
  service: GenService<T>,
  config: Config,
  addresses: readonly string[],
): CoordinatorClient<T> {
  const pool = new ClientPool((address) =>
    clientOf(service, config, parseGrpcAddress(address, 'coordinator address')),
  );
  let preferred = addresses[0]!;
  const methodOf = (address: string, name: string): AnyMethod =>
    (pool.get(address) as unknown as Record<string, AnyMethod>)[name]!;
  const aborted = (options: unknown) =>
    (options as { signal?: AbortSignal } | undefined)?.signal?.aborted === true;
  /** After `err` at `search.current`: the next address, or the error to end the call with. */
  const moveOn = (search: LeaderSearch, err: unknown, operation: string): RpcError | undefined => {
    const next = search.failed(err);
    if (!next) return noneAnswered(search, operation, err);
    preferred = next.address;
    return undefined;
  };
  const methods: Record<string, unknown> = {};
  for (const method of service.methods) {
    const name = method.localName;
    const path = methodPath(method);
    switch (method.methodKind) {
      case 'unary':
        methods[name] = async (request: unknown, options?: unknown) => {
          const search = new LeaderSearch(addresses, preferred);
          for (;;) {
            try {
              const response = await methodOf(search.current, name)(request, options);
              preferred = search.current;
              return response;
            } catch (err) {
              if (!isUnavailable(err) || aborted(options)) throw err;
              const end = moveOn(search, err, path);
              if (end) throw end;
            }
          }
        };
        break;
      case 'server_streaming':
        methods[name] = (request: unknown, options?: unknown): AsyncIterable<unknown> => ({
          async *[Symbol.asyncIterator]() {
            const search = new LeaderSearch(addresses, preferred);
            for (;;) {
              let received = false;
              try {
                const responses = methodOf(search.current, name)(request, options);
                for await (const response of responses as AsyncIterable<unknown>) {
                  if (!received) preferred = search.current;
                  received = true;
                  yield response;
                }
                return;
              } catch (err) {
                if (!isUnavailable(err) || aborted(options)) throw err;
                const end = moveOn(search, err, path);
                // Messages went out: the caller resumes where it stopped, on the next address.
                if (received) throw err;
                if (end) throw end;
              }
            }
          },
        });
        break;
      case 'client_streaming':
        // Requests cannot be replayed: no retry, but the next call goes elsewhere.
        methods[name] = (requests: unknown, options?: unknown) => {
          const search = new LeaderSearch(addresses, preferred);
          return (methodOf(search.current, name)(requests, options) as Promise<unknown>).catch(
            (err: unknown) => {
              if (isUnavailable(err)) moveOn(search, err, path);
              throw err;
            },
          );
        };
        break;
      case 'bidi_streaming':
        methods[name] = (options?: unknown) => methodOf(preferred, name)(options);
        break;
    }
  }
  methods.close = () => pool.close();
  methods.coordinator = () => preferred;
  return methods as CoordinatorClient<T>;
}

/**
 * `client` with every call's error passed through `map`: rejected promises
 * (unary, client streams, a bidi send) and failing response streams.
 */
function mapErrors<C extends object>(client: C, map: (err: unknown) => unknown): C {
  const rethrow = (err: unknown): never => {
    throw map(err);
  };
  const mapIterable = <V>(source: AsyncIterable<V>): AsyncIterable<V> => ({
    async *[Symbol.asyncIterator]() {
      try {
        yield* source;
      } catch (err) {
        rethrow(err);
      }
    },
  });
  const mapResult = (result: unknown): unknown => {
    if (result instanceof Promise) return result.catch(rethrow);
    if (typeof result === 'object' && result !== null && Symbol.asyncIterator in result) {
      const iterable = result as AsyncIterable<unknown> & Record<string, unknown>;
      const send = iterable.send;
      return Object.assign({}, iterable, mapIterable(iterable), {
        ...(typeof send === 'function' && {
          send: (request: unknown) =>
            (send as (r: unknown) => Promise<void>)(request).catch(rethrow),
        }),
      });
    }
    return result;
  };
  return new Proxy(client, {
    get(target, property, receiver) {
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== 'function' || property === 'close') return value;
      return (...args: unknown[]) => mapResult((value as (...a: unknown[]) => unknown)(...args));
    },
  });
}
