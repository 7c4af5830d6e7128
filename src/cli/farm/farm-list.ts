/**
 * `braid farm ls`: the hosts in the farm record, joined with the
 * coordinator's view of their agents (connected, platforms, load). An
 * unreachable coordinator leaves the record readable: connected shows "?".
 */
import { errorLine } from '../../errors.js';
import { renderTable } from '../table.js';
import { agentJson } from '../progress/build-view.js';
import { CoordinatorView, type AgentView } from './coordinator-view.js';
import { FarmRecord, type FarmHost } from './farm-record.js';
import type { FarmListConfig } from './settings.js';

export interface FarmListing {
  hosts: { host: FarmHost; agent: AgentView | undefined }[];
  /** Why the coordinator could not be asked; undefined when it answered. */
  unreachable: string | undefined;
}

export async function farmList(config: FarmListConfig): Promise<FarmListing> {
  const farm = await FarmRecord.open(config.farmFile);
  const view = new CoordinatorView(config);
  let agents: AgentView[] = [];
  let unreachable: string | undefined;
  try {
    agents = (await view.agents()).map(agentJson);
  } catch (err) {
    unreachable = errorLine(err);
  } finally {
    view.close();
  }
  return {
    hosts: farm.list().map((host) => ({
      host,
      agent: agents.find((agent) => agent.name === host.name),
    })),
    unreachable,
  };
}

export function listingJson(listing: FarmListing): Record<string, unknown>[] {
  return listing.hosts.map(({ host, agent }) => ({
    name: host.name,
    host: host.url,
    prefix: host.prefix,
    service: host.service,
    coordinator: host.coordinator,
    labels: host.labels,
    joinToken: host.joinToken?.name ?? null,
    bundleSha256: host.bundleSha256,
    addedAt: host.addedAt,
    updatedAt: host.updatedAt,
    connected: listing.unreachable !== undefined ? null : agent !== undefined,
    native: agent?.native ?? null,
    emulated: agent?.emulated.map((e) => e.platform) ?? [],
    running: agent?.running ?? null,
    capacity: agent?.capacity ?? null,
    version: agent?.version ?? null,
  }));
}

export function listingTable(listing: FarmListing): string {
  const unknown = listing.unreachable !== undefined;
  return renderTable(
    ['NAME', 'HOST', 'SERVICE', 'CONNECTED', 'NATIVE', 'EMULATED', 'RUNNING/CAPACITY', 'VERSION'],
    listing.hosts.map(({ host, agent }) => [
      host.name,
      host.url,
      host.service,
      unknown ? '?' : agent ? 'yes' : 'no',
      agent?.native ?? '-',
      agent?.emulated.map((e) => e.platform).join(',') || '-',
      agent ? `${agent.running}/${agent.capacity}` : '-',
      agent?.version || '-',
    ]),
  );
}
