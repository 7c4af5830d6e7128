import { describe, expect, it } from 'vitest';
import { fingerprintOf, keyTypeOf } from '../../src/ssh/host-key.js';
import { refusalFor } from '../../src/ssh/host-verifier.js';
import {
  checkHostKey,
  entryNamesHost,
  hostKeyAlgorithms,
  matchPattern,
  parseKnownHosts,
} from '../../src/ssh/known-hosts.js';
import { parseSshUrl } from '../../src/ssh/ssh-url.js';

// Keys and hashed lines made with OpenSSH 9.2 (ssh-keygen -t ..., ssh-keygen -H, ssh-keygen -lf):
// the judge of the format is OpenSSH, not this code.
const ED1 = 'AAAAC3NzaC1lZDI1NTE5AAAAIMs+grE0Yhq7i4EwtWv5qFstqdgK/PzksTYEXdN8Ebri';
const ED1_FINGERPRINT = 'SHA256:XpJQyJZEW2D40HY9Jqz4SS1imp7X6ATT7xSZIauLLnw';
const ED2 = 'AAAAC3NzaC1lZDI1NTE5AAAAIBHNfgmxUDAZVUMjX0NzA4SsUagU4Vbu8/fAReWvlNsk';
const ED2_FINGERPRINT = 'SHA256:xWYeoT/g4VCHty6oQmNX/iNKabjCAeyAkDpDBC+BCFM';
const EC1 =
  'AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMYbTCD4atmHmeNFHwzf6582UOZTg+yInUWhVnqqAAvKKag5JusOGe0ZQtKMVFqm7iuYe/xiauMIfq7X+//4K94=';
const EC1_FINGERPRINT = 'SHA256:iTK2km+hQ3Dl44QxNdaYjwvbJxpFObxz0NdBwzaQN24';
const RSA1 =
  'AAAAB3NzaC1yc2EAAAADAQABAAABAQCjMMpK6YBLy/n2PytciWtL7OZS8SfU6fVagoN5hWesZTJoi4C1e7O0SAFGn3pGFgmJqh2V1kPSJD24quGDddI61UiaeU8gJ/c8F9LPQY9G6BKoi7/RIrtGoCYGicHDynFoq7sZQBWpRVRHW0dBLcaJ4+thXRCFaTvoeETKg0hifD2y4xN5Xq5PJlkJg0TaJhz2ks5kObiyAbSa2YEu500HJ9RD53e9zCeETJ78qW+WipFxjcvnYrezJitxdq9YuzUTzFe6+AFBo93yJuHW5UoOyCWxlPfNleXaZFCt0LEQZBZfNVdhBrXaDNi2lET6QG7Ge3rBsxDS6Z76D0ht6fF7';
const RSA1_FINGERPRINT = 'SHA256:seb23/R9T/h6kIPups2oMj9DX8PdYFyme1tskpU1BQM';
/** `ssh-keygen -H` of "[127.0.0.1]:2222 ssh-ed25519 ED1" and "build-s390x.example ecdsa-sha2-nistp256 EC1". */
const HASHED = [
  `|1|lmNcYP+uBU/aC8sNcTNeMtl1DEU=|6U60vph88C73udwqdj4XPutLkdM= ssh-ed25519 ${ED1}`,
  `|1|aGta0QLga2EHPtTlUp6J3liBLU8=|DSnYsR6n02EFXeMADBWN3YmPRJk= ecdsa-sha2-nistp256 ${EC1}`,
].join('\n');

const blob = (base64: string): Buffer => Buffer.from(base64, 'base64');

describe('known_hosts parsing', () => {
  it('reads plain, bracketed-port and marker lines and skips comments, blanks and garbage', () => {
    const entries = parseKnownHosts(
      [
        '# a comment',
        '',
        `build-arm64.example,10.0.0.7 ssh-ed25519 ${ED1} builder@arm64`,
        `[127.0.0.1]:2222 ssh-rsa ${RSA1}`,
        `@revoked * ssh-ed25519 ${ED2}`,
        `@cert-authority *.example ssh-ed25519 ${ED2}`,
        `@unknown-marker host ssh-ed25519 ${ED2}`,
        'only-a-host',
        `host ssh-ed25519 not*base64`,
        `host ssh-rsa ${ED1}`,
        `|1|short|hash ssh-ed25519 ${ED1}`,
      ].join('\n'),
      '/etc/known',
    );
    expect(
      entries.map((e) => ({ line: e.line, marker: e.marker, type: e.keyType, names: e.names })),
    ).toEqual([
      {
        line: 3,
        marker: undefined,
        type: 'ssh-ed25519',
        names: { kind: 'patterns', patterns: ['build-arm64.example', '10.0.0.7'] },
      },
      {
        line: 4,
        marker: undefined,
        type: 'ssh-rsa',
        names: { kind: 'patterns', patterns: ['[127.0.0.1]:2222'] },
      },
      {
        line: 5,
        marker: 'revoked',
        type: 'ssh-ed25519',
        names: { kind: 'patterns', patterns: ['*'] },
      },
      {
        line: 6,
        marker: 'cert-authority',
        type: 'ssh-ed25519',
        names: { kind: 'patterns', patterns: ['*.example'] },
      },
    ]);
    expect(entries[0]?.key.equals(blob(ED1))).toBe(true);
    expect(entries.every((e) => e.file === '/etc/known')).toBe(true);
  });

  it('names a key by its type and by the SHA256 fingerprint ssh-keygen -l prints', () => {
    expect(keyTypeOf(blob(ED1))).toBe('ssh-ed25519');
    expect(keyTypeOf(blob(EC1))).toBe('ecdsa-sha2-nistp256');
    expect(keyTypeOf(blob(RSA1))).toBe('ssh-rsa');
    expect(keyTypeOf(Buffer.from([0, 0]))).toBe('');
    expect(fingerprintOf(blob(ED1))).toBe(ED1_FINGERPRINT);
    expect(fingerprintOf(blob(ED2))).toBe(ED2_FINGERPRINT);
    expect(fingerprintOf(blob(EC1))).toBe(EC1_FINGERPRINT);
    expect(fingerprintOf(blob(RSA1))).toBe(RSA1_FINGERPRINT);
  });
});

describe('known_hosts host matching', () => {
  it('matches a plain host on port 22 and only [host]:port on any other port', () => {
    const [plain, bracketed] = parseKnownHosts(
      `build.example ssh-ed25519 ${ED1}\n[build.example]:2222 ssh-ed25519 ${ED2}`,
      'f',
    );
    expect(plain && entryNamesHost(plain, 'build.example')).toBe(true);
    expect(plain && entryNamesHost(plain, '[build.example]:2222')).toBe(false);
    expect(bracketed && entryNamesHost(bracketed, '[build.example]:2222')).toBe(true);
    expect(bracketed && entryNamesHost(bracketed, 'build.example')).toBe(false);
    expect(bracketed && entryNamesHost(bracketed, '[build.example]:2223')).toBe(false);
  });

  it('honours * and ? wildcards, case-insensitively, and a ! pattern rules the line out', () => {
    expect(matchPattern('*.example', 'arm64.build.example')).toBe(true);
    expect(matchPattern('*.example', 'example')).toBe(false);
    expect(matchPattern('build-?.example', 'build-7.example')).toBe(true);
    expect(matchPattern('build-?.example', 'build-17.example')).toBe(false);
    expect(matchPattern('BUILD.Example', 'build.example')).toBe(true);
    expect(matchPattern('[10.0.0.*]:2222', '[10.0.0.9]:2222')).toBe(true);
    const [entry] = parseKnownHosts(`*.example,!evil.example ssh-ed25519 ${ED1}`, 'f');
    expect(entry && entryNamesHost(entry, 'good.example')).toBe(true);
    expect(entry && entryNamesHost(entry, 'evil.example')).toBe(false);
    expect(entry && entryNamesHost(entry, 'other.test')).toBe(false);
  });

  it('matches the hashed names ssh-keygen -H wrote, port included, and nothing else', () => {
    const [loopback, s390x] = parseKnownHosts(HASHED, 'f');
    expect(loopback?.names.kind).toBe('hashed');
    expect(loopback && entryNamesHost(loopback, '[127.0.0.1]:2222')).toBe(true);
    expect(loopback && entryNamesHost(loopback, '127.0.0.1')).toBe(false);
    expect(loopback && entryNamesHost(loopback, '[127.0.0.1]:2223')).toBe(false);
    expect(s390x && entryNamesHost(s390x, 'build-s390x.example')).toBe(true);
    expect(s390x && entryNamesHost(s390x, 'build-s390x.example.org')).toBe(false);
  });
});

describe('the verdict on an offered host key', () => {
  const entries = parseKnownHosts(
    [
      `${HASHED}`,
      `[10.0.0.5]:2200 ssh-rsa ${RSA1}`,
      `@revoked [10.0.0.6]:2200 ssh-ed25519 ${ED2}`,
      `[10.0.0.6]:2200 ssh-ed25519 ${ED2}`,
      `@cert-authority [10.0.0.8]:2200 ssh-ed25519 ${ED1}`,
    ].join('\n'),
    '/home/ci/.ssh/known_hosts',
  );

  it('accepts the listed key, hashed or plain', () => {
    expect(checkHostKey(entries, '127.0.0.1', 2222, blob(ED1)).status).toBe('known');
    expect(checkHostKey(entries, 'build-s390x.example', 22, blob(EC1)).status).toBe('known');
    expect(checkHostKey(entries, 'BUILD-S390X.example', 22, blob(EC1)).status).toBe('known');
    expect(checkHostKey(entries, '10.0.0.5', 2200, blob(RSA1)).status).toBe('known');
  });

  it('calls another key of a known type a changed key, naming the known one', () => {
    const verdict = checkHostKey(entries, '127.0.0.1', 2222, blob(ED2));
    expect(verdict.status).toBe('changed');
    expect(verdict.status === 'changed' && verdict.entries.map((e) => e.line)).toEqual([1]);
  });

  it('calls a host or a port nobody listed unknown, and says which types are known', () => {
    expect(checkHostKey(entries, '127.0.0.1', 2223, blob(ED1))).toEqual({
      status: 'unknown',
      otherTypes: [],
    });
    expect(checkHostKey(entries, '10.0.0.5', 2200, blob(ED1))).toEqual({
      status: 'unknown',
      otherTypes: ['ssh-rsa'],
    });
  });

  it('refuses a @revoked key even when a plain line lists it too, and ignores @cert-authority', () => {
    expect(checkHostKey(entries, '10.0.0.6', 2200, blob(ED2)).status).toBe('revoked');
    expect(checkHostKey(entries, '10.0.0.8', 2200, blob(ED1)).status).toBe('unknown');
  });

  it('offers the algorithms of the known key types first, so the host shows that key', () => {
    expect(hostKeyAlgorithms(entries, '10.0.0.5', 2200).slice(0, 4)).toEqual([
      'rsa-sha2-512',
      'rsa-sha2-256',
      'ssh-rsa',
      'ssh-ed25519',
    ]);
    expect(hostKeyAlgorithms(entries, 'build-s390x.example', 22)[0]).toBe('ecdsa-sha2-nistp256');
    expect(hostKeyAlgorithms([], 'anything', 22)[0]).toBe('ssh-ed25519');
  });
});

describe('the refusal line', () => {
  const target = parseSshUrl('ssh://root@127.0.0.1:2222');
  const entries = parseKnownHosts(`[127.0.0.1]:2222 ssh-ed25519 ${ED1}`, '/k/known_hosts');

  it('for an unknown host names the host, key type, fingerprint and the ssh-keyscan line to add it', () => {
    const err = refusalFor(target, { status: 'unknown', otherTypes: [] }, blob(EC1), ['/k/kh']);
    expect(err.code).toBe('failed_precondition');
    expect(err.message).not.toContain('\n');
    expect(err.message).toContain('ssh://root@127.0.0.1:2222: host key not known');
    expect(err.message).toContain(
      `[127.0.0.1]:2222 offered ecdsa-sha2-nistp256 key ${EC1_FINGERPRINT}`,
    );
    expect(err.message).toContain('ssh-keyscan -p 2222 -t ecdsa 127.0.0.1 >> /k/kh');
  });

  it('for a changed key names both fingerprints, the line that holds the old one, and how to remove it', () => {
    const verdict = checkHostKey(entries, '127.0.0.1', 2222, blob(ED2));
    if (verdict.status === 'known') throw new Error('expected a refusal');
    const err = refusalFor(target, verdict, blob(ED2), ['/k/known_hosts']);
    expect(err.message).toContain('host key changed');
    expect(err.message).toContain(ED2_FINGERPRINT);
    expect(err.message).toContain(
      `/k/known_hosts:1 holds another ssh-ed25519 key for it (${ED1_FINGERPRINT})`,
    );
    expect(err.message).toContain("ssh-keygen -R '[127.0.0.1]:2222' -f /k/known_hosts");
  });

  it('on port 22 leaves -p out of the ssh-keyscan line', () => {
    const err = refusalFor(
      parseSshUrl('ssh://builder@build.example'),
      { status: 'unknown', otherTypes: ['ssh-rsa'] },
      blob(ED1),
      ['/k/kh'],
    );
    expect(err.message).toContain('build.example offered ssh-ed25519 key');
    expect(err.message).toContain('(only ssh-rsa keys are known for it)');
    expect(err.message).toContain('ssh-keyscan -t ed25519 build.example >> /k/kh');
  });
});
