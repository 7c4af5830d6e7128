/**
 * `--cache-from` / `--cache-to` as buildx reads them (`REF[,REF...]` is
 * `type=registry,ref=REF` each; else `type=TYPE[,KEY=VALUE...]`), narrowed
 * to what a farm can do. braid's agents build through the Docker Engine
 * API, whose /build imports registry cache and exports cache only inline:
 * braid pushes one inline-cache image per platform under a registry cache
 * ref. Everything else is refused with the reason, never ignored.
 */
import { InvalidReferenceError } from '../../oci/errors.js';
import { parseReference, type ImageReference } from '../../oci/reference.js';
import { attributesOf, badValue, fieldsOf, goBool } from './flag-value.js';

export interface CacheImport {
  readonly type: 'registry';
  readonly ref: ImageReference;
}

export type CacheExport =
  | { readonly type: 'inline' }
  | {
      readonly type: 'registry';
      readonly ref: ImageReference;
      readonly mode: 'min';
      /** A failed cache push does not fail the build (buildx's ignore-error=true). */
      readonly ignoreError: boolean;
    };

type Direction = '--cache-from' | '--cache-to';

/** Why braid refuses a cache type buildx knows. */
const REFUSED_TYPES: Readonly<Record<string, string>> = {
  local: "the cache directory would be read and written on the agents' hosts, not on yours",
  gha: "it needs the GitHub Actions cache service's token, which braid's agents do not have",
  s3: "it needs S3 credentials, which braid's agents do not have",
  azblob: "it needs Azure Blob Storage credentials, which braid's agents do not have",
};

const MODE_MAX_WHY =
  "braid's agents build through the Docker Engine API, whose /build exports cache only inline (mode=min); mode=max needs BuildKit's registry cache exporter, which that API does not offer";

const READ_ATTRIBUTES = 'braid reads the cache images under ref and takes no other attribute';
const WRITE_ATTRIBUTES =
  'braid stores the cache as one inline-cache image per platform under ref and takes only mode=min and ignore-error';

export function parseCacheFrom(values: readonly string[]): CacheImport[] {
  return entries('--cache-from', values).map(({ text, type, attributes }) => {
    const flag = '--cache-from';
    if (type === 'inline') {
      throw badValue(
        flag,
        text,
        'type=inline is a --cache-to type; read an inline cache with --cache-from type=registry,ref=IMAGE:TAG',
      );
    }
    refuseType(flag, text, type);
    return { type, ref: cacheRef(flag, text, attributes, [], READ_ATTRIBUTES) };
  });
}

export function parseCacheTo(values: readonly string[]): CacheExport[] {
  return entries('--cache-to', values).map(({ text, type, attributes }): CacheExport => {
    const flag = '--cache-to';
    if (type === 'inline') {
      const extra = [...attributes.keys()][0];
      if (extra !== undefined) {
        throw badValue(
          flag,
          text,
          `braid does not support the attribute "${extra}" with type=inline`,
        );
      }
      return { type: 'inline' };
    }
    refuseType(flag, text, type);
    const ref = cacheRef(flag, text, attributes, ['mode', 'ignore-error'], WRITE_ATTRIBUTES);
    const mode = attributes.get('mode') ?? 'min';
    if (mode === 'max') throw badValue(flag, text, `mode=max is not supported: ${MODE_MAX_WHY}`);
    if (mode !== 'min') throw badValue(flag, text, `mode must be min or max, not "${mode}"`);
    const ignoreError = goBool(attributes.get('ignore-error') ?? 'false');
    if (ignoreError === undefined) throw badValue(flag, text, 'ignore-error must be true or false');
    return { type: 'registry', ref, mode, ignoreError };
  });
}

interface Entry {
  text: string;
  type: string;
  /** Attributes other than `type`, by lower-cased key; the last one given wins. */
  attributes: Map<string, string>;
}

function entries(flag: Direction, values: readonly string[]): Entry[] {
  return values.flatMap((text): Entry[] => {
    if (text === '') return [];
    // buildx: a value without "=" is a list of refs, each its own registry entry.
    if (!text.includes('=')) {
      return fieldsOf(flag, text).map((ref) => ({
        text: ref,
        type: 'registry',
        attributes: new Map([['ref', ref]]),
      }));
    }
    const attributes = new Map(attributesOf(flag, text));
    const type = attributes.get('type');
    attributes.delete('type');
    if (!type) throw badValue(flag, text, 'type is required (type=registry,ref=REF:TAG)');
    return [{ text, type, attributes }];
  });
}

function refuseType(flag: Direction, text: string, type: string): asserts type is 'registry' {
  if (type === 'registry') return;
  const why = REFUSED_TYPES[type];
  if (why !== undefined) throw badValue(flag, text, `type=${type} is not supported: ${why}`);
  throw badValue(
    flag,
    text,
    `unknown cache type "${type}" (buildx knows registry, inline, local, gha, s3, azblob)`,
  );
}

/** The registry `ref`: an image reference with a tag (or, to read, a digest). */
function cacheRef(
  flag: Direction,
  text: string,
  attributes: ReadonlyMap<string, string>,
  allowed: readonly string[],
  why: string,
): ImageReference {
  for (const key of attributes.keys()) {
    if (key !== 'ref' && !allowed.includes(key)) {
      throw badValue(flag, text, `braid does not support the attribute "${key}": ${why}`);
    }
  }
  const given = attributes.get('ref');
  if (!given) throw badValue(flag, text, 'ref is required (type=registry,ref=REF:TAG)');
  let ref: ImageReference;
  try {
    ref = parseReference(given, { defaultTag: false });
  } catch (err) {
    if (err instanceof InvalidReferenceError) throw badValue(flag, text, err.message);
    throw err;
  }
  if (flag === '--cache-to' && ref.digest !== undefined) {
    throw badValue(flag, text, 'a cache ref is pushed to: give a tag, not a digest');
  }
  if (ref.tag === undefined && ref.digest === undefined) {
    const or = flag === '--cache-from' ? ' (or REF@DIGEST)' : '';
    throw badValue(flag, text, `a cache ref without a tag: give REF:TAG${or}`);
  }
  return ref;
}
