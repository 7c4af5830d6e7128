import { Command } from 'commander';
import { addLogOptions, collect, typedFlags } from '../options.js';

/** The coordinator's flags, shared by `braid coordinator` and `braid serve`. */
export function addCoordinatorOptions(command: Command): Command {
  return command
    .option(
      '--listen <address>',
      'HOST:PORT or unix:/path to serve on (env BRAID_LISTEN; default 127.0.0.1:7465)',
    )
    .option('--data-dir <dir>', 'state directory (env BRAID_DATA_DIR)')
    .option(
      '--insecure',
      'allow plaintext gRPC on a non-loopback address without TLS (env BRAID_INSECURE)',
    )
    .option('--tls-cert <file>', 'serve TLS with this certificate (PEM) (env BRAID_TLS_CERT)')
    .option('--tls-key <file>', "the certificate's private key (PEM) (env BRAID_TLS_KEY)")
    .option(
      '--tls-ca <file>',
      'require client certificates signed by this CA (PEM): mTLS for every caller (env BRAID_TLS_CA)',
    )
    .option(
      '--require-auth',
      'require tokens on loopback and unix sockets too; always required elsewhere (env BRAID_REQUIRE_AUTH)',
    )
    .option(
      '--max-message-bytes <n>',
      'largest gRPC message accepted (env BRAID_MAX_MESSAGE_BYTES)',
    )
    .option(
      '--shutdown-grace-ms <ms>',
      'time running calls get on SIGTERM (env BRAID_SHUTDOWN_GRACE_MS)',
    )
    .option('--events-retained <n>', 'events kept for replay (env BRAID_EVENTS_RETAINED)')
    .option(
      '--heartbeat-interval-ms <ms>',
      'agents send heartbeats this often (env BRAID_HEARTBEAT_INTERVAL_MS; default 5000)',
    )
    .option(
      '--heartbeat-timeout-ms <ms>',
      'an agent silent this long is dropped (env BRAID_HEARTBEAT_TIMEOUT_MS; default 15000)',
    )
    .option(
      '--max-context-bytes <n>',
      'largest build context accepted (env BRAID_MAX_CONTEXT_BYTES)',
    )
    .option('--no-arch-check', 'skip the arch guard before stitching (env BRAID_ARCH_CHECK=false)')
    .option(
      '--no-push-check',
      "accept builds without first checking push access to their tags' repositories (env BRAID_PUSH_CHECK=false)",
    )
    .option(
      '--builder-id <uri>',
      "the provenance's builder id (env BRAID_BUILDER_ID; default braid://LISTEN-ADDRESS)",
    )
    .option(
      '--push-check-timeout-ms <ms>',
      'deadline of the push-access check per registry (env BRAID_PUSH_CHECK_TIMEOUT_MS; default 5000)',
    )
    .option(
      '--arch-check-budget-bytes <n>',
      'layer bytes the arch guard reads per image (env BRAID_ARCH_CHECK_BUDGET_BYTES)',
    )
    .option(
      '--max-job-attempts <n>',
      'attempts per job when its agent is lost (env BRAID_MAX_JOB_ATTEMPTS; default 2)',
    )
    .option(
      '--wait-for-agent-ms <ms>',
      'a re-queued job waits this long for a capable agent (env BRAID_WAIT_FOR_AGENT_MS; default 300000)',
    )
    .option(
      '--store <url>',
      'keep builds in PostgreSQL: postgres://USER@HOST:PORT/DB (env BRAID_STORE; default SQLite in the data dir; docs/postgres.md)',
    )
    .option(
      '--advertise <host:port>',
      'the address agents and clients reach this coordinator at; standbys name the leader by it (env BRAID_ADVERTISE; default the listen address)',
    )
    .option(
      '--leader-poll-ms <ms>',
      'PostgreSQL store: how often a standby asks for the leadership and the leader renews its lease (env BRAID_LEADER_POLL_MS; default 1000)',
    )
    .option(
      '--leader-lease-ms <ms>',
      'PostgreSQL store: a leader that has not renewed its lease this long is taken over from (env BRAID_LEADER_LEASE_MS; default 5000)',
    )
    .option(
      '--max-concurrent-stitches <n>',
      'builds that stitch at once; the others wait their turn, oldest first (env BRAID_MAX_CONCURRENT_STITCHES; default 16)',
    )
    .option(
      '--job-timeout-ms <ms>',
      'a job running longer ends its build TIMED_OUT (env BRAID_JOB_TIMEOUT_MS; default 2 h)',
    )
    .option(
      '--build-timeout-ms <ms>',
      'a build older than this ends TIMED_OUT (env BRAID_BUILD_TIMEOUT_MS; default 4 h)',
    )
    .option(
      '--no-cache-affinity',
      'place jobs by load alone, ignoring which agent holds the build cache (env BRAID_CACHE_AFFINITY=false)',
    )
    .option(
      '--cache-affinity-max-age-ms <ms>',
      'a build cache record older than this is ignored (env BRAID_CACHE_AFFINITY_MAX_AGE_MS; default 24 h)',
    )
    .option(
      '--cache-affinity-max-load-gap-percent <n>',
      'the warm agent loses when its load exceeds the least loaded one by more points (env BRAID_CACHE_AFFINITY_MAX_LOAD_GAP_PERCENT; default 50)',
    )
    .option(
      '--registry-timeout-ms <ms>',
      'deadline per registry request (env BRAID_REGISTRY_TIMEOUT_MS)',
    )
    .option('--registry-retries <n>', 'attempts per registry request (env BRAID_REGISTRY_RETRIES)')
    .option(
      '--metrics-listen <address>',
      'serve /metrics, /healthz and /readyz over HTTP on HOST:PORT (env BRAID_METRICS_LISTEN; default: off)',
    );
}

export function coordinatorCommand(env: NodeJS.ProcessEnv): Command {
  return addCoordinatorOptions(addLogOptions(new Command('coordinator')))
    .description('run the coordinator: the gRPC server builds are submitted to and agents join')
    .option(
      '--insecure-registry <host>',
      'plain HTTP to this HOST[:PORT] (repeatable; env BRAID_INSECURE_REGISTRY)',
      collect,
    )
    .action(async (_flags: Record<string, unknown>, command: Command) => {
      const { runCoordinator } = await import('./coordinator-run.js');
      await runCoordinator(typedFlags(command), env);
    });
}
