/**
 * The filesystem an image's layers unpack to: layers applied bottom first
 * with OCI whiteouts (`.wh.NAME` deletes NAME from the layers below,
 * `.wh..wh..opq` empties its directory of them), as containerd and dockerd
 * apply them. Keeps entry metadata only.
 */
import { normalisePath, type FileRecord, type LayerEntry } from './layer-entries.js';

export const OPAQUE_WHITEOUT = '.wh..wh..opq';
export const WHITEOUT_PREFIX = '.wh.';

/** A directory some entry lives in but that no layer has an entry for: the runtime makes it so. */
export const IMPLIED_DIR: Readonly<FileRecord> = Object.freeze({
  type: 'dir',
  mode: 0o755,
  uid: 0,
  gid: 0,
  size: 0,
  mtime: '',
});

export interface TreeNode {
  /** Undefined for a directory only implied by the paths below it. */
  record?: FileRecord;
  /** Present for directories. */
  children?: Map<string, TreeNode>;
}

export class MergedTree {
  readonly root: TreeNode = { children: new Map() };

  /** Apply one layer's entries on top of what is there. */
  apply(entries: readonly LayerEntry[]): void {
    // Whiteouts act on the layers below only, so they go first, whatever their place in the tar.
    for (const { path } of entries) {
      const { dir, name } = split(path);
      if (name === OPAQUE_WHITEOUT) {
        this.find(dir)?.children?.clear();
      } else if (name.startsWith(WHITEOUT_PREFIX)) {
        this.find(dir)?.children?.delete(name.slice(WHITEOUT_PREFIX.length));
      }
    }
    for (const { path, record } of entries) {
      const { name } = split(path);
      if (name.startsWith(WHITEOUT_PREFIX)) continue;
      this.put(path, record);
    }
  }

  /** The node at a normalised path (`` is the root), if there is one. */
  find(path: string): TreeNode | undefined {
    let node: TreeNode | undefined = this.root;
    if (path === '') return node;
    for (const part of path.split('/')) {
      node = node.children?.get(part);
      if (!node) return undefined;
    }
    return node;
  }

  private put(path: string, record: FileRecord): void {
    if (path === '') {
      this.root.record = record;
      return;
    }
    const parts = path.split('/');
    const name = parts.pop()!;
    let dir = this.root;
    for (const part of parts) {
      const children = dir.children!;
      let next = children.get(part);
      if (!next?.children) {
        // A missing parent, or a file where a directory must be: the runtime makes a directory.
        next = { children: new Map() };
        children.set(part, next);
      }
      dir = next;
    }
    const children = dir.children!;
    const existing = children.get(name);
    const placed = record.type === 'hardlink' ? this.linked(record) : record;
    if (placed.type === 'dir' && existing?.children) {
      // A directory over a directory changes its metadata and keeps what is in it.
      existing.record = placed;
      return;
    }
    children.set(
      name,
      placed.type === 'dir' ? { record: placed, children: new Map() } : { record: placed },
    );
  }

  /** A hard link's content is its target's. Records may be shared between trees: copy. */
  private linked(record: FileRecord): FileRecord {
    const target = this.find(normalisePath(record.linkname ?? ''))?.record;
    if (!target?.digest) return record;
    return { ...record, digest: target.digest };
  }
}

/** Every path under `node` (not `node` itself), parents first, names in code-unit order. */
export function* walk(node: TreeNode, path: string): Generator<{ path: string; node: TreeNode }> {
  if (!node.children) return;
  for (const name of [...node.children.keys()].sort(byName)) {
    const child = node.children.get(name)!;
    const childPath = path === '' ? name : `${path}/${name}`;
    yield { path: childPath, node: child };
    yield* walk(child, childPath);
  }
}

export function byName(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function split(path: string): { dir: string; name: string } {
  const slash = path.lastIndexOf('/');
  return slash < 0
    ? { dir: '', name: path }
    : { dir: path.slice(0, slash), name: path.slice(slash + 1) };
}
