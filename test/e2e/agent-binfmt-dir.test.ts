/**
 * An agent in a container cannot see its host's QEMU handlers under its own
 * /proc; --binfmt-dir points it at the host's binfmt_misc mounted elsewhere.
 * Here the directory is one the test writes: the agent offers exactly what it
 * lists (enabled, F flag), and a build for that platform runs under the host's
 * real handler.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { braid } from '../support/braid-cli.js';
import { requireEngine, requireQemu } from '../support/components.js';
import {
  startTestAgent,
  startTestCoordinator,
  waitForAgents,
  type TestAgent,
  type TestCoordinator,
} from '../support/farm.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

const handler = (state: 'enabled' | 'disabled', flags: string) =>
  `${state}\ninterpreter /usr/libexec/qemu-binfmt/x-binfmt-P\nflags: ${flags}\noffset 0\nmagic 7f454c46\nmask ffffffff\n`;

describe('an agent reading QEMU handlers from --binfmt-dir', () => {
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let agent: TestAgent | undefined;
  let dir: string;

  beforeAll(async () => {
    await requireEngine();
    await requireQemu('qemu-s390x');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base', 'latest');
    dir = await mkdtemp(join(tmpdir(), 'braid-binfmt-'));
    const binfmt = join(dir, 'binfmt_misc');
    await mkdir(binfmt);
    await writeFile(join(binfmt, 'qemu-s390x'), handler('enabled', 'PF'));
    await writeFile(join(binfmt, 'qemu-aarch64'), handler('disabled', 'PF'));
    await writeFile(join(binfmt, 'qemu-ppc64le'), handler('enabled', 'P'));
    await writeFile(join(binfmt, 'status'), 'enabled\n');
    await mkdir(join(dir, 'ctx'));
    await writeFile(
      join(dir, 'ctx', 'Dockerfile'),
      'ARG BASE\nFROM ${BASE}\nRUN uname -m > /arch\n',
    );
    coordinator = await startTestCoordinator();
    agent = await startTestAgent(coordinator.address, 'boxed', ['--binfmt-dir', binfmt]);
    await waitForAgents(coordinator.address, ['boxed']);
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await coordinator?.stop();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('offers only the enabled handlers with the F flag that the directory lists', async () => {
    const listed = await braid([
      'agents',
      '--coordinator',
      coordinator.address,
      '--output',
      'json',
    ]);
    expect(listed.code, listed.stderr).toBe(0);
    const [boxed] = listed.stdout
      .split('\n')
      .filter(Boolean)
      .map(
        (line) =>
          JSON.parse(line) as { name: string; emulated: { platform: string; handler: string }[] },
      );
    expect(boxed?.name).toBe('boxed');
    expect(boxed?.emulated).toEqual([{ platform: 'linux/s390x', handler: 'qemu-s390x' }]);
  });

  it('builds the platform it offers under the host handler, and refuses one it does not', async () => {
    const build = (platform: string) =>
      braid(
        [
          'build',
          join(dir, 'ctx'),
          '-t',
          `${registry.host}/boxed/app:1`,
          '--platform',
          platform,
          '--build-arg',
          `BASE=${registry.host}/base:latest`,
          '--no-cache',
          '--progress',
          'plain',
          '--coordinator',
          coordinator.address,
        ],
        { timeoutMs: 180_000 },
      );
    const s390x = await build('linux/s390x');
    expect(s390x.code, s390x.stderr).toBe(0);
    expect(s390x.stderr).toContain('emulating on agent boxed via qemu-s390x');
    // --no-cache: the RUN step really ran, under the host's qemu-s390x.
    expect(s390x.stderr).toMatch(/\[linux\/s390x\] \[2\/2\] RUN uname -m > \/arch(?! CACHED)/);
    expect(s390x.stderr).toContain('verified linux/s390x');
    const arm64 = await build('linux/arm64');
    expect(arm64.code).not.toBe(0);
    expect(arm64.stderr).toContain('linux/arm64');
  });
});
