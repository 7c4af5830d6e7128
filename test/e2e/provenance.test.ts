/**
 * SLSA provenance on the farm, read back with skopeo: one attestation
 * manifest per platform in the index, stored as BuildKit stores them, whose
 * in-toto statement passes the in-toto and SLSA v1 schemas and names the
 * agent, the engine and whether the platform was built under QEMU.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { braid } from '../support/braid-cli.js';
import { startOneBoxFarm, type OneBoxFarm } from '../support/one-box-farm.js';
import { attestationStatement, rawManifest } from '../support/skopeo.js';
import { schemaErrors } from '../support/provenance-schemas.js';
import type { TestRegistry } from '../support/registry.js';

interface Descriptor {
  digest: string;
  mediaType: string;
  platform?: { os: string; architecture: string };
  annotations?: Record<string, string>;
}

interface Statement {
  _type: string;
  subject: { name: string; digest: { sha256: string } }[];
  predicateType: string;
  predicate: {
    buildDefinition: {
      externalParameters: Record<string, unknown>;
      internalParameters: Record<string, unknown>;
      resolvedDependencies: { uri: string; digest: { sha256: string } }[];
    };
    runDetails: { builder: { id: string }; metadata: { invocationId: string } };
  };
}

describe('provenance per platform on the farm', () => {
  let farm: OneBoxFarm;
  let registry: TestRegistry;
  let coordinator: OneBoxFarm['coordinator'];
  let skopeo: string;
  let dir: string;

  beforeAll(async () => {
    farm = await startOneBoxFarm({
      qemu: 'qemu-s390x',
      agentName: 'v1',
      coordinatorArgs: ['--builder-id', 'https://builds.example/farm'],
      name: 'provenance',
    });
    ({ registry, coordinator, skopeo, dir } = farm);
  }, 600_000);

  afterAll(async () => {
    await farm?.stop();
  });

  const raw = <T>(ref: string) => rawManifest<T>(skopeo, ref);

  /** The in-toto layer of an attestation manifest, copied out by skopeo. */
  async function statementOf(repository: string, digest: string): Promise<Statement> {
    const { statement, layer } = await attestationStatement<Statement>(
      skopeo,
      repository,
      digest,
      dir,
    );
    expect(layer.annotations?.['in-toto.io/predicate-type']).toBe('https://slsa.dev/provenance/v1');
    return statement;
  }

  it('lists one attestation per platform after the images, naming the agent and the emulation', async () => {
    const tag = `${registry.host}/team/attested:1`;
    const built = await braid(
      [
        'build',
        dir,
        '-t',
        tag,
        '--platform',
        'linux/amd64,linux/s390x',
        '--progress',
        'plain',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(built.code, built.stderr).toBe(0);
    const buildId = /build (b[0-9a-z]+)/.exec(built.stderr)?.[1] ?? '';

    const index = await raw<{ manifests: Descriptor[] }>(tag);
    const images = index.manifests.filter((m) => m.platform?.os === 'linux');
    const attestations = index.manifests.slice(images.length);
    expect(images.map((m) => m.platform?.architecture)).toEqual(['amd64', 's390x']);
    expect(attestations).toHaveLength(2);
    for (const [i, attestation] of attestations.entries()) {
      expect(attestation.platform).toEqual({ os: 'unknown', architecture: 'unknown' });
      expect(attestation.annotations).toEqual({
        'vnd.docker.reference.type': 'attestation-manifest',
        'vnd.docker.reference.digest': images[i]?.digest,
      });
    }

    const head = await fetch(`${registry.url}/v2/base/busybox/manifests/latest`, {
      method: 'HEAD',
      headers: { accept: 'application/vnd.oci.image.index.v1+json' },
    });
    const baseDigest = head.headers.get('docker-content-digest') ?? '';
    expect(baseDigest).toMatch(/^sha256:/);
    for (const [i, image] of images.entries()) {
      const statement = await statementOf(
        `${registry.host}/team/attested`,
        attestations[i]?.digest ?? '',
      );
      expect(schemaErrors(statement)).toEqual([]);
      expect(statement.subject.map((s) => `sha256:${s.digest.sha256}`)).toContain(image.digest);
      const { internalParameters, resolvedDependencies } = statement.predicate.buildDefinition;
      const text = JSON.stringify(internalParameters);
      expect(text).toContain('"v1"');
      // The amd64 agent built s390x under QEMU: the statement says so, and with which handler.
      const emulated = image.platform?.architecture === 's390x';
      expect(text).toContain(`"emulated":${emulated}`);
      if (emulated) expect(text).toContain('qemu-s390x');
      // The base image by the digest BuildKit resolved (the registry's digest of base:latest).
      expect(resolvedDependencies).toContainEqual({
        uri: `pkg:docker/${registry.host.replace(':', '%3A')}/base/busybox@latest`,
        digest: { sha256: baseDigest.replace('sha256:', '') },
      });
      expect(statement.predicate.runDetails.builder.id).toBe('https://builds.example/farm');
      expect(statement.predicate.runDetails.metadata.invocationId).toBe(buildId);
    }

    // The images still pull and run by platform with the attestations in the index.
    const status = await braid([
      'status',
      buildId,
      '--output',
      'json',
      '--coordinator',
      coordinator.address,
    ]);
    const jobs = (
      JSON.parse(status.stdout) as { jobs: { attestation?: { digest: string } | null }[] }
    ).jobs;
    expect(jobs.map((j) => j.attestation?.digest).sort()).toEqual(
      attestations.map((a) => a.digest).sort(),
    );
  });

  it('writes none with --provenance=false, and every step and the build args with mode=max', async () => {
    const off = `${registry.host}/team/attested:off`;
    const plain = await braid(
      [
        'build',
        dir,
        '-t',
        off,
        '--platform',
        'linux/amd64',
        '--provenance=false',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(plain.code, plain.stderr).toBe(0);
    const none = await raw<{ manifests: Descriptor[] }>(off);
    expect(none.manifests.map((m) => m.platform?.os)).toEqual(['linux']);

    const max = `${registry.host}/team/attested:max`;
    const built = await braid(
      [
        'build',
        dir,
        '-t',
        max,
        '--platform',
        'linux/amd64',
        '--provenance',
        'mode=max',
        '--build-arg',
        'FLAVOUR=max-mode',
        '--no-cache',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(built.code, built.stderr).toBe(0);
    const index = await raw<{ manifests: Descriptor[] }>(max);
    const attestation = index.manifests.find((m) => m.platform?.os === 'unknown');
    const statement = await statementOf(
      `${registry.host}/team/attested`,
      attestation?.digest ?? '',
    );
    expect(schemaErrors(statement)).toEqual([]);
    const text = JSON.stringify(statement.predicate.buildDefinition);
    expect(text).toContain('max-mode');
    expect(text).toContain('RUN uname -m > /arch');
  });
});
