/**
 * `--annotation` as buildx reads it: `[TYPE[,TYPE...]:]KEY=VALUE`, each
 * TYPE optionally qualified by a platform in brackets (`manifest[linux/arm64]`).
 * Without a type the annotation goes on every platform's manifest, as in
 * buildx. braid pushes to a registry, so `index-descriptor` (the index's
 * descriptor in an OCI layout's index.json) has nowhere to go and is refused.
 */
import { PlatformError } from '../../oci/errors.js';
import { formatPlatform, parsePlatform, type Platform } from '../../oci/platform.js';
import { badValue } from './flag-value.js';

export type AnnotationLevel = 'manifest' | 'index' | 'manifest-descriptor';

export interface Annotation {
  /** Where the annotation goes; each level once. */
  readonly types: readonly AnnotationLevel[];
  /** Only the manifests (or their descriptors) of this platform; absent: every platform. */
  readonly platform?: Platform;
  readonly key: string;
  readonly value: string;
}

const FLAG = '--annotation';
const LEVELS: readonly string[] = ['manifest', 'index', 'manifest-descriptor'];
/** buildx's pattern for one type: a name, then an optional platform in brackets. */
const TYPE_RE = /^([a-z-]+)(?:\[([A-Za-z0-9_/-]+)\])?$/;

/**
 * One `--annotation`; a prefix whose types name different platforms gives
 * one annotation per platform.
 */
export function parseAnnotation(text: string): Annotation[] {
  const eq = text.indexOf('=');
  if (eq < 0) throw badValue(FLAG, text, 'expected [TYPE[,TYPE...]:]KEY=VALUE');
  const value = text.slice(eq + 1);
  const left = text.slice(0, eq);
  const colon = left.indexOf(':');
  const key = colon < 0 ? left : left.slice(colon + 1);
  if (key === '') throw badValue(FLAG, text, 'the key is empty');
  if (/\s/.test(key)) throw badValue(FLAG, text, `the key "${key}" contains white space`);
  if (colon < 0) return [{ types: ['manifest'], key, value }];

  const byPlatform = new Map<string, { types: AnnotationLevel[]; platform?: Platform }>();
  for (const item of left.slice(0, colon).split(',')) {
    const match = TYPE_RE.exec(item);
    if (!match) {
      throw badValue(
        FLAG,
        text,
        `invalid annotation type "${item}" (expected TYPE or TYPE[OS/ARCH] before ":")`,
      );
    }
    const [, type = '', platformText] = match;
    if (type === 'index-descriptor') {
      throw badValue(
        FLAG,
        text,
        "type index-descriptor is not supported: it annotates the index's descriptor in an OCI layout, and braid pushes to a registry",
      );
    }
    if (!LEVELS.includes(type)) {
      throw badValue(
        FLAG,
        text,
        `unknown annotation type "${type}" (manifest, index, manifest-descriptor)`,
      );
    }
    const level = type as AnnotationLevel;
    if (platformText !== undefined && level === 'index') {
      throw badValue(
        FLAG,
        text,
        'a platform applies to manifest and manifest-descriptor, not to index',
      );
    }
    const platform = platformText === undefined ? undefined : platformOf(text, platformText);
    const group = platform === undefined ? '' : formatPlatform(platform);
    const entry = byPlatform.get(group) ?? { ...(platform && { platform }), types: [] };
    if (!entry.types.includes(level)) entry.types.push(level);
    byPlatform.set(group, entry);
  }
  return [...byPlatform.values()].map((entry) => ({ ...entry, key, value }));
}

/** Every `--annotation` given, in order (empty values skipped, as buildx does). */
export function parseAnnotations(values: readonly string[]): Annotation[] {
  return values.filter((v) => v !== '').flatMap(parseAnnotation);
}

function platformOf(text: string, platform: string): Platform {
  try {
    return parsePlatform(platform);
  } catch (err) {
    if (err instanceof PlatformError) throw badValue(FLAG, text, err.message);
    throw err;
  }
}
