/**
 * `--build-context NAME=VALUE` as buildx reads it, narrowed to what a farm
 * can send: an image (`docker-image://REF`), which the agents pull, or a
 * local directory, which braid packs and uploads like the main context.
 * Contexts that live elsewhere are refused with the reason.
 */
import { InvalidReferenceError } from '../../oci/errors.js';
import { familiarReference, parseReference, type ImageReference } from '../../oci/reference.js';
import { badValue } from './flag-value.js';
import { describeKind, type PathProbe } from './path-probe.js';

export type ContextSource =
  | { readonly kind: 'image'; readonly ref: ImageReference }
  | { readonly kind: 'local'; readonly path: string };

export interface NamedContext {
  /** As the Dockerfile names it (`FROM name`, `COPY --from=name`), in buildx's familiar form. */
  readonly name: string;
  readonly source: ContextSource;
}

const FLAG = '--build-context';
const IMAGE_SCHEME = 'docker-image://';

/** A Git or HTTP(S) context, as buildx's IsRemoteURL tells them (git@host:repo included). */
const REMOTE_RE = /^(?:https?:\/\/|git:\/\/|ssh:\/\/|github\.com\/|[\w.-]+@[\w.-]+:)/i;

export function parseBuildContext(text: string, probe: PathProbe): NamedContext {
  const eq = text.indexOf('=');
  if (eq < 0) throw badValue(FLAG, text, 'expected NAME=VALUE');
  const name = contextName(text, text.slice(0, eq));
  const value = text.slice(eq + 1);
  if (value.startsWith(IMAGE_SCHEME)) {
    return {
      name,
      source: { kind: 'image', ref: imageRef(text, value.slice(IMAGE_SCHEME.length)) },
    };
  }
  if (value.startsWith('oci-layout://')) {
    throw badValue(
      FLAG,
      text,
      'oci-layout:// is not supported: BuildKit reads the layout from your machine through a session that braid does not forward to agents (push it to a registry and use docker-image://)',
    );
  }
  if (value.startsWith('target:')) {
    throw badValue(FLAG, text, 'target: names a bake target; braid build runs no bake file');
  }
  if (REMOTE_RE.test(value)) {
    throw badValue(
      FLAG,
      text,
      'a Git or HTTP(S) context is not supported: braid sends contexts from your machine, and its agents do not fetch URLs',
    );
  }
  if (value === '')
    throw badValue(FLAG, text, 'the value is empty (expected a directory or docker-image://REF)');
  const kind = probe(value);
  if (kind !== 'directory') {
    throw badValue(FLAG, text, `${value} ${describeKind(kind)}, not a directory`);
  }
  return { name, source: { kind: 'local', path: value } };
}

/** Every `--build-context` given (empty values skipped, as buildx does); a name given twice is refused. */
export function parseBuildContexts(values: readonly string[], probe: PathProbe): NamedContext[] {
  const contexts: NamedContext[] = [];
  for (const value of values) {
    if (value === '') continue;
    const context = parseBuildContext(value, probe);
    if (contexts.some((c) => c.name === context.name)) {
      throw badValue(FLAG, value, `the name "${context.name}" is given twice`);
    }
    contexts.push(context);
  }
  return contexts;
}

/** buildx normalises the name as an image name: `docker.io/library/alpine:latest` is `alpine`. */
function contextName(text: string, given: string): string {
  try {
    return familiarReference(parseReference(given, { defaultTag: false })).replace(/:latest$/, '');
  } catch (err) {
    if (err instanceof InvalidReferenceError) {
      throw badValue(
        FLAG,
        text,
        err.message.replace('invalid image reference', 'invalid context name'),
      );
    }
    throw err;
  }
}

function imageRef(text: string, given: string): ImageReference {
  try {
    return parseReference(given);
  } catch (err) {
    if (err instanceof InvalidReferenceError) throw badValue(FLAG, text, err.message);
    throw err;
  }
}
