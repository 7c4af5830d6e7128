/**
 * `--annotation` on the farm, as buildx places them: on the index, on every
 * (or one platform's) manifest, and on the manifests' descriptors in the
 * index — read back by skopeo, not by braid's own parser.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { braid } from '../support/braid-cli.js';
import { requireCommand, requireEngine, requireQemu } from '../support/components.js';
import {
  startTestAgent,
  startTestCoordinator,
  waitForAgents,
  type TestAgent,
  type TestCoordinator,
} from '../support/farm.js';
import { run } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

interface Descriptor {
  digest: string;
  platform?: { architecture: string };
  annotations?: Record<string, string>;
}

describe('--annotation on the farm', () => {
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let agent: TestAgent;
  let skopeo: string;
  let dir: string;

  beforeAll(async () => {
    await requireEngine();
    await requireQemu('qemu-aarch64');
    skopeo = await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    coordinator = await startTestCoordinator();
    agent = await startTestAgent(coordinator.address, 'n1', ['--capacity', '2']);
    await waitForAgents(coordinator.address, ['n1']);
    dir = await mkdtemp(join(tmpdir(), 'braid-annotations-'));
    await writeFile(
      join(dir, 'Dockerfile'),
      `FROM ${registry.host}/base/busybox:latest\nRUN uname -m > /arch\n`,
    );
  }, 600_000);

  afterAll(async () => {
    await agent?.stop();
    await coordinator?.stop();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function raw(ref: string): Promise<Record<string, unknown>> {
    const inspected = await run(skopeo, [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${ref}`,
    ]);
    expect(inspected.code, inspected.stderr).toBe(0);
    return JSON.parse(inspected.stdout) as Record<string, unknown>;
  }

  it('puts each annotation where its type says, and only on the platform it names', async () => {
    const tag = `${registry.host}/team/annotated:1`;
    const built = await braid(
      [
        'build',
        dir,
        '-t',
        tag,
        '--platform',
        'linux/amd64,linux/arm64',
        '--annotation',
        'index:org.opencontainers.image.title=braid annotated',
        '--annotation',
        'org.opencontainers.image.vendor=team',
        '--annotation',
        'manifest-descriptor[linux/arm64]:com.example.arm=yes',
        '--annotation',
        'manifest[linux/amd64]:com.example.only-amd64=1',
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(built.code, built.stderr).toBe(0);

    const index = (await raw(tag)) as {
      annotations?: Record<string, string>;
      manifests: Descriptor[];
    };
    expect(index.annotations).toEqual({ 'org.opencontainers.image.title': 'braid annotated' });
    const byArch = new Map(index.manifests.map((d) => [d.platform?.architecture, d]));
    expect(byArch.get('arm64')?.annotations).toEqual({ 'com.example.arm': 'yes' });
    expect(byArch.get('amd64')?.annotations).toBeUndefined();

    const amd64 = (await raw(`${registry.host}/team/annotated@${byArch.get('amd64')?.digest}`)) as {
      annotations?: Record<string, string>;
    };
    const arm64 = (await raw(`${registry.host}/team/annotated@${byArch.get('arm64')?.digest}`)) as {
      annotations?: Record<string, string>;
    };
    expect(amd64.annotations).toEqual({
      'com.example.only-amd64': '1',
      'org.opencontainers.image.vendor': 'team',
    });
    expect(arm64.annotations).toEqual({ 'org.opencontainers.image.vendor': 'team' });
  });
});
