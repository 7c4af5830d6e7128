/**
 * The farm most e2e suites build on: one box, one agent on the local
 * engine (its native amd64, other platforms under QEMU), a coordinator, a
 * registry holding the multi-arch busybox base image, and a context dir
 * whose Dockerfile runs a step on the base (`RUN uname -m > /arch`). Every
 * part is checked first (a missing one fails naming it) and stopped by
 * `stop()`.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pushBaseImage } from './base-image.js';
import { requireCommand, requireEngine, requireQemu } from './components.js';
import {
  startTestAgent,
  startTestCoordinator,
  waitForAgents,
  type TestAgent,
  type TestCoordinator,
} from './farm.js';
import { run } from './process.js';
import { startRegistry, type TestRegistry } from './registry.js';

export interface OneBoxFarm {
  registry: TestRegistry;
  coordinator: TestCoordinator;
  agent: TestAgent;
  /** skopeo on PATH. */
  skopeo: string;
  /** The build context: a Dockerfile `FROM <registry>/base/busybox:latest` + `RUN uname -m > /arch`. */
  dir: string;
  /** `skopeo inspect --raw` of `ref`, parsed; throws naming skopeo's error. */
  raw<T>(ref: string): Promise<T>;
  stop(): Promise<void>;
}

export async function startOneBoxFarm(options: {
  /** The QEMU binfmt handler the suite's emulated platform needs, e.g. `qemu-s390x`. */
  qemu: string;
  agentName: string;
  coordinatorArgs?: string[];
  /** Prefix of the context's temp dir. */
  name: string;
}): Promise<OneBoxFarm> {
  await requireEngine();
  await requireQemu(options.qemu);
  const skopeo = await requireCommand('skopeo', 'skopeo');
  const parts: Partial<OneBoxFarm> = { skopeo };
  const stop = async () => {
    await parts.agent?.stop();
    await parts.coordinator?.stop();
    await parts.registry?.stop();
    if (parts.dir) await rm(parts.dir, { recursive: true, force: true });
  };
  try {
    const registry = await startRegistry();
    parts.registry = registry;
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    parts.coordinator = await startTestCoordinator('127.0.0.1:0', options.coordinatorArgs ?? []);
    parts.agent = await startTestAgent(parts.coordinator.address, options.agentName, [
      '--capacity',
      '2',
    ]);
    await waitForAgents(parts.coordinator.address, [options.agentName]);
    parts.dir = await mkdtemp(join(tmpdir(), `braid-${options.name}-`));
    await writeFile(
      join(parts.dir, 'Dockerfile'),
      `FROM ${registry.host}/base/busybox:latest\nRUN uname -m > /arch\n`,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    ...(parts as Omit<OneBoxFarm, 'raw' | 'stop'>),
    async raw<T>(ref: string): Promise<T> {
      const inspected = await run(skopeo, [
        'inspect',
        '--raw',
        '--tls-verify=false',
        `docker://${ref}`,
      ]);
      if (inspected.code !== 0) {
        throw new Error(
          `skopeo inspect --raw ${ref} exited ${inspected.code}: ${inspected.stderr}`,
        );
      }
      return JSON.parse(inspected.stdout) as T;
    },
    stop,
  };
}
