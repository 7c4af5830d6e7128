import { describe, expect, it } from 'vitest';
import {
  emulatedPlatforms,
  nativePlatform,
  type BinfmtReader,
} from '../../src/agent/capabilities.js';
import { formatPlatform } from '../../src/oci/platform.js';

function fakeBinfmt(entries: Record<string, string>): BinfmtReader {
  return {
    list: async () => Object.keys(entries),
    read: async (name) => entries[name] ?? '',
  };
}

const enabledF =
  'enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n';

describe('agent capabilities', () => {
  it('reads the native platform from the engine as uname names it', () => {
    expect(nativePlatform({ os: 'linux', architecture: 'x86_64' })).toEqual({
      os: 'linux',
      architecture: 'amd64',
    });
    expect(formatPlatform(nativePlatform({ os: 'linux', architecture: 'aarch64' }))).toBe(
      'linux/arm64',
    );
  });

  it('offers every enabled QEMU handler with the F flag, and skips disabled or F-less ones', async () => {
    const emulated = await emulatedPlatforms(
      { os: 'linux', architecture: 'amd64' },
      fakeBinfmt({
        'qemu-aarch64': enabledF,
        'qemu-arm': enabledF,
        'qemu-s390x': 'disabled\nflags: PF\n',
        'qemu-ppc64le': 'enabled\nflags: P\n',
        'qemu-riscv64': enabledF,
        'python3.11': enabledF,
        status: 'enabled\n',
      }),
    );
    expect(emulated.map((e) => `${formatPlatform(e.platform)}=${e.handler}`)).toEqual([
      'linux/arm64=qemu-aarch64',
      'linux/arm/v7=qemu-arm',
      'linux/arm/v6=qemu-arm',
      'linux/riscv64=qemu-riscv64',
    ]);
  });

  it('does not offer its own platform as emulated', async () => {
    const emulated = await emulatedPlatforms(
      { os: 'linux', architecture: 'arm64' },
      fakeBinfmt({ 'qemu-aarch64': enabledF, 'qemu-x86_64': enabledF }),
    );
    expect(emulated.map((e) => formatPlatform(e.platform))).toEqual(['linux/amd64']);
  });

  it("keeps each handler's interpreter, for asking its QEMU version", async () => {
    const emulated = await emulatedPlatforms(
      { os: 'linux', architecture: 'amd64' },
      fakeBinfmt({
        'qemu-aarch64': enabledF,
        'qemu-s390x': 'enabled\nflags: F\n',
      }),
    );
    expect(emulated).toEqual([
      {
        platform: { os: 'linux', architecture: 'arm64' },
        handler: 'qemu-aarch64',
        interpreter: '/usr/libexec/qemu-binfmt/aarch64-binfmt-P',
      },
      { platform: { os: 'linux', architecture: 's390x' }, handler: 'qemu-s390x' },
    ]);
  });
});
