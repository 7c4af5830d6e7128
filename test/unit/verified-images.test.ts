import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { verifiedImagesIn, verifiedImagesInMemory } from '../../src/oci/verified-images.js';

const DIGEST = `sha256:${'a'.repeat(64)}`;
const MiB = 1024 * 1024;

describe('the arch guard passes remembered on disk', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-verified-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('knows a pass for the same digest, platform and budget, and nothing else', async () => {
    const cache = verifiedImagesIn(join(dir, 'cache'));
    expect(await cache.has(DIGEST, 'linux/arm64/v8', 64 * MiB)).toBe(false);
    await cache.add(DIGEST, 'linux/arm64/v8', 64 * MiB);
    expect(await cache.has(DIGEST, 'linux/arm64/v8', 64 * MiB)).toBe(true);
    expect(await cache.has(DIGEST, 'linux/amd64', 64 * MiB)).toBe(false);
    expect(await cache.has(DIGEST, 'linux/arm64/v8', 128 * MiB)).toBe(false);
    expect(await cache.has(`sha256:${'b'.repeat(64)}`, 'linux/arm64/v8', 64 * MiB)).toBe(false);
    // Another process reading the same directory sees it too.
    expect(await verifiedImagesIn(join(dir, 'cache')).has(DIGEST, 'linux/arm64/v8', 64 * MiB)).toBe(
      true,
    );
  });

  it('ignores what is not a digest, and a directory it cannot write', async () => {
    const cache = verifiedImagesIn(join(dir, 'cache'));
    await cache.add('../../etc/passwd', 'linux/amd64', MiB);
    expect(await cache.has('../../etc/passwd', 'linux/amd64', MiB)).toBe(false);
    await writeFile(join(dir, 'a-file'), '');
    const unwritable = verifiedImagesIn(join(dir, 'a-file', 'cache'));
    await expect(unwritable.add(DIGEST, 'linux/amd64', MiB)).resolves.toBeUndefined();
    expect(await unwritable.has(DIGEST, 'linux/amd64', MiB)).toBe(false);
  });
});

describe('the arch guard passes remembered in memory (the coordinator)', () => {
  it('knows a pass for the same digest, platform and budget, and forgets the oldest beyond its bound', async () => {
    const passes = verifiedImagesInMemory(2);
    const other = `sha256:${'b'.repeat(64)}`;
    const third = `sha256:${'c'.repeat(64)}`;
    await passes.add(DIGEST, 'linux/amd64', MiB);
    expect(await passes.has(DIGEST, 'linux/amd64', MiB)).toBe(true);
    expect(await passes.has(DIGEST, 'linux/arm64', MiB)).toBe(false);
    expect(await passes.has(DIGEST, 'linux/amd64', 2 * MiB)).toBe(false);
    await passes.add('not-a-digest', 'linux/amd64', MiB);
    expect(await passes.has('not-a-digest', 'linux/amd64', MiB)).toBe(false);
    await passes.add(other, 'linux/amd64', MiB);
    await passes.add(third, 'linux/amd64', MiB);
    expect(await passes.has(DIGEST, 'linux/amd64', MiB)).toBe(false);
    expect(await passes.has(other, 'linux/amd64', MiB)).toBe(true);
    expect(await passes.has(third, 'linux/amd64', MiB)).toBe(true);
  });
});
