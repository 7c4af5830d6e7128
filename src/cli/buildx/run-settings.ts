/**
 * The settings of the containers that RUN steps run in, as docker and
 * buildx read them: `--network`, `--add-host`, `--shm-size`, `--ulimit`.
 * The Docker Engine API's /build takes each of them for BuildKit builds.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { badValue, fieldsOf } from './flag-value.js';

/** The modes BuildKit runs RUN steps in; dockerd refuses any other for a BuildKit build. */
export type NetworkMode = 'default' | 'none' | 'host';

export interface ExtraHost {
  readonly host: string;
  /** `host-gateway`: the gateway of the agent's host, which its engine resolves. */
  readonly address: { kind: 'ip'; ip: string; family: 4 | 6 } | { kind: 'host-gateway' };
}

export interface Ulimit {
  readonly name: string;
  /** -1 is unlimited. */
  readonly soft: number;
  readonly hard: number;
}

/** go-units' names (`as` is left out there too: Docker's init cannot use it). */
export const ULIMIT_NAMES: readonly string[] = [
  'core',
  'cpu',
  'data',
  'fsize',
  'locks',
  'memlock',
  'msgqueue',
  'nice',
  'nofile',
  'nproc',
  'rss',
  'rtprio',
  'rttime',
  'sigpending',
  'stack',
];

export function parseNetwork(text: string): NetworkMode {
  if (text === 'default' || text === 'none' || text === 'host') return text;
  throw badValue(
    '--network',
    text,
    "not supported: BuildKit runs RUN steps with default, none or host networking, and your other networks do not exist on the agents' hosts",
  );
}

/** `HOST:IP` or `HOST=IP` (IPv6 may be in brackets), comma-separated lists too, as buildx. */
export function parseAddHosts(values: readonly string[]): ExtraHost[] {
  return values.flatMap((value) => fieldsOf('--add-host', value)).map(parseAddHost);
}

function parseAddHost(text: string): ExtraHost {
  const fail = (problem: string) => badValue('--add-host', text, problem);
  let cut = text.indexOf('=');
  if (cut < 0) cut = text.indexOf(':');
  if (cut < 0) throw fail('expected HOST:IP or HOST=IP');
  const host = text.slice(0, cut);
  let ip = text.slice(cut + 1);
  if (!/^[A-Za-z0-9_.-]+$/.test(host)) {
    throw fail(`"${host}" is not a host name (letters, digits, ".", "-", "_")`);
  }
  if (ip === 'host-gateway') return { host, address: { kind: 'host-gateway' } };
  if (ip.length > 2 && ip.startsWith('[') && ip.endsWith(']')) ip = ip.slice(1, -1);
  // Go's net.ParseIP, which buildx uses, takes no IPv6 zone.
  const family = ip.includes('%') ? 0 : isIPv4(ip) ? 4 : isIPv6(ip) ? 6 : 0;
  if (family === 0) throw fail(`"${ip}" is not an IPv4 or IPv6 address, nor host-gateway`);
  return { host, address: { kind: 'ip', ip, family } };
}

/** The `HOST:IP` string the Engine API's `extrahosts` takes. */
export function extraHostForEngine({ host, address }: ExtraHost): string {
  return `${host}:${address.kind === 'ip' ? address.ip : 'host-gateway'}`;
}

/**
 * Docker's byte size (go-units' RAMInBytes): a number, then optionally b,
 * k, m, g, t or p (powers of 1024), an optional "b" or "ib" after it, any
 * case: `64m`, `1g`, `1.5GiB`, `67108864`. 0 leaves the engine's default
 * (undefined), as in buildx.
 */
export function parseShmSize(text: string): number | undefined {
  const fail = () =>
    badValue(
      '--shm-size',
      text,
      'expected a size in bytes, optionally with a unit b, k, m, g, t or p (64m, 1g)',
    );
  const match = /^(\d+(?:\.\d*)?|\.\d+) ?([A-Za-z]{0,3})$/.exec(text);
  if (!match) throw fail();
  const [, number = '', unit = ''] = match;
  const suffix = unit.toLowerCase();
  const powers = ['b', 'k', 'm', 'g', 't', 'p'];
  const power = suffix === '' ? 0 : powers.indexOf(suffix[0] ?? '');
  const rest = suffix.slice(1);
  if (power < 0 || (power === 0 && rest !== '') || !['', 'b', 'ib'].includes(rest)) throw fail();
  const bytes = Math.trunc(Number(number) * 1024 ** power);
  if (!Number.isSafeInteger(bytes)) throw badValue('--shm-size', text, 'too large');
  return bytes === 0 ? undefined : bytes;
}

/** `NAME=SOFT[:HARD]` (HARD defaults to SOFT; -1 is unlimited); a name given again replaces it. */
export function parseUlimits(values: readonly string[]): Ulimit[] {
  const byName = new Map<string, Ulimit>();
  for (const value of values) {
    const limit = parseUlimit(value);
    byName.set(limit.name, limit);
  }
  return [...byName.values()];
}

function parseUlimit(text: string): Ulimit {
  const fail = (problem: string) => badValue('--ulimit', text, problem);
  const eq = text.indexOf('=');
  if (eq < 0) throw fail('expected NAME=SOFT[:HARD]');
  const name = text.slice(0, eq);
  if (!ULIMIT_NAMES.includes(name)) {
    throw fail(`unknown ulimit "${name}" (${ULIMIT_NAMES.join(', ')})`);
  }
  const limits = text.slice(eq + 1).split(':');
  if (limits.length > 2) throw fail('too many values: expected SOFT[:HARD]');
  const [soft = 0, hard = soft] = limits.map((limit) => {
    if (!/^[+-]?\d+$/.test(limit)) throw fail(`"${limit}" is not an integer`);
    const n = Number(limit);
    if (n < -1) throw fail(`${limit}: a limit is -1 (unlimited) or a number from 0`);
    if (!Number.isSafeInteger(n)) throw fail(`${limit} is too large`);
    return n;
  });
  if (hard !== -1 && soft === -1) {
    throw fail(`the soft limit is unlimited (-1) but the hard limit is ${hard}`);
  }
  if (hard !== -1 && soft > hard) {
    throw fail(`the soft limit ${soft} is above the hard limit ${hard}`);
  }
  return { name, soft, hard };
}
