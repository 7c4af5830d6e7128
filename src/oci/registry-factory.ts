/**
 * The registry client every braid process uses: docker's credentials, the
 * configured insecure registries, timeouts and retries.
 */
import { BRAID_VERSION } from '../version.js';
import { DockerConfigCredentials } from './credentials.js';
import { RegistryClient, type RegistryClientOptions } from './registry.js';

export interface RegistryClientSettings {
  insecureRegistry: readonly string[];
  registryTimeoutMs: number;
  registryRetries: number;
}

export function registryClientFor(
  settings: RegistryClientSettings,
  env: Readonly<Record<string, string | undefined>>,
  hooks: Pick<RegistryClientOptions, 'onRetry'> = {},
): RegistryClient {
  return new RegistryClient({
    ...hooks,
    credentials: new DockerConfigCredentials({ env }),
    insecureRegistries: settings.insecureRegistry,
    requestTimeoutMs: settings.registryTimeoutMs,
    retry: { maxAttempts: settings.registryRetries, baseDelayMs: 250, maxDelayMs: 15_000 },
    userAgent: `braid/${BRAID_VERSION}`,
  });
}
