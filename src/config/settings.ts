/**
 * The settings of each braid command: key, type, default and bounds. Every
 * key is also a flag (`--kebab-case`), an environment variable (`BRAID_SNAKE`)
 * and a YAML key (camelCase).
 */
import { join } from 'node:path';
import { z } from 'zod';
import { LOG_LEVELS } from '../log.js';
import { parseGrpcAddress } from '../rpc/address.js';
import {
  boolSetting,
  enumSetting,
  intSetting,
  listSetting,
  parsedSetting,
  type Env,
} from './loader.js';
import { BraidError } from '../errors.js';

export const DEFAULT_COORDINATOR_ADDRESS = '127.0.0.1:7465';

const logSettings = {
  logLevel: enumSetting(LOG_LEVELS, 'info'),
  logFormat: enumSetting(['auto', 'json', 'pretty'] as const, 'auto'),
};

function defaultDataDir(env: Env): string {
  if (env.XDG_DATA_HOME) return join(env.XDG_DATA_HOME, 'braid');
  if (env.HOME && env.HOME !== '/root') return join(env.HOME, '.local', 'share', 'braid');
  return '/var/lib/braid';
}

export function coordinatorSettings(env: Env) {
  return z.object({
    listen: parsedSetting(
      (t) => parseGrpcAddress(t, 'listen address'),
      DEFAULT_COORDINATOR_ADDRESS,
    ),
    dataDir: z.string().min(1, { error: 'must not be empty' }).default(defaultDataDir(env)),
    insecure: boolSetting(false),
    maxMessageBytes: intSetting({
      min: 64 * 1024,
      max: 256 * 1024 * 1024,
      default: 8 * 1024 * 1024,
    }),
    shutdownGraceMs: intSetting({ min: 0, max: 3_600_000, default: 10_000 }),
    eventsRetained: intSetting({ min: 100, max: 1_000_000, default: 10_000 }),
    ...logSettings,
  });
}

export function clientSettings() {
  return z.object({
    coordinator: parsedSetting(
      (t) => parseGrpcAddress(t, 'coordinator address'),
      DEFAULT_COORDINATOR_ADDRESS,
    ),
    insecure: boolSetting(false),
    timeoutMs: intSetting({ min: 100, max: 3_600_000, default: 15_000 }),
    ...logSettings,
    logLevel: enumSetting(LOG_LEVELS, 'warn'),
  });
}

/** `HOST[:PORT]` of a registry spoken to over plain HTTP. */
function checkRegistryHost(text: string): void {
  if (!/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/.test(text)) {
    throw new BraidError('invalid_argument', `"${text}" is not HOST[:PORT]`);
  }
}

/** Settings of commands that talk to registries (`braid manifest ...`). */
export function registrySettings() {
  return z.object({
    insecureRegistry: listSetting(checkRegistryHost),
    registryTimeoutMs: intSetting({ min: 100, max: 3_600_000, default: 30_000 }),
    registryRetries: intSetting({ min: 1, max: 20, default: 5 }),
    archCheckBudgetBytes: intSetting({
      min: 0,
      max: 16 * 1024 * 1024 * 1024,
      default: 64 * 1024 * 1024,
    }),
    ...logSettings,
    logLevel: enumSetting(LOG_LEVELS, 'warn'),
  });
}

export type RegistryConfig = z.infer<ReturnType<typeof registrySettings>>;
export type CoordinatorConfig = z.infer<ReturnType<typeof coordinatorSettings>>;
export type ClientConfig = z.infer<ReturnType<typeof clientSettings>>;
