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

export function coordinatorClient<T extends GenServiceMethods>(
  service: GenService<T>,
  config: ClientConfig,
): ServiceClient<T> {
  const transport = clientTransport(config.coordinator, {
    insecure: config.insecure,
    tls: clientTlsFiles(config),
  });
  if (transport.warning) process.stderr.write(`braid: warning: ${transport.warning}\n`);
  return createClient(service, formatGrpcAddress(config.coordinator), {
    credentials: transport.credentials,
    transport: transport.secure ? 'tls' : 'plaintext',
    metadata: config.token ? { authorization: `Bearer ${config.token}` } : {},
  });
}
