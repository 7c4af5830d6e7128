import { describe, expect, it } from 'vitest';
import { InvalidReferenceError } from '../../src/oci/errors.js';
import {
  familiarReference,
  formatReference,
  isDigest,
  parseReference,
  registryHost,
  withDigest,
  withTag,
  type ImageReference,
} from '../../src/oci/reference.js';

const SHA256 = 'sha256:' + 'a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4';
const SHA512 = 'sha512:' + '0123456789abcdef'.repeat(8);

function thrown(fn: () => unknown): InvalidReferenceError {
  try {
    fn();
  } catch (err) {
    if (err instanceof InvalidReferenceError) return err;
    throw err;
  }
  throw new Error('expected an InvalidReferenceError');
}

describe('parseReference', () => {
  const valid: Array<[string, ImageReference]> = [
    ['alpine', { domain: 'docker.io', repository: 'library/alpine', tag: 'latest' }],
    ['alpine:3.20', { domain: 'docker.io', repository: 'library/alpine', tag: '3.20' }],
    ['library/alpine:3', { domain: 'docker.io', repository: 'library/alpine', tag: '3' }],
    ['user/app', { domain: 'docker.io', repository: 'user/app', tag: 'latest' }],
    [
      'bitnami/postgresql:16.4.0-debian-12-r0',
      { domain: 'docker.io', repository: 'bitnami/postgresql', tag: '16.4.0-debian-12-r0' },
    ],
    ['docker.io/alpine', { domain: 'docker.io', repository: 'library/alpine', tag: 'latest' }],
    [
      'docker.io/library/ubuntu:24.04',
      { domain: 'docker.io', repository: 'library/ubuntu', tag: '24.04' },
    ],
    [
      'index.docker.io/library/busybox:1.36',
      { domain: 'docker.io', repository: 'library/busybox', tag: '1.36' },
    ],
    ['index.docker.io/nginx', { domain: 'docker.io', repository: 'library/nginx', tag: 'latest' }],
    [
      'ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector:0.104.0',
      {
        domain: 'ghcr.io',
        repository: 'open-telemetry/opentelemetry-collector-releases/opentelemetry-collector',
        tag: '0.104.0',
      },
    ],
    [
      'quay.io/prometheus/node-exporter:v1.8.1',
      { domain: 'quay.io', repository: 'prometheus/node-exporter', tag: 'v1.8.1' },
    ],
    [
      '123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/service:build_42',
      {
        domain: '123456789012.dkr.ecr.eu-west-1.amazonaws.com',
        repository: 'team/service',
        tag: 'build_42',
      },
    ],
    [
      'gcr.io/distroless/static-debian12:nonroot',
      { domain: 'gcr.io', repository: 'distroless/static-debian12', tag: 'nonroot' },
    ],
    [
      'mcr.microsoft.com/windows/servercore:ltsc2022',
      { domain: 'mcr.microsoft.com', repository: 'windows/servercore', tag: 'ltsc2022' },
    ],
    ['registry.k8s.io/pause:3.9', { domain: 'registry.k8s.io', repository: 'pause', tag: '3.9' }],
    ['host:5000/a/b:tag', { domain: 'host:5000', repository: 'a/b', tag: 'tag' }],
    ['localhost/x', { domain: 'localhost', repository: 'x', tag: 'latest' }],
    [
      'localhost:5000/braid/app:ci-7',
      { domain: 'localhost:5000', repository: 'braid/app', tag: 'ci-7' },
    ],
    ['127.0.0.1:5000/x', { domain: '127.0.0.1:5000', repository: 'x', tag: 'latest' }],
    ['[::1]:5000/x:tag', { domain: '[::1]:5000', repository: 'x', tag: 'tag' }],
    ['[2001:db8::1]/team/app', { domain: '[2001:db8::1]', repository: 'team/app', tag: 'latest' }],
    [
      'my.registry/a_b/c__d/e-f/g--h/i.j:T_1.x-Y',
      { domain: 'my.registry', repository: 'a_b/c__d/e-f/g--h/i.j', tag: 'T_1.x-Y' },
    ],
    [`alpine@${SHA256}`, { domain: 'docker.io', repository: 'library/alpine', digest: SHA256 }],
    [
      `alpine:3.20@${SHA256}`,
      { domain: 'docker.io', repository: 'library/alpine', tag: '3.20', digest: SHA256 },
    ],
    [
      `localhost:5000/a/b@${SHA512}`,
      { domain: 'localhost:5000', repository: 'a/b', digest: SHA512 },
    ],
    [
      `[::1]:5000/x:tag@${SHA256}`,
      { domain: '[::1]:5000', repository: 'x', tag: 'tag', digest: SHA256 },
    ],
    // Without a slash a port-looking suffix is a tag, exactly as in Docker.
    ['localhost:5000', { domain: 'docker.io', repository: 'library/localhost', tag: '5000' }],
  ];

  it.each(valid)('parses %s into its normalised parts', (text, expected) => {
    expect(parseReference(text)).toStrictEqual(expected);
  });

  it('leaves the tag out when defaultTag is false and the text names none', () => {
    expect(parseReference('alpine', { defaultTag: false })).toStrictEqual({
      domain: 'docker.io',
      repository: 'library/alpine',
    });
    expect(parseReference('alpine:3', { defaultTag: false }).tag).toBe('3');
  });

  it('does not add latest next to a digest', () => {
    expect(parseReference(`ghcr.io/o/app@${SHA256}`).tag).toBeUndefined();
  });

  it('accepts a name of exactly 255 characters and a tag of exactly 128', () => {
    const path = 'a'.repeat(255 - 'docker.io/u/'.length);
    const tag = 'T'.repeat(128);
    const ref = parseReference(`u/${path}:${tag}`);
    expect(formatReference(ref)).toBe(`docker.io/u/${path}:${tag}`);
  });

  const invalid: Array<[string, string]> = [
    ['', 'empty'],
    [' alpine', 'contains whitespace'],
    ['alpine latest', 'contains whitespace'],
    ['alpine:3.20\n', 'contains whitespace'],
    ['Alpine', 'repository name must be lowercase'],
    ['MyUser/app:1', 'repository name must be lowercase'],
    ['ghcr.io/Owner/App:1', 'repository name must be lowercase'],
    ['alpine:3:4', 'more than one ":"'],
    ['localhost:5000:tag', 'more than one ":"'],
    ['alpine:', 'empty tag after ":"'],
    [':latest', 'empty repository name'],
    [`@${SHA256}`, 'empty repository name'],
    ['a//b', 'empty component'],
    ['ghcr.io/o//app', 'empty component'],
    ['alpine/', 'ends with "/"'],
    ['ghcr.io/o/app/:1', 'ends with "/"'],
    ['/alpine', 'starts with "/"'],
    ['localhost:5000/', 'empty repository path'],
    ['user/-app', 'invalid repository path component "-app"'],
    ['user/app_', 'invalid repository path component "app_"'],
    ['user/a___b', 'invalid repository path component "a___b"'],
    ['user/a..b', 'invalid repository path component "a..b"'],
    ['alpine:-dev', 'invalid tag "-dev"'],
    ['alpine:.hidden', 'invalid tag ".hidden"'],
    ['alpine:v1+build', 'invalid tag "v1+build"'],
    [`alpine:${'x'.repeat(129)}`, 'longer than 128 characters'],
    ['alpine@sha256:abc', 'sha256 needs 64 lowercase hex characters'],
    [`alpine@${SHA256.toUpperCase().replace('SHA256', 'sha256')}`, 'sha256 needs 64 lowercase hex'],
    [`alpine@md5:${'a'.repeat(32)}`, 'unsupported algorithm "md5"'],
    ['alpine@latest', 'expected algorithm:hex'],
    [`alpine@${SHA256}@${SHA256}`, 'more than one "@"'],
    ['-bad.host/app', 'invalid registry host "-bad.host"'],
    ['host:port/app', 'invalid registry host "host:port"'],
    ['host:70000/app', 'invalid registry host "host:70000"'],
    ['[::1/app', 'invalid registry host "[::1"'],
    ['a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4', 'image ID'],
    [`u/${'a'.repeat(300)}`, 'longer than 255 characters'],
  ];

  it.each(invalid)('rejects %j with a reason containing %j', (text, reason) => {
    const err = thrown(() => parseReference(text));
    expect(err.text).toBe(text);
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toContain(`invalid image reference "${text}"`);
    expect(err.message).toContain(reason);
  });

  it('names the offending tag in the message', () => {
    expect(() => parseReference('ghcr.io/o/app:has*star')).toThrow(
      'invalid image reference "ghcr.io/o/app:has*star": invalid tag "has*star"',
    );
  });
});

describe('formatting', () => {
  const forms: Array<[string, string, string]> = [
    ['alpine', 'docker.io/library/alpine:latest', 'alpine:latest'],
    ['user/app:1', 'docker.io/user/app:1', 'user/app:1'],
    ['docker.io/library/a/b:1', 'docker.io/library/a/b:1', 'library/a/b:1'],
    ['index.docker.io/library/nginx:1.27', 'docker.io/library/nginx:1.27', 'nginx:1.27'],
    ['ghcr.io/o/app:1', 'ghcr.io/o/app:1', 'ghcr.io/o/app:1'],
    ['localhost:5000/x', 'localhost:5000/x:latest', 'localhost:5000/x:latest'],
    [`host:5000/a/b:tag@${SHA256}`, `host:5000/a/b:tag@${SHA256}`, `host:5000/a/b:tag@${SHA256}`],
    [`alpine@${SHA256}`, `docker.io/library/alpine@${SHA256}`, `alpine@${SHA256}`],
  ];

  it.each(forms)('prints %s as %s, and as %s for people', (text, canonical, familiar) => {
    const ref = parseReference(text);
    expect(formatReference(ref)).toBe(canonical);
    expect(familiarReference(ref)).toBe(familiar);
  });

  it.each(forms)('reparses the canonical form of %s to the same reference', (text) => {
    const ref = parseReference(text);
    expect(parseReference(formatReference(ref))).toStrictEqual(ref);
    expect(parseReference(familiarReference(ref))).toStrictEqual(ref);
  });
});

describe('registryHost', () => {
  it.each([
    ['alpine', 'registry-1.docker.io'],
    ['index.docker.io/user/app', 'registry-1.docker.io'],
    ['ghcr.io/o/app', 'ghcr.io'],
    ['localhost:5000/x', 'localhost:5000'],
    ['127.0.0.1:5000/x', '127.0.0.1:5000'],
    ['[::1]:5000/x', '[::1]:5000'],
  ])('sends requests for %s to %s', (text, host) => {
    expect(registryHost(parseReference(text))).toBe(host);
  });
});

describe('withTag and withDigest', () => {
  const base = parseReference('localhost:5000/braid/app', { defaultTag: false });

  it('sets the tag and keeps an existing digest', () => {
    expect(withTag(base, 'v2')).toStrictEqual({
      domain: 'localhost:5000',
      repository: 'braid/app',
      tag: 'v2',
    });
    expect(formatReference(withTag(withDigest(base, SHA256), 'v2'))).toBe(
      `localhost:5000/braid/app:v2@${SHA256}`,
    );
  });

  it('sets the digest and keeps an existing tag', () => {
    expect(formatReference(withDigest(withTag(base, 'v2'), SHA512))).toBe(
      `localhost:5000/braid/app:v2@${SHA512}`,
    );
  });

  it('refuses a bad tag, naming the reference it would have made', () => {
    const err = thrown(() => withTag(base, 'bad tag'));
    expect(err.text).toBe('localhost:5000/braid/app:bad tag');
    expect(err.message).toContain('invalid tag "bad tag"');
  });

  it('refuses a bad digest, naming the reference it would have made', () => {
    const err = thrown(() => withDigest(base, 'sha256:1234'));
    expect(err.text).toBe('localhost:5000/braid/app@sha256:1234');
    expect(err.message).toContain('invalid digest "sha256:1234"');
  });
});

describe('isDigest', () => {
  it.each([
    [SHA256, true],
    [SHA512, true],
    ['sha256:' + 'A'.repeat(64), false],
    ['sha256:' + 'a'.repeat(63), false],
    ['sha512:' + 'a'.repeat(64), false],
    ['sha384:' + 'a'.repeat(96), false],
    ['md5:' + 'a'.repeat(32), false],
    ['a'.repeat(64), false],
    ['constructor:x', false],
    ['', false],
  ])('says %j is a digest: %s', (text, expected) => {
    expect(isDigest(text)).toBe(expected);
  });
});
