import { timestampMs } from '@bufbuild/protobuf/wkt';
import { clientSettings } from '../../config/settings.js';
import { BuildService, type AgentInfo } from '../../gen/braid/v1/build_pb.js';
import { coordinatorClient } from '../client.js';
import { compile } from '../compile.js';
import { agentJson } from '../progress/build-view.js';
import { formatAge } from '../progress/format.js';
import { platformName } from '../progress/names.js';
import { renderTable } from '../table.js';

function row(agent: AgentInfo, nowMs: number): string[] {
  const emulated = agent.emulatedPlatforms.map((e) => platformName(e.platform)).filter(Boolean);
  return [
    agent.name,
    platformName(agent.nativePlatform) || '-',
    emulated.join(',') || '-',
    `${agent.running}/${agent.capacity}`,
    agent.lastHeartbeat ? `${formatAge(nowMs - timestampMs(agent.lastHeartbeat))} ago` : '-',
    agent.version || '-',
  ];
}

export async function runAgents(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { output, ...rest } = flags;
  const config = compile(clientSettings(), rest, env);
  const client = coordinatorClient(BuildService, config);
  try {
    const { agents } = await client.listAgents({}, { timeoutMs: config.timeoutMs });
    if (output === 'json') {
      for (const agent of agents) process.stdout.write(`${JSON.stringify(agentJson(agent))}\n`);
      return;
    }
    const nowMs = Date.now();
    process.stdout.write(
      renderTable(
        ['NAME', 'NATIVE', 'EMULATED', 'RUNNING/CAPACITY', 'LAST HEARTBEAT', 'VERSION'],
        agents.map((agent) => row(agent, nowMs)),
      ),
    );
  } finally {
    client.close();
  }
}
