/**
 * Shared CLI plumbing: the config flags every command takes, and compiling a
 * command's settings from flags, environment and the config file.
 */
import type { Command } from 'commander';
import type { z } from 'zod';
import { loadConfig, type Env } from '../config/loader.js';

export function addLogOptions(command: Command): Command {
  return command
    .option('--config <file>', 'YAML config file (env BRAID_CONFIG)')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (env BRAID_LOG_LEVEL)')
    .option('--log-format <format>', 'auto|json|pretty (env BRAID_LOG_FORMAT)');
}

export function addClientOptions(command: Command): Command {
  return addLogOptions(command)
    .option(
      '--coordinator <address>',
      'coordinator HOST:PORT or unix:/path (env BRAID_COORDINATOR)',
    )
    .option('--insecure', 'allow plaintext to a non-loopback coordinator (env BRAID_INSECURE)')
    .option('--timeout-ms <ms>', 'deadline for each call (env BRAID_TIMEOUT_MS)');
}

export function compile<Shape extends z.ZodRawShape>(
  schema: z.ZodObject<Shape>,
  flags: Record<string, unknown>,
  env: Env,
) {
  const { config: file, ...rest } = flags;
  const configFile = typeof file === 'string' ? file : env.BRAID_CONFIG;
  return loadConfig(schema, { flags: rest, env, file: configFile });
}
