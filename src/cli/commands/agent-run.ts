import { startAgent } from '../../agent/agent.js';
import { agentSettings } from '../../config/settings.js';
import { createLogger } from '../../log.js';
import { compile } from '../compile.js';
import { stagedShutdown } from '../shutdown.js';
import { sshSettingRefusal } from '../user-input.js';

export async function runAgent(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const config = compile(agentSettings(env), flags, env);
  const log = createLogger({
    level: config.logLevel,
    format: config.logFormat,
    component: 'agent',
  });
  try {
    const agent = await startAgent(config, log, env);
    stagedShutdown(log, {
      drain: () => agent.drain(config.drainGraceMs),
      cancel: async () => agent.stop(),
    });
    await agent.done;
  } catch (err) {
    // An engine's SSH key or known_hosts file that cannot be used is invalid config: exit 2.
    throw sshSettingRefusal(err);
  }
  process.exit(0);
}
