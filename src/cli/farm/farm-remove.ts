/**
 * `braid farm remove NAME`: drain the agent (SIGTERM: running jobs finish
 * within its grace), wait for the coordinator to drop it, stop and disable
 * its service, remove what `add` installed (only that: the prefix's own
 * subdirectories, never the prefix's other contents), revoke the join token
 * braid made for it, and forget the host.
 */
import { parseSshUrl } from '../../ssh/ssh-url.js';
import type { Logger } from '../../log.js';
import { errorLine } from '../../errors.js';
import { installPaths, serviceFor } from './agent-service.js';
import { CoordinatorView } from './coordinator-view.js';
import { FarmError } from './errors.js';
import { FarmRecord, type FarmHost } from './farm-record.js';
import { revokeJoinToken } from './join-token.js';
import { RemoteHost, shellQuote } from './remote-host.js';
import type { FarmRemoveConfig } from './settings.js';

export interface RemoveRequest {
  name: string;
  config: FarmRemoveConfig;
  env: NodeJS.ProcessEnv;
  say: (line: string) => void;
  log?: Logger;
}

export interface RemoveResult {
  name: string;
  host: string;
  drained: boolean;
  /** The coordinator confirmed the agent left (false: it could not be asked, or it still lists it). */
  left: boolean;
  revokedToken: string | undefined;
}

/** Revokes the join token braid made for the agent; its name, or undefined when none. */
async function revokeOwnToken(
  entry: FarmHost,
  config: FarmRemoveConfig,
  say: (line: string) => void,
): Promise<string | undefined> {
  if (!entry.joinToken?.createdByBraid) return undefined;
  const dataDir = config.dataDir ?? entry.joinToken.dataDir;
  const note = await revokeJoinToken({ ...entry.joinToken, dataDir });
  if (note) say(note);
  return entry.joinToken.name;
}

export async function farmRemove(request: RemoveRequest): Promise<RemoveResult> {
  const { config, name, say } = request;
  const farm = await FarmRecord.open(config.farmFile);
  const entry = farm.get(name);
  if (entry === undefined) {
    throw new FarmError(
      'not_found',
      `agent ${name}`,
      `not in the farm record ${config.farmFile} (braid farm ls lists what is there)`,
    );
  }
  const target = parseSshUrl(entry.url);
  // The keys and known_hosts `add` used, unless others are given now.
  const ssh = {
    ...config,
    sshKey: config.sshKey.length > 0 ? config.sshKey : entry.sshKey,
    sshKnownHosts: config.sshKnownHosts ?? entry.sshKnownHosts,
  };
  const paths = installPaths(entry.prefix);
  say(`connecting to ${target.display}`);
  const sshLog = ['debug', 'trace'].includes(config.logLevel) ? request.log : undefined;
  let host: RemoteHost;
  try {
    host = await RemoteHost.connect(target, { ssh, env: request.env, log: sshLog });
  } catch (err) {
    if (!config.forget) {
      throw new FarmError(
        'unavailable',
        target.display,
        `${errorLine(err)}; nothing was changed (a host that is gone for good: braid farm remove ${name} --forget)`,
        { cause: err },
      );
    }
    say(`warning: ${target.display} cannot be reached (${errorLine(err)}): its files stay there`);
    const revokedToken = await revokeOwnToken(entry, config, say);
    await farm.delete(name);
    return { name, host: target.display, drained: false, left: false, revokedToken };
  }
  const view = new CoordinatorView(config);
  try {
    const probe = await host.run('id -u', 30_000);
    if (entry.service === 'systemd' && probe.stdout.trim() !== '0') host.useSudo();
    const asRoot = entry.service === 'systemd';
    const node = (await host.run('command -v node || command -v nodejs', 30_000)).stdout.trim();
    const service = serviceFor(entry.service, { paths, node: node || 'node' });

    say(`draining ${name} (up to ${config.drainTimeoutMs} ms)`);
    const { drained } = await service.stop(host, config.drainTimeoutMs);
    if (!drained) say(`${name} did not drain within ${config.drainTimeoutMs} ms: killed`);

    let left = false;
    try {
      left = await view.waitForLeave(name, config.waitMs);
      if (!left) say(`warning: the coordinator still lists ${name} after ${config.waitMs} ms`);
    } catch (err) {
      say(`warning: cannot ask the coordinator whether ${name} left: ${errorLine(err)}`);
    }

    say(`removing ${entry.prefix} and the ${entry.service} service`);
    await service.uninstall(host);
    const q = shellQuote;
    const owned = [
      paths.lib,
      `${paths.lib}.new`,
      `${paths.lib}.old`,
      `${entry.prefix}/etc`,
      paths.run,
      `${entry.prefix}/log`,
      paths.cache,
      paths.upload,
      paths.marker,
    ];
    await host.mustRun(
      `removing ${entry.prefix}`,
      `rm -rf ${owned.map(q).join(' ')} && (rmdir ${q(entry.prefix)} 2>/dev/null; true)`,
      120_000,
      asRoot,
    );

    const revokedToken = await revokeOwnToken(entry, config, say);
    await farm.delete(name);
    return { name, host: target.display, drained, left, revokedToken };
  } finally {
    view.close();
    await host.close();
  }
}
