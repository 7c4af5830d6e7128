import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  failureLine,
  baseImageText,
  renderVerification,
  verificationJson,
  verifyFailures,
} from '../../src/cli/verify-report.js';
import {
  IN_TOTO_MEDIA_TYPE,
  PREDICATE_TYPE_ANNOTATION,
} from '../../src/oci/attestation-manifest.js';
import {
  buildOutcome,
  pairAttestations,
  provenanceLayers,
  type ImageVerification,
  type PlatformVerification,
  type ProvenanceOutcome,
} from '../../src/oci/index-verifier.js';
import {
  OCI_INDEX,
  OCI_MANIFEST,
  type Descriptor,
  type ImageIndex,
} from '../../src/oci/media-types.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { readProvenance, type ProvenanceReading } from '../../src/oci/provenance-reader.js';
import { fixture } from '../support/provenance-schemas.js';

const digest = (seed: string): string =>
  `sha256:${createHash('sha256').update(seed).digest('hex')}`;

const AMD64 = digest('amd64 image');
const S390X = digest('s390x image');

function image(d: string, architecture: string): Descriptor {
  return { mediaType: OCI_MANIFEST, digest: d, size: 500, platform: { os: 'linux', architecture } };
}

function attestation(d: string, refersTo?: string): Descriptor {
  return {
    mediaType: OCI_MANIFEST,
    digest: d,
    size: 800,
    platform: { os: 'unknown', architecture: 'unknown' },
    annotations: {
      'vnd.docker.reference.type': 'attestation-manifest',
      ...(refersTo !== undefined && { 'vnd.docker.reference.digest': refersTo }),
    },
  };
}

/** braid's reading of a platform, as readProvenance gives it (only what verify shows). */
function braidReading(emulated: boolean): ProvenanceReading {
  return {
    statementType: 'https://in-toto.io/Statement/v1',
    predicateType: 'https://slsa.dev/provenance/v1',
    slsaVersion: 'v1',
    producer: 'braid',
    buildType: 'https://braid.build/provenance/v1',
    subjects: [{ digest: { sha256: S390X.slice(7) } }],
    builderPlatform: 'linux/amd64',
    agent: { name: 'amd64-1', host: 'build-1.example' },
    engine: { id: 'ABCD', version: '20.10.24' },
    emulated,
    ...(emulated && {
      qemu: { handler: 'qemu-s390x', version: '7.2.9 (Debian 1:7.2+dfsg-7+deb12u18+b3)' },
    }),
    attempt: 1,
    dependencies: [],
    baseImages: [
      {
        uri: 'pkg:docker/127.0.0.1%3A5000/base/busybox@latest?platform=linux%2Fs390x',
        digest: { sha256: 'ab'.repeat(32) },
      },
    ],
    absent: [],
    statement: {} as ProvenanceReading['statement'],
  };
}

function present(reading: ProvenanceReading): ProvenanceOutcome {
  return { state: 'present', attestation: digest('att'), statement: digest('layer'), reading };
}

function platformOf(
  platform: string,
  d: string,
  provenance: ProvenanceOutcome,
  arch: PlatformVerification['arch'] = {
    state: 'passed',
    remembered: false,
    checked: 3,
    skipped: [],
  },
): PlatformVerification {
  return {
    platform,
    digest: d,
    mediaType: OCI_MANIFEST,
    arch,
    provenance,
    build: buildOutcome(parsePlatform(platform), provenance),
  };
}

function verification(
  platforms: PlatformVerification[],
  orphans: ImageVerification['orphans'] = [],
): ImageVerification {
  return {
    reference: '127.0.0.1:5000/team/app:1',
    digest: digest('index'),
    mediaType: OCI_INDEX,
    kind: 'index',
    platforms,
    orphans,
  };
}

const none = { requireNative: false, requireProvenance: false };

describe('pairing the index’s attestations with its images', () => {
  it('gives each image the attestation manifests that name it, and lists those that name none', () => {
    const index: ImageIndex = {
      schemaVersion: 2,
      manifests: [
        image(AMD64, 'amd64'),
        image(S390X, 's390x'),
        attestation(digest('a1'), AMD64),
        attestation(digest('a2'), digest('gone')),
        attestation(digest('a3')),
      ],
    };
    const { images, orphans } = pairAttestations(index);
    expect(images.map((i) => [i.descriptor.digest, i.attestations.map((a) => a.digest)])).toEqual([
      [AMD64, [digest('a1')]],
      [S390X, []],
    ]);
    expect(orphans).toEqual([
      { attestation: digest('a2'), refersTo: digest('gone') },
      { attestation: digest('a3') },
    ]);
  });

  it('reads only the provenance layers of an attestation manifest, not its SBOM', () => {
    const layer = (predicateType?: string, mediaType = IN_TOTO_MEDIA_TYPE): Descriptor => ({
      mediaType,
      digest: digest(predicateType ?? mediaType),
      size: 10,
      ...(predicateType !== undefined && {
        annotations: { [PREDICATE_TYPE_ANNOTATION]: predicateType },
      }),
    });
    const layers = [
      layer('https://spdx.dev/Document'),
      layer('https://slsa.dev/provenance/v0.2'),
      layer('https://slsa.dev/provenance/v1'),
      layer(undefined),
      layer(undefined, 'application/octet-stream'),
    ];
    expect(
      provenanceLayers({ schemaVersion: 2, config: layers[0] as Descriptor, layers }).map(
        (l) => l.annotations?.[PREDICATE_TYPE_ANNOTATION] ?? 'unannotated',
      ),
    ).toEqual([
      'https://slsa.dev/provenance/v0.2',
      'https://slsa.dev/provenance/v1',
      'unannotated',
    ]);
  });
});

describe('how a platform was built, from its provenance', () => {
  it('takes braid’s emulated flag and QEMU handler as written', () => {
    expect(buildOutcome(parsePlatform('linux/s390x'), present(braidReading(true)))).toEqual({
      state: 'emulated',
      qemu: { handler: 'qemu-s390x', version: '7.2.9 (Debian 1:7.2+dfsg-7+deb12u18+b3)' },
      builderPlatform: 'linux/amd64',
    });
    expect(buildOutcome(parsePlatform('linux/amd64'), present(braidReading(false)))).toMatchObject({
      state: 'native',
      source: 'provenance',
    });
  });

  it('calls BuildKit’s build native only when its builder platform is the image’s, else absent', () => {
    const buildkit = readProvenance(fixture('buildkit-slsa-v02-min.json'));
    expect(buildOutcome(parsePlatform('linux/amd64'), present(buildkit))).toEqual({
      state: 'native',
      source: 'builderPlatform',
      builderPlatform: 'linux/amd64',
    });
    expect(buildOutcome(parsePlatform('linux/arm64'), present(buildkit))).toEqual({
      state: 'absent',
      builderPlatform: 'linux/amd64',
    });
    expect(
      buildOutcome(parsePlatform('linux/amd64'), { state: 'absent', detail: 'no attestation' }),
    ).toEqual({ state: 'absent' });
  });
});

describe('the checks verify fails, one line each naming the check and the platform', () => {
  const absent: ProvenanceOutcome = { state: 'absent', detail: 'no attestation manifest names it' };

  it('passes an image without provenance unless provenance or native builds are required', () => {
    const v = verification([platformOf('linux/amd64', AMD64, absent)]);
    expect(verifyFailures(v, none)).toEqual([]);
    expect(
      verifyFailures(v, { requireNative: true, requireProvenance: true }).map(failureLine),
    ).toEqual([
      'verify: provenance check failed for linux/amd64: none (no attestation manifest names it), and --require-provenance is set',
      'verify: native check failed for linux/amd64: no provenance says how it was built, and --require-native is set',
    ]);
  });

  it('fails --require-native on the emulated platform only, naming QEMU and the agent', () => {
    const v = verification([
      platformOf('linux/amd64', AMD64, present(braidReading(false))),
      platformOf('linux/s390x', S390X, present(braidReading(true))),
    ]);
    expect(verifyFailures(v, none)).toEqual([]);
    expect(verifyFailures(v, { requireNative: true, requireProvenance: true })).toEqual([
      {
        check: 'native',
        platform: 'linux/s390x',
        message:
          'built under emulation (qemu-s390x 7.2.9) on agent amd64-1 (build-1.example), and --require-native is set',
      },
    ]);
  });

  it('always fails an arch mismatch, an invalid statement and an attestation for no image', () => {
    const v = verification(
      [
        platformOf('linux/amd64', AMD64, absent, {
          state: 'failed',
          detail: 'linux/amd64: /bin/sh is ELF 64-bit MSB s390x',
        }),
        platformOf('linux/s390x', S390X, {
          state: 'invalid',
          attestation: digest('att'),
          detail: `attestation ${digest('att')}: statement x: provenance statement is not JSON`,
        }),
      ],
      [{ attestation: digest('orphan'), refersTo: digest('gone') }],
    );
    expect(verifyFailures(v, none).map((f) => [f.check, f.platform])).toEqual([
      ['arch', 'linux/amd64'],
      ['provenance', 'linux/s390x'],
      ['attestation', 'index'],
    ]);
    for (const failure of verifyFailures(v, none)) {
      expect(failureLine(failure)).not.toContain('\n');
    }
    const orphan = verifyFailures(v, none)[2];
    expect(orphan && failureLine(orphan)).toBe(
      `verify: attestation check failed for index: attestation manifest ${digest('orphan')} is for ${digest('gone')}, which is no image in the index`,
    );
  });
  it('fails an index that lists no platform image at all', () => {
    expect(verifyFailures(verification([]), none).map(failureLine)).toEqual([
      'verify: index check failed for index: 127.0.0.1:5000/team/app:1 lists no platform image: nothing to verify',
    ]);
  });
});

describe('the output', () => {
  const v = verification([
    platformOf('linux/amd64', AMD64, present(braidReading(false))),
    platformOf('linux/s390x', S390X, present(braidReading(true))),
  ]);

  it('names a base image by its reference and short digest', () => {
    expect(
      baseImageText({
        uri: 'pkg:docker/127.0.0.1%3A5000/base/busybox@latest?platform=linux%2Fs390x',
        digest: { sha256: 'ab'.repeat(32) },
      }),
    ).toBe('127.0.0.1:5000/base/busybox:latest@sha256:abababababab');
    expect(baseImageText({ uri: 'pkg:docker/golang@1.22?platform=linux%2Farm64' })).toBe(
      'golang:1.22',
    );
    expect(
      baseImageText({ uri: 'https://example.com/x.tar', digest: { sha256: 'cd'.repeat(32) } }),
    ).toBe('https://example.com/x.tar@sha256:cdcdcdcdcdcd');
  });

  it('prints one row per platform: digest, arch, provenance, agent, mode, base images', () => {
    const text = renderVerification(v, []);
    const [header, amd64, s390x, index, verdict] = text.trimEnd().split('\n');
    expect(header?.split(/\s{2,}/)).toEqual([
      'PLATFORM',
      'DIGEST',
      'ARCH',
      'PROVENANCE',
      'AGENT (HOST)',
      'MODE',
      'BASE IMAGES',
    ]);
    expect(amd64?.split(/\s{2,}/)).toEqual([
      'linux/amd64',
      AMD64,
      'ok (3 ELF)',
      'braid SLSA v1',
      'amd64-1 (build-1.example)',
      'native',
      '127.0.0.1:5000/base/busybox:latest@sha256:abababababab',
    ]);
    expect(s390x?.split(/\s{2,}/)[5]).toBe('emulated (qemu-s390x 7.2.9)');
    expect(index).toBe(`index ${digest('index')} (${OCI_INDEX})`);
    expect(verdict).toBe('verified');
  });

  it('says what a statement lacks, and shows absent facts as null in JSON', () => {
    const buildkit = readProvenance(fixture('buildkit-slsa-v02-min.json'));
    const one = verification([platformOf('linux/amd64', AMD64, present(buildkit))]);
    expect(renderVerification(one, [])).toContain(
      `linux/amd64: provenance ${digest('att')} lacks builderId, agent, engine, emulated, attempt`,
    );
    const json = verificationJson(one, []) as {
      ok: boolean;
      platforms: { mode: string; modeSource: string; provenance: Record<string, unknown> }[];
    };
    expect(json.ok).toBe(true);
    expect(json.platforms[0]).toMatchObject({ mode: 'native', modeSource: 'builderPlatform' });
    expect(json.platforms[0]?.provenance).toMatchObject({
      state: 'present',
      producer: 'buildkit',
      slsaVersion: 'v0.2',
      agent: null,
      emulated: null,
      builderId: null,
      invocationId: 'kn8nrkmn0mgx3c1r5mfjy4pwo',
    });
  });
});
