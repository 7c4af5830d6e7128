import { coordinatorSettings } from '../../config/settings.js';
import { startCoordinator } from '../../coordinator/coordinator.js';
import { createLogger } from '../../log.js';
import { formatGrpcAddress } from '../../rpc/address.js';
import { compile } from '../compile.js';
import { stagedShutdown } from '../shutdown.js';

export async function runCoordinator(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const config = compile(coordinatorSettings(env), flags, env);
  const log = createLogger({
    level: config.logLevel,
    format: config.logFormat,
    component: 'coordinator',
  });
  const coordinator = await startCoordinator(config, log, env);
  stagedShutdown(log, {
    drain: () => coordinator.stop('SIGTERM', config.shutdownGraceMs),
    cancel: () => coordinator.stop('second signal', 0),
  });
  // The address line on stdout lets scripts learn the bound port (with :0).
  process.stdout.write(`listening ${formatGrpcAddress(coordinator.address)}\n`);
}
