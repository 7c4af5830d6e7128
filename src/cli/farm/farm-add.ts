/**
 * `braid farm add ssh://user@host`: check the host, copy the agent bundle
 * (verified by sha256 on the far side), write its settings and its service,
 * start it, and wait until the coordinator lists it. Every file is compared
 * with what the host has: a second run with the same inputs writes nothing,
 * restarts nothing, and says "unchanged".
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { AGENT_NAME, agentNameFrom } from '../../agent-name.js';
import { isLoopbackHost } from '../../loopback.js';
import { UsageError } from '../../errors.js';
import { formatGrpcAddress, isLocalAddress, parseGrpcAddressList } from '../../rpc/address.js';
import { parseSshUrl, type SshTarget } from '../../ssh/ssh-url.js';
import type { Logger } from '../../log.js';
import { packBundle, findBundleDir, type AgentBundle } from './agent-bundle.js';
import { agentEnvVars, checkAgentEnv, readAgentEnvValue, renderAgentEnv } from './agent-env.js';
import {
  installPaths,
  serviceFor,
  type AgentService,
  type InstallPaths,
  type ServiceFile,
} from './agent-service.js';
import { CoordinatorView, type AgentView } from './coordinator-view.js';
import { fromUser } from '../user-input.js';
import { FarmError } from './errors.js';
import { FarmRecord, type FarmHost } from './farm-record.js';
import { checkHost, type HostFacts } from './host-check.js';
import { chooseJoinToken, type JoinTokenChoice } from './join-token.js';
import { RemoteHost, lastLine, shellQuote } from './remote-host.js';
import type { FarmAddConfig } from './settings.js';
import { HIDDEN_BY_PROTECT_HOME } from './systemd-unit.js';

export type AddOutcome = 'installed' | 'updated' | 'started' | 'unchanged';

export interface AddResult {
  name: string;
  host: string;
  prefix: string;
  service: AgentService['kind'];
  outcome: AddOutcome;
  bundleSha256: string;
  agent: AgentView;
  joinToken: string | undefined;
}

export interface AddRequest {
  url: string;
  config: FarmAddConfig;
  /** `--agent-setting` pairs, already parsed. */
  agentSettings: Record<string, string>;
  env: NodeJS.ProcessEnv;
  /** Progress lines (stderr). */
  say: (line: string) => void;
  log?: Logger;
}

interface Marker {
  name: string;
  bundleSha256: string;
  version: string;
}

const DEFAULT_ENGINE_SOCKET = '/var/run/docker.sock';

export function parseFarmUrl(url: string): SshTarget {
  const target = fromUser(() => parseSshUrl(url));
  if (target.path !== undefined) {
    throw new UsageError(
      `${target.display}: "${url}" names a path (${target.path}); braid farm add takes ssh://user@host[:port]`,
    );
  }
  return target;
}

/** The agent's name from the host's: letters, digits, ".", "_" and "-", at most 63. */
function nameFromHostname(hostname: string, target: SshTarget): string {
  const name = agentNameFrom(hostname.split('.')[0] ?? '');
  if (!AGENT_NAME.test(name)) {
    throw new UsageError(
      `${target.display}: its host name "${hostname}" makes no agent name: pass --name`,
    );
  }
  return name;
}

function engineSocket(settings: Record<string, string>): string | undefined {
  const engine = settings.engine;
  if (engine === undefined) return DEFAULT_ENGINE_SOCKET;
  return engine.startsWith('unix://') ? engine.slice('unix://'.length) : undefined;
}

/** sha256 of each file on the host ('' when missing), with the host's node. */
async function remoteHashes(
  host: RemoteHost,
  node: string,
  paths: string[],
  asRoot: boolean,
): Promise<Map<string, string>> {
  const script =
    "const fs=require('fs'),c=require('crypto');for(const f of process.argv.slice(1)){let h='-';" +
    "try{h=c.createHash('sha256').update(fs.readFileSync(f)).digest('hex')}catch{}console.log(h+' '+f)}";
  const out = await host.mustRun(
    'reading what is installed',
    `${shellQuote(node)} -e ${shellQuote(script)} ${paths.map(shellQuote).join(' ')}`,
    60_000,
    asRoot,
  );
  const hashes = new Map<string, string>();
  for (const line of out.split('\n')) {
    const at = line.indexOf(' ');
    if (at > 0) hashes.set(line.slice(at + 1), line.slice(0, at) === '-' ? '' : line.slice(0, at));
  }
  return hashes;
}

async function readRemote(host: RemoteHost, path: string, asRoot: boolean): Promise<string> {
  const result = await host.run(`cat ${shellQuote(path)} 2>/dev/null`, 30_000, asRoot);
  return result.code === 0 ? result.stdout : '';
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

async function installBundle(
  host: RemoteHost,
  paths: InstallPaths,
  node: string,
  bundle: AgentBundle,
  asRoot: boolean,
): Promise<void> {
  const q = shellQuote;
  await host.mustRun(
    `creating ${paths.prefix}`,
    `umask 022 && mkdir -p ${q(paths.prefix)} ${q(`${paths.prefix}/etc`)}`,
    30_000,
    asRoot,
  );
  const sent = await host.upload(paths.upload, bundle.archive, asRoot);
  const hashes = await remoteHashes(host, node, [paths.upload], asRoot);
  const received = hashes.get(paths.upload) ?? '';
  if (received !== sent) {
    await host.run(`rm -f ${q(paths.upload)}`, 30_000, asRoot);
    throw new FarmError(
      'unavailable',
      host.display,
      `the bundle arrived damaged (sha256 ${received || 'none'} there, ${sent} here); nothing was installed`,
    );
  }
  const next = `${paths.lib}.new`;
  const old = `${paths.lib}.old`;
  await host.mustRun(
    'unpacking the bundle',
    `umask 022 && rm -rf ${q(next)} ${q(old)} && mkdir -p ${q(next)} && ` +
      `tar -xzf ${q(paths.upload)} -C ${q(next)} --no-same-owner && ` +
      `if [ -d ${q(paths.lib)} ]; then mv ${q(paths.lib)} ${q(old)}; fi && ` +
      `mv ${q(next)} ${q(paths.lib)} && rm -rf ${q(old)} ${q(paths.upload)}`,
    120_000,
    asRoot,
  );
}

async function writeFiles(host: RemoteHost, files: ServiceFile[], asRoot: boolean): Promise<void> {
  for (const file of files) {
    await host.mustRun(
      `creating the directory of ${file.path}`,
      `umask 022 && mkdir -p "$(dirname ${shellQuote(file.path)})"`,
      30_000,
      asRoot,
    );
    await host.upload(file.path, Buffer.from(file.content), asRoot);
    await host.mustRun(
      `setting the mode of ${file.path}`,
      `chmod ${file.mode.toString(8)} ${shellQuote(file.path)}`,
      30_000,
      asRoot,
    );
  }
}

function checkServicePaths(facts: HostFacts, prefix: string, target: SshTarget): void {
  if (facts.service !== 'systemd') return;
  for (const [what, path] of [
    ['the prefix', prefix],
    ['node', facts.node],
  ] as const) {
    const hidden = HIDDEN_BY_PROTECT_HOME.find((dir) => path === dir || path.startsWith(`${dir}/`));
    if (hidden) {
      throw new FarmError(
        'failed_precondition',
        target.display,
        `${what} (${path}) is under ${hidden}, which the unit's ProtectHome=yes hides from the agent: use another --prefix or node, or pass --no-systemd`,
      );
    }
  }
}

export async function farmAdd(request: AddRequest): Promise<AddResult> {
  const { config, say, env } = request;
  const target = parseFarmUrl(request.url);
  const prefix = config.prefix;
  const paths = installPaths(prefix);
  const coordinator =
    request.agentSettings.coordinator ?? config.coordinators.map(formatGrpcAddress).join(',');
  checkReachable(coordinator, target);

  // Everything that can be refused here is, before any host is touched.
  const bundle = await packBundle(findBundleDir(config.bundle));
  const tlsCaText =
    config.tlsCa !== undefined ? await readLocal(config.tlsCa, '--tls-ca') : undefined;
  if ((config.agentTlsCert === undefined) !== (config.agentTlsKey === undefined)) {
    throw new UsageError('--agent-tls-cert and --agent-tls-key go together: give both, or neither');
  }
  const tlsClient =
    config.agentTlsCert !== undefined && config.agentTlsKey !== undefined
      ? {
          cert: await readLocal(config.agentTlsCert, '--agent-tls-cert'),
          key: await readLocal(config.agentTlsKey, '--agent-tls-key'),
        }
      : undefined;
  const farm = await FarmRecord.open(config.farmFile);
  if (config.name !== undefined) checkNameFree(farm, config.name, target, prefix);
  // The agent's settings are checked once with a placeholder name, again with the real one.
  checkAgentEnv(
    envFor(config, request.agentSettings, config.name ?? 'agent', undefined, paths, {}),
  );

  // The coordinator must answer (and take our API token) before the host is changed.
  const view = new CoordinatorView(config);
  let host: RemoteHost;
  try {
    await view.agents();
    say(`checking ${target.display}`);
    // ssh's own lines are for --log-level debug; a failure reaches the user as the error line.
    const sshLog = ['debug', 'trace'].includes(config.logLevel) ? request.log : undefined;
    host = await RemoteHost.connect(target, { ssh: config, env, log: sshLog });
  } catch (err) {
    view.close();
    throw err;
  }
  try {
    const facts = await checkHost(host, {
      wantSystemd: config.systemd,
      engineSocket: engineSocket(request.agentSettings),
    });
    checkServicePaths(facts, prefix, target);
    const asRoot = facts.service === 'systemd';
    const name = config.name ?? nameFromHostname(facts.hostname, target);
    checkNameFree(farm, name, target, prefix);
    const previous = farm.get(name);
    say(
      `${target.display}: node ${facts.nodeVersion}, ${facts.arch}, ${facts.service === 'systemd' ? 'systemd' : 'no systemd: supervised'}`,
    );

    const marker = parseMarker(await readRemote(host, paths.marker, asRoot));
    if (marker !== undefined && marker.name !== name) {
      throw new FarmError(
        'already_exists',
        target.display,
        `${prefix} holds agent "${marker.name}": remove it first (braid farm remove ${marker.name}) or use another --prefix`,
      );
    }
    const installedEnv = await readRemote(host, paths.envFile, asRoot);
    const token = await chooseJoinToken({
      agentName: name,
      explicit: config.joinToken,
      installed: readAgentEnvValue(installedEnv, 'BRAID_JOIN_TOKEN'),
      previous: previous?.joinToken,
      dataDir: config.dataDir,
    });
    if (token.note) say(token.note);
    const now = new Date().toISOString();
    const record: FarmHost = {
      name,
      url: target.display,
      prefix,
      service: facts.service,
      coordinator,
      labels: [...config.labels],
      sshKey: [...config.sshKey],
      ...(config.sshKnownHosts !== undefined && { sshKnownHosts: config.sshKnownHosts }),
      ...(token.record !== undefined && { joinToken: token.record }),
      bundleSha256: bundle.sha256,
      addedAt: previous?.addedAt ?? now,
      updatedAt: previous?.updatedAt ?? now,
    };
    // Recorded before the host is changed: a failed or interrupted add can be
    // run again (its token is found) or undone with braid farm remove.
    await farm.put(record);

    const service = serviceFor(facts.service, { paths, node: facts.node });
    const vars = envFor(config, request.agentSettings, name, token, paths, service.envExtra());
    checkAgentEnv(vars);
    const files: ServiceFile[] = [
      { path: paths.envFile, content: renderAgentEnv(vars), mode: 0o600 },
      ...(tlsCaText !== undefined ? [{ path: paths.tlsCa, content: tlsCaText, mode: 0o644 }] : []),
      ...(tlsClient !== undefined
        ? [
            { path: paths.tlsCert, content: tlsClient.cert, mode: 0o644 },
            { path: paths.tlsKey, content: tlsClient.key, mode: 0o600 },
          ]
        : []),
      ...service.files(),
    ];
    const newMarker: Marker = { name, bundleSha256: bundle.sha256, version: bundle.version };
    const hashes = await remoteHashes(
      host,
      facts.node,
      [paths.cli, ...files.map((f) => f.path)],
      asRoot,
    );
    const bundleChanged = marker?.bundleSha256 !== bundle.sha256 || !hashes.get(paths.cli);
    const changedFiles = files.filter((f) => hashes.get(f.path) !== sha256(f.content));
    const installedBefore = marker !== undefined;

    if (bundleChanged) {
      say(
        `copying the agent bundle (${formatMiB(bundle.archive.length)}, sha256 ${bundle.sha256.slice(0, 12)})`,
      );
      await installBundle(host, paths, facts.node, bundle, asRoot);
    }
    if (changedFiles.length > 0) {
      say(`writing ${changedFiles.map((f) => f.path).join(', ')}`);
      await writeFiles(host, changedFiles, asRoot);
    }
    if (bundleChanged || changedFiles.length > 0) {
      await writeFiles(
        host,
        [{ path: paths.marker, content: `${JSON.stringify(newMarker)}\n`, mode: 0o644 }],
        asRoot,
      );
    }

    const changed = bundleChanged || changedFiles.length > 0;
    const running = await service.running(host);
    let previousConnection: number | undefined;
    if (changed || !running) {
      previousConnection = await view.connectedAt(name);
      if (running) {
        say(`restarting the agent (drains first)`);
        await service.stop(host, 120_000);
      }
      say(`starting the agent (${service.kind})`);
      await service.start(host);
    }

    if (changed) await farm.put({ ...record, updatedAt: new Date().toISOString() });

    say(`waiting for ${name} to join ${coordinator} (up to ${config.waitMs} ms)`);
    const agent = await view.waitForJoin(name, config.waitMs, previousConnection);
    if (agent === undefined) {
      const tail = await service.logTail(host, 20).catch(() => '');
      const why = lastReason(tail);
      throw new FarmError(
        'deadline_exceeded',
        target.display,
        `agent ${name} did not join ${coordinator} within ${config.waitMs} ms${why ? `; its log says: ${why}` : ''}`,
      );
    }
    const outcome: AddOutcome = !changed
      ? running
        ? 'unchanged'
        : 'started'
      : installedBefore
        ? 'updated'
        : 'installed';
    return {
      name,
      host: target.display,
      prefix,
      service: service.kind,
      outcome,
      bundleSha256: bundle.sha256,
      agent,
      joinToken: token.record?.name,
    };
  } finally {
    view.close();
    await host.close();
  }
}

function envFor(
  config: FarmAddConfig,
  settings: Record<string, string>,
  name: string,
  token: JoinTokenChoice | undefined,
  paths: InstallPaths,
  extra: Record<string, string>,
): [string, string][] {
  return agentEnvVars({
    coordinator: config.coordinators.map(formatGrpcAddress).join(','),
    name,
    labels: config.labels,
    joinToken: token?.token,
    tlsCa: config.tlsCa !== undefined ? paths.tlsCa : undefined,
    tlsClient:
      config.agentTlsCert !== undefined ? { cert: paths.tlsCert, key: paths.tlsKey } : undefined,
    insecure: config.insecure,
    extra,
    settings,
  });
}

/** A loopback coordinator is the host itself for an agent anywhere but here. */
function checkReachable(coordinator: string, target: SshTarget): void {
  const addresses = parseGrpcAddressList(coordinator, 'coordinator address');
  if (addresses.some(isLocalAddress) && !isLoopbackHost(target.host)) {
    throw new UsageError(
      `${target.display}: the agent there cannot reach the coordinator at ${coordinator}, which is its own loopback: ` +
        'pass the address the host reaches it at (--coordinator HOST:PORT, or --agent-setting coordinator=HOST:PORT)',
    );
  }
}

function checkNameFree(farm: FarmRecord, name: string, target: SshTarget, prefix: string): void {
  const existing = farm.get(name);
  if (existing && (existing.url !== target.display || existing.prefix !== prefix)) {
    throw new FarmError(
      'already_exists',
      target.display,
      `agent name "${name}" is already installed on ${existing.url} (${existing.prefix}): choose another --name, or braid farm remove ${name} first`,
    );
  }
  const other = farm.at(target.display, prefix);
  if (other && other.name !== name) {
    throw new FarmError(
      'already_exists',
      target.display,
      `${prefix} there already runs agent "${other.name}": braid farm remove ${other.name} first, or use another --prefix`,
    );
  }
}

function parseMarker(text: string): Marker | undefined {
  if (text.trim() === '') return undefined;
  try {
    const value = JSON.parse(text) as Partial<Marker>;
    if (typeof value.name === 'string' && typeof value.bundleSha256 === 'string') {
      return { name: value.name, bundleSha256: value.bundleSha256, version: value.version ?? '' };
    }
  } catch {
    // Not ours: treated as no marker, and the prefix's files are replaced.
  }
  return undefined;
}

async function readLocal(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(
      `${what}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'unreadable'})`,
      { cause: err },
    );
  }
}

/** The agent's own last word: its `braid: ...` line, else its last JSON log message. */
function lastReason(tail: string): string {
  const lines = tail.split('\n').filter((line) => line.trim() !== '');
  const own = lines.filter((line) => line.startsWith('braid: ')).at(-1);
  if (own) return own.slice('braid: '.length);
  const last = lastLine(tail);
  try {
    const parsed = JSON.parse(last) as { msg?: string; err?: unknown };
    return [parsed.msg, typeof parsed.err === 'string' ? parsed.err : undefined]
      .filter(Boolean)
      .join(': ');
  } catch {
    return last.slice(0, 300);
  }
}

function formatMiB(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
