/**
 * A build context from a client is untrusted: before it is kept, every
 * entry is checked — no absolute paths, no `..`, no link out of the
 * context, no devices — and its file list is returned.
 */
import { createReadStream } from 'node:fs';
import { posix } from 'node:path';
import { extract } from 'tar-stream';
import { BraidError } from '../errors.js';

const ALLOWED_TYPES = new Set(['file', 'directory', 'symlink', 'link', 'contiguous-file']);

function bad(name: string, reason: string): never {
  throw new BraidError('invalid_argument', `build context entry "${name}" ${reason}`);
}

/** Normalise a tar entry name; refuses names that leave the context root. */
function entryPath(name: string): string {
  if (name.startsWith('/')) bad(name, 'is an absolute path');
  if (name.includes('\0')) bad(name, 'contains a NUL byte');
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) bad(name, 'climbs out of the context with ".."');
  return parts.join('/');
}

/** Where a symlink at `path` pointing to `target` lands, or undefined when outside. */
function linkTarget(path: string, target: string): string | undefined {
  if (target.startsWith('/')) return undefined;
  const joined = posix.normalize(posix.join(posix.dirname(path), target));
  if (joined === '..' || joined.startsWith('../')) return undefined;
  return joined;
}

export interface ContextListing {
  /** Paths of regular files, symlinks and hard links, normalised. */
  files: Set<string>;
  entries: number;
}

export async function checkContextTar(
  file: string,
  maxEntries = 1_000_000,
): Promise<ContextListing> {
  const files = new Set<string>();
  let entries = 0;
  const source = createReadStream(file);
  const reader = extract();
  source.on('error', (err) => reader.destroy(err));
  source.pipe(reader);
  try {
    for await (const entry of reader) {
      // A refused entry ends the walk; the stream must not error unobserved.
      entry.on('error', () => undefined);
      entries++;
      if (entries > maxEntries) {
        throw new BraidError(
          'invalid_argument',
          `build context has more than ${maxEntries} entries`,
        );
      }
      const header = entry.header;
      const type = header.type ?? 'file';
      if (!ALLOWED_TYPES.has(type))
        bad(header.name, `is a ${type}, which a build context may not hold`);
      const path = entryPath(header.name);
      if (type === 'symlink' && linkTarget(path, header.linkname ?? '') === undefined) {
        bad(header.name, `is a symlink to "${header.linkname ?? ''}", outside the context`);
      }
      if (type === 'link') entryPath(header.linkname ?? '');
      if (type !== 'directory') files.add(path);
      entry.resume();
    }
  } catch (err) {
    if (err instanceof BraidError) throw err;
    throw new BraidError(
      'invalid_argument',
      `build context is not a readable tar: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  } finally {
    source.destroy();
  }
  return { files, entries };
}
