/**
 * Compile a command's settings from its flags, the environment and the
 * config file named by --config / BRAID_CONFIG.
 */
import { loadConfig, type Env } from '../config/loader.js';
import type { Shape } from '../schema.js';

export function compile<S extends Shape>(schema: S, flags: Record<string, unknown>, env: Env) {
  const { config: file, ...rest } = flags;
  const configFile = typeof file === 'string' ? file : env.BRAID_CONFIG;
  return loadConfig(schema, { flags: rest, env, file: configFile });
}
