import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  ATTESTATION_ARTIFACT_TYPE,
  IN_TOTO_MEDIA_TYPE,
  OCI_EMPTY_MEDIA_TYPE,
  PREDICATE_TYPE_ANNOTATION,
  attestationManifest,
} from '../../src/oci/attestation-manifest.js';
import { OCI_CONFIG, OCI_MANIFEST, type ImageManifest } from '../../src/oci/media-types.js';
import { parsePlatform } from '../../src/oci/platform.js';
import {
  BRAID_BUILD_TYPE,
  MAX_STATEMENT_BYTES,
  MAX_STRING_CHARS,
  ProvenanceError,
  imagePurl,
  provenanceStatement,
  serializeStatement,
  type ProvenanceInput,
  type ProvenanceStatement,
} from '../../src/oci/provenance.js';
import { provenanceCovers, readProvenance } from '../../src/oci/provenance-reader.js';
import {
  ATTESTATION_DIGEST_KEY,
  ATTESTATION_TYPE,
  ATTESTATION_TYPE_KEY,
  buildIndex,
  type IndexEntry,
} from '../../src/oci/stitch.js';
import { parseReference } from '../../src/oci/reference.js';
import { fixture, fixtureJson, schemaErrors } from '../support/provenance-schemas.js';

const hex = (seed: string): string => createHash('sha256').update(seed).digest('hex');
const digest = (seed: string): string => `sha256:${hex(seed)}`;

const IMAGE_DIGEST = digest('s390x image manifest');
const CONTEXT_DIGEST = digest('context tar');

function input(overrides: Partial<ProvenanceInput> = {}): ProvenanceInput {
  return {
    mode: 'min',
    subject: {
      digest: IMAGE_DIGEST,
      platform: parsePlatform('linux/s390x'),
      names: ['127.0.0.1:5000/team/app:1.0', '127.0.0.1:5000/team/app:latest'],
    },
    request: {
      contextDigest: CONTEXT_DIGEST,
      dockerfile: { path: 'build/Dockerfile', digest: digest('Dockerfile') },
      target: 'release',
      buildArgs: { VERSION: '1.0', GOFLAGS: '-trimpath' },
      labels: { 'org.opencontainers.image.source': 'https://git.example/app' },
      platforms: [parsePlatform('linux/amd64'), parsePlatform('linux/s390x')],
      tags: ['127.0.0.1:5000/team/app:1.0', '127.0.0.1:5000/team/app:latest'],
      secretIds: ['npmrc', 'aws'],
      sshIds: ['default'],
    },
    builder: {
      id: 'https://ci.example/builds/42',
      braidVersion: '0.1.0',
      coordinator: 'coordinator.example:7443',
      agent: { name: 'amd64-1', host: 'build-amd64-1.example' },
      engine: { id: 'ABCD:EFGH', version: '20.10.24' },
      kernel: '6.1.0-18-amd64',
      builderPlatform: parsePlatform('linux/amd64'),
      emulated: true,
      qemu: { handler: 'qemu-s390x', version: '7.2.9' },
      attempt: 2,
    },
    run: {
      invocationId: 'b-7f3a',
      requestId: 'ci-run-991',
      jobId: 'j-s390x',
      startedOn: new Date('2024-05-02T10:11:12.345Z'),
      finishedOn: new Date('2024-05-02T10:13:40.000Z'),
    },
    baseImages: [
      {
        ref: 'docker.io/library/golang:1.22',
        digest: digest('golang index'),
        platform: parsePlatform('linux/s390x'),
      },
      {
        ref: '127.0.0.1:5000/base/busybox:1.36',
        digest: digest('busybox'),
        platform: parsePlatform('linux/s390x'),
      },
    ],
    steps: [
      {
        digest: digest('vertex from'),
        name: '[internal] load metadata for docker.io/library/golang:1.22',
        cached: false,
        startedOn: new Date('2024-05-02T10:11:13.000Z'),
        finishedOn: new Date('2024-05-02T10:11:14.250Z'),
      },
      {
        digest: digest('vertex run'),
        name: '[2/3] RUN go build -o /out/app .',
        inputs: [digest('vertex from'), digest('vertex not in the trace')],
        cached: true,
      },
    ],
    ...overrides,
  };
}

function expectOneLineError(run: () => unknown, pattern: RegExp, code?: string): void {
  let caught: unknown;
  try {
    run();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(ProvenanceError);
  const err = caught as ProvenanceError;
  expect(err.message).toMatch(pattern);
  expect(err.message).not.toContain('\n');
  if (code) expect(err.code).toBe(code);
}

describe('provenanceStatement', () => {
  it('writes the same bytes for the same input, whatever the order of maps and base images', () => {
    const first = serializeStatement(provenanceStatement(input({ mode: 'max' })));
    const base = input({ mode: 'max' });
    const shuffled = input({
      mode: 'max',
      request: {
        ...base.request,
        buildArgs: { GOFLAGS: '-trimpath', VERSION: '1.0' },
        secretIds: ['aws', 'npmrc'],
      },
      baseImages: [...(base.baseImages ?? [])].reverse(),
    });
    expect(serializeStatement(provenanceStatement(shuffled)).equals(first)).toBe(true);
    expect(serializeStatement(provenanceStatement(input({ mode: 'max' }))).equals(first)).toBe(
      true,
    );
  });

  it('is a valid in-toto Statement v1 with a valid SLSA Provenance v1 predicate, in both modes', () => {
    for (const mode of ['min', 'max'] as const) {
      const statement = provenanceStatement(input({ mode }));
      // What the registry stores is the bytes: validate what they parse back to.
      const stored = JSON.parse(serializeStatement(statement).toString('utf8')) as unknown;
      expect(schemaErrors(stored), mode).toEqual([]);
    }
  });

  it('is checked by schemas that do refuse what the specs forbid', () => {
    const broken = (change: (s: ProvenanceStatement) => void): unknown => {
      const s = JSON.parse(
        serializeStatement(provenanceStatement(input())).toString('utf8'),
      ) as ProvenanceStatement;
      change(s);
      return s;
    };
    const cases: [string, unknown, RegExp][] = [
      [
        'subject without digest',
        broken((s) => (s.subject = [{ name: 'x' } as never])),
        /statement\/subject\/0 must have required property 'digest'/,
      ],
      [
        'short sha256',
        broken((s) => (s.subject[0] = { name: 'x', digest: { sha256: 'abc' } })),
        /statement\/subject\/0\/digest\/sha256 must match pattern/,
      ],
      [
        'builder id that is no URI',
        broken((s) => (s.predicate.runDetails.builder.id = '127.0.0.1:7443')),
        /predicate\/runDetails\/builder\/id must match format "uri"/,
      ],
      [
        'local time',
        broken((s) => (s.predicate.runDetails.metadata.startedOn = '2024-05-02T12:11:12+02:00')),
        /predicate\/runDetails\/metadata\/startedOn must match pattern "Z\$"/,
      ],
      [
        'no buildType',
        broken((s) => delete (s.predicate.buildDefinition as { buildType?: string }).buildType),
        /predicate\/buildDefinition must have required property 'buildType'/,
      ],
    ];
    for (const [what, statement, pattern] of cases) {
      expect(schemaErrors(statement).join('\n'), what).toMatch(pattern);
    }
  });

  it('names the platform image as BuildKit does: one package URL per tag, with its digest', () => {
    const statement = provenanceStatement(input());
    expect(statement._type).toBe('https://in-toto.io/Statement/v1');
    expect(statement.predicateType).toBe('https://slsa.dev/provenance/v1');
    expect(statement.subject).toEqual([
      {
        name: 'pkg:docker/127.0.0.1%3A5000/team/app@1.0?platform=linux%2Fs390x',
        digest: { sha256: hex('s390x image manifest') },
      },
      {
        name: 'pkg:docker/127.0.0.1%3A5000/team/app@latest?platform=linux%2Fs390x',
        digest: { sha256: hex('s390x image manifest') },
      },
    ]);
  });

  it('spells package URLs byte for byte as BuildKit util/purl does', () => {
    const d = digest('test');
    const amd64 = parsePlatform('linux/amd64');
    expect(imagePurl('alpine')).toBe('pkg:docker/alpine@latest');
    expect(imagePurl('library/alpine:3.15')).toBe('pkg:docker/alpine@3.15');
    expect(imagePurl('docker.io/library/alpine:latest')).toBe('pkg:docker/alpine@latest');
    expect(imagePurl(`docker.io/library/alpine:latest@${d}`)).toBe(
      `pkg:docker/alpine@latest?digest=${d}`,
    );
    expect(imagePurl(`docker.io/library/alpine@${d}`)).toBe(`pkg:docker/alpine?digest=${d}`);
    expect(imagePurl('user/test:v2')).toBe('pkg:docker/user/test@v2');
    expect(imagePurl('ghcr.io/foo/bar:v2')).toBe('pkg:docker/ghcr.io/foo/bar@v2');
    expect(imagePurl('ghcr.io/foo/bar')).toBe('pkg:docker/ghcr.io/foo/bar@latest');
    expect(imagePurl('busybox', amd64)).toBe('pkg:docker/busybox@latest?platform=linux%2Famd64');
    expect(imagePurl(`busybox@${d}`, amd64)).toBe(
      `pkg:docker/busybox?digest=${d}&platform=linux%2Famd64`,
    );
    expect(imagePurl('alpine:3.17', parsePlatform('linux/arm64/v8'))).toBe(
      'pkg:docker/alpine@3.17?platform=linux%2Farm64',
    );
    expect(imagePurl('alpine', parsePlatform('linux/arm/v7'))).toBe(
      'pkg:docker/alpine@latest?platform=linux%2Farm%2Fv7',
    );
  });

  it('records the request as given: BuildKit request args, secret and ssh ids only, platforms and tags', () => {
    const { externalParameters } = provenanceStatement(input()).predicate.buildDefinition;
    expect(externalParameters).toEqual({
      configSource: {
        uri: `braid-context:${CONTEXT_DIGEST}`,
        digest: { sha256: hex('context tar') },
        path: 'build/Dockerfile',
      },
      request: {
        frontend: 'dockerfile.v0',
        args: {
          'build-arg:GOFLAGS': '-trimpath',
          'build-arg:VERSION': '1.0',
          'label:org.opencontainers.image.source': 'https://git.example/app',
          target: 'release',
        },
        secrets: [{ id: 'aws' }, { id: 'npmrc' }],
        ssh: [{ id: 'default' }],
      },
      dockerfile: { path: 'build/Dockerfile', digest: { sha256: hex('Dockerfile') } },
      platforms: ['linux/amd64', 'linux/s390x'],
      tags: ['127.0.0.1:5000/team/app:1.0', '127.0.0.1:5000/team/app:latest'],
    });
    const withOptions = provenanceStatement(
      input({
        request: {
          ...input().request,
          noCache: true,
          network: 'none',
          addHosts: ['db:10.0.0.2', 'cache:10.0.0.3'],
        },
      }),
    ).predicate.buildDefinition.externalParameters.request.args;
    expect(withOptions).toMatchObject({
      'no-cache': '',
      'force-network-mode': 'none',
      'add-hosts': 'db:10.0.0.2,cache:10.0.0.3',
    });
  });

  it('names the host, the engine and the emulation in internalParameters, keys sorted as BuildKit flattens them', () => {
    const { internalParameters } = provenanceStatement(input()).predicate.buildDefinition;
    expect(internalParameters).toEqual({
      agent: { name: 'amd64-1', host: 'build-amd64-1.example' },
      attempt: 2,
      braidVersion: '0.1.0',
      builderPlatform: 'linux/amd64',
      coordinator: 'coordinator.example:7443',
      emulated: true,
      engine: { id: 'ABCD:EFGH', version: '20.10.24' },
      kernel: '6.1.0-18-amd64',
      qemu: { handler: 'qemu-s390x', version: '7.2.9' },
    });
    expect(Object.keys(internalParameters)).toEqual(Object.keys(internalParameters).sort());
    const native = provenanceStatement(
      input({ builder: { ...input().builder, emulated: false, qemu: undefined } }),
    ).predicate.buildDefinition.internalParameters;
    expect(native.emulated).toBe(false);
    expect(native).not.toHaveProperty('qemu');
  });

  it('lists every base image by digest as a BuildKit package URL, then the context', () => {
    const { resolvedDependencies } = provenanceStatement(input()).predicate.buildDefinition;
    expect(resolvedDependencies).toEqual([
      {
        uri: 'pkg:docker/127.0.0.1%3A5000/base/busybox@1.36?platform=linux%2Fs390x',
        digest: { sha256: hex('busybox') },
      },
      {
        uri: 'pkg:docker/golang@1.22?platform=linux%2Fs390x',
        digest: { sha256: hex('golang index') },
      },
      { uri: `braid-context:${CONTEXT_DIGEST}`, digest: { sha256: hex('context tar') } },
    ]);
  });

  it('says who ran the build, which invocation, and when', () => {
    const { runDetails } = provenanceStatement(input()).predicate;
    expect(runDetails).toEqual({
      builder: { id: 'https://ci.example/builds/42', version: { braid: '0.1.0' } },
      metadata: {
        invocationId: 'b-7f3a',
        startedOn: '2024-05-02T10:11:12.345Z',
        finishedOn: '2024-05-02T10:13:40.000Z',
        braid_requestId: 'ci-run-991',
        braid_jobId: 'j-s390x',
      },
    });
  });

  it('records the steps only in max mode, with names, durations and cache hits', () => {
    const min = provenanceStatement(input({ mode: 'min' }));
    expect(min.predicate.buildDefinition.internalParameters).not.toHaveProperty('buildConfig');
    const max = provenanceStatement(input({ mode: 'max' }));
    const config = max.predicate.buildDefinition.internalParameters.buildConfig;
    expect(config).toEqual({
      llbDefinition: [
        {
          id: 'step0',
          name: '[internal] load metadata for docker.io/library/golang:1.22',
          cached: false,
          startedOn: '2024-05-02T10:11:13.000Z',
          finishedOn: '2024-05-02T10:11:14.250Z',
          durationMs: 1250,
        },
        { id: 'step1', name: '[2/3] RUN go build -o /out/app .', inputs: ['step0'], cached: true },
      ],
      digestMapping: { [digest('vertex from')]: 'step0', [digest('vertex run')]: 'step1' },
    });
  });

  it('cuts a long string, keeping its length and sha256', () => {
    const huge = 'x'.repeat(100_000);
    const statement = provenanceStatement(
      input({ request: { ...input().request, buildArgs: { BLOB: huge } } }),
    );
    const value = statement.predicate.buildDefinition.externalParameters.request.args?.[
      'build-arg:BLOB'
    ] as string;
    expect(value.length).toBe(MAX_STRING_CHARS);
    expect(value).toContain(`100000 chars, sha256:${hex(huge)}`);
  });

  it('stays within its bound in max mode by leaving steps out, and says how many', () => {
    const steps = Array.from({ length: 5000 }, (_, i) => ({
      digest: digest(`vertex ${i}`),
      name: `[${i}/5000] RUN ${'echo step && '.repeat(40)}true`,
      cached: i % 2 === 0,
      ...(i > 0 && { inputs: [digest(`vertex ${i - 1}`)] }),
    }));
    const statement = provenanceStatement(input({ mode: 'max', steps }));
    const bytes = serializeStatement(statement);
    expect(bytes.length).toBeLessThanOrEqual(MAX_STATEMENT_BYTES);
    const config = statement.predicate.buildDefinition.internalParameters.buildConfig;
    expect(config?.llbDefinition.length).toBeGreaterThan(100);
    expect((config?.llbDefinition.length ?? 0) + (config?.stepsOmitted ?? 0)).toBe(5000);
    expect(Object.keys(config?.digestMapping ?? {}).length).toBe(config?.llbDefinition.length);
    expect(schemaErrors(JSON.parse(bytes.toString('utf8')))).toEqual([]);
  });

  it('refuses a request too large to record, in one line', () => {
    const buildArgs = Object.fromEntries(
      Array.from({ length: 400 }, (_, i) => [`ARG_${i}`, 'v'.repeat(4000)]),
    );
    expectOneLineError(
      () => provenanceStatement(input({ request: { ...input().request, buildArgs } })),
      /would be \d+ bytes \(at most 1048576\)/,
      'resource_exhausted',
    );
    const tooMany = Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`A${i}`, '1']));
    expectOneLineError(
      () => provenanceStatement(input({ request: { ...input().request, buildArgs: tooMany } })),
      /1001 build args \(at most 1000\)/,
      'resource_exhausted',
    );
  });

  it('refuses malformed input, naming the field', () => {
    expectOneLineError(
      () => provenanceStatement(input({ subject: { ...input().subject, digest: 'sha256:abc' } })),
      /subject digest "sha256:abc" is not a digest/,
      'invalid_argument',
    );
    expectOneLineError(
      () => provenanceStatement(input({ builder: { ...input().builder, id: '127.0.0.1:7443' } })),
      /builder id "127.0.0.1:7443" is not a URI/,
    );
    expectOneLineError(
      () => provenanceStatement(input({ builder: { ...input().builder, attempt: 0 } })),
      /attempt 0 is not a positive integer/,
    );
    expectOneLineError(
      () => provenanceStatement(input({ run: { ...input().run, startedOn: new Date('nope') } })),
      /startedOn is not a valid time/,
    );
  });
});

describe('attestationManifest', () => {
  const subject = { digest: IMAGE_DIGEST, size: 1234, mediaType: OCI_MANIFEST };
  const sha = (bytes: Buffer): string =>
    `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

  it('writes BuildKit’s attestation image: an in-toto layer, an unknown/unknown config, an OCI manifest', () => {
    const statement = provenanceStatement(input());
    const image = attestationManifest(statement, subject);
    const [layer] = image.layers;
    expect(image.layers).toHaveLength(1);
    expect(layer?.mediaType).toBe(IN_TOTO_MEDIA_TYPE);
    expect(layer?.bytes.equals(serializeStatement(statement))).toBe(true);

    // Go's json.Marshal of ocispecs.Image, as BuildKit's attestationsConfig writes it.
    expect(image.config.mediaType).toBe(OCI_CONFIG);
    expect(image.config.bytes.toString()).toBe(
      `{"architecture":"unknown","os":"unknown","config":{},"rootfs":{"type":"layers","diff_ids":["${layer?.digest}"]}}`,
    );

    const manifestText = image.manifest.bytes.toString();
    expect(manifestText.startsWith('{\n  "schemaVersion": 2,\n  "mediaType": ')).toBe(true);
    const manifest = JSON.parse(manifestText) as ImageManifest;
    expect(manifest).toEqual({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: OCI_CONFIG, digest: image.config.digest, size: image.config.size },
      layers: [
        {
          mediaType: IN_TOTO_MEDIA_TYPE,
          digest: layer?.digest,
          size: layer?.size,
          annotations: { [PREDICATE_TYPE_ANNOTATION]: 'https://slsa.dev/provenance/v1' },
        },
      ],
    });
    expect(image.blobs).toEqual([image.config, layer]);
  });

  it('gives every blob a digest and size that match its bytes', () => {
    const image = attestationManifest(provenanceStatement(input({ mode: 'max' })), subject);
    for (const blob of [image.manifest, ...image.blobs]) {
      expect(blob.digest).toBe(sha(blob.bytes));
      expect(blob.size).toBe(blob.bytes.length);
    }
    expect(image.descriptor.digest).toBe(image.manifest.digest);
    expect(image.descriptor.size).toBe(image.manifest.size);
  });

  it('lists under the index as unknown/unknown with the attestation annotations, after its image', () => {
    const image = attestationManifest(provenanceStatement(input()), subject);
    expect(image.descriptor).toEqual({
      mediaType: OCI_MANIFEST,
      digest: image.manifest.digest,
      size: image.manifest.size,
      annotations: {
        'vnd.docker.reference.digest': IMAGE_DIGEST,
        'vnd.docker.reference.type': 'attestation-manifest',
      },
      platform: { architecture: 'unknown', os: 'unknown' },
    });
    expect(image.descriptor.annotations[ATTESTATION_TYPE_KEY]).toBe(ATTESTATION_TYPE);
    expect(image.descriptor.annotations[ATTESTATION_DIGEST_KEY]).toBe(IMAGE_DIGEST);

    const ref = parseReference('127.0.0.1:5000/team/app:1.0');
    const repo = { domain: ref.domain, repository: ref.repository };
    const entries: IndexEntry[] = [
      {
        source: ref,
        repo,
        descriptor: { mediaType: OCI_MANIFEST, digest: IMAGE_DIGEST, size: 1234 },
        platform: parsePlatform('linux/s390x'),
      },
      {
        source: ref,
        repo,
        descriptor: image.descriptor,
        attestationFor: image.descriptor.annotations[ATTESTATION_DIGEST_KEY],
      },
    ];
    const index = JSON.parse(
      buildIndex(entries, { attestations: true, format: 'auto', annotations: {} }).bytes.toString(),
    ) as { manifests: { digest: string; platform: unknown; annotations?: unknown }[] };
    expect(index.manifests.map((m) => m.digest)).toEqual([IMAGE_DIGEST, image.manifest.digest]);
    expect(index.manifests[1]?.platform).toEqual({ architecture: 'unknown', os: 'unknown' });
    expect(index.manifests[1]?.annotations).toEqual(image.descriptor.annotations);
  });

  it('writes the OCI artifact form on request: artifactType, the empty config, a subject', () => {
    const image = attestationManifest(provenanceStatement(input()), subject, { form: 'artifact' });
    const manifest = JSON.parse(image.manifest.bytes.toString()) as ImageManifest & {
      config: { data?: string };
    };
    expect(manifest.artifactType).toBe(ATTESTATION_ARTIFACT_TYPE);
    expect(manifest.config).toEqual({
      mediaType: OCI_EMPTY_MEDIA_TYPE,
      // The OCI image spec's empty descriptor: the two bytes "{}".
      digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
      size: 2,
      data: 'e30=',
    });
    expect(manifest.subject).toEqual({ mediaType: OCI_MANIFEST, digest: IMAGE_DIGEST, size: 1234 });
    expect(image.config.bytes.toString()).toBe('{}');
  });

  it('refuses a statement about another image', () => {
    expectOneLineError(
      () =>
        attestationManifest(provenanceStatement(input()), { ...subject, digest: digest('other') }),
      /statement 0 \(https:\/\/slsa.dev\/provenance\/v1\) is not about sha256:/,
    );
  });
});

describe('readProvenance', () => {
  it('reads braid’s own statement back, with nothing absent', () => {
    const image = attestationManifest(provenanceStatement(input({ mode: 'max' })), {
      digest: IMAGE_DIGEST,
      size: 1,
      mediaType: OCI_MANIFEST,
    });
    const reading = readProvenance(image.layers[0]?.bytes ?? Buffer.alloc(0));
    expect(reading).toMatchObject({
      slsaVersion: 'v1',
      producer: 'braid',
      buildType: BRAID_BUILD_TYPE,
      builderId: 'https://ci.example/builds/42',
      invocationId: 'b-7f3a',
      startedOn: '2024-05-02T10:11:12.345Z',
      finishedOn: '2024-05-02T10:13:40.000Z',
      builderPlatform: 'linux/amd64',
      agent: { name: 'amd64-1', host: 'build-amd64-1.example' },
      engine: { id: 'ABCD:EFGH', version: '20.10.24' },
      emulated: true,
      qemu: { handler: 'qemu-s390x', version: '7.2.9' },
      attempt: 2,
      braidVersion: '0.1.0',
      steps: 2,
      configSource: { path: 'build/Dockerfile' },
    });
    expect(reading.baseImages.map((d) => d.uri)).toEqual([
      'pkg:docker/127.0.0.1%3A5000/base/busybox@1.36?platform=linux%2Fs390x',
      'pkg:docker/golang@1.22?platform=linux%2Fs390x',
    ]);
    expect(reading.absent).toEqual([]);
    expect(provenanceCovers(reading, IMAGE_DIGEST)).toBe(true);
    expect(provenanceCovers(reading, digest('another image'))).toBe(false);
  });

  it('reads BuildKit’s SLSA v1 provenance (max mode) and says what braid-only facts are absent', () => {
    const reading = readProvenance(fixture('buildkit-slsa-v1-max.json'));
    expect(reading).toMatchObject({
      slsaVersion: 'v1',
      producer: 'buildkit',
      builderId: 'https://github.com/example/app/actions/runs/3709599520',
      invocationId: 'rpv7a389uzil5lqmrgwhijwjz',
      startedOn: '2024-05-02T10:11:12.123456789Z',
      builderPlatform: 'linux/amd64',
      configSource: {
        uri: 'https://github.com/example/app.git#refs/tags/v1.4.0',
        digest: { sha1: '4b220de5058abfd01ff619c9d2ff6b09a049bea0' },
        path: 'Dockerfile',
      },
      steps: 2,
    });
    expect(reading.baseImages.map((d) => d.uri)).toEqual([
      'pkg:docker/golang@1.22?platform=linux%2Farm64',
    ]);
    expect(reading.dependencies).toHaveLength(2);
    expect(reading.absent).toEqual(['agent', 'engine', 'emulated', 'attempt']);
    expect(
      provenanceCovers(
        reading,
        'sha256:2d7f1c7fd1b5a4a19f3c64a3d7c1f0b2e8a34c6b2f9d1e0a7c5b3d9e1f2a4b6c',
      ),
    ).toBe(true);
    // The hand-written schemas accept BuildKit's own shape too.
    expect(schemaErrors(fixtureJson('buildkit-slsa-v1-max.json'))).toEqual([]);
  });

  it('reads BuildKit’s SLSA v0.2 provenance in an in-toto v0.1 statement', () => {
    const reading = readProvenance(fixture('buildkit-slsa-v02-min.json'));
    expect(reading).toMatchObject({
      statementType: 'https://in-toto.io/Statement/v0.1',
      slsaVersion: 'v0.2',
      producer: 'buildkit',
      buildType: 'https://mobyproject.org/buildkit@v1',
      invocationId: 'kn8nrkmn0mgx3c1r5mfjy4pwo',
      startedOn: '2023-01-17T09:30:01.51417434Z',
      finishedOn: '2023-01-17T09:30:04.090263Z',
      builderPlatform: 'linux/amd64',
      configSource: { path: 'Dockerfile' },
    });
    expect(reading.baseImages).toEqual([
      {
        uri: 'pkg:docker/alpine@3.17?platform=linux%2Famd64',
        digest: { sha256: '8914eb54f968791faf6a8638949e480fef81e697984fba772b3976835194c6d4' },
      },
    ]);
    // BuildKit wrote {"id": ""}: no builder id given.
    expect(reading.absent).toEqual(['builderId', 'agent', 'engine', 'emulated', 'attempt']);
    expect(reading.steps).toBeUndefined();
  });

  const braidStatement = (): ProvenanceStatement => provenanceStatement(input());
  const bytesOf = (value: unknown): Buffer => Buffer.from(JSON.stringify(value));
  const malformed: [string, () => unknown, RegExp][] = [
    ['text that is not JSON', () => 'not json {', /is not JSON/],
    ['a JSON array', () => [], /not a JSON object/],
    [
      'another statement type',
      () => ({ ...braidStatement(), _type: 'https://example.com/Statement' }),
      /_type "https:\/\/example.com\/Statement" is not an in-toto statement/,
    ],
    ['no subject', () => ({ ...braidStatement(), subject: [] }), /subject is missing or empty/],
    [
      'a subject without digest',
      () => ({ ...braidStatement(), subject: [{ name: 'x' }] }),
      /subject\[0\] has no digest/,
    ],
    [
      'an SBOM',
      () => ({ ...braidStatement(), predicateType: 'https://spdx.dev/Document' }),
      /predicateType "https:\/\/spdx.dev\/Document" is not SLSA provenance/,
    ],
    [
      'a v1 predicate without buildDefinition',
      () => ({ ...braidStatement(), predicate: { runDetails: {} } }),
      /predicate.buildDefinition is missing/,
    ],
    [
      'a start time that is not a time',
      () => {
        const s = braidStatement();
        (s.predicate.runDetails.metadata as { startedOn: string }).startedOn = 'yesterday';
        return s;
      },
      /predicate.runDetails.metadata.startedOn "yesterday" is not an RFC 3339 time/,
    ],
    [
      'braid’s emulated flag as a string',
      () => {
        const s = braidStatement();
        (s.predicate.buildDefinition.internalParameters as unknown as Record<string, unknown>)[
          'emulated'
        ] = 'yes';
        return s;
      },
      /predicate.buildDefinition.internalParameters.emulated is not a boolean/,
    ],
    [
      'a dependency with a digest that is not a map of strings',
      () => {
        const s = braidStatement();
        (s.predicate.buildDefinition as { resolvedDependencies: unknown }).resolvedDependencies = [
          { uri: 'pkg:docker/alpine@3', digest: { sha256: 7 } },
        ];
        return s;
      },
      /resolvedDependencies\[0\].digest.sha256 is not a string/,
    ],
  ];
  for (const [what, make, pattern] of malformed) {
    it(`refuses ${what} in one line naming what is wrong`, () => {
      const value = make();
      const bytes = typeof value === 'string' ? Buffer.from(value) : bytesOf(value);
      expectOneLineError(() => readProvenance(bytes), pattern, 'invalid_argument');
    });
  }

  it('refuses an oversized statement before parsing it', () => {
    const bytes = serializeStatement(braidStatement());
    expectOneLineError(
      () => readProvenance(bytes, { maxBytes: bytes.length - 1 }),
      new RegExp(`is ${bytes.length} bytes, more than the ${bytes.length - 1} allowed`),
      'resource_exhausted',
    );
    expectOneLineError(
      () => readProvenance(Buffer.alloc(17 * 1024 * 1024, 0x20)),
      /more than the 16777216 allowed/,
      'resource_exhausted',
    );
  });
});
