/**
 * The registry client the CLI uses: docker's credentials, the configured
 * insecure registries, timeouts and retries.
 */
import type { RegistryConfig } from '../config/settings.js';
import { DockerConfigCredentials } from '../oci/credentials.js';
import { RegistryClient } from '../oci/registry.js';
import { BRAID_VERSION } from '../version.js';

export function registryClient(config: RegistryConfig, env: NodeJS.ProcessEnv): RegistryClient {
  return new RegistryClient({
    credentials: new DockerConfigCredentials({ env }),
    insecureRegistries: config.insecureRegistry,
    requestTimeoutMs: config.registryTimeoutMs,
    retry: { maxAttempts: config.registryRetries, baseDelayMs: 250, maxDelayMs: 15_000 },
    userAgent: `braid/${BRAID_VERSION}`,
  });
}
