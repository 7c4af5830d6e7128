/**
 * Clients the CLI uses to reach a coordinator, from the compiled client config.
 */
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import type { ClientConfig } from '../config/settings.js';
import { formatGrpcAddress } from '../rpc/address.js';
import { createClient, type ServiceClient } from '../rpc/client.js';
import { clientCredentials } from '../rpc/credentials.js';

export function coordinatorClient<T extends GenServiceMethods>(
  service: GenService<T>,
  config: ClientConfig,
): ServiceClient<T> {
  return createClient(service, formatGrpcAddress(config.coordinator), {
    credentials: clientCredentials(config.coordinator, config.insecure),
  });
}
