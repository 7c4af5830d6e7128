/**
 * Reproducible images across hosts: the same context and SOURCE_DATE_EPOCH
 * built on two engines that share no cache (the machine's engine and a
 * private dockerd with its own data root) give the same manifest digest per
 * platform, read back with skopeo. Without an epoch they do not, so the
 * equality is braid's doing and not an accident of the fixture.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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
import { startPrivateEngine, type PrivateEngine } from '../support/private-engine.js';
import { run } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { attestationStatement, rawManifest } from '../support/skopeo.js';

const EPOCH = 1_700_000_000;
const PLATFORMS = ['linux/amd64', 'linux/arm64'];

interface Descriptor {
  digest: string;
  platform?: { os: string; architecture: string };
}

describe('reproducible images (SOURCE_DATE_EPOCH) on two hosts', () => {
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let engine: PrivateEngine;
  let skopeo: string;
  let tar: string;
  let dir: string;
  let context: string;
  const agents: TestAgent[] = [];

  beforeAll(async () => {
    await requireEngine();
    await requireQemu('qemu-aarch64');
    skopeo = await requireCommand('skopeo', 'skopeo');
    tar = await requireCommand('tar', 'tar');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    coordinator = await startTestCoordinator('127.0.0.1:0');
    engine = await startPrivateEngine('repro');
    dir = await mkdtemp(join(tmpdir(), 'braid-repro-'));
    context = join(dir, 'ctx');
    await run('mkdir', ['-p', context]);
    // Files written now (later than the epoch) by COPY and by RUN steps.
    await writeFile(join(context, 'message.txt'), 'hello\n');
    await writeFile(
      join(context, 'Dockerfile'),
      [
        `FROM ${registry.host}/base/busybox:latest`,
        'COPY message.txt /srv/message.txt',
        'RUN mkdir -p /out/deep && cp /srv/message.txt /out/deep/copy && uname -m > /out/arch',
        'RUN ln -s deep/copy /out/link && chmod 0750 /out/deep && rm /srv/message.txt',
        '',
      ].join('\n'),
    );
  }, 600_000);

  afterAll(async () => {
    for (const agent of agents) await agent.stop();
    await engine?.stop();
    await coordinator?.stop();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Builds on the one agent connected: the machine's engine, or the private one. */
  async function buildOn(
    where: 'shared' | 'private',
    tag: string,
    extra: string[],
    env: Record<string, string> = {},
  ) {
    const name = `${where}-${agents.length}`;
    const agent = await startTestAgent(
      coordinator.address,
      name,
      where === 'private' ? ['--engine', engine.url] : [],
    );
    agents.push(agent);
    try {
      await waitForAgents(coordinator.address, [name]);
      const built = await braid(
        [
          'build',
          context,
          '-t',
          tag,
          '--platform',
          PLATFORMS.join(','),
          '--progress',
          'plain',
          '--coordinator',
          coordinator.address,
          ...extra,
        ],
        { timeoutMs: 300_000, env },
      );
      expect(built.code, built.stderr).toBe(0);
      expect(built.stderr).toContain(`on agent ${name}`);
    } finally {
      agents.splice(agents.indexOf(agent), 1);
      await agent.stop();
    }
    return platformDigests(tag);
  }

  const raw = <T>(ref: string) => rawManifest<T>(skopeo, ref);

  async function platformDigests(tag: string): Promise<Record<string, string>> {
    const index = await raw<{ manifests: Descriptor[] }>(tag);
    return Object.fromEntries(
      index.manifests
        .filter((m) => m.platform?.os === 'linux')
        .map((m) => [`linux/${m.platform?.architecture}`, m.digest]),
    );
  }

  it('gives the same manifest digest per platform on two hosts with the same epoch (flag or environment)', async () => {
    const first = await buildOn('shared', `${registry.host}/team/repro:shared`, [
      '--source-date-epoch',
      String(EPOCH),
    ]);
    const second = await buildOn('private', `${registry.host}/team/repro:private`, [], {
      SOURCE_DATE_EPOCH: String(EPOCH),
    });
    expect(Object.keys(first).sort()).toEqual(PLATFORMS);
    expect(second).toEqual(first);

    // What skopeo copies out: created and history at the epoch, no file time after it.
    const out = join(dir, 'amd64');
    const copied = await run(skopeo, [
      'copy',
      '--src-tls-verify=false',
      '--quiet',
      `docker://${registry.host}/team/repro@${first['linux/amd64']}`,
      `dir:${out}`,
    ]);
    expect(copied.code, copied.stderr).toBe(0);
    const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as {
      config: { digest: string };
      layers: { digest: string }[];
    };
    const config = JSON.parse(
      await readFile(join(out, manifest.config.digest.replace('sha256:', '')), 'utf8'),
    ) as { created: string; history: { created: string }[] };
    expect(config.created).toBe('2023-11-14T22:13:20Z');
    for (const entry of config.history)
      expect(Date.parse(entry.created)).toBeLessThanOrEqual(EPOCH * 1000);
    const top = manifest.layers.at(-1)?.digest.replace('sha256:', '') ?? '';
    const listing = await run(tar, ['--full-time', '-tvzf', join(out, top)], {
      env: { ...process.env, TZ: 'UTC' },
    });
    expect(listing.code, listing.stderr).toBe(0);
    expect(listing.stdout).toMatch(/out\/link -> deep\/copy/);
    const times = [...listing.stdout.matchAll(/ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) /g)].map((m) =>
      Date.parse(`${m[1]?.replace(' ', 'T')}Z`),
    );
    expect(times.length).toBeGreaterThan(3);
    expect(Math.max(...times)).toBe(EPOCH * 1000);
  }, 900_000);

  it('gives different digests without an epoch: the equality above is not the fixture', async () => {
    const first = await buildOn('shared', `${registry.host}/team/repro:plain-a`, []);
    const second = await buildOn('private', `${registry.host}/team/repro:plain-b`, []);
    for (const platform of PLATFORMS) expect(second[platform]).not.toBe(first[platform]);
  }, 900_000);

  it('refuses an epoch that is not a whole number of seconds, naming it, before any upload', async () => {
    for (const [args, env, named] of [
      [['--source-date-epoch', 'yesterday'], {}, '--source-date-epoch "yesterday"'],
      [['--source-date-epoch', '-5'], {}, '--source-date-epoch "-5"'],
      [[], { SOURCE_DATE_EPOCH: '1.5' }, 'SOURCE_DATE_EPOCH in the environment, "1.5"'],
      [['--build-arg', 'SOURCE_DATE_EPOCH=x'], {}, '--build-arg SOURCE_DATE_EPOCH "x"'],
      [['--check-reproducible'], {}, '--check-reproducible needs --source-date-epoch'],
    ] as const) {
      const result = await braid(
        [
          'build',
          context,
          '-t',
          `${registry.host}/team/repro:bad`,
          '--coordinator',
          coordinator.address,
          ...args,
        ],
        { env },
      );
      expect(result.code, result.stderr).toBe(2);
      const lines = result.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(named);
    }
    const tag = await run(skopeo, [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${registry.host}/team/repro:bad`,
    ]);
    expect(tag.code).not.toBe(0);
  });

  describe('--check-reproducible', () => {
    /** Both agents at once: the shared engine's and the private one's. */
    async function withBothAgents<T>(work: () => Promise<T>): Promise<T> {
      const both = [
        await startTestAgent(coordinator.address, 'check-shared', []),
        await startTestAgent(coordinator.address, 'check-private', ['--engine', engine.url]),
      ];
      agents.push(...both);
      try {
        await waitForAgents(coordinator.address, ['check-shared', 'check-private']);
        return await work();
      } finally {
        for (const agent of both) {
          agents.splice(agents.indexOf(agent), 1);
          await agent.stop();
        }
      }
    }

    async function checkBuild(contextDir: string, tag: string, extra: string[] = []) {
      return braid(
        [
          'build',
          ...extra,
          contextDir,
          '-t',
          tag,
          '--platform',
          PLATFORMS.join(','),
          '--progress',
          'plain',
          '--check-reproducible',
          '--source-date-epoch',
          String(EPOCH),
          '--coordinator',
          coordinator.address,
        ],
        { timeoutMs: 600_000 },
      );
    }

    it('builds each platform on both hosts, finds them identical and pushes one image per platform', async () => {
      const tag = `${registry.host}/team/repro:checked`;
      const built = await withBothAgents(() =>
        checkBuild(context, tag, ['--provenance', 'mode=max']),
      );
      expect(built.code, built.stderr).toBe(0);
      const buildId = /build (b[0-9a-z]+)/.exec(built.stderr)?.[1] ?? '';
      const status = await braid([
        'status',
        buildId,
        '--output',
        'json',
        '--coordinator',
        coordinator.address,
      ]);
      expect(status.code, status.stderr).toBe(0);
      const jobs = (
        JSON.parse(status.stdout) as {
          jobs: { platform: string; role: string; agent: string; image: { digest: string } }[];
        }
      ).jobs;
      expect(jobs).toHaveLength(4);
      for (const platform of PLATFORMS) {
        const pair = jobs.filter((j) => j.platform === platform);
        expect(pair.map((j) => j.role).sort()).toEqual(['image', 'reproducibility-check']);
        // Two hosts, one digest.
        expect(pair[0]?.agent).not.toBe(pair[1]?.agent);
        expect(pair[0]?.image.digest).toBe(pair[1]?.image.digest);
      }
      const logs = await braid(['logs', buildId, '--coordinator', coordinator.address]);
      expect(logs.stdout).toMatch(
        /linux\/amd64 is reproducible: agent check-\S+ and agent check-\S+ both built sha256:/,
      );
      // The index holds each platform once.
      expect(Object.keys(await platformDigests(tag)).sort()).toEqual(PLATFORMS);
      // mode=max provenance records the epoch as the build arg BuildKit got.
      const index = await raw<{
        manifests: (Descriptor & { annotations?: Record<string, string> })[];
      }>(tag);
      const attestation = index.manifests.find(
        (m) => m.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest',
      );
      const { statement } = await attestationStatement<{
        predicate: {
          buildDefinition: { externalParameters: { request: { args: Record<string, string> } } };
        };
      }>(skopeo, `${registry.host}/team/repro`, attestation?.digest ?? '', dir);
      expect(
        statement.predicate.buildDefinition.externalParameters.request.args[
          'build-arg:SOURCE_DATE_EPOCH'
        ],
      ).toBe(String(EPOCH));
    }, 900_000);

    it('fails a RUN date > /stamp build naming /stamp, and moves no tag', async () => {
      const stamped = join(dir, 'stamped');
      await run('mkdir', ['-p', stamped]);
      await writeFile(
        join(stamped, 'Dockerfile'),
        // The date alone can match when both hosts run the step in the same second
        // (busybox's date has no %N): random bytes after it never do.
        `FROM ${registry.host}/base/busybox:latest\nRUN (date; head -c 16 /dev/urandom) > /stamp && echo same > /same\n`,
      );
      const tag = `${registry.host}/team/repro:stamped`;
      const built = await withBothAgents(() => checkBuild(stamped, tag));
      expect(built.code, built.stderr).toBe(1);
      expect(built.stderr).toMatch(/linux\/amd64 is not reproducible \(agent check-\S+: sha256:/);
      expect(built.stderr).toMatch(/\/stamp: content sha256:\S+ \(check-\S+\) ≠ sha256:/);
      expect(built.stderr).not.toMatch(/\/same:/);
      expect(built.stderr).toContain('no tag was moved');
      const inspected = await run(skopeo, [
        'inspect',
        '--raw',
        '--tls-verify=false',
        `docker://${tag}`,
      ]);
      expect(inspected.code).not.toBe(0);
    }, 900_000);
  });
});
