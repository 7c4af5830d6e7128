/**
 * The agent process: finds what its engine can build (native platform and
 * QEMU-emulated ones), joins the coordinator and runs the jobs it is given.
 */
import type { AgentConfig } from '../config/settings.js';
import { clientTlsFiles } from '../config/tls-files.js';
import { BraidError, errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import { DockerConfigCredentials } from '../oci/credentials.js';
import { sshForwarderFor } from './ssh-forwarder.js';
import { registryClientFor } from '../oci/registry-factory.js';
import { formatGrpcAddress, type GrpcAddress } from '../rpc/address.js';
import { clientTransport } from '../rpc/credentials.js';
import { startProbeServer, type ProbeServer, type Readiness } from '../rpc/http-probe-server.js';
import { isUnrecoverable } from '../rpc/retryable.js';
import {
  binfmtReader,
  describeCapabilities,
  emulatedPlatforms,
  nativePlatform,
} from './capabilities.js';
import { ContextCache } from './context-cache.js';
import { createEngine } from './engine.js';
import { EmulatorVersions, localVersionProbe } from './emulator-version.js';
import { runJob } from './job-runner.js';
import { AgentMetrics } from './agent-metrics.js';
import { EngineWatch } from './engine-watch.js';
import { AgentSessionLoop } from './session.js';
import { CoordinatorClients } from './coordinator-clients.js';

export interface RunningAgent {
  /** Resolves when the agent stops; rejects on a fatal session error. */
  readonly done: Promise<void>;
  /** Stop taking jobs, let running ones finish within `graceMs`, then leave. */
  drain(graceMs: number): Promise<void>;
  /** Cancel running jobs and leave now. */
  stop(): void;
}

export async function startAgent(
  config: Omit<AgentConfig, 'logLevel' | 'logFormat' | 'metricsListen' | 'coordinators'> &
    Partial<Pick<AgentConfig, 'metricsListen' | 'coordinators'>>,
  log: Logger,
  env: Readonly<Record<string, string | undefined>>,
): Promise<RunningAgent> {
  // Several coordinators: the session finds the leader among them (and any it names).
  const coordinators = (config.coordinators ?? [config.coordinator]).map(formatGrpcAddress);
  const tls = clientTlsFiles(config);
  const transportTo = (address: GrpcAddress) =>
    clientTransport(address, { insecure: config.insecure, tls });
  // TLS files are checked before the engine is asked anything: a bad one is exit 2.
  const transport = transportTo(config.coordinator);
  const engine = createEngine(config.engine, {
    ssh: {
      keyFiles: config.sshKey,
      keyPassphrase: config.sshKeyPassphrase,
      knownHostsFile: config.sshKnownHosts,
      agentSocket: env.SSH_AUTH_SOCK,
      homeDir: env.HOME,
      keepaliveIntervalMs: config.sshKeepaliveIntervalMs,
      connectTimeoutMs: config.sshConnectTimeoutMs,
    },
    log,
  });
  let info;
  try {
    info = await engine.info();
  } catch (err) {
    await engine.close();
    // A refused host key or login says so itself; "not reachable" would mislead.
    if (isUnrecoverable(err)) throw err;
    throw new BraidError(
      'unavailable',
      `Docker engine at ${config.engine} is not reachable (${errorLine(err)}); ${
        /^ssh:/i.test(config.engine)
          ? 'check that the host is up, its sshd listens and its engine runs,'
          : 'start it (e.g. bash scripts/test-env.sh)'
      } or pass --engine`,
      { cause: err },
    );
  }
  const native = nativePlatform(info);
  // An engine over SSH reads its own host's handlers; a local one, the configured dir.
  const emulated = await emulatedPlatforms(
    native,
    engine.binfmt?.() ?? binfmtReader(config.binfmtDir),
  );
  // A remote host's interpreters cannot be run from here: their versions stay unknown.
  const emulatorVersions = new EmulatorVersions(
    emulated,
    engine.binfmt ? undefined : localVersionProbe(),
    log.child({ agent: config.name }),
  );
  let buildNetwork = config.buildNetwork;
  if (!buildNetwork && !(await engine.hasNetwork('bridge'))) {
    buildNetwork = 'host';
    log.warn(
      { engine: config.engine },
      "the engine has no 'bridge' network; RUN steps use network 'host'",
    );
  }
  const target = coordinators.join(',');
  const first = formatGrpcAddress(config.coordinator);
  const clients = new CoordinatorClients({
    coordinators,
    // The first coordinator's transport is the one checked above (and its warning logged once).
    transportTo: (address) =>
      formatGrpcAddress(address) === first ? transport : transportTo(address),
    joinToken: config.joinToken,
    log,
  });
  clients.get(); // the first coordinator's client now: its transport warning comes first, as before
  /** The client of the coordinator the session talks to now. */
  const client = () => clients.get(session.coordinator);
  const contexts = new ContextCache(config.cacheDir, config.maxCacheBytes);
  const registry = registryClientFor(config, env);
  const credentials = new DockerConfigCredentials({ env });
  const agentLog = log.child({ agent: config.name });
  agentLog.info(
    {
      engine: config.engine,
      engineVersion: info.serverVersion,
      coordinator: target,
      transport: transport.secure ? 'tls' : 'plaintext',
      joinToken: config.joinToken ? 'set' : 'none',
      capabilities: describeCapabilities(native, emulated),
      capacity: config.capacity,
    },
    'agent starting',
  );
  // Metrics only when someone can read them: no engine checks otherwise.
  const watch = config.metricsListen ? new EngineWatch(engine, { log: agentLog }) : undefined;
  watch?.record(true);
  const metrics =
    watch &&
    new AgentMetrics(
      config.name,
      config.capacity,
      { runningJobs: () => session.runningJobs, engine: () => watch.last },
      { processMetrics: true },
    );
  const session = new AgentSessionLoop({
    name: config.name,
    capacity: config.capacity,
    labels: Object.fromEntries(
      config.labels.map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    ),
    native,
    emulated,
    engineVersion: info.serverVersion,
    engineId: info.id,
    ...clients.sessionOptions(),
    log: agentLog,
    runJob: async (job, report, signal) => {
      const outcome = await runJob(
        job,
        {
          engine,
          contexts,
          fetchContext: async function* (digest) {
            for await (const response of client().fetchContext({ digest })) yield response.chunk;
          },
          registry,
          credentials,
          builder: { engine: info, platform: native },
          emulatorVersion: (platform) => emulatorVersions.versionFor(platform),
          sshForwarder: (job) => sshForwarderFor((options) => client().forwardSsh(options), job),
          buildNetwork,
          log: agentLog,
        },
        report,
        signal,
      );
      metrics?.jobFinished(job, outcome);
      return outcome;
    },
  });
  let probe: ProbeServer | undefined;
  if (config.metricsListen && metrics && watch) {
    const readiness = (): Readiness =>
      session.state === 'joined'
        ? { ready: true }
        : { ready: false, reason: `the session with the coordinator is ${session.state}` };
    try {
      probe = await startProbeServer({
        address: config.metricsListen,
        metrics,
        readiness,
        log: agentLog,
      });
    } catch (err) {
      clients.close();
      await engine.close();
      throw err;
    }
    watch.start();
    agentLog.info({ metricsListen: probe.url }, 'serving /metrics, /healthz and /readyz');
  }
  const abort = new AbortController();
  // An engine that refuses for good (a remote host's key changed) fails every
  // job: the agent leaves the farm with that line instead of taking more.
  let fatal: Error | undefined;
  engine.onFatal?.((error) => {
    if (fatal) return;
    fatal = error;
    agentLog.error({ err: error.message }, 'the engine refused the agent for good; leaving');
    session.stop();
    abort.abort();
  });
  const done = session
    .run(abort.signal)
    .finally(async () => {
      watch?.stop();
      clients.close();
      await Promise.all([engine.close(), probe?.stop()]);
    })
    .then(() => {
      if (fatal) throw fatal;
    });
  return {
    done,
    drain: async (graceMs) => {
      await session.drain(graceMs);
      abort.abort();
    },
    stop: () => {
      session.stop();
      abort.abort();
    },
  };
}
