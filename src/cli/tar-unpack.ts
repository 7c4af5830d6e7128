/**
 * Unpacks an untrusted tar stream (a build context on stdin) into an empty
 * directory, so it can be packed again by the context rules: a `..` or a
 * path under a symlink is refused, nothing is written outside the directory,
 * and device nodes and FIFOs are left out, as packing a directory does.
 *
 * Written on tar-stream rather than with tar-fs: tar-fs has had advisories
 * for entries written through links an earlier entry planted, and it does
 * not cap entries or name the refused one; here each rule is explicit.
 */
import { once } from 'node:events';
import { chmod, link, mkdir, open, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import tar from 'tar-stream';
import { BraidError, UsageError } from '../errors.js';

export interface UnpackOptions {
  /** How messages name the archive: "the build context on stdin". */
  what: string;
  /** More entries than this is refused (each costs a little memory). */
  maxEntries?: number;
}

export interface UnpackResult {
  /** Device nodes and FIFOs that were left out, archive-relative. */
  skipped: string[];
}

type Kind = 'directory' | 'file' | 'symlink';

const DEFAULT_MAX_ENTRIES = 1_000_000;
/** Directories the archive implies but does not list get this mode, whatever the umask. */
const IMPLIED_DIR_MODE = 0o755;

/** Unpacks `source` (an uncompressed tar) into `dest`, an empty directory. */
export async function unpackTar(
  source: AsyncIterable<Buffer>,
  dest: string,
  options: UnpackOptions,
): Promise<UnpackResult> {
  const maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
  const refuse = (message: string, cause?: unknown): BraidError =>
    new UsageError(`${options.what}: ${message}`, cause === undefined ? undefined : { cause });
  const kinds = new Map<string, Kind>();
  const dirModes = new Map<string, number>();
  const skipped: string[] = [];

  /** Creates the parents of `rel` that are missing; refuses a parent that is not a directory. */
  const parentsOf = async (rel: string, name: string): Promise<void> => {
    const parts = rel.split('/').slice(0, -1);
    for (let i = 1; i <= parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      const kind = kinds.get(dir);
      if (kind === 'directory') continue;
      if (kind !== undefined) throw refuse(`entry ${name} lies under the ${kind} ${dir}`);
      await mkdir(path.join(dest, dir));
      kinds.set(dir, 'directory');
      dirModes.set(dir, IMPLIED_DIR_MODE);
    }
  };

  // Old (v7) headers have no ustar magic; docker reads them, so braid does too.
  const reader = tar.extract({ allowUnknownFormat: true } as Parameters<typeof tar.extract>[0]);
  const input = Readable.from(source);
  input.on('error', (err) => reader.destroy(err));
  input.pipe(reader);
  let entries = 0;
  try {
    for await (const entry of reader) {
      // A refused entry ends the walk; the stream must not error unobserved.
      entry.on('error', () => undefined);
      if (++entries > maxEntries) throw refuse(`more than ${maxEntries} entries`);
      const { name, type = 'file' } = entry.header;
      const rel = entryPath(name);
      if (rel === undefined) throw refuse(`entry ${name} climbs out of the archive with ".."`);
      if (rel === '') {
        entry.resume();
        continue;
      }
      const abs = path.join(dest, rel);
      const mode = (entry.header.mode ?? 0o644) & 0o7777;
      await parentsOf(rel, name);
      const existing = kinds.get(rel);
      if (existing === 'directory' && type !== 'directory') {
        throw refuse(`entry ${name} would replace a directory`);
      }
      // A later entry for the same path wins, as tar itself does.
      if (existing !== undefined && existing !== 'directory') await rm(abs, { force: true });
      switch (type) {
        case 'directory':
          if (existing === undefined) await mkdir(abs);
          kinds.set(rel, 'directory');
          dirModes.set(rel, mode);
          entry.resume();
          break;
        case 'file':
        case 'contiguous-file': {
          const handle = await open(abs, 'wx', 0o600);
          try {
            const out = handle.createWriteStream();
            for await (const chunk of entry as AsyncIterable<Buffer>) {
              if (!out.write(chunk)) await once(out, 'drain');
            }
            out.end();
            await finished(out);
          } finally {
            await handle.close().catch(() => undefined);
          }
          await chmod(abs, mode);
          kinds.set(rel, 'file');
          break;
        }
        case 'symlink':
          // Where it points is checked when the directory is packed.
          await symlink(entry.header.linkname ?? '', abs);
          kinds.set(rel, 'symlink');
          entry.resume();
          break;
        case 'link': {
          const target = entryPath(entry.header.linkname ?? '');
          if (target === undefined || kinds.get(target) !== 'file') {
            throw refuse(
              `hard link ${name} points at ${entry.header.linkname ?? ''}, not a file earlier in the archive`,
            );
          }
          await link(path.join(dest, target), abs);
          kinds.set(rel, 'file');
          entry.resume();
          break;
        }
        case 'character-device':
        case 'block-device':
        case 'fifo':
          skipped.push(rel);
          entry.resume();
          break;
        default:
          throw refuse(`entry ${name} is a ${String(type)}, which a build context cannot hold`);
      }
    }
  } catch (err) {
    input.destroy();
    if (err instanceof BraidError) throw err;
    throw refuse(`not a readable tar (${(err as Error).message})`, err);
  }
  // Deepest first, so a read-only directory is closed only once its children are in.
  for (const dir of [...dirModes.keys()].sort().reverse()) {
    await chmod(path.join(dest, dir), dirModes.get(dir) as number);
  }
  return { skipped: skipped.sort() };
}

/** The archive-relative path of an entry name ('' for the root); undefined if it climbs out. */
function entryPath(name: string): string | undefined {
  let depth = 0;
  for (const part of name.split('/')) {
    if (part === '..') depth--;
    else if (part !== '' && part !== '.') depth++;
    if (depth < 0) return undefined;
  }
  // A leading `/` is dropped, as tar and the Docker engine do.
  return path.posix.normalize(`/${name}`).replace(/^\/+/, '').replace(/\/+$/, '');
}
