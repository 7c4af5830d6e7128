/**
 * npm run bench:verify — `braid verify` of a 4-platform index (amd64,
 * arm64, ppc64le, s390x busybox images, each with a braid SLSA v1
 * attestation manifest beside it, as a farm build leaves them) against
 * `braid manifest inspect` of the same index, loopback registry, same run.
 * Reports medians and the verify/inspect ratio (target: <= 1.5).
 *
 * verify is measured twice: with the arch guard's passes remembered (the
 * default cache dir, as every verify after the first of a digest) and cold
 * (`--arch-check-cache-dir ""`: every layer is read and its ELF files
 * checked). inspect reads one manifest; verify reads the index, then for
 * each platform its manifest and config (and, cold, its layers), its
 * attestation manifest and its statement.
 *
 * Both run without NODE_EXTRA_CA_CERTS, as bench:stitch explains.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BASE_PLATFORMS, platformString, pushBaseImage } from '../test/support/base-image.js';
import { BRAID_BIN, cleanEnv } from '../test/support/braid-cli.js';
import { run } from '../test/support/process.js';
import { startRegistry } from '../test/support/registry.js';
import { attestationManifest } from '../src/oci/attestation-manifest.js';
import { OCI_INDEX, OCI_MANIFEST, type Descriptor } from '../src/oci/media-types.js';
import { parsePlatform } from '../src/oci/platform.js';
import { provenanceStatement } from '../src/oci/provenance.js';
import { RegistryClient } from '../src/oci/registry.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 11);
const PLATFORMS = BASE_PLATFORMS.filter((p) =>
  ['amd64', 'arm64', 'ppc64le', 's390x'].includes(p.architecture),
);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

async function timed(label: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const start = process.hrtime.bigint();
  const result = await run(process.execPath, [BRAID_BIN, ...args], { env, timeoutMs: 120_000 });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (result.code !== 0)
    throw new Error(`${label} failed: braid ${args.join(' ')}\n${result.stderr}`);
  return ms;
}

/** The base image's 4 platforms, each with a braid attestation, as one index under bench/verify:1. */
async function pushAttestedIndex(host: string): Promise<string> {
  await pushBaseImage(host, 'bench/verify', 'base');
  const client = new RegistryClient({});
  const repo = { domain: host, repository: 'bench/verify' };
  const base = JSON.parse((await client.getManifest(repo, 'base')).bytes.toString('utf8')) as {
    manifests: Descriptor[];
  };
  const images: Descriptor[] = [];
  const attestations: Descriptor[] = [];
  for (const p of PLATFORMS) {
    const image = base.manifests.find(
      (m) => m.platform && platformString({ ...m.platform, os: 'linux' }) === platformString(p),
    );
    if (!image) throw new Error(`base image lacks ${platformString(p)}`);
    images.push(image);
    const platform = parsePlatform(platformString(p));
    const emulated = p.architecture !== 'amd64';
    const statement = provenanceStatement({
      mode: 'min',
      subject: { digest: image.digest, platform, names: [`${host}/bench/verify:1`] },
      request: {
        contextDigest: `sha256:${'0'.repeat(64)}`,
        dockerfile: { path: 'Dockerfile' },
        platforms: PLATFORMS.map((q) => parsePlatform(platformString(q))),
        tags: [`${host}/bench/verify:1`],
      },
      builder: {
        id: 'https://bench.example/farm',
        braidVersion: '0.1.0',
        coordinator: '127.0.0.1:7443',
        agent: { name: 'bench-1', host: 'bench-1.example' },
        engine: { id: 'BENCH', version: '20.10.24' },
        builderPlatform: parsePlatform('linux/amd64'),
        emulated,
        ...(emulated && { qemu: { handler: `qemu-${p.unameMachine}` } }),
        attempt: 1,
      },
      run: {
        invocationId: 'bench',
        startedOn: new Date('2024-01-01T00:00:00Z'),
        finishedOn: new Date('2024-01-01T00:01:00Z'),
      },
      baseImages: [{ ref: `${host}/base/busybox:latest`, digest: image.digest, platform }],
    });
    const attestation = attestationManifest(statement, image);
    for (const blob of attestation.blobs) {
      await client.uploadBlob(repo, blob.digest, blob.size, blob.bytes);
    }
    await client.putManifest(
      repo,
      attestation.manifest.digest,
      attestation.manifest.bytes,
      OCI_MANIFEST,
    );
    attestations.push(attestation.descriptor);
  }
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [...images, ...attestations],
    }),
  );
  await client.putManifest(repo, '1', index, OCI_INDEX);
  return `${host}/bench/verify:1`;
}

async function main(): Promise<void> {
  const registry = await startRegistry();
  const scratch = await mkdtemp(join(tmpdir(), 'braid-bench-verify-'));
  const env = cleanEnv({ XDG_CACHE_HOME: scratch });
  delete env.NODE_EXTRA_CA_CERTS;
  try {
    const ref = await pushAttestedIndex(registry.host);
    const times = { inspect: [] as number[], known: [] as number[], cold: [] as number[] };
    // Prime: the arch guard's passes of these 4 images are remembered, and
    // the check that verify sees 4 platforms with provenance.
    const primed = await run(process.execPath, [BRAID_BIN, 'verify', '--require-provenance', ref], {
      env,
      timeoutMs: 120_000,
    });
    if (
      primed.code !== 0 ||
      primed.stdout.split('\n').filter((l) => l.includes('braid SLSA v1')).length !== 4
    ) {
      throw new Error(
        `braid verify of the bench index did not pass:\n${primed.stdout}${primed.stderr}`,
      );
    }
    for (let i = 0; i < RUNS; i++) {
      // Alternate who goes first so drift on a shared machine hits all alike.
      const jobs = [
        async () => times.inspect.push(await timed('inspect', ['manifest', 'inspect', ref], env)),
        async () => times.known.push(await timed('verify', ['verify', ref], env)),
        async () =>
          times.cold.push(
            await timed('verify cold', ['verify', '--arch-check-cache-dir', '', ref], env),
          ),
      ];
      for (const job of i % 2 === 0 ? jobs : [...jobs].reverse()) await job();
    }
    const m = {
      inspect: median(times.inspect),
      known: median(times.known),
      cold: median(times.cold),
    };
    const fmt = (v: number) => `${v.toFixed(0)} ms`;
    const runs = (values: number[]) => values.map((t) => t.toFixed(0)).join(' ');
    console.log(
      `bench:verify (loopback registry) — a 4-platform index with 4 attestations, ${RUNS} runs, medians`,
    );
    console.log(
      `  braid manifest inspect                  ${fmt(m.inspect)}   (runs: ${runs(times.inspect)})`,
    );
    console.log(
      `  braid verify, arch checks known         ${fmt(m.known)}   (runs: ${runs(times.known)})`,
    );
    console.log(
      `  braid verify, arch checks cold          ${fmt(m.cold)}   (runs: ${runs(times.cold)})`,
    );
    console.log(
      `  ratio verify/inspect: known ${(m.known / m.inspect).toFixed(2)}, cold ${(m.cold / m.inspect).toFixed(2)} (target <= 1.50)`,
    );
  } finally {
    await registry.stop();
    await rm(scratch, { recursive: true, force: true });
  }
}

await main();
