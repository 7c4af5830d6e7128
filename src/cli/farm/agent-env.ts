/**
 * The agent's settings on a farm host: one `BRAID_*` variable a line in
 * PREFIX/etc/agent.env (mode 0600: it holds the join token), read by
 * systemd's EnvironmentFile= and by the supervisor's `. FILE` alike. The
 * values are checked here with `braid agent`'s own schema before any host
 * is touched, so a bad one is refused with the variable's name.
 */
import { agentSettings } from '../../config/settings.js';
import { envName, givenKeys, loadConfig } from '../../config/loader.js';
import { UsageError } from '../../errors.js';

export interface AgentEnvInput {
  coordinator: string;
  name: string;
  labels: readonly string[];
  joinToken: string | undefined;
  /** Path of the CA file on the host. */
  tlsCa: string | undefined;
  /** Paths of the agent's client certificate and key on the host (mTLS). */
  tlsClient: { cert: string; key: string } | undefined;
  insecure: boolean;
  /** Settings only the supervised agent needs (systemd's unit sets its own). */
  extra: Readonly<Record<string, string>>;
  /** `--agent-setting KEY=VALUE` pairs, keys as `braid agent` flags or camelCase. */
  settings: Readonly<Record<string, string>>;
}

/** Both readers take single-quoted values literally; a quote or a control character would not survive. */
function unsafe(value: string): boolean {
  return [...value].some((c) => c === "'" || c === '\\' || c.charCodeAt(0) < 0x20 || c === '\x7f');
}

function camelCase(key: string): string {
  return key.replace(/^--/, '').replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** Settings `braid farm add` writes from its own flags. */
const OWN_FLAGS = ['name', 'labels', 'joinToken', 'tlsCa', 'tlsCert', 'tlsKey', 'insecure'];

/**
 * `--agent-setting capacity=4` -> `{ capacity: '4' }`; an unknown key is
 * refused, naming it. `coordinator` is the address as the host sees it,
 * when that differs from --coordinator.
 */
export function parseAgentSettings(pairs: readonly string[]): Record<string, string> {
  const known = givenKeys(agentSettings({})).filter((key) => !OWN_FLAGS.includes(key));
  const settings: Record<string, string> = {};
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    const key = at > 0 ? camelCase(pair.slice(0, at)) : '';
    if (!known.includes(key)) {
      throw new UsageError(
        `--agent-setting "${pair}": expected KEY=VALUE with KEY a braid agent setting (${known.join(', ')})`,
      );
    }
    settings[key] = pair.slice(at + 1);
  }
  return settings;
}

/** The env file's variables, in a fixed order (the same inputs give the same bytes). */
export function agentEnvVars(input: AgentEnvInput): [string, string][] {
  const vars: [string, string][] = [
    ['BRAID_COORDINATOR', input.coordinator],
    ['BRAID_NAME', input.name],
  ];
  if (input.labels.length > 0) vars.push(['BRAID_LABELS', input.labels.join(',')]);
  if (input.joinToken !== undefined) vars.push(['BRAID_JOIN_TOKEN', input.joinToken]);
  if (input.tlsCa !== undefined) vars.push(['BRAID_TLS_CA', input.tlsCa]);
  if (input.tlsClient !== undefined) {
    vars.push(['BRAID_TLS_CERT', input.tlsClient.cert], ['BRAID_TLS_KEY', input.tlsClient.key]);
  }
  if (input.insecure) vars.push(['BRAID_INSECURE', 'true']);
  for (const [key, value] of Object.entries(input.extra)) vars.push([envName(key), value]);
  for (const [key, value] of Object.entries(input.settings).sort(([a], [b]) =>
    a.localeCompare(b),
  )) {
    const name = envName(key);
    const at = vars.findIndex(([existing]) => existing === name);
    if (at >= 0) vars[at] = [name, value];
    else vars.push([name, value]);
  }
  return vars;
}

/** Validates the variables with `braid agent`'s schema, as the agent will read them. */
export function checkAgentEnv(vars: readonly [string, string][]): void {
  for (const [name, value] of vars) {
    if (unsafe(value)) {
      throw new UsageError(
        `${name}: "${value}" holds a quote, backslash or control character, which the agent's env file cannot carry`,
      );
    }
  }
  const env = Object.fromEntries(vars);
  loadConfig(agentSettings(env), { flags: {}, env });
}

export function renderAgentEnv(vars: readonly [string, string][]): string {
  return [
    '# braid agent settings (docs/configuration.md), written by braid farm add.',
    '# Mode 0600: it holds the join token. Run braid farm add again to change them.',
    ...vars.map(([name, value]) => `${name}='${value}'`),
    '',
  ].join('\n');
}

/** The value of `name` in an env file written by renderAgentEnv. */
export function readAgentEnvValue(text: string, name: string): string | undefined {
  for (const line of text.split('\n')) {
    const match = /^([A-Z0-9_]+)='([^']*)'$/.exec(line.trim());
    if (match?.[1] === name) return match[2];
  }
  return undefined;
}
