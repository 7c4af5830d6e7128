import { describe, expect, it } from 'vitest';
import { formatGrpcAddress, isLocalAddress, parseGrpcAddress } from '../../src/rpc/address.js';

describe('gRPC addresses', () => {
  it.each([
    ['127.0.0.1:7465', { kind: 'tcp', host: '127.0.0.1', port: 7465 }, '127.0.0.1:7465'],
    ['[::1]:80', { kind: 'tcp', host: '::1', port: 80 }, '[::1]:80'],
    ['build.example:443', { kind: 'tcp', host: 'build.example', port: 443 }, 'build.example:443'],
    ['unix:/run/braid.sock', { kind: 'unix', path: '/run/braid.sock' }, 'unix:/run/braid.sock'],
    ['unix:///run/braid.sock', { kind: 'unix', path: '/run/braid.sock' }, 'unix:/run/braid.sock'],
  ])('parses %s and prints it back canonically', (text, parsed, canonical) => {
    expect(parseGrpcAddress(text)).toEqual(parsed);
    expect(formatGrpcAddress(parseGrpcAddress(text))).toBe(canonical);
  });

  it.each([
    ['localhost', /expected HOST:PORT/],
    ['127.0.0.1:99999', /port 99999 is out of range/],
    ['[zz::1]:80', /expected HOST:PORT/],
    ['[127.0.0.1]:80', /is not an IPv6 address/],
    ['unix:relative.sock', /must be absolute/],
    ['ho st:80', /expected HOST:PORT|is not a host name/],
  ])('rejects %s with a message naming it', (text, pattern) => {
    expect(() => parseGrpcAddress(text, 'coordinator address')).toThrow(pattern);
    expect(() => parseGrpcAddress(text, 'coordinator address')).toThrow(
      `coordinator address "${text}"`,
    );
  });

  it.each([
    ['127.0.0.1:1', true],
    ['127.8.9.10:1', true],
    ['[::1]:1', true],
    ['localhost:1', true],
    ['unix:/tmp/x.sock', true],
    ['10.0.0.1:1', false],
    ['[::ffff:7f00:1]:1', false],
    ['build.example:1', false],
  ])('treats %s as local: %s', (text, local) => {
    expect(isLocalAddress(parseGrpcAddress(text))).toBe(local);
  });
});
