/**
 * Clients the CLI uses to reach a coordinator, from the compiled client
 * config: TLS as configured (or by default off the machine), and the API
 * token on every call.
 */
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import type { ClientConfig } from '../config/settings.js';
import { clientTlsFiles } from '../config/tls-files.js';
import { formatGrpcAddress } from '../rpc/address.js';
import { createClient, type ServiceClient } from '../rpc/client.js';
import { clientTransport } from '../rpc/credentials.js';
import { givenTlsSettings, withTlsSettingsNamed } from './tls-hint.js';

export function coordinatorClient<T extends GenServiceMethods>(
  service: GenService<T>,
  config: ClientConfig,
): ServiceClient<T> {
  const transport = clientTransport(config.coordinator, {
    insecure: config.insecure,
    tls: clientTlsFiles(config),
  });
  if (transport.warning) process.stderr.write(`braid: warning: ${transport.warning}\n`);
  const client = createClient(service, formatGrpcAddress(config.coordinator), {
    credentials: transport.credentials,
    transport: transport.secure ? 'tls' : 'plaintext',
    metadata: config.token ? { authorization: `Bearer ${config.token}` } : {},
  });
  if (!transport.secure) return client;
  // TLS advice in connection errors names BRAID_TLS_CA etc. as the user set them.
  const given = givenTlsSettings(config);
  return mapErrors(client, (err) => withTlsSettingsNamed(err, given, true));
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
