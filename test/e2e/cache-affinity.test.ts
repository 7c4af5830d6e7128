/**
 * Cache-aware scheduling on a real farm: a coordinator and two agent
 * processes on the local engine. Both agents share the one engine here, so
 * they report the same engine id; affinity follows the agent that built the
 * lineage (agent name and engine id both match its record), which is what
 * these tests observe through `braid status`.
 */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pushBaseImage } from '../support/base-image.js';
import { braid } from '../support/braid-cli.js';
import { requireEngine } from '../support/components.js';
import {
  startTestAgent,
  startTestCoordinator,
  waitForAgents,
  type TestAgent,
  type TestCoordinator,
} from '../support/farm.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

const EXAMPLE = fileURLToPath(new URL('../../examples/hello', import.meta.url));

interface StatusJson {
  state: string;
  jobs: {
    platform: string;
    state: string;
    agent: string | null;
    placementReason: string | null;
    placementDetail: string | null;
  }[];
}

interface Farm {
  registry: TestRegistry;
  coordinator: TestCoordinator;
  agents: TestAgent[];
  dir: string;
  base: string;
}

async function startFarm(coordinatorArgs: string[]): Promise<Farm> {
  await requireEngine();
  const registry = await startRegistry();
  const farm: Farm = {
    registry,
    coordinator: undefined as unknown as TestCoordinator,
    agents: [],
    dir: '',
    base: `${registry.host}/base/busybox:latest`,
  };
  await pushBaseImage(registry.host, 'base/busybox', 'latest');
  farm.coordinator = await startTestCoordinator('127.0.0.1:0', coordinatorArgs);
  farm.dir = await mkdtemp(join(tmpdir(), 'braid-affinity-'));
  await cp(EXAMPLE, farm.dir, { recursive: true });
  return farm;
}

async function stopFarm(farm: Farm | undefined): Promise<void> {
  if (!farm) return;
  for (const agent of farm.agents) await agent.stop();
  await farm.coordinator?.stop();
  await farm.registry?.stop();
  if (farm.dir) await rm(farm.dir, { recursive: true, force: true });
}

/** `braid build` of the example for linux/amd64; returns the build id. */
async function build(farm: Farm, tag: string): Promise<string> {
  const metadataFile = `${farm.dir}.metadata.json`;
  const result = await braid(
    [
      'build',
      farm.dir,
      '-t',
      tag,
      '--platform',
      'linux/amd64',
      '--build-arg',
      `BASE=${farm.base}`,
      '--build-arg',
      'WORK=10',
      '--metadata-file',
      metadataFile,
      '--progress',
      'plain',
      '--coordinator',
      farm.coordinator.address,
    ],
    { timeoutMs: 300_000 },
  );
  expect(result.code, result.stderr.slice(-3000)).toBe(0);
  const metadata = JSON.parse(await readFile(metadataFile, 'utf8')) as Record<string, unknown>;
  await rm(metadataFile, { force: true });
  return String(metadata['braid.build.id']);
}

async function status(farm: Farm, id: string): Promise<StatusJson> {
  const result = await braid([
    'status',
    id,
    '--coordinator',
    farm.coordinator.address,
    '--output',
    'json',
  ]);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as StatusJson;
}

/** One source line changed, as a developer's next commit would. */
async function editSource(farm: Farm, text: string): Promise<void> {
  await writeFile(join(farm.dir, 'message.txt'), `${text}\n`);
}

describe('cache affinity on a real farm', () => {
  let farm: Farm | undefined;

  beforeAll(async () => {
    farm = await startFarm([]);
  });
  afterAll(async () => {
    await stopFarm(farm);
  });

  it('sends the second build of a lineage to the agent that built the first, and says why', async () => {
    const f = farm as Farm;
    // Only b1 is connected for the first build, so it builds (and caches) the lineage;
    // a1 sorts first by name, so least-loaded alone would pick a1 for the second build.
    f.agents.push(await startTestAgent(f.coordinator.address, 'b1'));
    await waitForAgents(f.coordinator.address, ['b1']);
    const first = await build(f, `${f.registry.host}/team/hello:1`);
    const firstStatus = await status(f, first);
    expect(firstStatus.jobs.map((j) => [j.agent, j.placementReason])).toEqual([
      ['b1', 'only-capable'],
    ]);

    f.agents.push(await startTestAgent(f.coordinator.address, 'a1'));
    await waitForAgents(f.coordinator.address, ['a1', 'b1']);
    await editSource(f, 'hello again');
    const second = await build(f, `${f.registry.host}/team/hello:2`);
    const secondStatus = await status(f, second);
    expect(secondStatus.state).toBe('succeeded');
    const [job] = secondStatus.jobs;
    expect(job?.agent).toBe('b1');
    expect(job?.placementReason).toBe('cache-affinity');
    expect(job?.placementDetail).toMatch(
      new RegExp(
        `^cache affinity \\(built lineage ${f.registry.host.replace(/\./g, '\\.')}/team/hello \\(Dockerfile\\) for linux/amd64 \\d+s ago\\)$`,
      ),
    );

    // The people's view says the same.
    const text = await braid(['status', second, '--coordinator', f.coordinator.address]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^placed +linux\/amd64 on b1: cache affinity \(built lineage /m);

    // Another lineage (another repository) has no warm agent: least loaded, a1 by name.
    const other = await build(f, `${f.registry.host}/team/other:1`);
    expect((await status(f, other)).jobs.map((j) => [j.agent, j.placementReason])).toEqual([
      ['a1', 'least-loaded'],
    ]);
    // The coordinator logged each placement once, with its reason.
    const log = f.coordinator.process.stderr();
    expect(log.match(/placed job [^ ]+ on agent b1: cache affinity \(built lineage/g)).toHaveLength(
      1,
    );
  });
});

describe('cache affinity turned off (--no-cache-affinity)', () => {
  let farm: Farm | undefined;

  beforeAll(async () => {
    farm = await startFarm(['--no-cache-affinity']);
  });
  afterAll(async () => {
    await stopFarm(farm);
  });

  it('places the second build of a lineage by load alone', async () => {
    const f = farm as Farm;
    f.agents.push(await startTestAgent(f.coordinator.address, 'b1'));
    await waitForAgents(f.coordinator.address, ['b1']);
    await build(f, `${f.registry.host}/team/hello:1`);
    f.agents.push(await startTestAgent(f.coordinator.address, 'a1'));
    await waitForAgents(f.coordinator.address, ['a1', 'b1']);
    await editSource(f, 'hello again');
    const second = await build(f, `${f.registry.host}/team/hello:2`);
    expect((await status(f, second)).jobs.map((j) => [j.agent, j.placementReason])).toEqual([
      ['a1', 'least-loaded'],
    ]);
  });
});
