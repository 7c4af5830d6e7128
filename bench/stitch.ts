/**
 * npm run bench:stitch — stitch 4 existing platform images into one index
 * and push it under 2 tags: braid against `docker manifest create` +
 * `docker manifest push`, same registry, same run, each run into a fresh
 * target repository (so both tools mount the children every time).
 * Reports medians and the braid/docker ratio (target: <= 0.5), for braid
 * three times: with its arch guard's cache cold (every layer read and
 * checked), with the children's passes already remembered (re-tagging, a
 * retry), and with --no-arch-check (docker's job: it checks no binary).
 *
 * Two rounds: straight to the loopback registry, and through a proxy that
 * adds BENCH_RTT_MS (default 20) of round-trip time, as a registry in the
 * same region would: the second shows what request parallelism buys.
 *
 * skopeo cannot create an index; the nearest job it does — copying an
 * existing 4-platform index to a new repository under a tag — is measured
 * for reference and labelled as such.
 *
 * braid runs without NODE_EXTRA_CA_CERTS, as on most machines: Node parses
 * that bundle at every start, before braid's first line (`node -e 0` took
 * 62 ms without it and 103 ms with Debian's CA bundle on a 2-core machine),
 * and docker pays nothing like it. Where this machine sets it, braid is
 * also measured with it, and both ratios are printed.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BASE_PLATFORMS, platformString, pushBaseImage } from '../test/support/base-image.js';
import { BRAID_BIN, cleanEnv } from '../test/support/braid-cli.js';
import { requireCommand } from '../test/support/components.js';
import { run } from '../test/support/process.js';
import { startRegistry } from '../test/support/registry.js';
import { startTcpProxy } from '../test/support/tcp-proxy.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 11);
const RTT_MS = Number(process.env.BENCH_RTT_MS ?? 20);
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

async function timed(
  label: string,
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const start = process.hrtime.bigint();
  const result = await run(command, args, { env, timeoutMs: 120_000 });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (result.code !== 0)
    throw new Error(`${label} failed: ${command} ${args.join(' ')}\n${result.stderr}`);
  return ms;
}

async function main(): Promise<void> {
  const docker = await requireCommand('docker', 'docker.io');
  const skopeo = await requireCommand('skopeo', 'skopeo');
  const registry = await startRegistry();
  const dockerConfig = await mkdtemp(join(tmpdir(), 'braid-bench-docker-'));
  const scratch = await mkdtemp(join(tmpdir(), 'braid-bench-stitch-'));
  const env = cleanEnv({ DOCKER_CONFIG: dockerConfig });
  const braidEnv = { ...env };
  delete braidEnv.NODE_EXTRA_CA_CERTS;
  const extraCaCerts = env.NODE_EXTRA_CA_CERTS;
  try {
    await pushBaseImage(registry.host, 'src/busybox', 'multi');
    const index = JSON.parse(
      (
        await run(skopeo, [
          'inspect',
          '--raw',
          '--tls-verify=false',
          `docker://${registry.host}/src/busybox:multi`,
        ])
      ).stdout,
    ) as {
      manifests: {
        digest: string;
        platform: { architecture: string; os: string; variant?: string };
      }[];
    };
    const report = async (label: string, host: string) => {
      const sources = PLATFORMS.map((p) => {
        const m = index.manifests.find(
          (c) => platformString({ ...c.platform, os: 'linux' }) === platformString(p),
        );
        if (!m) throw new Error(`base image lacks ${platformString(p)}`);
        return `${host}/src/busybox@${m.digest}`;
      });
      const times = {
        cold: [] as number[],
        warm: [] as number[],
        warmWithCaCerts: [] as number[],
        unchecked: [] as number[],
        docker: [] as number[],
        skopeo: [] as number[],
      };
      // Warm: the arch guard's passes of these children are remembered from an
      // earlier stitch (re-tagging, retries). Cold: a fresh cache every run.
      const warmCache = join(scratch, `warm-${label.replace(/\W+/g, '-')}`);
      /** `cacheDir` undefined: --no-arch-check, the job docker does (it checks no binary). */
      const stitch = (repo: string, cacheDir: string | undefined, stitchEnv = braidEnv) =>
        timed(
          'braid',
          process.execPath,
          [
            BRAID_BIN,
            'manifest',
            'create',
            ...(cacheDir === undefined
              ? ['--no-arch-check']
              : ['--arch-check-cache-dir', cacheDir]),
            '-t',
            `${repo}:1`,
            '-t',
            `${repo}:latest`,
            ...sources,
          ],
          stitchEnv,
        );
      await stitch(`${host}/bench/prime`, warmCache);
      for (let i = 0; i < RUNS; i++) {
        // Alternate who goes first so drift on a shared machine hits both alike.
        const jobs = [
          async () => {
            times.cold.push(
              await stitch(`${host}/bench/cold-${i}`, join(scratch, `cold-${label}-${i}`)),
            );
          },
          async () => {
            times.warm.push(await stitch(`${host}/bench/warm-${i}`, warmCache));
          },
          async () => {
            times.unchecked.push(await stitch(`${host}/bench/unchecked-${i}`, undefined));
          },
          async () => {
            if (extraCaCerts === undefined) return;
            times.warmWithCaCerts.push(await stitch(`${host}/bench/warm-ca-${i}`, warmCache, env));
          },
          async () => {
            const repo = `${host}/bench/docker-${i}`;
            const start = process.hrtime.bigint();
            await timed(
              'docker manifest create',
              docker,
              ['manifest', 'create', '--insecure', `${repo}:1`, ...sources],
              env,
            );
            await timed(
              'docker manifest push',
              docker,
              ['manifest', 'push', '--insecure', `${repo}:1`],
              env,
            );
            await timed(
              'docker manifest create',
              docker,
              ['manifest', 'create', '--insecure', `${repo}:latest`, ...sources],
              env,
            );
            await timed(
              'docker manifest push',
              docker,
              ['manifest', 'push', '--insecure', `${repo}:latest`],
              env,
            );
            times.docker.push(Number(process.hrtime.bigint() - start) / 1e6);
          },
          async () => {
            const repo = `${host}/bench/skopeo-${i}`;
            const start = process.hrtime.bigint();
            await timed(
              'skopeo copy',
              skopeo,
              [
                'copy',
                '--all',
                '--quiet',
                '--src-tls-verify=false',
                '--dest-tls-verify=false',
                `docker://${host}/src/busybox:multi`,
                `docker://${repo}:1`,
              ],
              env,
            );
            await timed(
              'skopeo copy',
              skopeo,
              [
                'copy',
                '--all',
                '--quiet',
                '--src-tls-verify=false',
                '--dest-tls-verify=false',
                `docker://${repo}:1`,
                `docker://${repo}:latest`,
              ],
              env,
            );
            times.skopeo.push(Number(process.hrtime.bigint() - start) / 1e6);
          },
        ];
        const order = i % 2 === 0 ? jobs : [...jobs].reverse();
        for (const job of order) await job();
      }
      const m = {
        cold: median(times.cold),
        warm: median(times.warm),
        warmWithCaCerts: median(times.warmWithCaCerts),
        unchecked: median(times.unchecked),
        docker: median(times.docker),
        skopeo: median(times.skopeo),
      };
      const fmt = (v: number) => `${v.toFixed(0)} ms`;
      console.log(
        `bench:stitch (${label}) — 4 platform images -> one index under 2 tags, ${RUNS} runs, medians`,
      );
      const runs = (values: number[]) => values.map((t) => t.toFixed(0)).join(' ');
      console.log(
        `  braid manifest create, arch checks cold      ${fmt(m.cold)}   (runs: ${runs(times.cold)})`,
      );
      console.log(
        `  braid manifest create, arch checks known     ${fmt(m.warm)}   (runs: ${runs(times.warm)})`,
      );
      console.log(
        `  braid manifest create --no-arch-check        ${fmt(m.unchecked)}   (runs: ${runs(times.unchecked)})`,
      );
      console.log(
        `  docker manifest create + push (x2 tags)      ${fmt(m.docker)}   (runs: ${times.docker.map((t) => t.toFixed(0)).join(' ')})`,
      );
      console.log(
        `  skopeo copy --all of an existing index (x2)  ${fmt(m.skopeo)}   (reference only: skopeo cannot create an index)`,
      );
      console.log(
        `  ratio braid/docker: cold ${(m.cold / m.docker).toFixed(2)}, known ${(m.warm / m.docker).toFixed(2)}, no arch check ${(m.unchecked / m.docker).toFixed(2)} (target <= 0.50)`,
      );
      if (extraCaCerts !== undefined) {
        console.log(
          `  with this machine's NODE_EXTRA_CA_CERTS=${extraCaCerts}: known ${fmt(m.warmWithCaCerts)}, ratio ${(m.warmWithCaCerts / m.docker).toFixed(2)}   (runs: ${runs(times.warmWithCaCerts)})`,
        );
      }
    };
    await report('loopback registry', registry.host);
    const [host, port] = registry.host.split(':');
    const proxy = await startTcpProxy(
      { host: host ?? '127.0.0.1', port: Number(port) },
      { rttMs: RTT_MS },
    );
    try {
      await report(`registry at ${RTT_MS} ms round trip`, proxy.host);
    } finally {
      await proxy.stop();
    }
  } finally {
    await registry.stop();
    await rm(dockerConfig, { recursive: true, force: true });
    await rm(scratch, { recursive: true, force: true });
  }
}

await main();
