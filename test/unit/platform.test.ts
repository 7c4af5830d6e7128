import { describe, expect, it } from 'vitest';
import { PlatformError } from '../../src/oci/errors.js';
import {
  formatPlatform,
  hostPlatform,
  normalizePlatform,
  parsePlatform,
  parsePlatforms,
  platformFromOci,
  platformMatches,
  platformsEqual,
  platformToOci,
  unameToPlatform,
  type Platform,
} from '../../src/oci/platform.js';

function thrown(fn: () => unknown): PlatformError {
  try {
    fn();
  } catch (err) {
    if (err instanceof PlatformError) return err;
    throw err;
  }
  throw new Error('expected a PlatformError');
}

describe('parsePlatform', () => {
  const valid: Array<[string, Platform]> = [
    ['linux/amd64', { os: 'linux', architecture: 'amd64' }],
    ['linux/amd64/v1', { os: 'linux', architecture: 'amd64' }],
    ['linux/amd64/v3', { os: 'linux', architecture: 'amd64', variant: 'v3' }],
    ['linux/x86_64', { os: 'linux', architecture: 'amd64' }],
    ['linux/x86-64', { os: 'linux', architecture: 'amd64' }],
    ['Linux/AMD64', { os: 'linux', architecture: 'amd64' }],
    ['linux/arm64', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm64/v8', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm64/8', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm64/v8.0', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm64/v8.2', { os: 'linux', architecture: 'arm64', variant: 'v8.2' }],
    ['linux/arm64/v9.0', { os: 'linux', architecture: 'arm64', variant: 'v9' }],
    ['linux/aarch64', { os: 'linux', architecture: 'arm64' }],
    ['linux/arm', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/arm/v7', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/arm/7', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/arm/v6', { os: 'linux', architecture: 'arm', variant: 'v6' }],
    ['linux/arm/V5', { os: 'linux', architecture: 'arm', variant: 'v5' }],
    ['linux/armhf', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/armv7l', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/armv7', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/armhf/v7', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['linux/armel', { os: 'linux', architecture: 'arm', variant: 'v6' }],
    ['linux/386', { os: 'linux', architecture: '386' }],
    ['linux/i386', { os: 'linux', architecture: '386' }],
    ['linux/i686', { os: 'linux', architecture: '386' }],
    ['linux/ppc64le', { os: 'linux', architecture: 'ppc64le' }],
    ['linux/ppc64el', { os: 'linux', architecture: 'ppc64le' }],
    ['linux/s390x', { os: 'linux', architecture: 's390x' }],
    ['linux/riscv64', { os: 'linux', architecture: 'riscv64' }],
    ['linux/mips64le', { os: 'linux', architecture: 'mips64le' }],
    ['linux/loong64', { os: 'linux', architecture: 'loong64' }],
    ['windows/amd64', { os: 'windows', architecture: 'amd64' }],
    ['windows/arm64', { os: 'windows', architecture: 'arm64' }],
    ['darwin/arm64', { os: 'darwin', architecture: 'arm64' }],
    ['macos/arm64', { os: 'darwin', architecture: 'arm64' }],
    ['freebsd/amd64', { os: 'freebsd', architecture: 'amd64' }],
    ['js/wasm', { os: 'js', architecture: 'wasm' }],
    ['arm64', { os: 'linux', architecture: 'arm64' }],
    ['amd64', { os: 'linux', architecture: 'amd64' }],
    ['aarch64', { os: 'linux', architecture: 'arm64' }],
    ['armhf', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['s390x', { os: 'linux', architecture: 's390x' }],
    ['  linux/arm64  ', { os: 'linux', architecture: 'arm64' }],
  ];

  it.each(valid)('parses %j into its normalised platform', (text, expected) => {
    expect(parsePlatform(text)).toStrictEqual(expected);
  });

  const invalid: Array<[string, string]> = [
    ['', 'empty'],
    ['   ', 'empty'],
    ['linux/ amd64', 'contains whitespace'],
    ['linux/sparc9', 'unknown architecture "sparc9"'],
    ['sparc9', 'unknown architecture "sparc9"'],
    ['beos/amd64', 'unknown OS "beos"'],
    ['arm64/v8', 'unknown OS "arm64" (expected os/arch, e.g. linux/arm64)'],
    ['linux', '"linux" is an OS, not an architecture'],
    ['windows', '"windows" is an OS, not an architecture'],
    ['linux/', 'empty architecture'],
    ['/amd64', 'empty os'],
    ['linux/arm/', 'empty variant'],
    ['linux//v7', 'empty architecture'],
    ['linux/arm/v7/extra', 'too many parts'],
    ['linux/amd64/v5', 'unknown variant "v5" for amd64'],
    ['linux/arm/v9', 'unknown variant "v9" for arm'],
    ['linux/arm64/v7', 'unknown variant "v7" for arm64'],
    ['linux/s390x/v2', 's390x has no variant "v2"'],
    ['linux/i686/v2', '386 has no variant "v2"'],
    ['linux/armhf/v6', '"armhf" means arm/v7, not variant "v6"'],
  ];

  it.each(invalid)('rejects %j with a reason containing %j', (text, reason) => {
    const err = thrown(() => parsePlatform(text));
    expect(err.text).toBe(text);
    expect(err.code).toBe('invalid_argument');
    expect(err.message).toContain(`invalid platform "${text}"`);
    expect(err.message).toContain(reason);
  });
});

describe('parsePlatforms', () => {
  it('parses a --platform list, trimming spaces around entries', () => {
    expect(parsePlatforms('linux/amd64, linux/arm64 ,linux/arm/v7,linux/s390x')).toStrictEqual([
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
      { os: 'linux', architecture: 's390x' },
    ]);
  });

  it.each([
    ['', 'empty'],
    ['linux/amd64,', 'entry 2 is empty'],
    ['linux/amd64,,linux/arm64', 'entry 2 is empty'],
    ['linux/amd64,linux/amd64', '"linux/amd64" is listed twice (linux/amd64)'],
    ['linux/arm64,linux/arm64/v8', '"linux/arm64/v8" is the same platform as "linux/arm64"'],
    ['linux/x86_64,amd64', '"amd64" is the same platform as "linux/x86_64" (linux/amd64)'],
    ['linux/armhf,linux/arm', '"linux/arm" is the same platform as "linux/armhf" (linux/arm/v7)'],
  ])('rejects the list %j because %s', (csv, reason) => {
    const err = thrown(() => parsePlatforms(csv));
    expect(err.text).toBe(csv);
    expect(err.message).toContain(reason);
  });

  it('names the bad entry, not the whole list, when one entry does not parse', () => {
    const err = thrown(() => parsePlatforms('linux/amd64,linux/sparc9'));
    expect(err.text).toBe('linux/sparc9');
    expect(err.message).toBe('invalid platform "linux/sparc9": unknown architecture "sparc9"');
  });
});

describe('normalizePlatform', () => {
  it.each<[Platform, Platform]>([
    [
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
      { os: 'linux', architecture: 'arm64' },
    ],
    [
      { os: 'linux', architecture: 'arm', variant: '' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
    ],
    [
      { os: 'Linux', architecture: 'x86_64', variant: 'v1' },
      { os: 'linux', architecture: 'amd64' },
    ],
    [
      {
        os: 'windows',
        architecture: 'amd64',
        osVersion: '10.0.20348.2340',
        osFeatures: ['win32k'],
      },
      {
        os: 'windows',
        architecture: 'amd64',
        osVersion: '10.0.20348.2340',
        osFeatures: ['win32k'],
      },
    ],
    // Attestation entries in BuildKit indexes: kept, not rejected.
    [
      { os: 'unknown', architecture: 'unknown' },
      { os: 'unknown', architecture: 'unknown' },
    ],
    [
      { os: 'linux', architecture: 'riscv64', variant: 'RVA22U64' },
      { os: 'linux', architecture: 'riscv64', variant: 'rva22u64' },
    ],
  ])('normalises %j read from an image to %j', (input, expected) => {
    expect(normalizePlatform(input)).toStrictEqual(expected);
  });

  it('does not share the osFeatures array with its input', () => {
    const input: Platform = { os: 'windows', architecture: 'amd64', osFeatures: ['win32k'] };
    const output = normalizePlatform(input);
    output.osFeatures?.push('other');
    expect(input.osFeatures).toStrictEqual(['win32k']);
  });
});

describe('formatPlatform', () => {
  it.each<[Platform, string]>([
    [{ os: 'linux', architecture: 'amd64' }, 'linux/amd64'],
    [{ os: 'linux', architecture: 'arm64' }, 'linux/arm64'],
    [{ os: 'linux', architecture: 'arm64', variant: 'v8' }, 'linux/arm64'],
    [{ os: 'linux', architecture: 'arm', variant: 'v7' }, 'linux/arm/v7'],
    [{ os: 'linux', architecture: 'arm' }, 'linux/arm/v7'],
    [{ os: 'linux', architecture: 'amd64', variant: 'v3' }, 'linux/amd64/v3'],
    [{ os: 'windows', architecture: 'amd64', osVersion: '10.0.17763.5576' }, 'windows/amd64'],
  ])('formats %j as %s', (platform, text) => {
    expect(formatPlatform(platform)).toBe(text);
  });

  it.each(['linux/amd64', 'linux/arm64', 'linux/arm/v6', 'linux/ppc64le', 'windows/amd64'])(
    'reparses %s to the same string',
    (text) => {
      expect(formatPlatform(parsePlatform(text))).toBe(text);
    },
  );
});

describe('platformsEqual', () => {
  const win = (osVersion?: string): Platform => ({
    os: 'windows',
    architecture: 'amd64',
    ...(osVersion !== undefined && { osVersion }),
  });

  it.each<[string, Platform, Platform, boolean]>([
    [
      'arm64 with and without v8',
      { os: 'linux', architecture: 'arm64' },
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
      true,
    ],
    [
      'arm without a variant and arm/v7',
      { os: 'linux', architecture: 'arm' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
      true,
    ],
    [
      'aarch64 and arm64',
      { os: 'linux', architecture: 'aarch64' },
      { os: 'linux', architecture: 'arm64' },
      true,
    ],
    [
      'arm/v6 and arm/v7',
      { os: 'linux', architecture: 'arm', variant: 'v6' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
      false,
    ],
    [
      'amd64 and amd64/v3',
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'amd64', variant: 'v3' },
      false,
    ],
    ['linux/amd64 and windows/amd64', { os: 'linux', architecture: 'amd64' }, win(), false],
    ['windows builds when only one side names a version', win('10.0.20348.2340'), win(), true],
    ['the same windows build', win('10.0.20348.2340'), win('10.0.20348.2340'), true],
    ['different windows builds', win('10.0.20348.2340'), win('10.0.17763.5576'), false],
  ])('compares %s: %s', (_what, a, b, expected) => {
    expect(platformsEqual(a, b)).toBe(expected);
    expect(platformsEqual(b, a)).toBe(expected);
  });
});

describe('platformMatches', () => {
  it.each<[string, string, boolean]>([
    ['linux/arm64', 'linux/arm64/v8', true],
    ['linux/arm64/v8', 'linux/arm64', true],
    ['linux/arm', 'linux/arm/v7', true],
    ['linux/arm/v7', 'linux/arm/v6', false],
    ['linux/amd64', 'linux/arm64', false],
    ['linux/amd64', 'linux/amd64/v2', false],
    ['linux/s390x', 'linux/s390x', true],
  ])('wanting %s, an image for %s matches: %s', (wanted, offered, expected) => {
    expect(platformMatches(parsePlatform(wanted), parsePlatform(offered))).toBe(expected);
  });

  const server2022: Platform = { os: 'windows', architecture: 'amd64', osVersion: '10.0.20348' };

  it('matches a Windows image of the same build whatever its revision', () => {
    expect(platformMatches(server2022, { ...server2022, osVersion: '10.0.20348.2340' })).toBe(true);
  });

  it('does not match a Windows image of another build', () => {
    expect(platformMatches(server2022, { ...server2022, osVersion: '10.0.17763.5576' })).toBe(
      false,
    );
  });

  it('matches a Windows image that names no version', () => {
    expect(platformMatches(server2022, { os: 'windows', architecture: 'amd64' })).toBe(true);
  });

  it('requires every wanted os.feature to be offered', () => {
    const wanted: Platform = { os: 'windows', architecture: 'amd64', osFeatures: ['win32k'] };
    expect(platformMatches(wanted, { ...wanted, osFeatures: ['win32k', 'x'] })).toBe(true);
    expect(platformMatches(wanted, { os: 'windows', architecture: 'amd64' })).toBe(false);
  });
});

describe('OCI JSON', () => {
  it('reads an arm64 index entry written with variant v8 as plain arm64', () => {
    expect(platformFromOci({ architecture: 'arm64', os: 'linux', variant: 'v8' })).toStrictEqual({
      os: 'linux',
      architecture: 'arm64',
    });
  });

  it('reads os.version and os.features of a Windows config', () => {
    expect(
      platformFromOci({
        architecture: 'amd64',
        os: 'windows',
        'os.version': '10.0.17763.5576',
        'os.features': ['win32k'],
      }),
    ).toStrictEqual({
      os: 'windows',
      architecture: 'amd64',
      osVersion: '10.0.17763.5576',
      osFeatures: ['win32k'],
    });
  });

  it.each([
    [{ architecture: 'amd64' }, 'missing "os"'],
    [{ os: 'linux' }, 'missing "architecture"'],
    [{ os: 'linux', architecture: '' }, 'missing "architecture"'],
    [{ os: 'linux', architecture: 'amd64', 'os.features': 'win32k' }, 'not a list of strings'],
  ])('rejects %j because of %s, quoting the JSON', (obj, reason) => {
    const err = thrown(() => platformFromOci(obj as Parameters<typeof platformFromOci>[0]));
    expect(err.text).toBe(JSON.stringify(obj));
    expect(err.message).toContain(reason);
  });

  it('writes keys in the order architecture, os, os.version, os.features, variant', () => {
    const oci = platformToOci({
      variant: 'v3',
      osFeatures: ['win32k'],
      osVersion: '10.0.20348.2340',
      os: 'windows',
      architecture: 'amd64',
    });
    expect(JSON.stringify(oci)).toBe(
      '{"architecture":"amd64","os":"windows","os.version":"10.0.20348.2340","os.features":["win32k"],"variant":"v3"}',
    );
  });

  it.each<[Platform, string]>([
    [
      { os: 'linux', architecture: 'arm', variant: 'v7' },
      '{"architecture":"arm","os":"linux","variant":"v7"}',
    ],
    [
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
      '{"architecture":"arm64","os":"linux"}',
    ],
    [{ os: 'linux', architecture: 's390x' }, '{"architecture":"s390x","os":"linux"}'],
  ])('writes %j as %s', (platform, json) => {
    expect(JSON.stringify(platformToOci(platform))).toBe(json);
  });

  it('round-trips a platform through OCI JSON', () => {
    for (const text of ['linux/amd64', 'linux/arm/v6', 'linux/arm64', 'linux/ppc64le']) {
      const platform = parsePlatform(text);
      expect(platformFromOci(platformToOci(platform))).toStrictEqual(platform);
    }
  });
});

describe('hostPlatform', () => {
  const KNOWN_HOST_ARCHES = ['amd64', 'arm64', 'arm', 'ppc64le', 's390x', '386', 'riscv64'];

  it.each<[string, string, 'BE' | 'LE', Platform]>([
    ['x64', 'linux', 'LE', { os: 'linux', architecture: 'amd64' }],
    ['arm64', 'linux', 'LE', { os: 'linux', architecture: 'arm64' }],
    ['arm64', 'darwin', 'LE', { os: 'darwin', architecture: 'arm64' }],
    ['arm', 'linux', 'LE', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['ppc64', 'linux', 'LE', { os: 'linux', architecture: 'ppc64le' }],
    ['ppc64', 'aix', 'BE', { os: 'aix', architecture: 'ppc64' }],
    ['s390x', 'linux', 'BE', { os: 'linux', architecture: 's390x' }],
    ['ia32', 'win32', 'LE', { os: 'windows', architecture: '386' }],
    ['riscv64', 'linux', 'LE', { os: 'linux', architecture: 'riscv64' }],
    ['loong64', 'linux', 'LE', { os: 'linux', architecture: 'loong64' }],
  ])('maps Node arch %s on %s (%s) to %j', (arch, platform, order, expected) => {
    expect(hostPlatform(arch, platform, order)).toStrictEqual(expected);
  });

  it('describes the running process by default', () => {
    expect(KNOWN_HOST_ARCHES).toContain(hostPlatform().architecture);
  });

  it('rejects a Node architecture that has no OCI name', () => {
    const err = thrown(() => hostPlatform('ppc', 'linux', 'BE'));
    expect(err.text).toBe('linux/ppc');
    expect(err.message).toContain('unsupported Node.js architecture "ppc"');
  });

  it('rejects a Node platform that has no OCI name', () => {
    expect(() => hostPlatform('x64', 'haiku', 'LE')).toThrow(
      'unsupported Node.js platform "haiku"',
    );
  });
});

describe('unameToPlatform', () => {
  it.each<[string, Platform]>([
    ['x86_64', { os: 'linux', architecture: 'amd64' }],
    ['aarch64', { os: 'linux', architecture: 'arm64' }],
    ['armv7l', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['armv6l', { os: 'linux', architecture: 'arm', variant: 'v6' }],
    ['armv8l', { os: 'linux', architecture: 'arm', variant: 'v8' }],
    ['ppc64le', { os: 'linux', architecture: 'ppc64le' }],
    ['s390x', { os: 'linux', architecture: 's390x' }],
    ['riscv64', { os: 'linux', architecture: 'riscv64' }],
    ['i686', { os: 'linux', architecture: '386' }],
    ['loongarch64', { os: 'linux', architecture: 'loong64' }],
    ['x86_64\n', { os: 'linux', architecture: 'amd64' }],
  ])('maps uname -m %j to %j', (machine, expected) => {
    expect(unameToPlatform(machine)).toStrictEqual(expected);
  });

  it.each([
    ['sparc64', 'unknown architecture "sparc64"'],
    ['mips64', 'byte order of "mips64" is unknown'],
    ['', 'empty'],
  ])('rejects uname -m %j with %s', (machine, reason) => {
    const err = thrown(() => unameToPlatform(machine));
    expect(err.text).toBe(machine);
    expect(err.message).toContain(reason);
  });
});
