/**
 * Where two JSON documents differ, leaf by leaf, each difference named by
 * its path (`config.Env[1]`, `config.Labels["org.opencontainers.image.created"]`).
 */

export interface JsonDifference {
  /** Path from the document's root; `` for the root itself. */
  path: string;
  /** The value in the first document; undefined when it has none at this path. */
  a: unknown;
  /** The value in the second document; undefined when it has none at this path. */
  b: unknown;
}

/**
 * The differences of `a` and `b`, in document order (object keys sorted).
 * Arrays are compared index by index; objects key by key; anything else by value.
 */
export function jsonDifferences(a: unknown, b: unknown, path = ''): JsonDifference[] {
  const found: JsonDifference[] = [];
  collect(a, b, path, found);
  return found;
}

function collect(a: unknown, b: unknown, path: string, found: JsonDifference[]): void {
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      collect(a[i], b[i], `${path}[${i}]`, found);
    }
    return;
  }
  if (isObject(a) && isObject(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    for (const key of keys) collect(a[key], b[key], member(path, key), found);
    return;
  }
  if (!sameJson(a, b)) found.push({ path, a, b });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function member(path: string, key: string): string {
  if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key)) return path === '' ? key : `${path}.${key}`;
  return `${path}[${JSON.stringify(key)}]`;
}

function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined) return false;
  return JSON.stringify(a) === JSON.stringify(b);
}
