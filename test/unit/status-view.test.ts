import { create } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import { describeBuild } from '../../src/cli/commands/status-run.js';
import { buildJson } from '../../src/cli/progress/build-view.js';
import {
  BuildSchema,
  BuildState,
  ProvenanceMode,
  type Build,
} from '../../src/gen/braid/v1/build_pb.js';
import { JobState } from '../../src/gen/braid/v1/common_pb.js';

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0);
const DIGEST_AMD64 = `sha256:${'a'.repeat(64)}`;
const DIGEST_S390X = `sha256:${'b'.repeat(64)}`;
const DIGEST_INDEX = `sha256:${'c'.repeat(64)}`;
const ATTESTATION_AMD64 = `sha256:${'e'.repeat(64)}`;
const ATTESTATION_S390X = `sha256:${'f'.repeat(64)}`;
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const INDEX = 'application/vnd.oci.image.index.v1+json';

function attestedBuild(provenance: ProvenanceMode): Build {
  return create(BuildSchema, {
    id: 'b-42',
    requestId: 'r-7',
    state: BuildState.SUCCEEDED,
    createdAt: timestampFromMs(T0),
    finishedAt: timestampFromMs(T0 + 96_000),
    spec: {
      contextDigest: `sha256:${'d'.repeat(64)}`,
      platforms: [
        { os: 'linux', architecture: 'amd64' },
        { os: 'linux', architecture: 's390x' },
      ],
      tags: ['127.0.0.1:5000/app:1'],
      provenance,
    },
    index: { digest: DIGEST_INDEX, sizeBytes: 1_602n, mediaType: INDEX },
    jobs: [
      {
        id: 'j1',
        platform: { os: 'linux', architecture: 'amd64' },
        state: JobState.SUCCEEDED,
        agent: 'x86-01',
        image: { digest: DIGEST_AMD64, sizeBytes: 528n, mediaType: MANIFEST },
        attestation: { digest: ATTESTATION_AMD64, sizeBytes: 566n, mediaType: MANIFEST },
        durationMs: 41_230n,
        attempt: 1,
      },
      {
        id: 'j2',
        platform: { os: 'linux', architecture: 's390x' },
        state: JobState.SUCCEEDED,
        agent: 'x86-01',
        emulated: true,
        emulator: 'qemu-s390x',
        image: { digest: DIGEST_S390X, sizeBytes: 530n, mediaType: MANIFEST },
        attestation: { digest: ATTESTATION_S390X, sizeBytes: 567n, mediaType: MANIFEST },
        durationMs: 95_000n,
        attempt: 1,
      },
    ],
  });
}

describe('braid status --output json', () => {
  it("gives each job its provenance attestation manifest, and the build's provenance mode", () => {
    const json = buildJson(attestedBuild(ProvenanceMode.MAX));
    expect(json.provenance).toBe('max');
    expect(json.jobs.map((job) => [job.platform, job.image?.digest, job.attestation])).toEqual([
      ['linux/amd64', DIGEST_AMD64, { mediaType: MANIFEST, digest: ATTESTATION_AMD64, size: 566 }],
      ['linux/s390x', DIGEST_S390X, { mediaType: MANIFEST, digest: ATTESTATION_S390X, size: 567 }],
    ]);
    // What a CI step parses: the line as printed.
    const parsed = JSON.parse(JSON.stringify(json)) as { jobs: { attestation: unknown }[] };
    expect(parsed.jobs[1]?.attestation).toEqual({
      mediaType: MANIFEST,
      digest: ATTESTATION_S390X,
      size: 567,
    });
  });

  it('says null for a job without an attestation, and disabled when the build asked for none', () => {
    const build = attestedBuild(ProvenanceMode.DISABLED);
    for (const job of build.jobs) job.attestation = undefined;
    const json = buildJson(build);
    expect(json.provenance).toBe('disabled');
    expect(json.jobs.map((job) => job.attestation)).toEqual([null, null]);
  });

  it("reads an unspecified mode (a build from an older CLI) as buildx's default, min", () => {
    expect(buildJson(attestedBuild(ProvenanceMode.UNSPECIFIED)).provenance).toBe('min');
    expect(buildJson(attestedBuild(ProvenanceMode.MIN)).provenance).toBe('min');
  });
});

describe('braid status (text)', () => {
  it('prints the provenance mode and one line per platform naming its attestation manifest', () => {
    const text = describeBuild(attestedBuild(ProvenanceMode.MIN), T0 + 120_000);
    const lines = text.split('\n');
    expect(lines).toContain('provenance min');
    expect(lines).toContain(`provenance linux/amd64 ${ATTESTATION_AMD64}`);
    expect(lines).toContain(`provenance linux/s390x ${ATTESTATION_S390X}`);
    // The table keeps its image digests; the attestation is not one of its columns.
    const header = lines.find((line) => line.startsWith('PLATFORM'));
    expect(header?.split(/\s+/)).toEqual([
      'PLATFORM',
      'STATE',
      'AGENT',
      'MODE',
      'DURATION',
      'DIGEST',
      'DETAIL',
    ]);
  });

  it('prints no attestation line for a platform that has none yet', () => {
    const build = attestedBuild(ProvenanceMode.MAX);
    build.state = BuildState.RUNNING;
    const [, s390x] = build.jobs;
    if (s390x) {
      s390x.state = JobState.RUNNING;
      s390x.attestation = undefined;
    }
    const lines = describeBuild(build, T0 + 120_000).split('\n');
    expect(lines).toContain('provenance max');
    expect(lines.filter((line) => line.startsWith('provenance linux/'))).toEqual([
      `provenance linux/amd64 ${ATTESTATION_AMD64}`,
    ]);
  });

  it('says disabled when the build asked for no provenance', () => {
    const build = attestedBuild(ProvenanceMode.DISABLED);
    for (const job of build.jobs) job.attestation = undefined;
    const lines = describeBuild(build, T0 + 120_000).split('\n');
    expect(lines).toContain('provenance disabled');
    expect(lines.filter((line) => line.startsWith('provenance linux/'))).toEqual([]);
  });
});
