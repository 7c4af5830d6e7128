/**
 * Provenance that outlives the build: the attestation of an emulated
 * platform names the QEMU version this host's handler reports, and every
 * attestation survives `skopeo copy --multi-arch all` and `braid manifest
 * create` into another repository, still about the images beside it. All
 * read back with skopeo, not with braid's own parser.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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
import { run } from '../support/process.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { attestationStatement, rawManifest, skopeoRun as runSkopeo } from '../support/skopeo.js';

interface Descriptor {
  digest: string;
  mediaType: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
  annotations?: Record<string, string>;
}

interface Index {
  mediaType: string;
  manifests: Descriptor[];
}

interface Statement {
  subject: { name: string; digest: { sha256: string } }[];
  predicate: {
    buildDefinition: {
      internalParameters: {
        emulated: boolean;
        qemu?: { handler: string; version?: string };
      };
    };
  };
}

const ATTESTATION_TYPE = 'vnd.docker.reference.type';
const ATTESTATION_DIGEST = 'vnd.docker.reference.digest';
const BINFMT_S390X = '/proc/sys/fs/binfmt_misc/qemu-s390x';

describe('provenance that survives copies and new indexes', () => {
  let registry: TestRegistry;
  let coordinator: TestCoordinator;
  let agent: TestAgent;
  let skopeo: string;
  let dir: string;
  let built: { tag: string; digest: string; index: Index };

  const skopeoRun = (args: string[]) => runSkopeo(skopeo, args);
  const raw = <T>(ref: string) => rawManifest<T>(skopeo, ref);
  /** The in-toto statement of an attestation manifest, copied out of `repository` by skopeo. */
  const statementOf = async (repository: string, digest: string) =>
    (await attestationStatement<Statement>(skopeo, repository, digest, dir)).statement;

  const images = (index: Index) => index.manifests.filter((m) => m.platform?.os !== 'unknown');
  const attestations = (index: Index) =>
    index.manifests.filter((m) => m.annotations?.[ATTESTATION_TYPE] === 'attestation-manifest');

  /** Every attestation in `index` is readable in `repository`, about the image it annotates. */
  async function expectAttested(repository: string, index: Index, platforms: string[]) {
    const byDigest = new Map(images(index).map((m) => [m.digest, m]));
    const found = attestations(index);
    expect(found).toHaveLength(platforms.length);
    const attested: string[] = [];
    for (const attestation of found) {
      expect(attestation.platform).toEqual({ os: 'unknown', architecture: 'unknown' });
      const subject = attestation.annotations?.[ATTESTATION_DIGEST] ?? '';
      const image = byDigest.get(subject);
      expect(image, `attestation ${attestation.digest} points at ${subject}`).toBeDefined();
      const statement = await statementOf(repository, attestation.digest);
      expect(statement.subject.map((s) => `sha256:${s.digest.sha256}`)).toContain(subject);
      attested.push(`${image?.platform?.os}/${image?.platform?.architecture}`);
    }
    expect(attested.sort()).toEqual([...platforms].sort());
  }

  beforeAll(async () => {
    await requireEngine();
    await requireQemu('qemu-s390x');
    skopeo = await requireCommand('skopeo', 'skopeo');
    registry = await startRegistry();
    await pushBaseImage(registry.host, 'base/busybox', 'latest');
    coordinator = await startTestCoordinator();
    agent = await startTestAgent(coordinator.address, 'box', ['--capacity', '2']);
    await waitForAgents(coordinator.address, ['box']);
    dir = await mkdtemp(join(tmpdir(), 'braid-provenance-survives-'));
    await mkdir(join(dir, 'ctx'));
    await writeFile(
      join(dir, 'ctx', 'Dockerfile'),
      `FROM ${registry.host}/base/busybox:latest\nRUN uname -m > /arch\n`,
    );
    const tag = `${registry.host}/team/app:1`;
    const result = await braid(
      [
        'build',
        join(dir, 'ctx'),
        '-t',
        tag,
        '--platform',
        'linux/amd64,linux/s390x',
        '--coordinator',
        coordinator.address,
      ],
      { timeoutMs: 300_000 },
    );
    expect(result.code, result.stderr).toBe(0);
    const index = await raw<Index>(tag);
    const head = await fetch(`${registry.url}/v2/team/app/manifests/1`, {
      method: 'HEAD',
      headers: { accept: index.mediaType },
    });
    built = { tag, digest: head.headers.get('docker-content-digest') ?? '', index };
    expect(built.digest).toMatch(/^sha256:/);
  }, 600_000);

  afterAll(async () => {
    await agent?.stop();
    await coordinator?.stop();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("names the QEMU version of the emulated platform as this host's handler prints it", async () => {
    // The interpreter the kernel runs for s390x binaries, asked as the kernel would name it.
    const entry = await readFile(BINFMT_S390X, 'utf8');
    const interpreter = /^interpreter (.+)$/m.exec(entry)?.[1] ?? '';
    expect(interpreter).not.toBe('');
    const printed = await run('bash', ['-c', 'exec -a qemu-s390x "$0" --version', interpreter]);
    expect(printed.code, printed.stderr).toBe(0);
    // "qemu-s390x version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)" -> the version and its build.
    const expected = /version (\S+)( \([^)]*\))?/.exec(printed.stdout);
    expect(expected).not.toBeNull();
    const version = `${expected?.[1]}${expected?.[2] ?? ''}`;

    await expectAttested(`${registry.host}/team/app`, built.index, ['linux/amd64', 'linux/s390x']);
    for (const attestation of attestations(built.index)) {
      const image = images(built.index).find(
        (m) => m.digest === attestation.annotations?.[ATTESTATION_DIGEST],
      );
      const { internalParameters } = (
        await statementOf(`${registry.host}/team/app`, attestation.digest)
      ).predicate.buildDefinition;
      if (image?.platform?.architecture === 's390x') {
        expect(internalParameters.emulated).toBe(true);
        expect(internalParameters.qemu).toEqual({ handler: 'qemu-s390x', version });
      } else {
        expect(internalParameters.emulated).toBe(false);
        expect(internalParameters.qemu).toBeUndefined();
      }
    }
  });

  it('keeps every attestation, its annotations and its statement through skopeo copy --multi-arch all', async () => {
    const copy = `${registry.host}/mirror/app:1`;
    await skopeoRun([
      'copy',
      '--multi-arch',
      'all',
      '--src-tls-verify=false',
      '--dest-tls-verify=false',
      '--quiet',
      `docker://${built.tag}`,
      `docker://${copy}`,
    ]);
    const copied = await raw<Index>(copy);
    // The same children in the same order, annotations and all; the images by the same digests.
    expect(copied.manifests).toEqual(built.index.manifests);
    await expectAttested(`${registry.host}/mirror/app`, copied, ['linux/amd64', 'linux/s390x']);
  });

  it('carries the attestations into a new index made by braid manifest create from the built index, by tag or digest', async () => {
    for (const [target, source] of [
      [`${registry.host}/release/app:1`, built.tag],
      [`${registry.host}/release/app:by-digest`, `${registry.host}/team/app@${built.digest}`],
    ] as const) {
      const created = await braid(['manifest', 'create', '-t', target, source]);
      expect(created.code, created.stderr).toBe(0);
      expect(created.stdout.match(/^attestation → /gm)).toHaveLength(2);
      const index = await raw<Index>(target);
      expect(index.manifests).toEqual(built.index.manifests);
      // Copied across repositories: the statements are read from the new repository.
      await expectAttested(`${registry.host}/release/app`, index, ['linux/amd64', 'linux/s390x']);
    }
  });

  it('carries no attestation whose image is not in the new index', async () => {
    // An index that lists the s390x image and, besides its own, amd64's attestation.
    const [amd64, s390x] = images(built.index);
    expect([amd64?.platform?.architecture, s390x?.platform?.architecture]).toEqual([
      'amd64',
      's390x',
    ]);
    const partial = JSON.stringify({
      schemaVersion: 2,
      mediaType: built.index.mediaType,
      manifests: [s390x, ...attestations(built.index)],
    });
    const put = await fetch(`${registry.url}/v2/team/app/manifests/s390x-only`, {
      method: 'PUT',
      headers: { 'content-type': built.index.mediaType },
      body: partial,
    });
    expect(put.status).toBe(201);

    const target = `${registry.host}/release/app:s390x`;
    const created = await braid([
      'manifest',
      'create',
      '-t',
      target,
      `${registry.host}/team/app:s390x-only`,
    ]);
    expect(created.code, created.stderr).toBe(0);
    const index = await raw<Index>(target);
    expect(images(index).map((m) => m.digest)).toEqual([s390x?.digest]);
    await expectAttested(`${registry.host}/release/app`, index, ['linux/s390x']);
  });

  it('has no attestation for images given alone by digest: nothing in the registry API leads from an image to it', async () => {
    const target = `${registry.host}/release/app:images`;
    const created = await braid([
      'manifest',
      'create',
      '-t',
      target,
      ...images(built.index).map((m) => `${registry.host}/team/app@${m.digest}`),
    ]);
    expect(created.code, created.stderr).toBe(0);
    const index = await raw<Index>(target);
    expect(images(index).map((m) => m.digest)).toEqual(images(built.index).map((m) => m.digest));
    expect(attestations(index)).toEqual([]);
  });
});
