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

/** How a client or agent reaches the coordinator: address, plaintext permission, TLS files. */
export function addCoordinatorAccessOptions(command: Command): Command {
  return command
    .option(
      '--coordinator <address>',
      'coordinator HOST:PORT or unix:/path, or a comma-separated list of coordinators sharing a store: the leader is found (env BRAID_COORDINATOR)',
    )
    .option(
      '--insecure',
      'allow plaintext to a non-loopback coordinator, which is TLS by default (env BRAID_INSECURE)',
    )
    .option(
      '--tls-ca <file>',
      "CA (PEM) that signed the coordinator's certificate; default: the system's CAs (env BRAID_TLS_CA)",
    )
    .option(
      '--tls-cert <file>',
      'client certificate (PEM) for a coordinator that requires mTLS (env BRAID_TLS_CERT)',
    )
    .option('--tls-key <file>', "the client certificate's key (PEM) (env BRAID_TLS_KEY)");
}

export function addClientOptions(command: Command): Command {
  return addCoordinatorAccessOptions(addLogOptions(command))
    .option('--token <token>', 'API token (braid_api_...) (env BRAID_TOKEN)')
    .option('--timeout-ms <ms>', 'deadline for each call (env BRAID_TIMEOUT_MS)');
}

/** commander's accumulator for repeatable flags. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * Only the flags the user typed: commander gives negatable flags
 * (`--no-arch-check`) a default of true, which would hide the environment
 * and the config file behind it.
 */
export function typedFlags(command: Command): Record<string, unknown> {
  const opts = command.opts();
  return Object.fromEntries(
    Object.entries(opts).filter(([key]) => command.getOptionValueSource(key) !== 'default'),
  );
}
