import { Command } from 'commander';
import { addCoordinatorAccessOptions, addLogOptions, collect } from '../options.js';

/** The agent's flags, shared by `braid agent` and `braid serve`. */
export function addAgentOptions(command: Command): Command {
  return command
    .option('--name <name>', 'agent name, unique in the farm (env BRAID_NAME; default: host name)')
    .option(
      '--engine <url>',
      'Docker engine: unix:///var/run/docker.sock (default), tcp://host:port or ssh://user@host[:port][/socket] (env BRAID_ENGINE)',
    )
    .option(
      '--ssh-key <file>',
      'private key for an ssh:// engine (repeatable; env BRAID_SSH_KEY; default: ssh-agent, then ~/.ssh/id_*); passphrase in env BRAID_SSH_KEY_PASSPHRASE',
      collect,
    )
    .option(
      '--ssh-known-hosts <file>',
      'known_hosts for an ssh:// engine (env BRAID_SSH_KNOWN_HOSTS; default ~/.ssh/known_hosts)',
    )
    .option(
      '--ssh-keepalive-interval-ms <ms>',
      'SSH keepalive interval (env BRAID_SSH_KEEPALIVE_INTERVAL_MS; default 15000)',
    )
    .option(
      '--ssh-connect-timeout-ms <ms>',
      'deadline of an SSH connect, and of a call waiting for a reconnect (env BRAID_SSH_CONNECT_TIMEOUT_MS; default 20000)',
    )
    .option('--capacity <n>', 'jobs run at once (env BRAID_CAPACITY; default 2)')
    .option(
      '--binfmt-dir <dir>',
      "the engine host's binfmt_misc, for its QEMU platforms (env BRAID_BINFMT_DIR; default /proc/sys/fs/binfmt_misc; in a container: the host's, mounted)",
    )
    .option(
      '--build-network <mode>',
      "network for RUN steps: none, host, ... (env BRAID_BUILD_NETWORK; default: the engine's, or host without a bridge)",
    )
    .option('--labels <k=v>', 'agent label (repeatable; env BRAID_LABELS=a=1,b=2)', collect)
    .option('--cache-dir <dir>', 'where fetched build contexts are cached (env BRAID_CACHE_DIR)')
    .option(
      '--drain-grace-ms <ms>',
      'time running jobs get on SIGTERM (env BRAID_DRAIN_GRACE_MS; default 60000)',
    )
    .option(
      '--insecure-registry <host>',
      'plain HTTP to this HOST[:PORT] (repeatable; env BRAID_INSECURE_REGISTRY)',
      collect,
    );
}

export function agentCommand(env: NodeJS.ProcessEnv): Command {
  return addCoordinatorAccessOptions(addAgentOptions(addLogOptions(new Command('agent'))))
    .description(
      'run an agent: join a coordinator and build the platforms of the local engine (native and QEMU)',
    )
    .option('--join-token <token>', 'join token (braid_join_...) (env BRAID_JOIN_TOKEN)')
    .option(
      '--metrics-listen <host:port>',
      'serve /metrics, /healthz and /readyz over HTTP here (env BRAID_METRICS_LISTEN; default: off)',
    )
    .action(async (flags: Record<string, unknown>) => {
      const { runAgent } = await import('./agent-run.js');
      await runAgent(flags, env);
    });
}
