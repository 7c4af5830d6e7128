import { compile } from '../compile.js';
import { createLogger } from '../../log.js';
import { parseAgentSettings } from '../farm/agent-env.js';
import { farmAdd, type AddResult } from '../farm/farm-add.js';
import { farmList, listingJson, listingTable } from '../farm/farm-list.js';
import { farmRemove } from '../farm/farm-remove.js';
import { farmAddSettings, farmListSettings, farmRemoveSettings } from '../farm/settings.js';

function say(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** `--labels a=1,b=2 --labels c=3` -> ['a=1', 'b=2', 'c=3']. */
function splitLists(value: unknown): unknown {
  return Array.isArray(value)
    ? value.flatMap((item: string) => item.split(',').map((s) => s.trim())).filter(Boolean)
    : value;
}

function addedLines(result: AddResult): string {
  const { agent } = result;
  const emulated = agent.emulated.map((e) => e.platform).join(', ') || 'none';
  return (
    `agent ${result.name}: ${result.outcome} on ${result.host} (${result.service}, ${result.prefix})\n` +
    `agent ${result.name}: connected; native ${agent.native ?? 'unknown'}; emulated ${emulated}\n`
  );
}

export async function runFarmAdd(
  url: string,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { output, agentSetting, labels, ...rest } = flags;
  const config = compile(farmAddSettings(env), { ...rest, labels: splitLists(labels) }, env);
  const agentSettings = parseAgentSettings((agentSetting as string[] | undefined) ?? []);
  const log = createLogger({ level: config.logLevel, format: config.logFormat, component: 'farm' });
  const result = await farmAdd({ url, config, agentSettings, env, say, log });
  if (output === 'json') {
    const { agent, ...fields } = result;
    process.stdout.write(
      `${JSON.stringify({ ...fields, native: agent.native, emulated: agent.emulated.map((e) => e.platform) })}\n`,
    );
    return;
  }
  process.stdout.write(addedLines(result));
}

export async function runFarmList(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { output, ...rest } = flags;
  const config = compile(farmListSettings(env), rest, env);
  const listing = await farmList(config);
  if (listing.unreachable !== undefined) {
    say(
      `braid: warning: the coordinator did not answer (${listing.unreachable}); connected is unknown`,
    );
  }
  if (output === 'json') {
    for (const row of listingJson(listing)) process.stdout.write(`${JSON.stringify(row)}\n`);
    return;
  }
  process.stdout.write(listingTable(listing));
}

export async function runFarmRemove(
  name: string,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { output, ...rest } = flags;
  const config = compile(farmRemoveSettings(env), rest, env);
  const log = createLogger({ level: config.logLevel, format: config.logFormat, component: 'farm' });
  const result = await farmRemove({ name, config, env, say, log });
  if (output === 'json') {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const token = result.revokedToken ? `, join token "${result.revokedToken}" revoked` : '';
  process.stdout.write(
    `agent ${name}: removed from ${result.host} (${result.drained ? 'drained' : 'killed after the drain timeout'}, stopped, files removed${token})\n`,
  );
}
