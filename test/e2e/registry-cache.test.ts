/**
 * Registry cache across hosts, with the real braid binary and a real farm:
 * agent A on the shared engine builds examples/hello for linux/amd64 and
 * linux/arm64 with `--cache-to type=registry,ref=...`; A leaves; agent B on
 * a private engine that never built anything joins, and the same build with
 * `--cache-from` runs every RUN and COPY step from the registry's cache on
 * both platforms. A control build on another cold engine, without
 * `--cache-from`, runs them. The cache ref is checked with skopeo, the
 * judge of what is in the registry.
 */
import { randomUUID } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
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
import { startPrivateEngine, type PrivateEngine } from '../support/private-engine.js';
import { run } from '../support/process.js';
import { freePort, startRegistry, type TestRegistry } from '../support/registry.js';

const EXAMPLE = fileURLToPath(new URL('../../examples/hello', import.meta.url));
const PLATFORMS = ['linux/amd64', 'linux/arm64'];
// The RUN step's loop: long enough that running it and reusing it differ (arm64 runs under QEMU).
const WORK = 200_000;
const BUILD_TIMEOUT_MS = 300_000;

interface Manifest {
  config: { digest: string };
}

interface Index {
  mediaType?: string;
  manifests: { digest: string; platform?: { os: string; architecture: string } }[];
}

interface ImageConfig {
  architecture: string;
  rootfs: { diff_ids: string[] };
  'moby.buildkit.cache.v0'?: unknown;
}

interface StatusJson {
  state: string;
  jobs: { platform: string; agent: string | null }[];
}

const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** The RUN and COPY step lines that plain progress printed for one platform. */
function stepLines(progress: string, platform: string): string[] {
  const step = new RegExp(`^\\[${escape(platform)}\\] \\[[^\\]]+\\] (RUN|COPY) .*$`, 'gm');
  return progress.match(step) ?? [];
}

describe('registry cache across hosts (--cache-to type=registry, --cache-from)', () => {
  let registry: TestRegistry | undefined;
  let coordinator: TestCoordinator | undefined;
  let skopeo = '';
  let base = '';
  let workDir = '';
  // Started by one test, stopped after it.
  const agents: TestAgent[] = [];
  const engines: PrivateEngine[] = [];

  beforeAll(async () => {
    await requireEngine();
    await requireQemu('qemu-aarch64');
    skopeo = await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    base = `${registry.host}/base/busybox:latest`;
    coordinator = await startTestCoordinator();
    workDir = await mkdtemp(join(tmpdir(), 'braid-registry-cache-'));
  });

  afterEach(async () => {
    for (const agent of agents.splice(0)) await agent.stop();
    for (const engine of engines.splice(0)) await engine.stop();
  });

  afterAll(async () => {
    await coordinator?.stop();
    await registry?.stop();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  const reg = (): TestRegistry => registry as TestRegistry;
  const address = (): string => (coordinator as TestCoordinator).address;

  async function joinAgent(name: string, engine?: PrivateEngine): Promise<TestAgent> {
    const agent = await startTestAgent(address(), name, engine ? ['--engine', engine.url] : []);
    agents.push(agent);
    await waitForAgents(address(), [name]);
    return agent;
  }

  async function leave(agent: TestAgent): Promise<void> {
    agents.splice(agents.indexOf(agent), 1);
    await agent.stop();
  }

  async function coldEngine(name: string): Promise<PrivateEngine> {
    const engine = await startPrivateEngine(name);
    engines.push(engine);
    // Cold: no image (not even the base) and no build cache.
    expect(await engine.contents()).toEqual({ images: 0, buildCacheRecords: 0 });
    return engine;
  }

  /** A fresh copy of examples/hello whose RUN input no engine has seen. */
  async function freshContext(): Promise<string> {
    const dir = await mkdtemp(join(workDir, 'ctx-'));
    await cp(EXAMPLE, dir, { recursive: true });
    await writeFile(join(dir, 'message.txt'), `registry cache ${randomUUID()}\n`);
    return dir;
  }

  async function build(dir: string, tag: string, extra: string[]) {
    const metadataFile = join(workDir, `${randomUUID()}.json`);
    const result = await braid(
      [
        'build',
        dir,
        '-t',
        tag,
        '--platform',
        PLATFORMS.join(','),
        '--build-arg',
        `BASE=${base}`,
        '--build-arg',
        `WORK=${WORK}`,
        '--progress',
        'plain',
        '--metadata-file',
        metadataFile,
        '--coordinator',
        address(),
        ...extra,
      ],
      { timeoutMs: BUILD_TIMEOUT_MS },
    );
    expect(result.code, result.stderr.slice(-3000)).toBe(0);
    const metadata = JSON.parse(await readFile(metadataFile, 'utf8')) as Record<string, unknown>;
    // Progress goes to stderr; stdout has only the index digest.
    return { progress: result.stderr, buildId: String(metadata['braid.build.id']) };
  }

  async function agentsOf(buildId: string): Promise<string[]> {
    const result = await braid(['status', buildId, '--coordinator', address(), '--output', 'json']);
    expect(result.code, result.stderr).toBe(0);
    const status = JSON.parse(result.stdout) as StatusJson;
    expect(status.state).toBe('succeeded');
    return [...new Set(status.jobs.map((j) => j.agent))].sort() as string[];
  }

  async function skopeoRaw<T>(args: string[], ref: string): Promise<T> {
    const result = await run(skopeo, ['inspect', ...args, '--tls-verify=false', `docker://${ref}`]);
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout) as T;
  }

  /** The index under `ref` (skopeo inspect --raw), and each platform image's config. */
  async function imagesOf(ref: string) {
    const index = await skopeoRaw<Index>(['--raw'], ref);
    const repository = ref.slice(0, ref.lastIndexOf(':'));
    const configs = new Map<string, ImageConfig>();
    for (const entry of index.manifests) {
      if (entry.platform?.os !== 'linux') continue;
      const manifest = await skopeoRaw<Manifest>(['--raw'], `${repository}@${entry.digest}`);
      expect(manifest.config.digest).toMatch(/^sha256:/);
      const config = await skopeoRaw<ImageConfig>(
        ['--config', '--raw'],
        `${repository}@${entry.digest}`,
      );
      configs.set(`linux/${entry.platform.architecture}`, config);
    }
    return { index, configs };
  }

  async function buildCount(): Promise<number> {
    const result = await braid(['builds', '--coordinator', address(), '--output', 'json']);
    expect(result.code, result.stderr).toBe(0);
    return result.stdout.split('\n').filter(Boolean).length;
  }

  it('runs the RUN and COPY steps of both platforms from the registry cache on a cold engine, which runs them without it', async () => {
    const host = reg().host;
    const cacheRef = `${host}/team/app:buildcache`;
    const dir = await freshContext();

    // Agent A (the shared engine) builds the lineage and pushes the cache.
    const agentA = await joinAgent('agent-a');
    const first = await build(dir, `${host}/team/app:1`, [
      '--cache-to',
      `type=registry,ref=${cacheRef}`,
    ]);
    expect(await agentsOf(first.buildId)).toEqual(['agent-a']);
    for (const platform of PLATFORMS) {
      const runs = stepLines(first.progress, platform).filter((l) => /\] RUN /.test(l));
      expect(runs.length, first.progress).toBeGreaterThan(0);
      // Its RUN input is new: A ran the step, so the cache can only have come from this build.
      for (const line of runs) expect(line).not.toMatch(/ CACHED$/);
    }

    // The cache ref is the build's own index, whose images carry BuildKit's inline cache.
    const cache = await imagesOf(cacheRef);
    const built = await imagesOf(`${host}/team/app:1`);
    expect(cache.index.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(cache.index).toEqual(built.index);
    expect([...cache.configs.keys()].sort()).toEqual(PLATFORMS);
    for (const [platform, config] of cache.configs) {
      expect(config['moby.buildkit.cache.v0'], platform).toBeTruthy();
    }

    // A leaves; B, on an engine that never built anything, joins.
    await leave(agentA);
    const engineB = await coldEngine('b');
    const agentB = await joinAgent('agent-b', engineB);
    const second = await build(dir, `${host}/team/app:2`, ['--cache-from', cacheRef]);
    expect(await agentsOf(second.buildId)).toEqual(['agent-b']);
    for (const platform of PLATFORMS) {
      expect(second.progress).toContain(
        `[${platform}] importing cache manifest from ${cacheRef}\n`,
      );
      const steps = stepLines(second.progress, platform);
      expect(steps.filter((l) => /\] RUN /.test(l)).length, second.progress).toBeGreaterThan(0);
      for (const line of steps) expect(line).toMatch(/ CACHED$/);
    }
    // Reused, not rebuilt alike: every layer of each platform's image is A's.
    const rebuilt = await imagesOf(`${host}/team/app:2`);
    for (const platform of PLATFORMS) {
      expect(rebuilt.configs.get(platform)?.rootfs.diff_ids, platform).toEqual(
        built.configs.get(platform)?.rootfs.diff_ids,
      );
    }

    // Control: one line of the final stage changed, another cold engine, no --cache-from.
    await leave(agentB);
    const engineC = await coldEngine('c');
    await joinAgent('agent-c', engineC);
    await writeFile(join(dir, 'hello.sh'), '#!/bin/sh\necho "hello, control"\n');
    const control = await build(dir, `${host}/team/app:3`, []);
    expect(await agentsOf(control.buildId)).toEqual(['agent-c']);
    for (const platform of PLATFORMS) {
      const steps = stepLines(control.progress, platform);
      expect(steps.filter((l) => /\] RUN /.test(l)).length, control.progress).toBeGreaterThan(0);
      for (const line of steps) expect(line).not.toMatch(/ CACHED$/);
    }
    expect(control.progress).not.toContain('importing cache manifest');
  });

  it('refuses --cache-to mode=max in one line that says why, exit 2', async () => {
    const before = await buildCount();
    const result = await braid([
      'build',
      EXAMPLE,
      '-t',
      `${reg().host}/team/app:max`,
      '--platform',
      'linux/amd64',
      '--cache-to',
      `type=registry,ref=${reg().host}/team/app:buildcache,mode=max`,
      '--coordinator',
      address(),
    ]);
    expect(result.code).toBe(2);
    const lines = result.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^braid: --cache-to ".*mode=max": mode=max is not supported: /);
    expect(lines[0]).toContain('Docker Engine API');
    expect(await buildCount()).toBe(before);
  });

  it('refuses at submit a --cache-to ref where nothing listens, naming it, and records no build', async () => {
    await joinAgent('agent-a');
    const before = await buildCount();
    const dead = `127.0.0.1:${await freePort()}`;
    const result = await braid([
      'build',
      EXAMPLE,
      '-t',
      `${reg().host}/team/app:dead-cache`,
      '--platform',
      'linux/amd64',
      '--build-arg',
      `BASE=${base}`,
      '--cache-to',
      `type=registry,ref=${dead}/team/app:buildcache`,
      '--progress',
      'plain',
      '--coordinator',
      address(),
    ]);
    expect(result.code, result.stderr).toBe(1);
    const errors = result.stderr.split('\n').filter((l) => l.startsWith('braid:'));
    expect(errors, result.stderr).toHaveLength(1);
    expect(errors[0]).toBe(
      `braid: --cache-to: cannot push to ${dead}/team/app: nothing listens on ${dead} (connection refused)`,
    );
    expect(await buildCount()).toBe(before);
  });
});
