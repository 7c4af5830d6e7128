/**
 * How an installed agent runs on its host: a systemd unit, or a supervisor
 * script where there is no systemd (or with --no-systemd). One interface,
 * one file per kind, chosen by `serviceFor`.
 */
import type { RemoteHost } from './remote-host.js';
import { SupervisedService } from './supervised-service.js';
import { SystemdService } from './systemd-service.js';

export type ServiceKind = 'systemd' | 'supervised';

/** Where an install puts its files under the prefix. */
export interface InstallPaths {
  prefix: string;
  /** The bundle: braid.mjs, chunks/, cli.mjs, package.json. */
  lib: string;
  cli: string;
  envFile: string;
  tlsCa: string;
  /** The agent's client certificate and key (mTLS). */
  tlsCert: string;
  tlsKey: string;
  run: string;
  log: string;
  /** Fetched build contexts of the supervised agent (the unit uses /var/cache/braid-agent). */
  cache: string;
  /** What is installed (bundle sha256, name), for the next `add` to compare. */
  marker: string;
  /** The uploaded archive, between the copy and its check. */
  upload: string;
}

export function installPaths(prefix: string): InstallPaths {
  return {
    prefix,
    lib: `${prefix}/lib`,
    cli: `${prefix}/lib/cli.mjs`,
    envFile: `${prefix}/etc/agent.env`,
    tlsCa: `${prefix}/etc/tls-ca.pem`,
    tlsCert: `${prefix}/etc/tls-cert.pem`,
    tlsKey: `${prefix}/etc/tls-key.pem`,
    run: `${prefix}/run`,
    log: `${prefix}/log/agent.log`,
    cache: `${prefix}/cache`,
    marker: `${prefix}/.braid-farm.json`,
    upload: `${prefix}/.bundle.tar.gz`,
  };
}

/** A file a service needs on the host, outside the bundle. */
export interface ServiceFile {
  path: string;
  content: string;
  mode: number;
}

export interface StopOutcome {
  /** The agent drained and exited within the deadline (else it was killed). */
  drained: boolean;
}

export interface AgentService {
  readonly kind: ServiceKind;
  /** Files to write (compared by content: an unchanged file is not written again). */
  files(): ServiceFile[];
  /** Settings the env file carries for this kind (the unit sets its own). */
  envExtra(): Record<string, string>;
  running(host: RemoteHost): Promise<boolean>;
  /** Starts it (enabling it at boot where that exists). */
  start(host: RemoteHost): Promise<void>;
  /** SIGTERM: the agent drains; waits up to `drainTimeoutMs`, then kills it. */
  stop(host: RemoteHost, drainTimeoutMs: number): Promise<StopOutcome>;
  /** Takes away what `files` and `start` put outside the prefix. */
  uninstall(host: RemoteHost): Promise<void>;
  /** The agent's last log lines, for a message when it did not connect. */
  logTail(host: RemoteHost, lines: number): Promise<string>;
}

export interface ServiceOptions {
  paths: InstallPaths;
  /** Absolute path of node on the host. */
  node: string;
}

export function serviceFor(kind: ServiceKind, options: ServiceOptions): AgentService {
  return kind === 'systemd' ? new SystemdService(options) : new SupervisedService(options);
}
