import { coordinatorSettings } from '../../config/settings.js';
import { startCoordinator } from '../../coordinator/coordinator.js';
import { createLogger } from '../../log.js';
import { formatGrpcAddress as formatAddress } from '../../rpc/address.js';
import { compile } from '../compile.js';
import { EXIT_INTERRUPTED } from '../exit.js';

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
  const coordinator = await startCoordinator(config, log);
  // First signal: drain within the grace period. Second: cancel now. Third: exit.
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals === 1) {
      void coordinator.stop(`${signal}`, config.shutdownGraceMs).then(() => process.exit(0));
    } else if (signals === 2) {
      log.warn({ signal }, 'second signal: cancelling running calls');
      void coordinator.stop(`${signal}`, 0).then(() => process.exit(0));
    } else {
      process.exit(EXIT_INTERRUPTED);
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // The address line on stdout lets scripts learn the bound port (with :0).
  process.stdout.write(`listening ${formatAddress(coordinator.address)}\n`);
}
