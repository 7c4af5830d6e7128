/**
 * The one loopback test: a host name or address that never leaves this
 * machine (plain HTTP to a registry there, plaintext gRPC, "this host" for
 * `braid farm add`).
 */
import { isIP } from 'node:net';

/** `localhost`, `::1` or any 127.x.y.z; `host` bare, without port or brackets. */
export function isLoopbackHost(host: string): boolean {
  const name = host.toLowerCase();
  if (name === 'localhost' || name === '::1') return true;
  return isIP(name) === 4 && name.startsWith('127.');
}
