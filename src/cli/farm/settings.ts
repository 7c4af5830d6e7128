/**
 * The settings of `braid farm add|ls|remove`: how to reach the coordinator
 * (as every client command), how to log in to the hosts (as an ssh://
 * engine), and where the farm's record and the coordinator's tokens live.
 */
import { isAbsolute, join, normalize } from 'node:path';
import {
  agentFields,
  agentName,
  clientSettings,
  coordinatorSettings,
  type ClientConfig,
} from '../../config/settings.js';
import {
  boolSetting,
  intSetting,
  optionalPathSetting,
  optionalSecretSetting,
  parsedSetting,
  stringSetting,
  type Env,
  type SettingsOf,
} from '../../config/loader.js';
import { optional, string } from '../../schema.js';
import { UsageError } from '../../errors.js';

export const DEFAULT_PREFIX = '/opt/braid';

/** Paths go into remote shell commands and unit files: plain characters only. */
const SAFE_PATH = /^\/[A-Za-z0-9._/@+-]*$/;

function checkPrefix(text: string): string {
  const path = normalize(text).replace(/\/+$/, '');
  if (!isAbsolute(text) || !SAFE_PATH.test(path) || path === '' || path.split('/').length < 2) {
    throw new UsageError(
      `"${text}" is not a usable prefix: expected an absolute directory below / of letters, digits and ._/@+-`,
    );
  }
  return path;
}

/** The user's own data dir (not the coordinator's --data-dir): where farm.json lives. */
function defaultFarmFile(env: Env): string {
  const dataDir = coordinatorSettings(env).dataDir(undefined);
  return join(dataDir, 'farm.json');
}

function sshFields(env: Env) {
  const agent = agentFields(env);
  return {
    sshKey: agent.sshKey,
    sshKeyPassphrase: agent.sshKeyPassphrase,
    sshKnownHosts: agent.sshKnownHosts,
    sshConnectTimeoutMs: agent.sshConnectTimeoutMs,
    farmFile: stringSetting(defaultFarmFile(env), { min: 1 }),
  };
}

export function farmAddSettings(env: Env) {
  const agent = agentFields(env);
  return {
    ...clientSettings(),
    ...sshFields(env),
    /** Agent name; default: the host's own name. */
    name: optional(agentName),
    labels: agent.labels,
    prefix: parsedSetting(checkPrefix, DEFAULT_PREFIX),
    /** false: a supervised process even where systemd runs. */
    systemd: boolSetting(true),
    joinToken: optionalSecretSetting(),
    /** The coordinator's data dir, where a join token is created when none is given. */
    dataDir: coordinatorSettings(env).dataDir,
    /** The agent bundle (dist/bundle); default: the one next to this braid. */
    bundle: optionalPathSetting(),
    /** The agent's client certificate and key, for a coordinator that requires mTLS. */
    agentTlsCert: optionalPathSetting(),
    agentTlsKey: optionalPathSetting(),
    waitMs: intSetting({ min: 1000, max: 3_600_000, default: 60_000 }),
  };
}

export function farmRemoveSettings(env: Env) {
  return {
    ...clientSettings(),
    ...sshFields(env),
    dataDir: optional(string({ min: 1 })),
    /** How long the agent may take to drain before it is killed. */
    drainTimeoutMs: intSetting({ min: 1000, max: 24 * 3_600_000, default: 120_000 }),
    waitMs: intSetting({ min: 1000, max: 3_600_000, default: 30_000 }),
    /** A host that cannot be reached is dropped from the record (its token revoked) anyway. */
    forget: boolSetting(false),
  };
}

export function farmListSettings(env: Env) {
  return { ...clientSettings(), farmFile: sshFields(env).farmFile };
}

export type FarmAddConfig = SettingsOf<ReturnType<typeof farmAddSettings>>;
export type FarmRemoveConfig = SettingsOf<ReturnType<typeof farmRemoveSettings>>;
export type FarmListConfig = SettingsOf<ReturnType<typeof farmListSettings>>;
export type FarmSshConfig = Pick<
  FarmAddConfig,
  'sshKey' | 'sshKeyPassphrase' | 'sshKnownHosts' | 'sshConnectTimeoutMs'
>;
export type { ClientConfig };
