/**
 * The config flags every command takes. Only commander here: command
 * definitions stay cheap to load, their implementations load on use.
 */
import type { Command } from 'commander';

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
