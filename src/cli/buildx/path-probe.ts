/**
 * What a path on this machine is, as buildx tells a socket from a key file
 * and a directory from anything else: by stat, following symlinks.
 */
import { statSync } from 'node:fs';

export type PathKind = 'socket' | 'directory' | 'file' | 'other' | 'missing' | 'inaccessible';

export type PathProbe = (path: string) => PathKind;

export const probePath: PathProbe = (path) => {
  try {
    const stats = statSync(path);
    if (stats.isSocket()) return 'socket';
    if (stats.isDirectory()) return 'directory';
    if (stats.isFile()) return 'file';
    return 'other';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ENOTDIR' ? 'missing' : 'inaccessible';
  }
};

/** How an error names a path that is not what a flag needs. */
export function describeKind(kind: PathKind): string {
  switch (kind) {
    case 'socket':
      return 'is a socket';
    case 'directory':
      return 'is a directory';
    case 'file':
      return 'is a file';
    case 'other':
      return 'is neither a file, a directory nor a socket';
    case 'missing':
      return 'does not exist';
    case 'inaccessible':
      return 'cannot be read (permission denied)';
  }
}
