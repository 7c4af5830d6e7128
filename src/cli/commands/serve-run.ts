import { startAgent } from '../../agent/agent.js';
import { serveSettings } from '../../config/settings.js';
import { startCoordinator } from '../../coordinator/coordinator.js';
import { BraidError, errorLine } from '../../errors.js';
import { createLogger } from '../../log.js';
import { formatGrpcAddress } from '../../rpc/address.js';
import { compile } from '../compile.js';
import { stagedShutdown } from '../shutdown.js';
import { sshSettingRefusal } from '../user-input.js';

export async function runServe(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const config = compile(serveSettings(env), flags, env);
  const log = createLogger({
    level: config.logLevel,
    format: config.logFormat,
    component: 'serve',
  });
  const coordinator = await startCoordinator(config, log.child({ component: 'coordinator' }), env, {
    localAgent: true,
  });
  const local = coordinator.localAgent;
  if (!local) throw new BraidError('internal', 'the coordinator has no local agent socket');
  // The local agent joins over gRPC like any other: one code path for every farm.
  // It dials a private unix socket with an in-memory join token, so it needs
  // none of the TLS files or tokens that remote callers do.
  const agent = await startAgent(
    {
      ...config,
      coordinator: local.address,
      insecure: false,
      tlsCa: undefined,
      tlsCert: undefined,
      tlsKey: undefined,
      joinToken: local.joinToken,
      // --metrics-listen is the coordinator's here: one endpoint, not two on one address.
      metricsListen: undefined,
    },
    log.child({ component: 'agent' }),
    env,
  ).catch(async (err: unknown) => {
    await coordinator.stop('local agent failed to start', 0);
    // An engine's SSH key or known_hosts file that cannot be used is invalid config: exit 2.
    throw sshSettingRefusal(err);
  });
  stagedShutdown(log, {
    drain: async () => {
      await agent.drain(config.drainGraceMs);
      await coordinator.stop('SIGTERM', config.shutdownGraceMs);
    },
    cancel: async () => {
      agent.stop();
      await coordinator.stop('second signal', 0);
    },
  });
  process.stdout.write(`listening ${formatGrpcAddress(coordinator.address)}\n`);
  agent.done.catch(async (err: unknown) => {
    log.error({ err: errorLine(err) }, 'local agent stopped');
    await coordinator.stop('local agent failed', 0);
    process.exit(1);
  });
}
