/**
 * The agent bundle a farm host gets: dist/bundle (scripts/bundle.mjs) —
 * braid.mjs, its chunks, cli.mjs and package.json, without source maps —
 * as one gzipped tar. The same files always make the same bytes (sorted
 * entries, fixed times and owners), so its sha256 says whether a host
 * already has this bundle.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { BraidError, UsageError } from '../../errors.js';

export interface AgentBundle {
  dir: string;
  version: string;
  /** The .tar.gz, whole (a few MiB). */
  archive: Buffer;
  sha256: string;
}

const REQUIRED = ['braid.mjs', 'cli.mjs', 'package.json'];
const FIXED_MTIME = new Date('1980-01-01T00:00:00Z');

function isBundle(dir: string): boolean {
  return REQUIRED.every((file) => existsSync(join(dir, file)));
}

/**
 * The bundle next to the running braid: this module is either a chunk of
 * the bundle itself (dist/bundle/chunks/), tsc's output (dist/cli/farm/)
 * or the source (src/cli/farm/, under tsx).
 */
export function findBundleDir(explicit: string | undefined): string {
  if (explicit !== undefined) {
    if (!isBundle(explicit)) {
      throw new UsageError(
        `--bundle ${explicit} is not a braid bundle (it needs ${REQUIRED.join(', ')}; npm run build makes one in dist/bundle)`,
      );
    }
    return explicit;
  }
  const candidates = ['..', '../../bundle', '../../../dist/bundle'].map((up) =>
    fileURLToPath(new URL(`${up}/`, import.meta.url)),
  );
  const found = candidates.find(isBundle);
  if (found === undefined) {
    throw new BraidError(
      'failed_precondition',
      `no agent bundle next to this braid (looked in ${candidates.join(', ')}): run npm run build, or pass --bundle DIR`,
    );
  }
  return found;
}

async function listFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  const walk = async (at: string): Promise<void> => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile() && !entry.name.endsWith('.map')) files.push(relative(dir, path));
    }
  };
  await walk(dir);
  return files.sort();
}

export async function packBundle(dir: string): Promise<AgentBundle> {
  const pkg = JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as { version?: string };
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk: unknown) => {
    chunks.push(chunk as Buffer);
  });
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', () => resolve());
    pack.on('error', reject);
  });
  for (const name of await listFiles(dir)) {
    const body = await readFile(join(dir, name));
    await new Promise<void>((resolve, reject) => {
      pack.entry(
        {
          name,
          size: body.length,
          mode: name === 'cli.mjs' ? 0o755 : 0o644,
          mtime: FIXED_MTIME,
          uid: 0,
          gid: 0,
          uname: '',
          gname: '',
        },
        body,
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }
  pack.finalize();
  await ended;
  const archive = gzipSync(Buffer.concat(chunks), { level: 9 });
  return {
    dir,
    version: pkg.version ?? 'unknown',
    archive,
    sha256: createHash('sha256').update(archive).digest('hex'),
  };
}
