import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EmulatedPlatform } from '../../src/agent/capabilities.js';
import {
  EmulatorVersions,
  localVersionProbe,
  parseQemuVersion,
  type VersionProbe,
} from '../../src/agent/emulator-version.js';

const arm64: EmulatedPlatform = {
  platform: { os: 'linux', architecture: 'arm64' },
  handler: 'qemu-aarch64',
  interpreter: '/usr/libexec/qemu-binfmt/aarch64-binfmt-P',
};
const s390x: EmulatedPlatform = {
  platform: { os: 'linux', architecture: 's390x' },
  handler: 'qemu-s390x',
  interpreter: '/usr/libexec/qemu-binfmt/s390x-binfmt-P',
};
const debianOutput =
  'qemu-aarch64 version 7.2.0 (Debian 1:7.2+dfsg-7+deb12u7)\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n';

/** A probe that answers from a table and counts its calls. */
function fakeProbe(answers: Record<string, string | Error>): VersionProbe & { calls: string[] } {
  const calls: string[] = [];
  const probe = async (interpreter: string, handler: string): Promise<string> => {
    calls.push(`${handler} ${interpreter}`);
    const answer = answers[handler];
    if (answer instanceof Error) throw answer;
    return answer ?? '';
  };
  return Object.assign(probe, { calls });
}

describe('parseQemuVersion', () => {
  it('keeps the version and the distribution build that qemu prints', () => {
    expect(parseQemuVersion(debianOutput)).toBe('7.2.0 (Debian 1:7.2+dfsg-7+deb12u7)');
  });

  it('reads an upstream build that names no distribution', () => {
    expect(parseQemuVersion('qemu-s390x version 8.1.3\nCopyright ...\n')).toBe('8.1.3');
    expect(parseQemuVersion('qemu-riscv64 version 9.0.0-rc1 (v9.0.0-rc1-dirty)\n')).toBe(
      '9.0.0-rc1 (v9.0.0-rc1-dirty)',
    );
  });

  it('gives nothing for output that names no version', () => {
    expect(parseQemuVersion('')).toBe('');
    expect(parseQemuVersion('qemu: has to be run using kernel binfmt-misc subsystem\n')).toBe('');
  });
});

describe('EmulatorVersions', () => {
  it("asks each handler's interpreter once, however many jobs want it", async () => {
    const probe = fakeProbe({
      'qemu-aarch64': debianOutput,
      'qemu-s390x': 'qemu-s390x version 7.2.0\n',
    });
    const versions = new EmulatorVersions([arm64, s390x], probe);
    const answers = await Promise.all([
      versions.versionFor(arm64.platform),
      versions.versionFor({ os: 'linux', architecture: 'arm64', variant: 'v8' }),
      versions.versionFor(s390x.platform),
    ]);
    expect(answers).toEqual([
      '7.2.0 (Debian 1:7.2+dfsg-7+deb12u7)',
      '7.2.0 (Debian 1:7.2+dfsg-7+deb12u7)',
      '7.2.0',
    ]);
    expect(await versions.versionFor(arm64.platform)).toBe('7.2.0 (Debian 1:7.2+dfsg-7+deb12u7)');
    expect(probe.calls).toEqual([
      'qemu-aarch64 /usr/libexec/qemu-binfmt/aarch64-binfmt-P',
      'qemu-s390x /usr/libexec/qemu-binfmt/s390x-binfmt-P',
    ]);
  });

  it('answers empty, and never rejects, when the interpreter fails or hangs', async () => {
    const hang: VersionProbe = () => new Promise(() => undefined);
    const failing = new EmulatorVersions(
      [arm64],
      fakeProbe({ 'qemu-aarch64': new Error('ENOENT') }),
    );
    expect(await failing.versionFor(arm64.platform)).toBe('');
    const hanging = new EmulatorVersions([arm64], hang, undefined, 20);
    expect(await hanging.versionFor(arm64.platform)).toBe('');
  });

  it('answers empty for a platform it does not emulate, an entry without interpreter, or remote handlers', async () => {
    const probe = fakeProbe({ 'qemu-aarch64': debianOutput });
    const bare = { ...s390x, interpreter: undefined };
    const versions = new EmulatorVersions([arm64, bare], probe);
    expect(await versions.versionFor({ os: 'linux', architecture: 'ppc64le' })).toBe('');
    expect(await versions.versionFor(s390x.platform)).toBe('');
    const remote = new EmulatorVersions([arm64], undefined);
    expect(await remote.versionFor(arm64.platform)).toBe('');
    expect(probe.calls).toEqual([]);
  });
});

describe('localVersionProbe', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-qemu-probe-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function script(name: string, body: string): Promise<string> {
    const path = join(dir, name);
    await writeFile(path, `#!/bin/sh\n${body}\n`);
    await chmod(path, 0o755);
    return path;
  }

  it('runs the interpreter with --version under the handler name and returns what it printed', async () => {
    // Like Debian's *-binfmt-P, refuse to run under its own file name.
    const path = await script(
      'aarch64-binfmt-P',
      'case "$1" in --version) echo "qemu-aarch64 version 7.2.0 (Debian 1:7.2+dfsg-7+deb12u7)";; *) exit 3;; esac',
    );
    expect(parseQemuVersion(await localVersionProbe()(path, 'qemu-aarch64'))).toBe(
      '7.2.0 (Debian 1:7.2+dfsg-7+deb12u7)',
    );
  });

  it('rejects on a non-zero exit, a missing file and a deadline', async () => {
    const failing = await script(
      'fails',
      'echo "has to be run using kernel binfmt-misc subsystem" >&2; exit 1',
    );
    await expect(localVersionProbe()(failing, 'qemu-s390x')).rejects.toThrow(/exited 1/);
    await expect(localVersionProbe()(join(dir, 'absent'), 'qemu-s390x')).rejects.toThrow(/ENOENT/);
    const slow = await script('slow', 'exec sleep 5');
    await expect(localVersionProbe(50)(slow, 'qemu-s390x')).rejects.toThrow(/within 50 ms/);
  });
});
