import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildMetadata, writeMetadataFile } from '../../src/cli/metadata.js';
import { BraidError } from '../../src/errors.js';
import { BuildSchema, BuildState, type Build } from '../../src/gen/braid/v1/build_pb.js';
import { JobState } from '../../src/gen/braid/v1/common_pb.js';

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0);
const DIGEST_ARM64 = `sha256:${'a'.repeat(64)}`;
const DIGEST_S390X = `sha256:${'b'.repeat(64)}`;
const DIGEST_INDEX = `sha256:${'c'.repeat(64)}`;
const ATTESTATION_ARM64 = `sha256:${'e'.repeat(64)}`;
const ATTESTATION_S390X = `sha256:${'f'.repeat(64)}`;
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const INDEX = 'application/vnd.oci.image.index.v1+json';

function succeededBuild(): Build {
  return create(BuildSchema, {
    id: 'b-42',
    requestId: 'r-7',
    state: BuildState.SUCCEEDED,
    createdAt: timestampFromMs(T0),
    finishedAt: timestampFromMs(T0 + 96_000),
    spec: {
      contextDigest: `sha256:${'d'.repeat(64)}`,
      platforms: [
        { os: 'linux', architecture: 'arm64' },
        { os: 'linux', architecture: 's390x' },
      ],
      tags: ['127.0.0.1:5000/app:1', '127.0.0.1:5000/app:latest'],
    },
    index: { digest: DIGEST_INDEX, sizeBytes: 856n, mediaType: INDEX },
    jobs: [
      {
        id: 'j1',
        platform: { os: 'linux', architecture: 'aarch64' },
        state: JobState.SUCCEEDED,
        agent: 'a2',
        image: { digest: DIGEST_ARM64, sizeBytes: 528n, mediaType: MANIFEST },
        attestation: { digest: ATTESTATION_ARM64, sizeBytes: 566n, mediaType: MANIFEST },
        durationMs: 41_230n,
        attempt: 1,
      },
      {
        id: 'j2',
        platform: { os: 'linux', architecture: 's390x' },
        state: JobState.SUCCEEDED,
        agent: 'a1',
        emulated: true,
        emulator: 'qemu-s390x',
        image: { digest: DIGEST_S390X, sizeBytes: 530n, mediaType: MANIFEST },
        attestation: { digest: ATTESTATION_S390X, sizeBytes: 566n, mediaType: MANIFEST },
        durationMs: 95_000n,
        attempt: 1,
      },
    ],
  });
}

describe('the metadata file', () => {
  let dir = '';

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-metadata-'));
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("holds buildx's keys for the index and braid's per-platform results with their provenance", async () => {
    const path = join(dir, 'metadata.json');
    await writeMetadataFile(path, buildMetadata(succeededBuild()));
    expect(JSON.parse(await readFile(path, 'utf8'))).toEqual({
      'image.name': '127.0.0.1:5000/app:1,127.0.0.1:5000/app:latest',
      'containerimage.digest': DIGEST_INDEX,
      'containerimage.descriptor': { mediaType: INDEX, digest: DIGEST_INDEX, size: 856 },
      'braid.build.id': 'b-42',
      'braid.request.id': 'r-7',
      platforms: [
        {
          platform: 'linux/arm64',
          digest: DIGEST_ARM64,
          attestation: ATTESTATION_ARM64,
          agent: 'a2',
          emulated: false,
          durationMs: 41_230,
        },
        {
          platform: 'linux/s390x',
          digest: DIGEST_S390X,
          attestation: ATTESTATION_S390X,
          agent: 'a1',
          emulated: true,
          durationMs: 95_000,
        },
      ],
    });
  });

  it('replaces an existing file and leaves no temporary file behind', async () => {
    const path = join(dir, 'metadata.json');
    await writeFile(path, '{"stale": true}');
    await writeMetadataFile(path, buildMetadata(succeededBuild()));
    expect(JSON.parse(await readFile(path, 'utf8'))).toMatchObject({ 'braid.build.id': 'b-42' });
    expect(await readdir(dir)).toEqual(['metadata.json']);
  });

  it('leaves out the image keys when the build pushed no index', () => {
    const build = succeededBuild();
    build.state = BuildState.FAILED;
    build.index = undefined;
    const [arm64] = build.jobs;
    if (arm64) {
      arm64.state = JobState.FAILED;
      arm64.image = undefined;
    }
    const metadata = buildMetadata(build);
    expect(metadata).not.toHaveProperty(['containerimage.digest']);
    expect(metadata).not.toHaveProperty(['containerimage.descriptor']);
    expect(metadata.platforms[0]).toMatchObject({ platform: 'linux/arm64', digest: null });
  });

  it('says null where a platform has no provenance attestation (--provenance=false)', () => {
    const build = succeededBuild();
    for (const job of build.jobs) job.attestation = undefined;
    const metadata = buildMetadata(build);
    expect(metadata.platforms.map((p) => [p.platform, p.digest, p.attestation])).toEqual([
      ['linux/arm64', DIGEST_ARM64, null],
      ['linux/s390x', DIGEST_S390X, null],
    ]);
    expect(JSON.stringify(metadata)).not.toContain('buildx.build.provenance');
  });

  it('fails naming the file when its directory does not exist', async () => {
    const path = join(dir, 'missing', 'metadata.json');
    const writing = writeMetadataFile(path, buildMetadata(succeededBuild()));
    await expect(writing).rejects.toBeInstanceOf(BraidError);
    await expect(writing).rejects.toThrow(`cannot write metadata file ${path}`);
    expect(await readdir(dir)).toEqual([]);
  });
});
