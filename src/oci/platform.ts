/**
 * OCI platforms (`linux/arm/v7`) parsed, normalised and matched with
 * containerd's semantics: `aarch64` is `arm64`, `arm64/v8` is plain `arm64`.
 */
import { endianness } from 'node:os';
import { PlatformError } from './errors.js';

export interface Platform {
  os: string;
  architecture: string;
  /** Absent for a default variant: amd64 v1 and arm64 v8 are stored without one. */
  variant?: string;
  /** Windows build, e.g. `10.0.20348.2340`; never part of the platform string. */
  osVersion?: string;
  osFeatures?: string[];
}

/** A platform as it appears in image configs and index entries. */
export interface OciPlatform {
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
}

/** Go's GOOS values, which images use for `os`. */
const KNOWN_OS: ReadonlySet<string> = new Set([
  'aix',
  'android',
  'darwin',
  'dragonfly',
  'freebsd',
  'hurd',
  'illumos',
  'ios',
  'js',
  'linux',
  'netbsd',
  'openbsd',
  'plan9',
  'solaris',
  'wasip1',
  'windows',
  'zos',
]);

const OS_ALIASES: ReadonlyMap<string, string> = new Map([['macos', 'darwin']]);

const KNOWN_ARCH: ReadonlySet<string> = new Set([
  'amd64',
  '386',
  'arm',
  'arm64',
  'ppc64le',
  'ppc64',
  's390x',
  'riscv64',
  'mips64le',
  'mips64',
  'mipsle',
  'mips',
  'loong64',
  'wasm',
]);

/** Names from uname, Debian and elsewhere; some imply a variant. */
const ARCH_ALIASES: ReadonlyMap<string, { architecture: string; variant?: string }> = new Map([
  ['x86_64', { architecture: 'amd64' }],
  ['x86-64', { architecture: 'amd64' }],
  ['aarch64', { architecture: 'arm64' }],
  ['armhf', { architecture: 'arm', variant: 'v7' }],
  ['armv7l', { architecture: 'arm', variant: 'v7' }],
  ['armv7', { architecture: 'arm', variant: 'v7' }],
  ['armel', { architecture: 'arm', variant: 'v6' }],
  ['armv6l', { architecture: 'arm', variant: 'v6' }],
  ['armv6', { architecture: 'arm', variant: 'v6' }],
  // 32-bit userland on an ARMv8 CPU (uname -m under linux32).
  ['armv8l', { architecture: 'arm', variant: 'v8' }],
  ['i386', { architecture: '386' }],
  ['i486', { architecture: '386' }],
  ['i586', { architecture: '386' }],
  ['i686', { architecture: '386' }],
  ['ppc64el', { architecture: 'ppc64le' }],
  ['loongarch64', { architecture: 'loong64' }],
  ['mips64el', { architecture: 'mips64le' }],
  ['mipsel', { architecture: 'mipsle' }],
]);

const NODE_OS: ReadonlyMap<string, string> = new Map([
  ['linux', 'linux'],
  ['darwin', 'darwin'],
  ['win32', 'windows'],
  ['freebsd', 'freebsd'],
  ['openbsd', 'openbsd'],
  ['netbsd', 'netbsd'],
  ['aix', 'aix'],
  ['sunos', 'solaris'],
  ['android', 'android'],
]);

const NODE_ARCH: ReadonlyMap<string, string> = new Map([
  ['x64', 'amd64'],
  ['arm64', 'arm64'],
  ['arm', 'arm'],
  ['ia32', '386'],
  ['s390x', 's390x'],
  ['riscv64', 'riscv64'],
  ['loong64', 'loong64'],
  ['mips', 'mips'],
  ['mipsel', 'mipsle'],
]);

const PART_NAMES = ['os', 'architecture', 'variant'] as const;

type Resolved<T> = { ok: true; value: T } | { ok: false; problem: string };

/**
 * Parses `os/arch[/variant]`, or a bare `arch` meaning Linux (`arm64`), and
 * normalises it. Anything unknown is a PlatformError naming the text.
 */
export function parsePlatform(text: string): Platform {
  const fail = (reason: string): never => {
    throw new PlatformError(text, reason);
  };
  const trimmed = text.trim();
  if (trimmed === '') return fail('empty');
  if (/\s/.test(trimmed)) return fail('contains whitespace');

  const parts = trimmed.split('/');
  if (parts.length > 3) return fail('too many parts (expected os/arch[/variant])');
  parts.forEach((part, i) => {
    if (part === '') fail(`empty ${PART_NAMES[i] ?? 'part'}`);
  });

  let os = 'linux';
  let arch: string;
  let variant: string | undefined;
  if (parts.length === 1) {
    arch = parts[0] ?? '';
    if (KNOWN_OS.has(resolveOsName(arch))) {
      return fail(`"${arch}" is an OS, not an architecture (expected os/arch, e.g. linux/amd64)`);
    }
  } else {
    const osPart = parts[0] ?? '';
    os = resolveOsName(osPart);
    if (!KNOWN_OS.has(os)) {
      const hint = KNOWN_ARCH.has(resolveArchName(osPart).architecture)
        ? ' (expected os/arch, e.g. linux/arm64)'
        : '';
      return fail(`unknown OS "${osPart}"${hint}`);
    }
    arch = parts[1] ?? '';
    variant = parts[2];
  }

  const resolved = resolveArch(arch, variant);
  if (!resolved.ok) return fail(resolved.problem);
  return makePlatform(os, resolved.value.architecture, resolved.value.variant);
}

/**
 * Parses a `--platform` list such as `linux/amd64, linux/arm64`. Empty
 * entries and entries naming the same platform twice are errors.
 */
export function parsePlatforms(csv: string): Platform[] {
  const entries = csv.split(',').map((entry) => entry.trim());
  if (entries.length === 1 && entries[0] === '') throw new PlatformError(csv, 'empty');
  const seen = new Map<string, string>();
  return entries.map((entry, i) => {
    if (entry === '') throw new PlatformError(csv, `entry ${i + 1} is empty`);
    const platform = parsePlatform(entry);
    const key = formatPlatform(platform);
    const earlier = seen.get(key);
    if (earlier !== undefined) {
      const same = earlier === entry ? 'is listed twice' : `is the same platform as "${earlier}"`;
      throw new PlatformError(csv, `"${entry}" ${same} (${key})`);
    }
    seen.set(key, entry);
    return platform;
  });
}

/**
 * Normalises a platform read from an image config or index entry. Unlike
 * parsePlatform it accepts architectures and variants it does not know
 * (attestation entries say `unknown/unknown`), so foreign images still load.
 */
export function normalizePlatform(p: Platform): Platform {
  const os = resolveOsName(p.os);
  const givenVariant = p.variant === undefined || p.variant === '' ? undefined : p.variant;
  const resolved = resolveArch(p.architecture, givenVariant);
  const alias = resolveArchName(p.architecture);
  const platform = resolved.ok
    ? makePlatform(os, resolved.value.architecture, resolved.value.variant)
    : makePlatform(os, alias.architecture, givenVariant?.toLowerCase() ?? alias.variant);
  if (p.osVersion) platform.osVersion = p.osVersion;
  if (p.osFeatures && p.osFeatures.length > 0) platform.osFeatures = [...p.osFeatures];
  return platform;
}

/** `linux/arm64`, `linux/arm/v7`, `windows/amd64`: normalised, without os.version. */
export function formatPlatform(p: Platform): string {
  const n = normalizePlatform(p);
  return `${n.os}/${n.architecture}${n.variant !== undefined ? `/${n.variant}` : ''}`;
}

/**
 * Same platform after normalisation. os.version is compared only when both
 * sides have one, os.features (as sets) only when both sides list some.
 */
export function platformsEqual(a: Platform, b: Platform): boolean {
  const x = normalizePlatform(a);
  const y = normalizePlatform(b);
  if (formatPlatform(x) !== formatPlatform(y)) return false;
  if (x.osVersion !== undefined && y.osVersion !== undefined && x.osVersion !== y.osVersion) {
    return false;
  }
  if (x.osFeatures !== undefined && y.osFeatures !== undefined) {
    const left = new Set(x.osFeatures);
    const right = new Set(y.osFeatures);
    return left.size === right.size && [...left].every((feature) => right.has(feature));
  }
  return true;
}

/**
 * Whether an image for `offered` serves a request for `wanted`: same os,
 * architecture and variant after normalisation (so arm64 matches arm64/v8);
 * when both name an os.version, the same Windows build (major.minor.build);
 * every os.feature wanted is offered.
 */
export function platformMatches(wanted: Platform, offered: Platform): boolean {
  const w = normalizePlatform(wanted);
  const o = normalizePlatform(offered);
  if (formatPlatform(w) !== formatPlatform(o)) return false;
  if (w.osVersion !== undefined && o.osVersion !== undefined) {
    if (windowsBuild(w.osVersion) !== windowsBuild(o.osVersion)) return false;
  }
  const features = new Set(o.osFeatures ?? []);
  return (w.osFeatures ?? []).every((feature) => features.has(feature));
}

/**
 * Reads the platform object of an image config or index entry. `os` and
 * `architecture` must be present; the rest is normalised leniently.
 */
export function platformFromOci(obj: {
  os?: string;
  architecture?: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
}): Platform {
  const fail = (reason: string): never => {
    throw new PlatformError(JSON.stringify(obj), reason);
  };
  const { os, architecture, variant } = obj;
  if (typeof os !== 'string' || os === '') return fail('missing "os"');
  if (typeof architecture !== 'string' || architecture === '') {
    return fail('missing "architecture"');
  }
  if (variant !== undefined && typeof variant !== 'string')
    return fail('"variant" is not a string');
  const osVersion = obj['os.version'];
  if (osVersion !== undefined && typeof osVersion !== 'string') {
    return fail('"os.version" is not a string');
  }
  const osFeatures = obj['os.features'];
  if (
    osFeatures !== undefined &&
    (!Array.isArray(osFeatures) || !osFeatures.every((f) => typeof f === 'string'))
  ) {
    return fail('"os.features" is not a list of strings');
  }
  return normalizePlatform({
    os,
    architecture,
    ...(variant !== undefined && { variant }),
    ...(osVersion !== undefined && { osVersion }),
    ...(osFeatures !== undefined && { osFeatures }),
  });
}

/**
 * The normalised platform as OCI JSON, keys always in the order
 * architecture, os, os.version, os.features, variant so index bytes are
 * deterministic.
 */
export function platformToOci(p: Platform): OciPlatform {
  const n = normalizePlatform(p);
  const oci: OciPlatform = { architecture: n.architecture, os: n.os };
  if (n.osVersion !== undefined) oci['os.version'] = n.osVersion;
  if (n.osFeatures !== undefined) oci['os.features'] = [...n.osFeatures];
  if (n.variant !== undefined) oci.variant = n.variant;
  return oci;
}

/**
 * The platform this Node.js process runs on. Node does not report the ARM
 * variant, so `arm` is containerd's default arm/v7; `ppc64` is told apart
 * from `ppc64le` by byte order.
 */
export function hostPlatform(
  nodeArch: string = process.arch,
  nodePlatform: string = process.platform,
  byteOrder: 'BE' | 'LE' = endianness(),
): Platform {
  const text = `${nodePlatform}/${nodeArch}`;
  const os = NODE_OS.get(nodePlatform);
  if (os === undefined)
    throw new PlatformError(text, `unsupported Node.js platform "${nodePlatform}"`);
  const arch =
    nodeArch === 'ppc64' ? (byteOrder === 'LE' ? 'ppc64le' : 'ppc64') : NODE_ARCH.get(nodeArch);
  if (arch === undefined) {
    throw new PlatformError(text, `unsupported Node.js architecture "${nodeArch}"`);
  }
  return normalizePlatform({ os, architecture: arch });
}

/** The Linux platform for a `uname -m` machine name (`x86_64`, `aarch64`, `armv7l`, …). */
export function unameToPlatform(machine: string): Platform {
  const name = machine.trim().toLowerCase();
  if (name === '') throw new PlatformError(machine, 'empty');
  // uname says mips/mips64 on both byte orders: guessing would mislabel images.
  if (name === 'mips' || name === 'mips64') {
    throw new PlatformError(machine, `byte order of "${name}" is unknown`);
  }
  const resolved = resolveArch(name, undefined);
  if (!resolved.ok) throw new PlatformError(machine, resolved.problem);
  return makePlatform('linux', resolved.value.architecture, resolved.value.variant);
}

function makePlatform(os: string, architecture: string, variant: string | undefined): Platform {
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

function resolveOsName(os: string): string {
  const lower = os.toLowerCase();
  return OS_ALIASES.get(lower) ?? lower;
}

function resolveArchName(arch: string): { architecture: string; variant?: string } {
  const lower = arch.toLowerCase();
  return ARCH_ALIASES.get(lower) ?? { architecture: lower };
}

/** Canonical architecture and variant, or why they are not a known pair. */
function resolveArch(
  arch: string,
  variant: string | undefined,
): Resolved<{ architecture: string; variant?: string }> {
  const alias = resolveArchName(arch);
  const { architecture } = alias;
  if (!KNOWN_ARCH.has(architecture))
    return { ok: false, problem: `unknown architecture "${arch}"` };

  const given = variant?.toLowerCase();
  const normalized = normalizeVariant(architecture, given ?? alias.variant);
  if (!normalized.ok) return normalized;
  if (alias.variant !== undefined && given !== undefined && normalized.value !== alias.variant) {
    return {
      ok: false,
      problem: `"${arch}" means ${architecture}/${alias.variant}, not variant "${variant}"`,
    };
  }
  return { ok: true, value: makeArch(architecture, normalized.value) };
}

function makeArch(architecture: string, variant: string | undefined) {
  return variant === undefined ? { architecture } : { architecture, variant };
}

/** The stored variant (undefined for a default one), per containerd's rules. */
function normalizeVariant(
  architecture: string,
  variant: string | undefined,
): Resolved<string | undefined> {
  const unknown = (): Resolved<string | undefined> => ({
    ok: false,
    problem: `unknown variant "${variant}" for ${architecture}`,
  });
  switch (architecture) {
    case 'amd64':
      if (variant === undefined || variant === 'v1') return { ok: true, value: undefined };
      return /^v[234]$/.test(variant) ? { ok: true, value: variant } : unknown();
    case 'arm': {
      if (variant === undefined) return { ok: true, value: 'v7' };
      const match = /^v?([5-8])$/.exec(variant);
      return match ? { ok: true, value: `v${match[1]}` } : unknown();
    }
    case 'arm64': {
      if (variant === undefined) return { ok: true, value: undefined };
      const match = /^v?([89])(?:\.(\d))?$/.exec(variant);
      if (!match) return unknown();
      const [, major, minor] = match;
      if (minor === undefined || minor === '0') {
        return { ok: true, value: major === '8' ? undefined : `v${major}` };
      }
      return { ok: true, value: `v${major}.${minor}` };
    }
    default:
      if (variant === undefined) return { ok: true, value: undefined };
      return { ok: false, problem: `${architecture} has no variant "${variant}"` };
  }
}

/** major.minor.build of a Windows os.version; the revision does not change compatibility. */
function windowsBuild(osVersion: string): string {
  return osVersion.split('.').slice(0, 3).join('.');
}
