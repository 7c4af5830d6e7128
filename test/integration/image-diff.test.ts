import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diffImages, formatImageDiff } from '../../src/oci/image-diff.js';
import { RegistryClient, type Repository } from '../../src/oci/registry.js';
import { pushBaseImage } from '../support/base-image.js';
import { requireCommand, requireEngine } from '../support/components.js';
import { buildImage, pushImage, type LayerSpec } from '../support/oci-image.js';
import { run } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

const LABEL = 'io.braid.test=image-diff';

describe('the image differ against a real docker-registry', () => {
  let registry: TestRegistry;
  let client: RegistryClient;
  const repo = (repository: string): Repository => ({ domain: registry.host, repository });

  beforeAll(async () => {
    registry = await startRegistry();
    client = new RegistryClient({ retry: { maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 50 } });
  });
  afterAll(async () => {
    await registry?.stop();
  });

  const base: LayerSpec = {
    entries: [
      { name: 'bin/', type: 'directory' },
      { name: 'bin/tool', content: '#!/bin/sh\necho tool\n', mode: 0o755 },
      { name: 'etc/', type: 'directory' },
      { name: 'etc/motd', content: 'hello\n', mtime: 100 },
      { name: 'etc/old', content: 'old\n' },
    ],
  };

  it('names exactly the changed content, mtime and mode and the whiteout, and nothing else', async () => {
    const top = (stamp: string, motdMtime: number, toolMode: number, whiteout: boolean) => ({
      entries: [
        { name: 'bin/tool', content: '#!/bin/sh\necho tool\n', mode: toolMode },
        { name: 'etc/motd', content: 'hello\n', mtime: motdMtime },
        { name: 'stamp', content: stamp, mtime: 1_000 },
        ...(whiteout ? [{ name: 'etc/.wh.old' }] : []),
      ],
    });
    const imageA = await buildImage([
      base,
      top('Mon Dec  7 10:00:00 UTC 2026\n', 100, 0o755, true),
    ]);
    const imageB = await buildImage([
      base,
      top('Mon Dec  7 10:00:07 UTC 2026\n', 200, 0o700, false),
    ]);
    await pushImage(client, repo('diff/agent-a'), imageA);
    await pushImage(client, repo('diff/agent-b'), imageB);

    const diff = await diffImages(
      client,
      { ...repo('diff/agent-a'), digest: imageA.digest },
      { ...repo('diff/agent-b'), digest: imageB.digest },
    );

    expect(diff.same).toBe(false);
    expect(diff.files.map((f) => [f.path, f.kind, f.fields])).toEqual([
      ['/bin/tool', 'changed', ['mode']],
      ['/etc/motd', 'changed', ['mtime']],
      ['/etc/old', 'only-b', []],
      ['/stamp', 'changed', ['content']],
    ]);
    expect(diff.truncated).toBe(false);
    expect(diff.layers.map((l) => [l.index, l.kind])).toEqual([[1, 'entries']]);
    const lines = formatImageDiff(diff, ['agent a', 'agent b']);
    expect(lines).toContain('/bin/tool: mode 0755 (agent a) ≠ 0700 (agent b)');
    expect(lines).toContain(
      '/etc/motd: mtime 1970-01-01T00:01:40Z (agent a) ≠ 1970-01-01T00:03:20Z (agent b)',
    );
    expect(lines).toContainEqual(
      expect.stringMatching(/^\/etc\/old: only in agent b \(file, 4 bytes/),
    );
    expect(lines).toContainEqual(
      expect.stringMatching(
        /^\/stamp: content sha256:[a-f0-9]{12}… \(agent a\) ≠ sha256:[a-f0-9]{12}… \(agent b\)$/,
      ),
    );
  });

  it('calls the same image pushed to two repositories the same', async () => {
    const image = await buildImage([base]);
    await pushImage(client, repo('diff/same-a'), image);
    await pushImage(client, repo('diff/same-b'), image);
    const diff = await diffImages(
      client,
      { ...repo('diff/same-a'), digest: image.digest },
      { ...repo('diff/same-b'), digest: image.digest },
    );
    expect(diff.same).toBe(true);
    expect(formatImageDiff(diff, ['a', 'b'])).toEqual([]);
  });

  it('fails a layer pushed as a corrupt gzip with one line naming the image and the layer', async () => {
    const good = await buildImage([base, { entries: [{ name: 'x', content: '1' }] }]);
    const corrupt = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef]);
    const bad = await buildImage([base, { entries: [], blob: corrupt }]);
    await pushImage(client, repo('diff/good'), good);
    await pushImage(client, repo('diff/corrupt'), bad);
    const layer = bad.layerDigests[1]!;
    await expect(
      diffImages(
        client,
        { ...repo('diff/good'), digest: good.digest },
        { ...repo('diff/corrupt'), digest: bad.digest },
      ),
    ).rejects.toThrow(
      new RegExp(
        `^${registry.host}/diff/corrupt@${bad.digest} layer 1 \\(${layer}\\): corrupt layer while decompressing \\(gzip\\): [^\\n]+$`,
      ),
    );
  });

  it('fails with one line naming the image and the layer when the registry cannot serve a layer', async () => {
    const image = await buildImage([base, { entries: [{ name: 'x', content: '2' }] }]);
    const other = await buildImage([base, { entries: [{ name: 'x', content: '3' }] }]);
    await pushImage(client, repo('diff/whole'), other);
    await pushImage(client, repo('diff/lost'), image);
    const layer = image.layerDigests[1]!;
    // The blob's data goes away behind the registry's back.
    const blobDir = join(registry.storageDir, 'docker/registry/v2/blobs/sha256');
    await rm(join(blobDir, layer.slice(7, 9), layer.slice(7)), { recursive: true, force: true });
    await expect(
      diffImages(
        client,
        { ...repo('diff/whole'), digest: other.digest },
        { ...repo('diff/lost'), digest: image.digest },
      ),
    ).rejects.toThrow(
      new RegExp(
        `^${registry.host}/diff/lost@${image.digest} layer 1 \\(${layer}\\): reading the blob: GET blob [^\\n]+$`,
      ),
    );
  });
});

describe('the image differ on two real engine builds of RUN date > /stamp', () => {
  let registry: TestRegistry;
  let docker: string;
  let contextDir: string;
  const tags: string[] = [];

  beforeAll(async () => {
    await requireEngine();
    docker = await requireCommand('docker', 'docker.io');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'braid-test/busybox', 'latest');
    // The build pulls the base image into the engine under this name: removed afterwards too.
    tags.push(`${registry.host}/braid-test/busybox:latest`);
    contextDir = await mkdtemp(join(tmpdir(), 'braid-image-diff-'));
    await writeFile(
      join(contextDir, 'Dockerfile'),
      `FROM ${registry.host}/braid-test/busybox:latest\nRUN date > /stamp\n`,
    );
  });
  afterAll(async () => {
    if (docker && tags.length > 0) await run(docker, ['image', 'rm', '--force', ...tags]);
    if (contextDir) await rm(contextDir, { recursive: true, force: true });
    await registry?.stop();
  });

  it('names /stamp when the same Dockerfile is built twice and pushed', async () => {
    const client = new RegistryClient();
    const digests: string[] = [];
    for (const agent of ['a', 'b']) {
      const tag = `${registry.host}/braid-test/stamp:agent-${agent}`;
      tags.push(tag);
      // `date` prints seconds: the second build must start in another second.
      if (agent === 'b') await new Promise((r) => setTimeout(r, 1100));
      const build = await run(docker, [
        'build',
        '--no-cache',
        '--network',
        'none',
        '--platform',
        'linux/amd64',
        '--label',
        LABEL,
        '--tag',
        tag,
        contextDir,
      ]);
      expect(build.code, build.stderr).toBe(0);
      const push = await run(docker, ['push', tag]);
      expect(push.code, push.stderr).toBe(0);
      const descriptor = await client.headManifest(
        { domain: registry.host, repository: 'braid-test/stamp' },
        `agent-${agent}`,
      );
      digests.push(descriptor!.digest);
    }
    expect(digests[0]).not.toBe(digests[1]);

    const repository = { domain: registry.host, repository: 'braid-test/stamp' };
    const diff = await diffImages(
      client,
      { ...repository, digest: digests[0]! },
      { ...repository, digest: digests[1]! },
    );
    expect(diff.same).toBe(false);
    const stamp = diff.files.find((f) => f.path === '/stamp');
    expect(stamp).toMatchObject({ kind: 'changed' });
    expect(stamp!.fields).toContain('content');
    // The base layer is the same pushed blob: only the RUN layer differs.
    expect(diff.layers.map((l) => l.index)).toEqual([1]);
    expect(diff.config.map((d) => d.path)).toContain('created');
    const lines = formatImageDiff(diff, ['agent a', 'agent b']);
    expect(lines).toContainEqual(
      expect.stringMatching(
        /^\/stamp: content sha256:[a-f0-9]{12}… \(agent a\) ≠ sha256:[a-f0-9]{12}… \(agent b\)/,
      ),
    );
  });
});
