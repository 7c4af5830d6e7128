/**
 * The settings of each braid command: key, type, default and bounds. Every
 * key is also a flag (`--kebab-case`), an environment variable (`BRAID_SNAKE`)
 * and a YAML key (camelCase).
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_NAME, agentNameFrom } from '../agent-name.js';
import { LOG_LEVELS } from '../log.js';
import { parseGrpcAddress, parseGrpcAddressList, type GrpcAddress } from '../rpc/address.js';
import {
  boolSetting,
  derivedSetting,
  enumSetting,
  intSetting,
  listSetting,
  optionalPathSetting,
  optionalSecretSetting,
  optionalSetting,
  parsedSetting,
  stringSetting,
  type Env,
  type SettingsOf,
} from './loader.js';
import { checked, Invalid, optional, string, withDefault } from '../schema.js';
import { UsageError } from '../errors.js';
import { isPostgresUrl, redactedUrl } from '../pg-url.js';
import { parseSshUrl } from '../ssh/ssh-url.js';

export const DEFAULT_COORDINATOR_ADDRESS = '127.0.0.1:7465';

const logSettings = {
  logLevel: enumSetting(LOG_LEVELS, 'info'),
  logFormat: enumSetting(['auto', 'json', 'pretty'] as const, 'auto'),
};

/** `HOST[:PORT]` of a registry spoken to over plain HTTP. */
function checkRegistryHost(text: string): void {
  if (!/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/.test(text)) {
    throw new UsageError(`"${text}" is not HOST[:PORT]`);
  }
}

/** Settings of everything that talks to registries. */
const registryFields = {
  insecureRegistry: listSetting(checkRegistryHost),
  registryTimeoutMs: intSetting({ min: 100, max: 3_600_000, default: 30_000 }),
  registryRetries: intSetting({ min: 1, max: 20, default: 5 }),
  archCheckBudgetBytes: intSetting({
    min: 0,
    max: 16 * 1024 * 1024 * 1024,
    default: 64 * 1024 * 1024,
  }),
};

/** Settings of commands that talk to registries (`braid manifest ...`). */
export function registrySettings(env: Env = {}) {
  return {
    ...registryFields,
    /** Where arch-guard passes are remembered by manifest digest; empty: nowhere. */
    archCheckCacheDir: stringSetting(join(defaultCacheDir(env), 'arch-guard')),
    ...logSettings,
    logLevel: enumSetting(LOG_LEVELS, 'warn'),
  };
}

function defaultCacheDir(env: Env): string {
  if (env.XDG_CACHE_HOME) return join(env.XDG_CACHE_HOME, 'braid');
  if (env.HOME) return join(env.HOME, '.cache', 'braid');
  return join(tmpdir(), 'braid-cache');
}

function defaultDataDir(env: Env): string {
  if (env.XDG_DATA_HOME) return join(env.XDG_DATA_HOME, 'braid');
  if (env.HOME && env.HOME !== '/root') return join(env.HOME, '.local', 'share', 'braid');
  return '/var/lib/braid';
}

/** An optional listen address; unset (or empty) means "off". */
function optionalAddressSetting(what: string) {
  return optionalSetting((text) => parseGrpcAddress(text, what), 'an address');
}

export function coordinatorSettings(env: Env) {
  return {
    listen: parsedSetting(
      (t) => parseGrpcAddress(t, 'listen address'),
      DEFAULT_COORDINATOR_ADDRESS,
    ),
    dataDir: stringSetting(defaultDataDir(env), { min: 1 }),
    insecure: boolSetting(false),
    /** Server certificate (PEM); with tlsKey, the coordinator serves TLS. */
    tlsCert: optionalPathSetting(),
    tlsKey: optionalPathSetting(),
    /** CA (PEM) that client certificates must chain to: mTLS for every caller. */
    tlsCa: optionalPathSetting(),
    /** Tokens on loopback and unix sockets too (always required elsewhere). */
    requireAuth: boolSetting(false),
    maxMessageBytes: intSetting({
      min: 64 * 1024,
      max: 256 * 1024 * 1024,
      default: 8 * 1024 * 1024,
    }),
    shutdownGraceMs: intSetting({ min: 0, max: 3_600_000, default: 10_000 }),
    eventsRetained: intSetting({ min: 100, max: 1_000_000, default: 10_000 }),
    heartbeatIntervalMs: intSetting({ min: 100, max: 600_000, default: 5_000 }),
    heartbeatTimeoutMs: intSetting({ min: 300, max: 3_600_000, default: 15_000 }),
    maxContextBytes: intSetting({
      min: 1024,
      max: 64 * 1024 * 1024 * 1024,
      default: 2 * 1024 * 1024 * 1024,
    }),
    archCheck: boolSetting(true),
    maxJobAttempts: intSetting({ min: 1, max: 10, default: 2 }),
    waitForAgentMs: intSetting({ min: 0, max: 24 * 3_600_000, default: 5 * 60_000 }),
    /** Builds that verify, write provenance and push their index at once (docs/scheduling.md). */
    maxConcurrentStitches: intSetting({ min: 1, max: 1024, default: 16 }),
    jobTimeoutMs: intSetting({ min: 1000, max: 7 * 24 * 3_600_000, default: 2 * 3_600_000 }),
    buildTimeoutMs: intSetting({ min: 1000, max: 7 * 24 * 3_600_000, default: 4 * 3_600_000 }),
    /** Prefer the agent that still holds a build's cache (docs/scheduling.md). */
    cacheAffinity: boolSetting(true),
    /** A cache record older than this is taken to be gone. */
    cacheAffinityMaxAgeMs: intSetting({
      min: 0,
      max: 30 * 24 * 3_600_000,
      default: 24 * 3_600_000,
    }),
    /** The warm agent loses when its load exceeds the least loaded one's by more points than this. */
    cacheAffinityMaxLoadGapPercent: intSetting({ min: 0, max: 100, default: 50 }),
    /** Where builds are kept: unset, SQLite in dataDir; or a postgres:// URL (docs/postgres.md). */
    store: optionalSetting(parseStoreUrl, 'a postgres:// URL'),
    /** The address others reach this coordinator at (standbys name the leader by it); '' is the listen address. */
    advertise: stringSetting(''),
    /** On PostgreSQL: how often a standby asks for the leadership and the leader renews its lease. */
    leaderPollMs: intSetting({ min: 100, max: 60_000, default: 1000 }),
    /** On PostgreSQL: a leader that has not renewed its lease for this long is taken over from. */
    leaderLeaseMs: intSetting({ min: 500, max: 600_000, default: 5000 }),
    /** HTTP address of /metrics, /healthz and /readyz; unset: not served. */
    metricsListen: optionalAddressSetting('metrics listen address'),
    /** Check push access to every tag's repository before a build is accepted. */
    pushCheck: boolSetting(true),
    /** Deadline of one repository's push check (handshake, token, upload probe). */
    pushCheckTimeoutMs: intSetting({ min: 100, max: 600_000, default: 5_000 }),
    /** runDetails.builder.id of the provenance: a URI; '' is braid://ADDRESS. */
    builderId: stringSetting('', {
      pattern: /^$|^[a-z][a-z0-9+.-]*:\S+$/i,
      message: 'expected a URI such as https://builds.example/farm or urn:example:farm',
    }),
    ...registryFields,
    ...logSettings,
  };
}

/**
 * A store URL: postgres:// or postgresql://. Refused naming the value with
 * any password hidden (the loader would print it as given).
 */
function parseStoreUrl(text: string): string {
  if (isPostgresUrl(text.trim())) return text.trim();
  throw new Invalid(
    `expected postgres://USER@HOST:PORT/DATABASE (or unset for SQLite in the data dir), got "${redactedUrl(text)}"`,
    [],
    true,
  );
}

/** How a client reaches the coordinator: TLS files (all optional). */
const clientTlsFields = {
  /** CA (PEM) that verifies the coordinator's certificate; default: the system's CAs. */
  tlsCa: optionalPathSetting(),
  /** Client certificate and key (PEM) for a coordinator that requires mTLS. */
  tlsCert: optionalPathSetting(),
  tlsKey: optionalPathSetting(),
};

/**
 * The coordinators a client or agent reaches: `--coordinator a:7465,b:7465`
 * (`BRAID_COORDINATOR` alike; the config file may also give a YAML list),
 * in order, each once. One of them leads; the others stand by and name it.
 */
function coordinatorListSetting() {
  const text = withDefault<string>((value) => {
    if (Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === 'string')) {
      return value.join(',');
    }
    return string({ message: 'expected a string' })(value);
  }, DEFAULT_COORDINATOR_ADDRESS);
  return checked(text, (t): readonly GrpcAddress[] =>
    parseGrpcAddressList(t, 'coordinator address'),
  );
}

/**
 * `coordinator`: the first address named (what a single-address caller
 * dials, as before); `coordinators`: all of them, read from the same
 * `--coordinator` / `BRAID_COORDINATOR` / `coordinator:` value.
 */
function coordinatorFields() {
  return {
    coordinator: checked(coordinatorListSetting(), (list): GrpcAddress => list[0]!),
    coordinators: derivedSetting('coordinator', coordinatorListSetting()),
  };
}

export function clientSettings() {
  return {
    ...coordinatorFields(),
    insecure: boolSetting(false),
    ...clientTlsFields,
    /** API token (`braid_api_...`), sent as `authorization: Bearer`. */
    token: optionalSecretSetting(),
    timeoutMs: intSetting({ min: 100, max: 3_600_000, default: 15_000 }),
    ...logSettings,
    logLevel: enumSetting(LOG_LEVELS, 'warn'),
  };
}

export type RegistryConfig = SettingsOf<ReturnType<typeof registrySettings>>;
function checkLabel(text: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_./-]*=.*$/.test(text)) {
    throw new UsageError(`label "${text}" is not KEY=VALUE`);
  }
}

/** An engine URL; an ssh:// one must parse (the user, host, port and path are checked). */
function checkEngineUrl(text: string): string {
  if (!/^(unix|tcp|ssh):\/\//.test(text)) {
    throw new Error('expected unix:///path, tcp://host:port or ssh://user@host[:port]');
  }
  if (/^ssh:\/\//i.test(text)) parseSshUrl(text);
  return text;
}

/** An agent's name, as the coordinator lists it. */
export const agentName = string({
  pattern: AGENT_NAME,
  message: 'expected letters, digits, ".", "_" or "-"',
});

/** Settings of `braid agent` (and the agent half of `braid serve`). */
export function agentFields(env: Env) {
  return {
    name: withDefault(agentName, agentNameFrom(env.HOSTNAME ?? 'agent') || 'agent'),
    engine: parsedSetting(checkEngineUrl, 'unix:///var/run/docker.sock'),
    /** Private keys for an ssh:// engine (only these); none: ssh-agent, then ~/.ssh/id_*. */
    sshKey: listSetting(),
    /** Passphrase of encrypted SSH keys (env or file only: a flag would show in `ps`). */
    sshKeyPassphrase: checked(optional(string()), (text) => (text === '' ? undefined : text)),
    /** known_hosts for an ssh:// engine; default ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts. */
    sshKnownHosts: optionalPathSetting(),
    sshKeepaliveIntervalMs: intSetting({ min: 1000, max: 600_000, default: 15_000 }),
    sshConnectTimeoutMs: intSetting({ min: 1000, max: 600_000, default: 20_000 }),
    capacity: intSetting({ min: 1, max: 64, default: 2 }),
    /**
     * Where the local engine's host lists its binfmt_misc (QEMU) handlers: an
     * agent in a container reads the host's, mounted elsewhere, since the
     * container's own /proc/sys/fs/binfmt_misc is empty.
     */
    binfmtDir: stringSetting('/proc/sys/fs/binfmt_misc', { min: 1 }),
    buildNetwork: stringSetting(''),
    labels: listSetting(checkLabel),
    cacheDir: stringSetting(join(defaultDataDir(env), 'agent-cache'), { min: 1 }),
    maxCacheBytes: intSetting({
      min: 1024 * 1024,
      max: 1024 * 1024 * 1024 * 1024,
      default: 10 * 1024 * 1024 * 1024,
    }),
    drainGraceMs: intSetting({ min: 0, max: 24 * 3_600_000, default: 60_000 }),
    ...registryFields,
  };
}

export function agentSettings(env: Env) {
  return {
    ...coordinatorFields(),
    insecure: boolSetting(false),
    ...clientTlsFields,
    /** Join token (`braid_join_...`), sent as `authorization: Bearer`. */
    joinToken: optionalSecretSetting(),
    /** HTTP address of the agent's /metrics, /healthz and /readyz; unset: not served. */
    metricsListen: optionalAddressSetting('metrics listen address'),
    ...agentFields(env),
    ...logSettings,
  };
}

/** `braid serve`: a coordinator and a local agent in one process. */
export function serveSettings(env: Env) {
  return {
    ...coordinatorSettings(env),
    ...agentFields(env),
    name: withDefault(agentName, 'local'),
  };
}

export type AgentConfig = SettingsOf<ReturnType<typeof agentSettings>>;
export type ServeConfig = SettingsOf<ReturnType<typeof serveSettings>>;
export type CoordinatorConfig = SettingsOf<ReturnType<typeof coordinatorSettings>>;
export type ClientConfig = SettingsOf<ReturnType<typeof clientSettings>>;
