/**
 * The multi-arch test base image: Debian's busybox-static for amd64, arm64/v8,
 * arm/v7, ppc64le and s390x, laid out as an OCI image index whose configs
 * carry the right architecture and variant, and pushed with skopeo (no image
 * can be pulled from a public registry here, and `docker import --platform`
 * on engine 20.10 records amd64 whatever it is told).
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { requireBusybox, requireCommand } from './components.js';
import { run } from './process.js';

export interface BasePlatform {
  os: 'linux';
  architecture: string;
  variant?: string;
  /** Debian's name for the architecture. */
  debianArch: string;
  /** What `uname -m` prints inside a container of this platform. */
  unameMachine: string;
}

export const BASE_PLATFORMS: readonly BasePlatform[] = [
  { os: 'linux', architecture: 'amd64', debianArch: 'amd64', unameMachine: 'x86_64' },
  {
    os: 'linux',
    architecture: 'arm64',
    variant: 'v8',
    debianArch: 'arm64',
    unameMachine: 'aarch64',
  },
  { os: 'linux', architecture: 'arm', variant: 'v7', debianArch: 'armhf', unameMachine: 'armv7l' },
  { os: 'linux', architecture: 'ppc64le', debianArch: 'ppc64el', unameMachine: 'ppc64le' },
  { os: 'linux', architecture: 's390x', debianArch: 's390x', unameMachine: 's390x' },
];

export function platformString(p: Pick<BasePlatform, 'os' | 'architecture' | 'variant'>): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

const APPLETS = [
  'sh',
  'ash',
  'ls',
  'cat',
  'echo',
  'uname',
  'mkdir',
  'rm',
  'cp',
  'mv',
  'ln',
  'sleep',
  'true',
  'false',
  'env',
  'grep',
  'sed',
  'wc',
  'head',
  'tail',
  'chmod',
  'touch',
  'printf',
  'test',
  'id',
  'date',
  'tar',
  'gzip',
  'find',
  'sort',
  'hostname',
  'pwd',
  'which',
  'stat',
  'tr',
  'cut',
  'od',
];

const EPOCH = new Date(0);

interface Blob {
  digest: string;
  size: number;
  bytes: Buffer;
}

function blob(bytes: Buffer): Blob {
  return {
    digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
    size: bytes.length,
    bytes,
  };
}

async function rootfsTar(busybox: Buffer): Promise<Buffer> {
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (c: unknown) => chunks.push(c as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    tar.on('end', resolve);
    tar.on('error', reject);
  });
  const entry = (header: Parameters<typeof tar.entry>[0], body?: Buffer) =>
    new Promise<void>((resolve, reject) =>
      body
        ? tar.entry(header, body, (e) => (e ? reject(e) : resolve()))
        : tar.entry(header, (e) => (e ? reject(e) : resolve())),
    );
  const dir = (name: string, mode = 0o755) =>
    entry({ name, type: 'directory', mode, mtime: EPOCH, uid: 0, gid: 0 });
  await dir('bin/');
  await dir('etc/');
  await dir('root/', 0o700);
  await dir('tmp/', 0o1777);
  await entry(
    { name: 'bin/busybox', mode: 0o755, mtime: EPOCH, uid: 0, gid: 0, size: busybox.length },
    busybox,
  );
  for (const applet of APPLETS) {
    await entry({
      name: `bin/${applet}`,
      type: 'symlink',
      linkname: 'busybox',
      mode: 0o777,
      mtime: EPOCH,
      uid: 0,
      gid: 0,
    });
  }
  await entry(
    { name: 'etc/passwd', mode: 0o644, mtime: EPOCH, uid: 0, gid: 0 },
    Buffer.from('root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n'),
  );
  await entry(
    { name: 'etc/group', mode: 0o644, mtime: EPOCH, uid: 0, gid: 0 },
    Buffer.from('root:x:0:\nnogroup:x:65534:\n'),
  );
  tar.finalize();
  await ended;
  return Buffer.concat(chunks);
}

const INDEX = 'application/vnd.oci.image.index.v1+json';
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const CONFIG = 'application/vnd.oci.image.config.v1+json';
const LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';

/** Write the OCI layout of the base image into `dir` under `tag`; returns the index digest. */
export interface BaseImageOptions {
  /** Platforms to include; a platform's busybox comes from `debianArch`, so a mismatch can be made on purpose. */
  platforms?: readonly BasePlatform[];
  /** Add a buildx-style attestation manifest (platform unknown/unknown) for every image. */
  attestations?: boolean;
}

export async function writeBaseImageLayout(
  dir: string,
  tag: string,
  options: BaseImageOptions = {},
): Promise<string> {
  const platforms = options.platforms ?? BASE_PLATFORMS;
  const attestationDescriptors: object[] = [];
  const blobs: Blob[] = [];
  const descriptors: object[] = [];
  for (const p of platforms) {
    const tarBytes = await rootfsTar(await readFile(await requireBusybox(p.debianArch)));
    const layer = blob(gzipSync(tarBytes, { level: 9 }));
    const diffId = `sha256:${createHash('sha256').update(tarBytes).digest('hex')}`;
    const config = blob(
      Buffer.from(
        JSON.stringify({
          created: EPOCH.toISOString(),
          architecture: p.architecture,
          ...(p.variant ? { variant: p.variant } : {}),
          os: p.os,
          config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
          rootfs: { type: 'layers', diff_ids: [diffId] },
          history: [
            {
              created: EPOCH.toISOString(),
              created_by: `braid test base: Debian busybox-static:${p.debianArch}`,
            },
          ],
        }),
      ),
    );
    const manifest = blob(
      Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: MANIFEST,
          config: { mediaType: CONFIG, digest: config.digest, size: config.size },
          layers: [{ mediaType: LAYER, digest: layer.digest, size: layer.size }],
        }),
      ),
    );
    blobs.push(layer, config, manifest);
    descriptors.push({
      mediaType: MANIFEST,
      digest: manifest.digest,
      size: manifest.size,
      platform: {
        architecture: p.architecture,
        os: p.os,
        ...(p.variant ? { variant: p.variant } : {}),
      },
    });
  }
  if (options.attestations) {
    for (const image of descriptors as { digest: string }[]) {
      const statement = blob(
        Buffer.from(
          JSON.stringify({
            _type: 'https://in-toto.io/Statement/v0.1',
            predicateType: 'https://spdx.dev/Document',
            subject: [{ name: 'braid-test', digest: { sha256: image.digest.slice(7) } }],
            predicate: { spdxVersion: 'SPDX-2.3', name: 'braid-test' },
          }),
        ),
      );
      const config = blob(
        Buffer.from(
          JSON.stringify({
            architecture: 'unknown',
            os: 'unknown',
            config: {},
            rootfs: { type: 'layers', diff_ids: [statement.digest] },
          }),
        ),
      );
      const manifest = blob(
        Buffer.from(
          JSON.stringify({
            schemaVersion: 2,
            mediaType: MANIFEST,
            config: { mediaType: CONFIG, digest: config.digest, size: config.size },
            layers: [
              {
                mediaType: 'application/vnd.in-toto+json',
                digest: statement.digest,
                size: statement.size,
                annotations: { 'in-toto.io/predicate-type': 'https://spdx.dev/Document' },
              },
            ],
          }),
        ),
      );
      blobs.push(statement, config, manifest);
      attestationDescriptors.push({
        mediaType: MANIFEST,
        digest: manifest.digest,
        size: manifest.size,
        platform: { architecture: 'unknown', os: 'unknown' },
        annotations: {
          'vnd.docker.reference.digest': image.digest,
          'vnd.docker.reference.type': 'attestation-manifest',
        },
      });
    }
  }
  descriptors.push(...attestationDescriptors);
  const index = blob(
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: INDEX, manifests: descriptors })),
  );
  blobs.push(index);
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  for (const b of blobs)
    await writeFile(join(dir, 'blobs', 'sha256', b.digest.slice('sha256:'.length)), b.bytes);
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: INDEX,
      manifests: [
        {
          mediaType: INDEX,
          digest: index.digest,
          size: index.size,
          annotations: { 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
  return index.digest;
}

/**
 * Build the base image and push it (all platforms, digests preserved) to
 * `registryHost/repository:tag`. Returns the index digest.
 */
export async function pushBaseImage(
  registryHost: string,
  repository: string,
  tag = 'latest',
  options: BaseImageOptions = {},
): Promise<string> {
  const skopeo = await requireCommand('skopeo', 'skopeo');
  const dir = await mkdtemp(join(tmpdir(), 'braid-base-'));
  try {
    const digest = await writeBaseImageLayout(dir, tag, options);
    const result = await run(skopeo, [
      'copy',
      '--all',
      '--preserve-digests',
      '--dest-tls-verify=false',
      '--quiet',
      `oci:${dir}:${tag}`,
      `docker://${registryHost}/${repository}:${tag}`,
    ]);
    if (result.code !== 0)
      throw new Error(`skopeo copy of the base image failed: ${result.stderr.trim()}`);
    return digest;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
