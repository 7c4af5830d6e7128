/**
 * Node base images made from this machine, for building braid's own
 * Dockerfile (deploy/Dockerfile) offline: no image can be pulled from a
 * public registry here, and no package can be fetched during a build.
 *
 * - runtime: this machine's `node` binary and the shared libraries `ldd`
 *   names for it (at the paths the loader asks for), Debian's busybox-static
 *   as the shell and core utilities, /etc/passwd and /etc/group.
 * - build: runtime plus npm (this machine's copy), this machine's npm cache
 *   with `offline=true` in the image user's `~/.npmrc`, and this machine's compiled
 *   better-sqlite3 addon as a local prebuild (prebuild-install's
 *   `npm_config_better_sqlite3_local_prebuilds`), so `npm ci` and
 *   `npm rebuild better-sqlite3` run for real without the network or a
 *   compiler.
 *
 * Both are loaded into the engine with `POST /images/load` (a docker-archive
 * tar whose config carries this machine's architecture) under a random tag,
 * labelled `io.braid.test=node-image`, and removed by `remove()`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdtemp, readFile, readdir, readlink, realpath, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { gzipSync } from 'node:zlib';
import type Docker from 'dockerode';
import { pack, type Pack } from 'tar-stream';
import { requireBusybox, requireCommand } from './components.js';
import { run } from './process.js';

/** Node's `process.arch` -> OCI architecture and Debian's name for it. */
const ARCHES: Partial<Record<string, { oci: string; debian: string }>> = {
  x64: { oci: 'amd64', debian: 'amd64' },
  arm64: { oci: 'arm64', debian: 'arm64' },
  ppc64: { oci: 'ppc64le', debian: 'ppc64el' },
  s390x: { oci: 's390x', debian: 's390x' },
};

export function hostArchitecture(): { oci: string; debian: string } {
  const arch = ARCHES[process.arch];
  if (!arch) throw new Error(`no test base image for this machine's architecture ${process.arch}`);
  return arch;
}

const BUSYBOX_APPLETS = [
  'sh',
  'ash',
  'cat',
  'chmod',
  'chown',
  'cp',
  'echo',
  'env',
  'grep',
  'id',
  'ln',
  'ls',
  'mkdir',
  'mv',
  'rm',
  'sed',
  'test',
  'true',
  'false',
  'uname',
];

const EPOCH = new Date(0);

/** One image layer written as an uncompressed tar file, hashed as it is written. */
class LayerFile {
  private readonly tar: Pack = pack();
  private readonly dirs = new Set<string>();
  private readonly hash = createHash('sha256');
  private readonly written: Promise<void>;

  constructor(readonly path: string) {
    const hash = this.hash;
    const hasher = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    this.written = pipeline(this.tar, hasher, createWriteStream(path));
  }

  /** Directory entries for every missing parent of `name` (no leading slash). */
  private async parents(name: string): Promise<void> {
    const parts = name.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (this.dirs.has(dir)) continue;
      this.dirs.add(dir);
      await this.entry({ name: `${dir}/`, type: 'directory', mode: 0o755 });
    }
  }

  private entry(header: Parameters<Pack['entry']>[0], body?: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (err?: Error | null): void => (err ? reject(err) : resolve());
      const full = { mtime: EPOCH, uid: 0, gid: 0, ...header };
      if (body) this.tar.entry(full, body, done);
      else this.tar.entry(full, done);
    });
  }

  async dir(name: string, mode = 0o755): Promise<void> {
    await this.parents(name);
    if (this.dirs.has(name)) return;
    this.dirs.add(name);
    await this.entry({ name: `${name}/`, type: 'directory', mode });
  }

  async bytes(name: string, body: Buffer, mode = 0o644): Promise<void> {
    await this.parents(name);
    await this.entry({ name, mode, size: body.length }, body);
  }

  async symlink(name: string, target: string): Promise<void> {
    await this.parents(name);
    await this.entry({ name, type: 'symlink', linkname: target, mode: 0o777 });
  }

  /** A file of this machine, streamed, following symlinks. */
  async file(name: string, source: string, mode?: number): Promise<void> {
    await this.parents(name);
    const info = await stat(source);
    await new Promise<void>((resolve, reject) => {
      const sink = this.tar.entry(
        { name, mode: mode ?? info.mode & 0o7777, size: info.size, mtime: EPOCH, uid: 0, gid: 0 },
        (err) => (err ? reject(err) : resolve()),
      );
      createReadStream(source).on('error', reject).pipe(sink);
    });
  }

  /** A directory tree of this machine under `name`, symlinks kept as symlinks. */
  async tree(name: string, source: string): Promise<void> {
    await this.dir(name);
    const entries = await readdir(source, { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const from = join(source, entry.name);
      const to = `${name}/${entry.name}`;
      if (entry.isDirectory()) await this.tree(to, from);
      else if (entry.isSymbolicLink()) await this.symlink(to, await readlink(from));
      else if (entry.isFile()) await this.file(to, from);
    }
  }

  /** Ends the tar; returns its diff id. */
  async finish(): Promise<string> {
    this.tar.finalize();
    await this.written;
    return `sha256:${this.hash.digest('hex')}`;
  }
}

/** The shared libraries `ldd` lists for `binary`, as the loader names them. */
async function sharedLibraries(binary: string): Promise<string[]> {
  const ldd = await requireCommand('ldd', 'libc-bin');
  const result = await run(ldd, [binary]);
  if (result.code !== 0) throw new Error(`ldd ${binary} failed: ${result.stderr.trim()}`);
  const paths: string[] = [];
  for (const line of result.stdout.split('\n')) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const match = /(?:=>\s+)?(\/\S+)\s+\(0x/.exec(line);
    if (match?.[1]) paths.push(match[1]);
  }
  if (paths.length === 0) throw new Error(`ldd ${binary} listed no libraries: ${result.stdout}`);
  return paths;
}

async function writeRuntimeLayer(layer: LayerFile, nodeBinary: string): Promise<void> {
  const busybox = await requireBusybox(hostArchitecture().debian);
  await layer.file('bin/busybox', busybox, 0o755);
  for (const applet of BUSYBOX_APPLETS) await layer.symlink(`bin/${applet}`, 'busybox');
  await layer.symlink('usr/bin/env', '/bin/busybox');
  await layer.dir('tmp', 0o1777);
  await layer.dir('root', 0o700);
  await layer.dir('usr/local/lib');
  await layer.bytes(
    'etc/passwd',
    Buffer.from('root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n'),
  );
  await layer.bytes('etc/group', Buffer.from('root:x:0:\nnogroup:x:65534:\n'));
  await layer.file('usr/local/bin/node', nodeBinary, 0o755);
  const libraries = new Set(await sharedLibraries(nodeBinary));
  for (const library of [...libraries].sort()) {
    await layer.file(library.slice(1), await realpath(library), 0o755);
  }
}

/** The name prebuild-install looks for: `better-sqlite3-v12.1.0-node-v115-linux-x64.tar.gz`. */
function prebuildName(version: string): string {
  return `better-sqlite3-v${version}-node-v${process.versions.modules}-linux-${process.arch}.tar.gz`;
}

/** The compiled addon of this machine's node_modules, packed as a prebuild tarball. */
async function betterSqlitePrebuild(repoRoot: string): Promise<{ name: string; bytes: Buffer }> {
  const dir = join(repoRoot, 'node_modules', 'better-sqlite3');
  const { version } = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as {
    version: string;
  };
  const addon = await readFile(join(dir, 'build', 'Release', 'better_sqlite3.node'));
  const tar = pack();
  const chunks: Buffer[] = [];
  tar.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    tar.on('end', resolve);
    tar.on('error', reject);
  });
  tar.entry({ name: 'build/Release/better_sqlite3.node', mode: 0o755, mtime: EPOCH }, addon);
  tar.finalize();
  await ended;
  return { name: prebuildName(version), bytes: gzipSync(Buffer.concat(chunks)) };
}

async function npmDirectory(): Promise<string> {
  const npm = await requireCommand('npm', 'npm');
  // .../lib/node_modules/npm/bin/npm-cli.js
  return dirname(dirname(await realpath(npm)));
}

async function npmCacheDirectory(): Promise<string> {
  const result = await run(await requireCommand('npm', 'npm'), ['config', 'get', 'cache']);
  const dir = result.stdout.trim();
  if (result.code !== 0 || dir === '')
    throw new Error(`npm config get cache failed: ${result.stderr}`);
  const cacache = join(dir, '_cacache');
  try {
    await lstat(cacache);
  } catch {
    throw new Error(`npm cache ${cacache} does not exist: run npm ci once first`);
  }
  return cacache;
}

const PREBUILDS_DIR = '/opt/braid-test-prebuilds';

async function writeBuildLayer(layer: LayerFile, repoRoot: string): Promise<void> {
  await layer.tree('usr/local/lib/node_modules/npm', await npmDirectory());
  await layer.symlink('usr/local/bin/npm', '../lib/node_modules/npm/bin/npm-cli.js');
  await layer.symlink('usr/local/bin/npx', '../lib/node_modules/npm/bin/npx-cli.js');
  await layer.tree('root/.npm/_cacache', await npmCacheDirectory());
  await layer.bytes('root/.npmrc', Buffer.from('offline=true\n'));
  const prebuild = await betterSqlitePrebuild(repoRoot);
  await layer.bytes(`${PREBUILDS_DIR.slice(1)}/${prebuild.name}`, prebuild.bytes);
}

interface ArchiveImage {
  tag: string;
  layers: { file: string; diffId: string }[];
  env: string[];
}

function imageConfig(image: ArchiveImage): Buffer {
  return Buffer.from(
    JSON.stringify({
      created: EPOCH.toISOString(),
      architecture: hostArchitecture().oci,
      os: 'linux',
      config: {
        Env: image.env,
        Cmd: ['/bin/sh'],
        Labels: { 'io.braid.test': 'node-image' },
      },
      rootfs: { type: 'layers', diff_ids: image.layers.map((l) => l.diffId) },
      history: image.layers.map(() => ({
        created: EPOCH.toISOString(),
        created_by: 'braid test: node from this machine',
      })),
    }),
  );
}

/** A docker-archive (`docker save` format) of `images`, sharing layer files, streamed from disk. */
async function writeArchive(path: string, images: ArchiveImage[]): Promise<void> {
  const tar = pack();
  const written = pipeline(tar, createWriteStream(path));
  const add = (name: string, body: Buffer): Promise<void> =>
    new Promise((resolve, reject) =>
      tar.entry({ name, mode: 0o644, mtime: EPOCH }, body, (e) => (e ? reject(e) : resolve())),
    );
  const manifest: object[] = [];
  const seen = new Set<string>();
  for (const image of images) {
    for (const layer of image.layers) {
      const name = `${layer.diffId.slice(7)}/layer.tar`;
      if (seen.has(name)) continue;
      seen.add(name);
      const size = (await stat(layer.file)).size;
      await new Promise<void>((resolve, reject) => {
        const sink = tar.entry({ name, mode: 0o644, size, mtime: EPOCH }, (e) =>
          e ? reject(e) : resolve(),
        );
        createReadStream(layer.file).on('error', reject).pipe(sink);
      });
    }
    const config = imageConfig(image);
    const configName = `${createHash('sha256').update(config).digest('hex')}.json`;
    await add(configName, config);
    manifest.push({
      Config: configName,
      RepoTags: [image.tag],
      Layers: image.layers.map((l) => `${l.diffId.slice(7)}/layer.tar`),
    });
  }
  await add('manifest.json', Buffer.from(JSON.stringify(manifest)));
  tar.finalize();
  await written;
}

export interface HostNodeImages {
  /** `braid-test-node:<random>`: node, its libraries, busybox. */
  readonly runtime: string;
  /** `braid-test-node-build:<random>`: runtime + npm, the npm cache (offline) and the addon prebuild. */
  readonly build: string;
  remove(): Promise<void>;
}

/** Makes both images and loads them into the engine behind `docker`. */
export async function loadHostNodeImages(
  docker: Docker,
  repoRoot: string,
): Promise<HostNodeImages> {
  const suffix = randomBytes(4).toString('hex');
  const runtime = `braid-test-node:${suffix}`;
  const build = `braid-test-node-build:${suffix}`;
  const dir = await mkdtemp(join(tmpdir(), 'braid-node-image-'));
  try {
    const nodeBinary = await realpath(process.execPath);
    const base = new LayerFile(join(dir, 'runtime.tar'));
    await writeRuntimeLayer(base, nodeBinary);
    const baseLayer = { file: base.path, diffId: await base.finish() };
    const extra = new LayerFile(join(dir, 'build.tar'));
    await writeBuildLayer(extra, repoRoot);
    const buildLayer = { file: extra.path, diffId: await extra.finish() };
    const path = 'PATH=/usr/local/bin:/usr/bin:/bin';
    const archive = join(dir, 'images.tar');
    await writeArchive(archive, [
      { tag: runtime, layers: [baseLayer], env: [path] },
      {
        tag: build,
        layers: [baseLayer, buildLayer],
        env: [path, `npm_config_better_sqlite3_local_prebuilds=${PREBUILDS_DIR}`],
      },
    ]);
    const response = await docker.loadImage(createReadStream(archive), { quiet: true });
    const text = await new Promise<string>((resolve, reject) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => resolve(body));
      response.on('error', reject);
    });
    if (/"error/.test(text)) throw new Error(`loading the test node images failed: ${text}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return {
    runtime,
    build,
    async remove() {
      for (const tag of [build, runtime]) {
        await docker
          .getImage(tag)
          .remove({ force: true })
          .catch((err: { statusCode?: number }) => {
            if (err.statusCode !== 404) throw err;
          });
      }
    },
  };
}
