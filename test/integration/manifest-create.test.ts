import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BASE_PLATFORMS, platformString, pushBaseImage } from '../support/base-image.js';
import { braid } from '../support/braid-cli.js';
import { requireCommand } from '../support/components.js';
import { run } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

interface RawIndex {
  mediaType: string;
  manifests: {
    mediaType: string;
    digest: string;
    size: number;
    platform: { architecture: string; os: string; variant?: string };
    annotations?: Record<string, string>;
  }[];
  annotations?: Record<string, string>;
}

describe('braid manifest create and inspect against a real registry', () => {
  let registry: TestRegistry;
  let skopeo: string;
  let dir: string;
  /** The base image's per-platform manifests, by platform string. */
  const children = new Map<string, string>();

  async function skopeoRaw(ref: string): Promise<{ code: number | null; text: string }> {
    const result = await run(skopeo, ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]);
    return { code: result.code, text: result.stdout };
  }

  beforeAll(async () => {
    skopeo = await requireCommand('skopeo', 'skopeo');
    dir = await mkdtemp(join(tmpdir(), 'braid-manifest-'));
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'src/busybox', 'multi');
    await pushBaseImage(registry.host, 'src/attested', 'multi', { attestations: true });
    // Config says arm64, binaries are x86-64: the crash loop the arch guard prevents.
    await pushBaseImage(registry.host, 'src/liar', 'arm64', {
      platforms: [
        {
          os: 'linux',
          architecture: 'arm64',
          variant: 'v8',
          debianArch: 'amd64',
          unameMachine: 'x86_64',
        },
      ],
    });
    const index = JSON.parse(
      (await skopeoRaw(`${registry.host}/src/busybox:multi`)).text,
    ) as RawIndex;
    for (const m of index.manifests)
      children.set(platformString({ ...m.platform, os: 'linux' }), m.digest);
  });
  afterAll(async () => {
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const source = (platform: string) => `${registry.host}/src/busybox@${children.get(platform)}`;

  it('stitches per-platform images from another repository under two tags that skopeo reads as one index', async () => {
    const sources = BASE_PLATFORMS.map((p) => source(platformString(p)));
    const result = await braid([
      'manifest',
      'create',
      '-t',
      `${registry.host}/team/app:1.0`,
      '-t',
      `${registry.host}/team/app:latest`,
      ...sources,
    ]);
    expect(result.code, result.stderr).toBe(0);
    const digest = /^index (sha256:[0-9a-f]{64}) /m.exec(result.stdout)?.[1];
    expect(digest).toBeDefined();
    const one = await skopeoRaw(`${registry.host}/team/app:1.0`);
    const latest = await skopeoRaw(`${registry.host}/team/app:latest`);
    expect(one.code).toBe(0);
    expect(latest.text).toBe(one.text);
    const index = JSON.parse(one.text) as RawIndex;
    expect(index.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(index.manifests.map((m) => platformString({ ...m.platform, os: 'linux' }))).toEqual(
      BASE_PLATFORMS.map(platformString),
    );
    // Every child was copied into the target repository, so pulls by digest work there.
    for (const m of index.manifests)
      expect((await skopeoRaw(`${registry.host}/team/app@${m.digest}`)).code).toBe(0);
    expect(result.stdout).toContain(`pushed ${registry.host}/team/app:1.0@${digest}`);
  });

  it('prints the same index bytes for the same inputs, and pushes exactly those bytes', async () => {
    const sources = [source('linux/amd64'), source('linux/s390x')];
    const first = await braid([
      'manifest',
      'create',
      '--dry-run',
      '-t',
      `${registry.host}/team/det:1`,
      ...sources,
    ]);
    const second = await braid([
      'manifest',
      'create',
      '--dry-run',
      '-t',
      `${registry.host}/team/det:1`,
      ...sources,
    ]);
    expect(first.code, first.stderr).toBe(0);
    expect(second.stdout).toBe(first.stdout);
    expect((await skopeoRaw(`${registry.host}/team/det:1`)).code).not.toBe(0);
    const pushed = await braid([
      'manifest',
      'create',
      '-t',
      `${registry.host}/team/det:1`,
      ...sources,
    ]);
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(`${(await skopeoRaw(`${registry.host}/team/det:1`)).text}\n`).toBe(first.stdout);
  });

  it('keeps attestation manifests pointing at their images, and drops them with --no-attestations', async () => {
    const kept = await braid([
      'manifest',
      'create',
      '-t',
      `${registry.host}/team/att:kept`,
      `${registry.host}/src/attested:multi`,
    ]);
    expect(kept.code, kept.stderr).toBe(0);
    const index = JSON.parse((await skopeoRaw(`${registry.host}/team/att:kept`)).text) as RawIndex;
    const images = index.manifests.filter((m) => m.platform.os !== 'unknown');
    const attestations = index.manifests.filter(
      (m) => m.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest',
    );
    expect(images).toHaveLength(BASE_PLATFORMS.length);
    expect(attestations).toHaveLength(BASE_PLATFORMS.length);
    expect(attestations.map((a) => a.annotations?.['vnd.docker.reference.digest']).sort()).toEqual(
      images.map((i) => i.digest).sort(),
    );
    expect(
      attestations.every(
        (a) => a.platform.os === 'unknown' && a.platform.architecture === 'unknown',
      ),
    ).toBe(true);

    const dropped = await braid([
      'manifest',
      'create',
      '--no-attestations',
      '-t',
      `${registry.host}/team/att:dropped`,
      `${registry.host}/src/attested:multi`,
    ]);
    expect(dropped.code, dropped.stderr).toBe(0);
    const plain = JSON.parse(
      (await skopeoRaw(`${registry.host}/team/att:dropped`)).text,
    ) as RawIndex;
    expect(plain.manifests.map((m) => m.digest)).toEqual(images.map((i) => i.digest));
  });

  it('refuses an image whose binaries are not its platform, naming platform, file and real architecture, and moves no tag', async () => {
    const result = await braid([
      'manifest',
      'create',
      '-t',
      `${registry.host}/team/guarded:1`,
      source('linux/amd64'),
      `${registry.host}/src/liar:arm64`,
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe('braid: linux/arm64: /bin/busybox is x86-64 ELF');
    expect((await skopeoRaw(`${registry.host}/team/guarded:1`)).code).not.toBe(0);
    // Nothing was pushed: not even the good child was copied into the target.
    expect(
      (await skopeoRaw(`${registry.host}/team/guarded@${children.get('linux/amd64')}`)).code,
    ).not.toBe(0);
    const unchecked = await braid([
      'manifest',
      'create',
      '--no-arch-check',
      '-t',
      `${registry.host}/team/guarded:1`,
      source('linux/amd64'),
      `${registry.host}/src/liar:arm64`,
    ]);
    expect(unchecked.code, unchecked.stderr).toBe(0);
  });

  it('remembers passed arch checks by digest, never a refusal, and reads no layer the second time', async () => {
    const cache = join(dir, 'arch-cache');
    const stitch = (target: string, sources: string[]) =>
      braid([
        'manifest',
        'create',
        '--log-level',
        'info',
        '--arch-check-cache-dir',
        cache,
        '-t',
        `${registry.host}/team/${target}`,
        ...sources,
      ]);
    const sources = ['linux/amd64', 'linux/arm64/v8'].map(source);
    const first = await stitch('remembered:1', sources);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr.match(/"msg":"arch check passed"/g)).toHaveLength(2);
    const again = await stitch('remembered:2', sources);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).not.toContain('"msg":"arch check passed"');
    expect(again.stderr.match(/"msg":"arch check passed earlier"/g)).toHaveLength(2);
    // The liar is refused every time: a refusal is never remembered.
    for (const target of ['liar:1', 'liar:2']) {
      const refused = await stitch(target, [`${registry.host}/src/liar:arm64`]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain('linux/arm64: /bin/busybox is x86-64 ELF');
    }
  });

  it('refuses two sources for one platform and leaves the tag where it was', async () => {
    const before = await skopeoRaw(`${registry.host}/team/app:1.0`);
    const result = await braid([
      'manifest',
      'create',
      '-t',
      `${registry.host}/team/app:1.0`,
      source('linux/amd64'),
      `${registry.host}/src/busybox:multi`,
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^braid: platform linux\/amd64 comes from two sources: /);
    expect((await skopeoRaw(`${registry.host}/team/app:1.0`)).text).toBe(before.text);
  });

  it('refuses --format docker for OCI children, naming the first', async () => {
    const result = await braid([
      'manifest',
      'create',
      '--format',
      'docker',
      '-t',
      `${registry.host}/team/fmt:1`,
      source('linux/amd64'),
    ]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--format docker needs Docker v2 schema 2 manifests only');
  });

  it('puts index annotations on an OCI index', async () => {
    const result = await braid([
      'manifest',
      'create',
      '--annotation',
      'org.opencontainers.image.source=https://example.invalid/app',
      '-t',
      `${registry.host}/team/ann:1`,
      source('linux/amd64'),
    ]);
    expect(result.code, result.stderr).toBe(0);
    const index = JSON.parse((await skopeoRaw(`${registry.host}/team/ann:1`)).text) as RawIndex;
    expect(index.annotations).toEqual({
      'org.opencontainers.image.source': 'https://example.invalid/app',
    });
  });

  it('accepts a manifest-tool spec file, and refuses one whose platform disagrees with the config', async () => {
    const spec = join(dir, 'spec.yaml');
    await writeFile(
      spec,
      [
        `image: ${registry.host}/team/spec:1.0`,
        'tags: [stable]',
        'manifests:',
        `  - image: ${source('linux/arm/v7')}`,
        '    platform: { architecture: arm, os: linux, variant: v7 }',
        `  - image: ${source('linux/ppc64le')}`,
        '    platform:',
        '      architecture: ppc64le',
        '      os: linux',
        '',
      ].join('\n'),
    );
    const result = await braid(['manifest', 'create', '--from-spec', spec]);
    expect(result.code, result.stderr).toBe(0);
    const stable = JSON.parse(
      (await skopeoRaw(`${registry.host}/team/spec:stable`)).text,
    ) as RawIndex;
    expect(stable.manifests.map((m) => platformString({ ...m.platform, os: 'linux' }))).toEqual([
      'linux/arm/v7',
      'linux/ppc64le',
    ]);
    expect((await skopeoRaw(`${registry.host}/team/spec:1.0`)).text).toBe(
      (await skopeoRaw(`${registry.host}/team/spec:stable`)).text,
    );

    const wrong = join(dir, 'wrong.yaml');
    await writeFile(
      wrong,
      `image: ${registry.host}/team/spec:wrong\nmanifests:\n  - image: ${source('linux/s390x')}\n    platform: { architecture: arm64, os: linux }\n`,
    );
    const refused = await braid(['manifest', 'create', '--from-spec', wrong]);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim()).toBe(
      `braid: ${source('linux/s390x')}: listed as linux/arm64 but its config says linux/s390x`,
    );
  });

  it('inspects an index as a table and prints --raw bytes exactly as skopeo sees them', async () => {
    const table = await braid(['manifest', 'inspect', `${registry.host}/src/attested:multi`]);
    expect(table.code, table.stderr).toBe(0);
    for (const p of BASE_PLATFORMS)
      expect(table.stdout).toMatch(new RegExp(`^${platformString(p)}\\s+sha256:`, 'm'));
    expect(table.stdout.match(/^attestation\s/gm)).toHaveLength(BASE_PLATFORMS.length);
    const raw = await braid([
      'manifest',
      'inspect',
      '--raw',
      `${registry.host}/src/attested:multi`,
    ]);
    expect(raw.stdout).toBe((await skopeoRaw(`${registry.host}/src/attested:multi`)).text);
  });

  it.each([
    [
      ['manifest', 'create', '-t', 'Team/App:1', 'busybox'],
      'braid: invalid image reference "Team/App:1": repository name must be lowercase',
    ],
    [
      ['manifest', 'create', '-t', 'localhost:5000/a:1', 'x@sha256:abc'],
      'braid: invalid image reference "x@sha256:abc"',
    ],
    [['manifest', 'create', 'busybox'], 'braid: no target given: use -t REGISTRY/REPO:TAG'],
    [
      ['manifest', 'create', '-t', 'localhost:5000/a:1', '--annotation', 'novalue', 'busybox'],
      'braid: --annotation "novalue": expected KEY=VALUE',
    ],
    [
      [
        'manifest',
        'create',
        '--insecure-registry',
        'bad host',
        '-t',
        'localhost:5000/a:1',
        'busybox',
      ],
      'braid: invalid config --insecure-registry: "bad host" is not HOST[:PORT]',
    ],
  ])(
    'braid %j exits 2 with one line naming the bad input, before any request',
    async (args, line) => {
      const result = await braid(args);
      expect(result.code).toBe(2);
      expect(result.stderr.trim().startsWith(line)).toBe(true);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
    },
  );
});
