import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import {
  MAX_ADD_HOSTS,
  MAX_ANNOTATIONS,
  MAX_SSH_IDS,
  validateSpec,
} from '../../src/coordinator/spec-validation.js';
import { BraidError } from '../../src/errors.js';
import {
  AnnotationLevel,
  BuildSpecSchema,
  CacheMode,
  CacheType,
} from '../../src/gen/braid/v1/build_pb.js';

type SpecFields = MessageInitShape<typeof BuildSpecSchema>;

/** A spec that passes, with `fields` on top. */
function spec(fields: SpecFields = {}) {
  return create(BuildSpecSchema, {
    contextDigest: `sha256:${'a'.repeat(64)}`,
    platforms: [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
    ],
    tags: ['127.0.0.1:5000/team/app:1'],
    ...fields,
  });
}

/** The one line a refused spec gets, or "accepted". */
function verdict(fields: SpecFields): string {
  try {
    validateSpec(spec(fields));
    return 'accepted';
  } catch (err) {
    if (!(err instanceof BraidError)) throw err;
    expect(err.code).toBe('invalid_argument');
    expect(err.message).not.toContain('\n');
    return err.message;
  }
}

describe('the RUN network (--network)', () => {
  it.each(['', 'default', 'none', 'host'])('accepts %j', (network) => {
    expect(verdict({ network })).toBe('accepted');
  });

  it.each(['bridge', 'container:db', 'HOST', 'my-net'])('refuses %j, naming it', (network) => {
    expect(verdict({ network })).toBe(`network "${network}" is not one of default, none, host`);
  });
});

describe('extra hosts (--add-host)', () => {
  it('accepts HOST:IPv4, HOST:IPv6 and HOST:host-gateway', () => {
    expect(
      verdict({
        addHosts: ['db:10.0.0.5', 'cache.internal:192.168.1.1', 'v6:::1', 'gw:host-gateway'],
      }),
    ).toBe('accepted');
  });

  it.each([
    'db',
    ':10.0.0.5',
    'db:',
    'db:not-an-ip',
    'db:10.0.0.256',
    'under_score:10.0.0.5',
    '-db:10.0.0.5',
    'db host:10.0.0.5',
  ])('refuses %j as not HOST:IP', (entry) => {
    expect(verdict({ addHosts: ['ok:10.0.0.1', entry] })).toBe(
      `extra host "${entry}" is not HOST:IP`,
    );
  });

  it(`refuses more than ${MAX_ADD_HOSTS} entries`, () => {
    const hosts = Array.from({ length: MAX_ADD_HOSTS + 1 }, (_, i) => `h${i}:10.0.0.1`);
    expect(verdict({ addHosts: hosts.slice(0, MAX_ADD_HOSTS) })).toBe('accepted');
    expect(verdict({ addHosts: hosts })).toBe('65 extra hosts given; at most 64');
  });
});

describe('SSH ids (--ssh)', () => {
  it('accepts default and named ids', () => {
    expect(verdict({ sshIds: ['default', 'github', 'gitlab.com_key-2'] })).toBe('accepted');
  });

  it.each(['', 'has space', 'a/b', 'id=x', 'z'.repeat(129)])('refuses the id %j', (id) => {
    expect(verdict({ sshIds: ['default', id] })).toBe(
      `SSH id "${id}" must be 1 to 128 of A-Z a-z 0-9 . _ -`,
    );
  });

  it('refuses an id given twice', () => {
    expect(verdict({ sshIds: ['default', 'gh', 'default'] })).toBe(
      'SSH id "default" is given twice',
    );
  });

  it(`refuses more than ${MAX_SSH_IDS} ids`, () => {
    const ids = Array.from({ length: MAX_SSH_IDS + 1 }, (_, i) => `k${i}`);
    expect(verdict({ sshIds: ids })).toBe(`17 SSH ids given; at most ${MAX_SSH_IDS}`);
  });
});

describe('registry and inline cache (--cache-from, --cache-to)', () => {
  const digest = `sha256:${'b'.repeat(64)}`;

  it('accepts registry refs with a tag (or, to read, a digest) and inline cache', () => {
    expect(
      verdict({
        cacheFrom: [
          { type: CacheType.REGISTRY, ref: '127.0.0.1:5000/cache/app:main' },
          { type: CacheType.REGISTRY, ref: `127.0.0.1:5000/cache/app@${digest}` },
          { type: CacheType.INLINE },
        ],
        cacheTo: [
          { type: CacheType.REGISTRY, ref: '127.0.0.1:5000/cache/app:main', mode: CacheMode.MIN },
          { type: CacheType.INLINE },
        ],
      }),
    ).toBe('accepted');
  });

  it('refuses mode=max, saying the Engine API exports cache only inline', () => {
    for (const type of [CacheType.REGISTRY, CacheType.INLINE])
      expect(
        verdict({ cacheTo: [{ type, ref: '127.0.0.1:5000/cache/app:main', mode: CacheMode.MAX }] }),
      ).toBe(
        "cache-to mode=max: the Docker Engine API's /build exports cache only inline (mode=min)",
      );
  });

  it('refuses a cache type it does not know', () => {
    expect(verdict({ cacheFrom: [{ ref: '127.0.0.1:5000/cache/app:main' }] })).toBe(
      'cache-from: type must be registry or inline',
    );
    expect(verdict({ cacheTo: [{ ref: '127.0.0.1:5000/cache/app:main' }] })).toBe(
      'cache-to: type must be registry or inline',
    );
  });

  it('refuses a cache-to ref that pins a digest: a cache is pushed under a tag', () => {
    const ref = `127.0.0.1:5000/cache/app:main@${digest}`;
    expect(verdict({ cacheTo: [{ type: CacheType.REGISTRY, ref }] })).toBe(
      `cache-to ref "${ref}" needs a tag (and no digest)`,
    );
  });

  it('refuses a cache ref that does not parse, naming it', () => {
    expect(
      verdict({ cacheFrom: [{ type: CacheType.REGISTRY, ref: '127.0.0.1:5000/Cache/App' }] }),
    ).toMatch(/^invalid image reference "127\.0\.0\.1:5000\/Cache\/App": /);
  });

  // Bug: checkCache parses refs with parseReference's default tag ("latest"),
  // so its "no tag" checks never fire; the CLI refuses these, a raw gRPC submit does not.
  it('refuses a registry cache-from ref without a tag or digest', () => {
    const ref = '127.0.0.1:5000/cache/app';
    expect(verdict({ cacheFrom: [{ type: CacheType.REGISTRY, ref }] })).toBe(
      `cache-from ref "${ref}" has no tag or digest`,
    );
  });

  it('refuses a registry cache-to ref without a tag', () => {
    const ref = '127.0.0.1:5000/cache/app';
    expect(verdict({ cacheTo: [{ type: CacheType.REGISTRY, ref }] })).toBe(
      `cache-to ref "${ref}" needs a tag (and no digest)`,
    );
  });
});

describe('annotations (--annotation)', () => {
  const arm64 = { os: 'linux', architecture: 'arm64' };

  it('accepts each level, and a platform on manifest and descriptor levels', () => {
    expect(
      verdict({
        annotations: [
          { levels: [AnnotationLevel.INDEX], key: 'org.opencontainers.image.title', value: 'x' },
          {
            levels: [AnnotationLevel.MANIFEST, AnnotationLevel.MANIFEST_DESCRIPTOR],
            key: 'org.opencontainers.image.source',
            value: 'https://example.test/app',
          },
          { levels: [AnnotationLevel.MANIFEST], platform: arm64, key: 'arch.note', value: '' },
        ],
      }),
    ).toBe('accepted');
  });

  it.each(['', 'has space', 'tab\tkey'])('refuses the key %j', (key) => {
    expect(verdict({ annotations: [{ levels: [AnnotationLevel.INDEX], key, value: 'v' }] })).toBe(
      `annotation key "${key}" is empty or has spaces`,
    );
  });

  it('refuses an annotation with no level, or a level it does not know', () => {
    expect(verdict({ annotations: [{ key: 'k', value: 'v' }] })).toBe(
      'annotation k names no level',
    );
    expect(verdict({ annotations: [{ levels: [AnnotationLevel.UNSPECIFIED], key: 'k' }] })).toBe(
      'annotation k: unknown level 0',
    );
    expect(verdict({ annotations: [{ levels: [7 as AnnotationLevel], key: 'k' }] })).toBe(
      'annotation k: unknown level 7',
    );
  });

  it('refuses a platform on an index annotation: the index is every platform', () => {
    expect(
      verdict({
        annotations: [
          { levels: [AnnotationLevel.MANIFEST, AnnotationLevel.INDEX], platform: arm64, key: 'k' },
        ],
      }),
    ).toBe('annotation k: an index annotation applies to every platform');
  });

  it('refuses an annotation platform that does not parse, naming it', () => {
    expect(
      verdict({
        annotations: [
          {
            levels: [AnnotationLevel.MANIFEST],
            platform: { os: 'linux', architecture: 'armv99' },
            key: 'k',
          },
        ],
      }),
    ).toMatch(/^invalid platform "linux\/armv99": /);
  });

  it('refuses one longer than 16 KiB, key and value together', () => {
    const value = 'v'.repeat(16 * 1024);
    expect(verdict({ annotations: [{ levels: [AnnotationLevel.INDEX], key: 'k', value }] })).toBe(
      'annotation k is longer than 16384 bytes',
    );
    expect(
      verdict({
        annotations: [{ levels: [AnnotationLevel.INDEX], key: 'k', value: value.slice(1) }],
      }),
    ).toBe('accepted');
  });

  it(`refuses more than ${MAX_ANNOTATIONS} annotations`, () => {
    const annotations = Array.from({ length: MAX_ANNOTATIONS + 1 }, (_, i) => ({
      levels: [AnnotationLevel.MANIFEST],
      key: `k${i}`,
      value: 'v',
    }));
    expect(verdict({ annotations })).toBe(`257 annotations given; at most ${MAX_ANNOTATIONS}`);
  });
});

describe('reproducible builds (source_date_epoch, check_reproducible)', () => {
  it('accepts an epoch from 0 to the end of year 9999, and a check with one', () => {
    expect(verdict({ sourceDateEpoch: 0n })).toBe('accepted');
    expect(verdict({ sourceDateEpoch: 253_402_300_799n, checkReproducible: true })).toBe(
      'accepted',
    );
  });

  it('refuses an epoch out of range and a check without an epoch, in one line', () => {
    expect(verdict({ sourceDateEpoch: -1n })).toBe(
      'source date epoch -1 is not between 0 and 253402300799',
    );
    expect(verdict({ sourceDateEpoch: 253_402_300_800n })).toContain('253402300800');
    expect(verdict({ checkReproducible: true })).toMatch(
      /^check-reproducible needs a source date epoch/,
    );
  });
});
