/**
 * What bench:scale and bench:failover submit, and what their fake jobs
 * report: a BuildService client of its own, the context uploaded once, the
 * 4-platform build spec, and the per-platform images of the base index the
 * bench pushed to its loopback registry (so every stitch is real).
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { credentials } from '@grpc/grpc-js';
import { BuildService, ProvenanceMode } from '../../src/gen/braid/v1/build_pb.js';
import { packContext } from '../../src/cli/context.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { createClient, type ServiceClient } from '../../src/rpc/client.js';
import { toProtoPlatform } from '../../src/rpc/platform.js';
import { pushBaseImage } from '../../test/support/base-image.js';
import type { FleetImage } from './fleet.js';

export type BuildClient = ServiceClient<(typeof BuildService)['method']>;

export const PLATFORMS = ['linux/amd64', 'linux/arm64', 'linux/ppc64le', 'linux/s390x'];
export const REPOSITORY = 'bench/scale';
const CONTEXT_DIR = fileURLToPath(new URL('../../examples/hello', import.meta.url));
const MB = 1024 * 1024;

export function buildClient(address: string): BuildClient {
  // A connection of its own, as separate CLI processes have.
  return createClient(BuildService, address, {
    credentials: credentials.createInsecure(),
    transport: 'plaintext',
    channelOptions: { 'grpc.use_local_subchannel_pool': 1 },
  });
}

/** Push the base index once; the per-platform manifests of it are what fake jobs report. */
export async function pushImages(registryHost: string): Promise<Record<string, FleetImage>> {
  await pushBaseImage(registryHost, REPOSITORY, 'base');
  const response = await fetch(`http://${registryHost}/v2/${REPOSITORY}/manifests/base`, {
    headers: { Accept: 'application/vnd.oci.image.index.v1+json' },
    signal: AbortSignal.timeout(10_000),
  });
  if (response.status !== 200) throw new Error(`base index: HTTP ${response.status}`);
  const index = (await response.json()) as {
    manifests: {
      digest: string;
      size: number;
      mediaType: string;
      platform: { os: string; architecture: string; variant?: string };
    }[];
  };
  const images: Record<string, FleetImage> = {};
  for (const platform of PLATFORMS) {
    const wanted = parsePlatform(platform);
    const entry = index.manifests.find(
      (m) => m.platform.os === wanted.os && m.platform.architecture === wanted.architecture,
    );
    if (!entry) throw new Error(`base index has no ${platform}`);
    images[platform] = { digest: entry.digest, sizeBytes: entry.size, mediaType: entry.mediaType };
  }
  return images;
}

export async function uploadContext(
  client: BuildClient,
): Promise<{ digest: string; dockerfile: string }> {
  const packed = await packContext(CONTEXT_DIR, { maxBytes: 64 * MB });
  try {
    const has = await client.hasContext({ digest: packed.digest }, { timeoutMs: 30_000 });
    if (!has.present) {
      const bytes = await readFile(packed.path);
      await client.uploadContext(
        [
          {
            payload: {
              case: 'header',
              value: { digest: packed.digest, sizeBytes: BigInt(packed.sizeBytes) },
            },
          },
          { payload: { case: 'chunk', value: bytes } },
        ],
        { timeoutMs: 30_000 },
      );
    }
    return { digest: packed.digest, dockerfile: packed.dockerfileInContext };
  } finally {
    await packed.cleanup();
  }
}

/** The 4-platform build of the bench's context on the pushed base (tags are added per build). */
export function buildSpec(
  context: { digest: string; dockerfile: string },
  registryHost: string,
  provenance: boolean,
) {
  return {
    contextDigest: context.digest,
    dockerfile: context.dockerfile,
    platforms: PLATFORMS.map((p) => toProtoPlatform(parsePlatform(p))),
    buildArgs: { BASE: `${registryHost}/${REPOSITORY}:base` },
    provenance: provenance ? ProvenanceMode.UNSPECIFIED : ProvenanceMode.DISABLED,
  };
}

/** Resolves within `ms` or fails naming what did not finish. */
export async function bounded<T>(what: string, ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
