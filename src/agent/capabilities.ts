/**
 * What an agent can build: the engine's own platform, and the platforms its
 * host emulates through QEMU binfmt_misc handlers registered with the F
 * flag (so they work inside build containers).
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatPlatform, platformsEqual, unameToPlatform, type Platform } from '../oci/platform.js';

export const BINFMT_DIR = '/proc/sys/fs/binfmt_misc';

/** QEMU user-mode handler names and the platforms each runs. */
const QEMU_HANDLERS: Record<string, Platform[]> = {
  'qemu-x86_64': [{ os: 'linux', architecture: 'amd64' }],
  'qemu-i386': [{ os: 'linux', architecture: '386' }],
  'qemu-aarch64': [{ os: 'linux', architecture: 'arm64' }],
  'qemu-arm': [
    { os: 'linux', architecture: 'arm', variant: 'v7' },
    { os: 'linux', architecture: 'arm', variant: 'v6' },
  ],
  'qemu-ppc64le': [{ os: 'linux', architecture: 'ppc64le' }],
  'qemu-s390x': [{ os: 'linux', architecture: 's390x' }],
  'qemu-riscv64': [{ os: 'linux', architecture: 'riscv64' }],
  'qemu-mips64el': [{ os: 'linux', architecture: 'mips64le' }],
  'qemu-loongarch64': [{ os: 'linux', architecture: 'loong64' }],
};

export interface EmulatedPlatform {
  platform: Platform;
  handler: string;
  /** The entry's `interpreter` path (e.g. /usr/libexec/qemu-binfmt/aarch64-binfmt-P), when it names one. */
  interpreter?: string;
}

export interface BinfmtReader {
  list(): Promise<string[]>;
  read(name: string): Promise<string>;
}

/**
 * The handlers of an engine host nobody can read from here (a tcp:// engine
 * on another machine): none. This host's handlers are not that host's, and
 * advertising them would draw emulated jobs the engine cannot run.
 */
export const NO_BINFMT: BinfmtReader = {
  list: () => Promise.resolve([]),
  read: (name) => Promise.reject(new Error(`no binfmt entry ${name}`)),
};

export function binfmtReader(dir = BINFMT_DIR): BinfmtReader {
  return {
    list: () => readdir(dir).catch(() => []),
    read: (name) => readFile(join(dir, name), 'utf8'),
  };
}

/** Emulated platforms: enabled QEMU handlers with the F (fix binary) flag, minus the native one. */
export async function emulatedPlatforms(
  native: Platform,
  reader: BinfmtReader = binfmtReader(),
): Promise<EmulatedPlatform[]> {
  const found: EmulatedPlatform[] = [];
  for (const name of (await reader.list()).sort()) {
    const platforms = QEMU_HANDLERS[name];
    if (!platforms) continue;
    let text: string;
    try {
      text = await reader.read(name);
    } catch {
      continue;
    }
    if (!/^enabled$/m.test(text) || !/^flags: .*F/m.test(text)) continue;
    const interpreter = /^interpreter (.+)$/m.exec(text)?.[1]?.trim();
    for (const platform of platforms) {
      if (!platformsEqual(platform, native))
        found.push({ platform, handler: name, ...(interpreter && { interpreter }) });
    }
  }
  return found;
}

/** The engine's platform from its /info (`OSType`, `Architecture` as uname prints it). */
export function nativePlatform(info: { os: string; architecture: string }): Platform {
  const platform = unameToPlatform(info.architecture);
  return { ...platform, os: info.os || platform.os };
}

export function describeCapabilities(
  native: Platform,
  emulated: readonly EmulatedPlatform[],
): string {
  const emu = emulated.map((e) => `${formatPlatform(e.platform)} (${e.handler})`).join(', ');
  return `native ${formatPlatform(native)}${emu ? `; emulated ${emu}` : ''}`;
}
