/**
 * Image references, parsed and normalised as Docker's distribution/reference
 * does: `alpine` is `docker.io/library/alpine:latest`.
 */
import { InvalidReferenceError } from './errors.js';

export interface ImageReference {
  /** Registry as written (`ghcr.io`, `localhost:5000`, `[::1]:5000`); Docker Hub is `docker.io`. */
  readonly domain: string;
  /** Path inside the registry, e.g. `library/alpine`. */
  readonly repository: string;
  readonly tag?: string;
  /** `algorithm:hex`, e.g. `sha256:…`. */
  readonly digest?: string;
}

export interface ParseReferenceOptions {
  /** Add tag `latest` when the text names neither tag nor digest (default true). */
  defaultTag?: boolean;
}

const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_LEGACY = 'index.docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';
const OFFICIAL_PREFIX = 'library/';
const DEFAULT_TAG = 'latest';
const NAME_MAX_CHARS = 255;

const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_RE = new RegExp(
  `^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::([0-9]+))?$`,
);
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^\w[\w.-]{0,127}$/;
const HEX_ID_RE = /^[a-f0-9]{64}$/;

/** Digest algorithms registered by the OCI image spec, with their hex length. */
const DIGEST_HEX_CHARS: ReadonlyMap<string, number> = new Map([
  ['sha256', 64],
  ['sha512', 128],
]);

/** Parses `[domain/]path[:tag][@digest]`; throws InvalidReferenceError naming the text. */
export function parseReference(text: string, options: ParseReferenceOptions = {}): ImageReference {
  const fail: (reason: string) => never = (reason) => {
    throw new InvalidReferenceError(text, reason);
  };
  if (text === '') fail('empty');
  if (/\s/.test(text)) fail('contains whitespace');
  if (HEX_ID_RE.test(text)) fail('a 64-character hex string is an image ID, not a repository name');

  const parts = text.split('@');
  if (parts.length > 2) fail('more than one "@"');
  const [nameAndTag = '', digest] = parts;
  if (digest !== undefined) {
    const reason = digestProblem(digest);
    if (reason) fail(reason);
  }

  let name = nameAndTag;
  let tag: string | undefined;
  const lastColon = nameAndTag.lastIndexOf(':');
  if (lastColon > nameAndTag.lastIndexOf('/')) {
    name = nameAndTag.slice(0, lastColon);
    tag = nameAndTag.slice(lastColon + 1);
    const reason = tagProblem(tag);
    if (reason) fail(reason);
  }
  if (name === '') fail('empty repository name');

  const { domain, path } = splitDomain(name);
  if (domain !== undefined && !validDomain(domain)) fail(`invalid registry host "${domain}"`);
  const reason = pathProblem(path);
  if (reason) fail(reason);

  let repository = path;
  let registry = domain ?? DOCKER_HUB;
  if (registry === DOCKER_HUB_LEGACY) registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = OFFICIAL_PREFIX + path;

  const fullName = `${registry}/${repository}`;
  if (fullName.length > NAME_MAX_CHARS) {
    fail(`name "${fullName}" is longer than ${NAME_MAX_CHARS} characters`);
  }

  if (tag === undefined && digest === undefined && options.defaultTag !== false) tag = DEFAULT_TAG;
  return build(registry, repository, tag, digest);
}

/** The canonical string: `docker.io/library/alpine:latest`, `host:5000/a/b:tag@sha256:…`. */
export function formatReference(ref: ImageReference): string {
  return `${ref.domain}/${ref.repository}${suffix(ref)}`;
}

/** The short form Docker prints: `alpine:latest`, `user/app:1`, `ghcr.io/o/app:1`. */
export function familiarReference(ref: ImageReference): string {
  if (ref.domain !== DOCKER_HUB) return formatReference(ref);
  let name = ref.repository;
  const official = name.slice(OFFICIAL_PREFIX.length);
  if (name.startsWith(OFFICIAL_PREFIX) && !official.includes('/')) name = official;
  return `${name}${suffix(ref)}`;
}

/** The host to talk HTTP to: Docker Hub's API host for `docker.io`, else the domain with its port. */
export function registryHost(ref: ImageReference): string {
  return ref.domain === DOCKER_HUB ? DOCKER_HUB_API : ref.domain;
}

/** The same repository under `tag`; a digest already present is kept. */
export function withTag(ref: ImageReference, tag: string): ImageReference {
  const reason = tagProblem(tag);
  if (reason) throw new InvalidReferenceError(`${ref.domain}/${ref.repository}:${tag}`, reason);
  return build(ref.domain, ref.repository, tag, ref.digest);
}

/** The same repository pinned to `digest`; a tag already present is kept. */
export function withDigest(ref: ImageReference, digest: string): ImageReference {
  const reason = digestProblem(digest);
  if (reason) throw new InvalidReferenceError(`${ref.domain}/${ref.repository}@${digest}`, reason);
  return build(ref.domain, ref.repository, ref.tag, digest);
}

/** True for a well-formed `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase hex). */
export function isDigest(text: string): boolean {
  return digestProblem(text) === undefined;
}

function build(
  domain: string,
  repository: string,
  tag: string | undefined,
  digest: string | undefined,
): ImageReference {
  return {
    domain,
    repository,
    ...(tag !== undefined && { tag }),
    ...(digest !== undefined && { digest }),
  };
}

function suffix(ref: ImageReference): string {
  return `${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}

/**
 * The first component is a registry only when it looks like a host (a dot, a
 * port, or `localhost`); otherwise the name is a Docker Hub path. Unlike
 * newer Docker, an uppercase first component is not taken for a host, so
 * `MyUser/app` fails as "must be lowercase" rather than as an unknown host.
 */
function splitDomain(name: string): { domain?: string; path: string } {
  const slash = name.indexOf('/');
  if (slash < 0) return { path: name };
  const first = name.slice(0, slash);
  if (first.includes('.') || first.includes(':') || first === 'localhost') {
    return { domain: first, path: name.slice(slash + 1) };
  }
  return { path: name };
}

function validDomain(domain: string): boolean {
  const match = DOMAIN_RE.exec(domain);
  if (!match) return false;
  const port = match[1];
  return port === undefined || (Number(port) >= 1 && Number(port) <= 65535);
}

function pathProblem(path: string): string | undefined {
  if (path === '') return 'empty repository path';
  if (path.startsWith('/')) return 'repository path starts with "/"';
  if (path.endsWith('/')) return 'repository path ends with "/"';
  if (path.includes('//')) return 'repository path has an empty component ("//")';
  if (path.includes(':'))
    return 'more than one ":" (a tag can only follow the last path component)';
  if (path !== path.toLowerCase()) return 'repository name must be lowercase';
  for (const component of path.split('/')) {
    if (!PATH_COMPONENT_RE.test(component)) {
      return `invalid repository path component "${component}" (allowed: a-z, 0-9, and ".", "_", "__" or "-" between them)`;
    }
  }
  return undefined;
}

function tagProblem(tag: string): string | undefined {
  if (tag === '') return 'empty tag after ":"';
  if (TAG_RE.test(tag)) return undefined;
  if (tag.length > 128) return `invalid tag "${tag}": longer than 128 characters`;
  return `invalid tag "${tag}" (allowed: letters, digits, "_", "." and "-", not starting with "." or "-")`;
}

function digestProblem(digest: string): string | undefined {
  const colon = digest.indexOf(':');
  if (colon < 0) return `invalid digest "${digest}": expected algorithm:hex`;
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  const hexChars = DIGEST_HEX_CHARS.get(algorithm);
  if (hexChars === undefined) {
    return `invalid digest "${digest}": unsupported algorithm "${algorithm}" (expected sha256 or sha512)`;
  }
  if (hex.length !== hexChars || !/^[a-f0-9]+$/.test(hex)) {
    return `invalid digest "${digest}": ${algorithm} needs ${hexChars} lowercase hex characters`;
  }
  return undefined;
}
