/**
 * `braid verify` against a real farm's image: a two-platform index built on
 * one amd64 agent (s390x under QEMU), read back through the real CLI; an
 * image pushed without attestations; a provenance statement shaped as
 * BuildKit writes it (SLSA v0.2); and indexes broken on purpose, each of
 * which must end in one line and the documented exit code.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { braid } from '../support/braid-cli.js';
import { startOneBoxFarm, type OneBoxFarm } from '../support/one-box-farm.js';
import { fixtureJson } from '../support/provenance-schemas.js';
import type { TestRegistry } from '../support/registry.js';

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const IN_TOTO = 'application/vnd.in-toto+json';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
  annotations?: Record<string, string>;
}

interface VerifyJson {
  digest: string;
  kind: string;
  ok: boolean;
  platforms: {
    platform: string;
    digest: string;
    arch: { state: string; checked?: number };
    mode: string;
    qemu: { handler: string; version?: string } | null;
    provenance: {
      state: string;
      attestation?: string;
      producer?: string;
      slsaVersion?: string;
      agent?: { name: string; host: string } | null;
      emulated?: boolean | null;
      builderPlatform?: string | null;
      invocationId?: string | null;
      baseImages?: { uri: string; digest: { sha256: string } }[];
      absent?: string[];
    };
  }[];
  failures: { check: string; platform: string; message: string }[];
}

const sha256 = (bytes: Buffer): string =>
  `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

describe('braid verify', () => {
  let farm: OneBoxFarm;
  let registry: TestRegistry;
  let repo: string;
  let attested: string;
  let plain: string;

  /** `braid verify`, with no arch-guard passes remembered from earlier runs. */
  const verify = (args: string[]) =>
    braid(['verify', '--arch-check-cache-dir', '', ...args], { timeoutMs: 120_000 });

  const oneLine = (stderr: string): string => {
    const lines = stderr.trim().split('\n');
    expect(lines, stderr).toHaveLength(1);
    expect(stderr).not.toMatch(/\n\s+at /);
    return lines[0] ?? '';
  };

  const raw = <T>(ref: string): Promise<T> => farm.raw<T>(ref);

  /** Registry API by hand: a blob (monolithic upload) and a manifest, as any pusher does. */
  async function putBlob(bytes: Buffer): Promise<Descriptor> {
    const digest = sha256(bytes);
    const start = await fetch(`${registry.url}/v2/team/verify/blobs/uploads/`, { method: 'POST' });
    expect(start.status).toBe(202);
    const location = new URL(start.headers.get('location') ?? '', registry.url);
    location.searchParams.set('digest', digest);
    const put = await fetch(location, {
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream' },
      body: bytes,
    });
    expect(put.status, await put.text()).toBe(201);
    return { mediaType: 'application/octet-stream', digest, size: bytes.length };
  }

  /** PUT under `tag`, or by its digest when no tag is given. */
  async function putManifest(tag: string | undefined, value: object, mediaType: string) {
    const bytes = Buffer.from(JSON.stringify(value));
    const put = await fetch(`${registry.url}/v2/team/verify/manifests/${tag ?? sha256(bytes)}`, {
      method: 'PUT',
      headers: { 'content-type': mediaType },
      body: bytes,
    });
    expect(put.status, await put.text()).toBe(201);
    return { mediaType, digest: sha256(bytes), size: bytes.length };
  }

  /**
   * An attestation manifest as BuildKit stores it (config `unknown/unknown`,
   * in-toto layers annotated with their predicate type), pushed by digest;
   * returns its descriptor for the index.
   */
  async function pushAttestation(
    statement: Buffer,
    refersTo: string,
    predicateType = 'https://slsa.dev/provenance/v0.2',
  ): Promise<Descriptor> {
    const layer = await putBlob(statement);
    const config = await putBlob(
      Buffer.from(
        JSON.stringify({
          architecture: 'unknown',
          os: 'unknown',
          config: {},
          rootfs: { type: 'layers', diff_ids: [layer.digest] },
        }),
      ),
    );
    const manifest = await putManifest(
      undefined,
      {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { ...config, mediaType: 'application/vnd.oci.image.config.v1+json' },
        layers: [
          {
            ...layer,
            mediaType: IN_TOTO,
            annotations: { 'in-toto.io/predicate-type': predicateType },
          },
        ],
      },
      OCI_MANIFEST,
    );
    return {
      ...manifest,
      platform: { architecture: 'unknown', os: 'unknown' },
      annotations: {
        'vnd.docker.reference.digest': refersTo,
        'vnd.docker.reference.type': 'attestation-manifest',
      },
    };
  }

  /** The attestation-free index's images plus `extra` under `tag` in team/verify. */
  async function pushIndex(tag: string, extra: Descriptor[]): Promise<string> {
    const images = (await raw<{ manifests: Descriptor[] }>(plain)).manifests;
    await putManifest(
      tag,
      { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [...images, ...extra] },
      OCI_INDEX,
    );
    return `${registry.host}/team/verify:${tag}`;
  }

  beforeAll(async () => {
    farm = await startOneBoxFarm({
      qemu: 'qemu-s390x',
      agentName: 'v1',
      coordinatorArgs: ['--builder-id', 'https://builds.example/farm'],
      name: 'verify',
    });
    registry = farm.registry;
    repo = `${registry.host}/team/verify`;
    attested = `${repo}:attested`;
    plain = `${repo}:plain`;
    for (const [tag, extra] of [
      [attested, []],
      [plain, ['--provenance=false']],
    ] as const) {
      const built = await braid(
        [
          'build',
          farm.dir,
          '-t',
          tag,
          '--platform',
          'linux/amd64,linux/s390x',
          ...extra,
          '--coordinator',
          farm.coordinator.address,
        ],
        { timeoutMs: 300_000 },
      );
      expect(built.code, built.stderr).toBe(0);
    }
  }, 600_000);

  afterAll(async () => {
    await farm?.stop();
  });

  it('shows each platform’s digest, agent, native or emulated with its QEMU handler, and base image', async () => {
    const index = await raw<{ manifests: Descriptor[] }>(attested);
    const images = index.manifests.filter((m) => m.platform?.os === 'linux');
    const attestations = index.manifests.filter((m) => m.platform?.os === 'unknown');
    const head = await fetch(`${registry.url}/v2/base/busybox/manifests/latest`, {
      method: 'HEAD',
      headers: { accept: OCI_INDEX },
    });
    const baseDigest = head.headers.get('docker-content-digest') ?? '';

    const table = await verify([attested]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stderr).toBe('');
    const rows = table.stdout.split('\n');
    expect(rows[0]?.split(/\s{2,}/)).toEqual([
      'PLATFORM',
      'DIGEST',
      'ARCH',
      'PROVENANCE',
      'AGENT (HOST)',
      'MODE',
      'BASE IMAGES',
    ]);
    const amd64 = rows[1]?.split(/\s{2,}/) ?? [];
    const s390x = rows[2]?.split(/\s{2,}/) ?? [];
    const base = `${registry.host}/base/busybox:latest@${baseDigest.slice(0, 19)}`;
    expect(amd64[0]).toBe('linux/amd64');
    expect(amd64[1]).toBe(images[0]?.digest);
    expect(amd64[2]).toMatch(/^ok \(\d+ ELF\)$/);
    expect(amd64[3]).toBe('braid SLSA v1');
    expect(amd64[4]).toMatch(/^v1 \(.+\)$/);
    expect(amd64[5]).toBe('native');
    expect(amd64[6]).toBe(base);
    expect(s390x[0]).toBe('linux/s390x');
    expect(s390x[1]).toBe(images[1]?.digest);
    expect(s390x[5]).toMatch(/^emulated \(qemu-s390x( [0-9][^ ()]*)?\)$/);
    expect(s390x[6]).toBe(base);
    expect(table.stdout).toContain(`verified\n`);

    const json = await verify([attested, '--output', 'json']);
    expect(json.code, json.stderr).toBe(0);
    const report = JSON.parse(json.stdout) as VerifyJson;
    expect(report.ok).toBe(true);
    expect(report.platforms.map((p) => [p.platform, p.digest, p.mode])).toEqual([
      ['linux/amd64', images[0]?.digest, 'native'],
      ['linux/s390x', images[1]?.digest, 'emulated'],
    ]);
    expect(report.platforms[1]?.qemu?.handler).toBe('qemu-s390x');
    expect(report.platforms.map((p) => p.provenance.attestation)).toEqual(
      attestations.map((a) => a.digest),
    );
    for (const p of report.platforms) {
      expect(p.arch.state).toBe('passed');
      expect(p.provenance).toMatchObject({ producer: 'braid', slsaVersion: 'v1', absent: [] });
      expect(p.provenance.agent?.name).toBe('v1');
      expect(p.provenance.baseImages?.map((b) => `sha256:${b.digest.sha256}`)).toEqual([
        baseDigest,
      ]);
    }
  });

  it('fails --require-native on the platform built under QEMU, in one line naming it', async () => {
    const result = await verify([attested, '--require-native']);
    expect(result.code).toBe(1);
    expect(oneLine(result.stderr)).toMatch(
      /^braid: verify: native check failed for linux\/s390x: built under emulation \(qemu-s390x( [0-9][^ ()]*)?\) on agent v1 \(.+\), and --require-native is set$/,
    );
    // The table still says what was found.
    expect(result.stdout).toContain('1 check failed');
  });

  it('shows provenance as absent on an image pushed without it, and fails --require-provenance', async () => {
    const shown = await verify([plain, '--output', 'json']);
    expect(shown.code, shown.stderr).toBe(0);
    const report = JSON.parse(shown.stdout) as VerifyJson;
    expect(report.platforms.map((p) => [p.provenance.state, p.mode])).toEqual([
      ['absent', 'absent'],
      ['absent', 'absent'],
    ]);
    const required = await verify([plain, '--require-provenance']);
    expect(required.code).toBe(1);
    expect(required.stderr.trim().split('\n')).toEqual([
      'braid: verify: provenance check failed for linux/amd64: none (no attestation manifest in the index names this image), and --require-provenance is set',
      'braid: verify: provenance check failed for linux/s390x: none (no attestation manifest in the index names this image), and --require-provenance is set',
    ]);
    expect(
      required.stdout
        .split('\n')[1]
        ?.split(/\s{2,}/)
        .slice(3),
    ).toEqual(['absent', 'absent', 'absent', 'absent']);
  });

  it('reads a BuildKit SLSA v0.2 statement stored as BuildKit stores it, and shows what it lacks', async () => {
    const images = (await raw<{ manifests: Descriptor[] }>(plain)).manifests;
    const amd64 = images[0]?.digest ?? '';
    const statement = fixtureJson('buildkit-slsa-v02-min.json') as {
      subject: { name: string; digest: { sha256: string } }[];
    };
    statement.subject = [
      {
        name: `pkg:docker/${registry.host.replace(':', '%3A')}/team/verify@buildkit?platform=linux%2Famd64`,
        digest: { sha256: amd64.replace('sha256:', '') },
      },
    ];
    const attestation = await pushAttestation(Buffer.from(JSON.stringify(statement)), amd64);
    const ref = await pushIndex('buildkit', [attestation]);

    const json = await verify([ref, '--output', 'json']);
    expect(json.code, json.stderr).toBe(0);
    const report = JSON.parse(json.stdout) as VerifyJson;
    expect(report.platforms[0]?.provenance).toMatchObject({
      state: 'present',
      attestation: attestation.digest,
      producer: 'buildkit',
      slsaVersion: 'v0.2',
      agent: null,
      emulated: null,
      builderPlatform: 'linux/amd64',
      invocationId: 'kn8nrkmn0mgx3c1r5mfjy4pwo',
      absent: ['builderId', 'agent', 'engine', 'emulated', 'attempt'],
    });
    // BuildKit's builder ran on linux/amd64: no QEMU can have built the amd64 image.
    expect(report.platforms[0]?.mode).toBe('native');
    expect(report.platforms[1]?.provenance.state).toBe('absent');

    const table = await verify([ref]);
    expect(table.code, table.stderr).toBe(0);
    expect(
      table.stdout
        .split('\n')[1]
        ?.split(/\s{2,}/)
        .slice(3),
    ).toEqual([
      'buildkit SLSA v0.2',
      'absent',
      'native (builder linux/amd64)',
      'alpine:3.17@sha256:8914eb54f968',
    ]);
    expect(table.stdout).toContain(
      `linux/amd64: provenance ${attestation.digest} lacks builderId, agent, engine, emulated, attempt`,
    );
  });

  describe('bad input: one line each, never a stack', () => {
    it('a missing ref exits 1 naming it; no ref at all is a usage error (exit 2)', async () => {
      const missing = await verify([`${repo}:nonexistent`]);
      expect(missing.code).toBe(1);
      expect(oneLine(missing.stderr)).toBe(
        `braid: GET manifest ${repo}:nonexistent: HTTP 404 MANIFEST_UNKNOWN: manifest unknown`,
      );
      expect(missing.stdout).toBe('');
      const none = await braid(['verify']);
      expect(none.code).toBe(2);
      expect(oneLine(none.stderr)).toBe("braid: missing required argument 'ref'");
      const bad = await braid(['verify', 'UPPER/case:1']);
      expect(bad.code).toBe(2);
      expect(oneLine(bad.stderr)).toMatch(/^braid: invalid image reference "UPPER\/case:1"/);
    });

    it('a single-platform manifest is verified as its one platform, and says so', async () => {
      const images = (await raw<{ manifests: Descriptor[] }>(attested)).manifests;
      const ref = `${repo}@${images[1]?.digest}`;
      const shown = await verify([ref]);
      expect(shown.code, shown.stderr).toBe(0);
      expect(
        shown.stdout
          .split('\n')[1]
          ?.split(/\s{2,}/)
          .slice(0, 4),
      ).toEqual([
        'linux/s390x',
        images[1]?.digest,
        expect.stringMatching(/^ok \(\d+ ELF\)$/),
        'absent',
      ]);
      expect(shown.stdout).toContain(
        'a single-platform manifest, verified as one platform; its attestations, if any, are in the index that lists it',
      );
      const required = await verify([ref, '--require-provenance']);
      expect(required.code).toBe(1);
      expect(oneLine(required.stderr)).toBe(
        'braid: verify: provenance check failed for linux/s390x: none (a single-platform manifest has no index to list attestations in), and --require-provenance is set',
      );
    });

    it('an attestation that points at no image in the index', async () => {
      const gone = sha256(Buffer.from('an image that is not in the index'));
      const attestation = await pushAttestation(Buffer.from('{}'), gone);
      const result = await verify([await pushIndex('orphan', [attestation])]);
      expect(result.code).toBe(1);
      expect(oneLine(result.stderr)).toBe(
        `braid: verify: attestation check failed for index: attestation manifest ${attestation.digest} is for ${gone}, which is no image in the index`,
      );
    });

    it('a malformed statement', async () => {
      const images = (await raw<{ manifests: Descriptor[] }>(plain)).manifests;
      const amd64 = images[0]?.digest ?? '';
      const attestation = await pushAttestation(Buffer.from('{"_type": "https://in-toto'), amd64);
      const result = await verify([await pushIndex('malformed', [attestation])]);
      expect(result.code).toBe(1);
      expect(oneLine(result.stderr)).toMatch(
        new RegExp(
          `^braid: verify: provenance check failed for linux/amd64: attestation ${attestation.digest}: statement sha256:[0-9a-f]{64}: provenance statement is not JSON: `,
        ),
      );
      expect(result.stdout.split('\n')[1]).toContain('INVALID');
    });

    it('a statement about another image than the one its attestation names', async () => {
      const images = (await raw<{ manifests: Descriptor[] }>(plain)).manifests;
      const [amd64, s390x] = images.map((i) => i.digest);
      const statement = fixtureJson('buildkit-slsa-v02-min.json') as {
        subject: { digest: { sha256: string } }[];
      };
      statement.subject = [{ digest: { sha256: (s390x ?? '').replace('sha256:', '') } }];
      const attestation = await pushAttestation(
        Buffer.from(JSON.stringify(statement)),
        amd64 ?? '',
      );
      const result = await verify([await pushIndex('wrong-subject', [attestation])]);
      expect(result.code).toBe(1);
      expect(oneLine(result.stderr)).toMatch(
        new RegExp(
          `^braid: verify: provenance check failed for linux/amd64: attestation ${attestation.digest}: statement sha256:[0-9a-f]{64} is about ${s390x}, not ${amd64}$`,
        ),
      );
    });

    it('an oversized statement is refused unread', async () => {
      const images = (await raw<{ manifests: Descriptor[] }>(plain)).manifests;
      const amd64 = images[0]?.digest ?? '';
      const huge = Buffer.alloc(16 * 1024 * 1024 + 1, 0x20);
      const attestation = await pushAttestation(huge, amd64);
      const result = await verify([await pushIndex('oversized', [attestation])]);
      expect(result.code).toBe(1);
      expect(oneLine(result.stderr)).toMatch(
        new RegExp(
          `^braid: verify: provenance check failed for linux/amd64: attestation ${attestation.digest}: statement sha256:[0-9a-f]{64} is 16777217 bytes, more than the 16777216 allowed$`,
        ),
      );
    });
  });
});
