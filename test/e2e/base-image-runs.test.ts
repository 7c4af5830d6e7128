import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_PLATFORMS, platformString, pushBaseImage } from '../support/base-image.js';
import { requireCommand, requireEngine, requireQemu } from '../support/components.js';
import { run } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

const QEMU_HANDLER: Record<string, string> = {
  arm64: 'qemu-aarch64',
  arm: 'qemu-arm',
  ppc64le: 'qemu-ppc64le',
  s390x: 'qemu-s390x',
};

describe('the real engine runs the base image of every platform (natively or under QEMU)', () => {
  let registry: TestRegistry;
  let docker: string;
  let image: string;

  beforeAll(async () => {
    await requireEngine();
    for (const handler of Object.values(QEMU_HANDLER)) await requireQemu(handler);
    docker = await requireCommand('docker', 'docker.io');
    registry = await startRegistry();
    image = `${registry.host}/braid-test/busybox:latest`;
    await pushBaseImage(registry.host, 'braid-test/busybox', 'latest');
  });
  afterAll(async () => {
    if (docker && image) await run(docker, ['image', 'rm', '--force', image]);
    await registry?.stop();
  });

  it.each(BASE_PLATFORMS.map((p) => [platformString(p), p] as const))(
    'docker pull --platform %s + docker run prints the right uname -m',
    async (name, platform) => {
      const pull = await run(docker, ['pull', '--quiet', '--platform', name, image]);
      expect(pull.code, pull.stderr).toBe(0);
      const inspect = await run(docker, [
        'image',
        'inspect',
        '--format',
        '{{.Architecture}}',
        image,
      ]);
      expect(inspect.stdout.trim()).toBe(platform.architecture);
      const uname = await run(docker, [
        'run',
        '--rm',
        '--network',
        'none',
        '--platform',
        name,
        image,
        'uname',
        '-m',
      ]);
      expect(uname.code, uname.stderr).toBe(0);
      expect(uname.stdout.trim()).toBe(platform.unameMachine);
    },
  );
});
