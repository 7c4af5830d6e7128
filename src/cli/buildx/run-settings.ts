/**
 * The settings of the containers that RUN steps run in, as docker and
 * buildx read them: `--network` and `--add-host`, which the Docker Engine
 * API's /build honours for BuildKit builds (`--shm-size` and `--ulimit` it
 * ignores: unsupported.ts refuses them).
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
