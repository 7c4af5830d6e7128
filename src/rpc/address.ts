/**
 * gRPC addresses as users write them: `HOST:PORT`, `[V6]:PORT`, `unix:/path`
 * (also `unix:///path`). Parsed once, named in errors, printed canonically.
 */
import { isIP } from 'node:net';
import { UsageError } from '../errors.js';
import { isLoopbackHost } from '../loopback.js';

export type GrpcAddress =
  { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export function parseGrpcAddress(text: string, what = 'address'): GrpcAddress {
  const value = text.trim();
  if (value.startsWith('unix:')) {
    const path = value.replace(/^unix:(\/\/)?/, '');
    if (!path.startsWith('/')) {
      throw new UsageError(`${what} "${text}": unix socket path must be absolute`);
    }
    return { kind: 'unix', path };
  }
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  if (!match) {
    throw new UsageError(`${what} "${text}": expected HOST:PORT, [IPv6]:PORT or unix:/path`);
  }
  const host = match[1] ?? match[2] ?? '';
  if (match[1] !== undefined && isIP(host) !== 6) {
    throw new UsageError(`${what} "${text}": "${host}" is not an IPv6 address`);
  }
  if (match[2] !== undefined && !/^[A-Za-z0-9.-]+$/.test(host)) {
    throw new UsageError(`${what} "${text}": "${host}" is not a host name`);
  }
  const port = Number(match[3]);
  if (port > 65535) {
    throw new UsageError(`${what} "${text}": port ${port} is out of range`);
  }
  return { kind: 'tcp', host, port };
}

/** The address as grpc-js takes it for both bind and dial. */
export function formatGrpcAddress(address: GrpcAddress): string {
  if (address.kind === 'unix') return `unix:${address.path}`;
  return isIP(address.host) === 6
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`;
}

/** True where plaintext never leaves the machine: loopback IPs, localhost, unix sockets. */
export function isLocalAddress(address: GrpcAddress): boolean {
  if (address.kind === 'unix') return true;
  return isLoopbackHost(address.host);
}

/**
 * A comma-separated list of addresses (`a:7465,b:7465`), in order, each
 * named once: several coordinators, of which one leads. Empty entries
 * (a trailing comma) are dropped; an empty list is refused.
 */
export function parseGrpcAddressList(text: string, what = 'address'): GrpcAddress[] {
  const seen = new Set<string>();
  const list: GrpcAddress[] = [];
  for (const item of text.split(',')) {
    if (item.trim() === '') continue;
    const address = parseGrpcAddress(item, what);
    const key = formatGrpcAddress(address);
    if (seen.has(key)) continue;
    seen.add(key);
    list.push(address);
  }
  // Nothing named: refused as a single address is, in the same words.
  if (list.length === 0) return [parseGrpcAddress(text, what)];
  return list;
}
