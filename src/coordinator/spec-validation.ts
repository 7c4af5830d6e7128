/**
 * A submitted BuildSpec checked before anything is stored or scheduled:
 * every bad value is named in one line.
 */
import { AnnotationLevel, CacheMode, CacheType, type BuildSpec } from '../gen/braid/v1/build_pb.js';
import { EmulationPolicy } from '../gen/braid/v1/common_pb.js';
import { isIP } from 'node:net';
import { BraidError } from '../errors.js';
import { formatPlatform, parsePlatform, platformsEqual, type Platform } from '../oci/platform.js';
import { parseReference, type ImageReference } from '../oci/reference.js';
import { MAX_SOURCE_DATE_EPOCH } from '../oci/reproducible-config.js';

export const MAX_PLATFORMS = 32;
export const MAX_TAGS = 64;
const BUILD_ARG_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const TARGET_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

export interface ValidSpec {
  platforms: Platform[];
  tags: ImageReference[];
  dockerfile: string;
  policy: 'prefer-native' | 'native-only' | 'any';
}

function invalid(message: string): never {
  throw new BraidError('invalid_argument', message);
}

export function validateSpec(spec: BuildSpec | undefined): ValidSpec {
  if (!spec) invalid('no build spec');
  if (!/^sha256:[a-f0-9]{64}$/.test(spec.contextDigest)) {
    invalid(`context digest "${spec.contextDigest}" is not sha256:<64 hex>`);
  }
  if (spec.platforms.length === 0) invalid('no platform given');
  if (spec.platforms.length > MAX_PLATFORMS) {
    invalid(`${spec.platforms.length} platforms requested; at most ${MAX_PLATFORMS}`);
  }
  const platforms: Platform[] = [];
  for (const p of spec.platforms) {
    const text = [p.os, p.architecture, p.variant].filter(Boolean).join('/');
    // parsePlatform knows the architectures; a typo is an error naming it.
    const platform: Platform = {
      ...parsePlatform(text),
      ...(p.osVersion ? { osVersion: p.osVersion } : {}),
      ...(p.osFeatures.length ? { osFeatures: [...p.osFeatures] } : {}),
    };
    if (platforms.some((q) => platformsEqual(q, platform))) {
      invalid(`platform ${formatPlatform(platform)} is requested twice`);
    }
    platforms.push(platform);
  }
  if (spec.tags.length === 0) invalid('no tag given (-t)');
  if (spec.tags.length > MAX_TAGS) invalid(`${spec.tags.length} tags given; at most ${MAX_TAGS}`);
  const tags = spec.tags.map((t) => {
    const ref = parseReference(t);
    if (ref.digest) invalid(`tag "${t}" must not carry a digest`);
    return ref;
  });
  const dockerfile = spec.dockerfile || 'Dockerfile';
  if (
    dockerfile.startsWith('/') ||
    dockerfile.split('/').includes('..') ||
    dockerfile.includes('\0')
  ) {
    invalid(`Dockerfile path "${dockerfile}" must stay inside the context`);
  }
  for (const name of Object.keys(spec.buildArgs)) {
    if (!BUILD_ARG_NAME.test(name)) invalid(`build arg name "${name}" is not an identifier`);
  }
  for (const key of Object.keys(spec.labels)) {
    if (!key || /\s/.test(key)) invalid(`label key "${key}" is empty or has spaces`);
  }
  if (spec.target && !TARGET_NAME.test(spec.target))
    invalid(`target "${spec.target}" is not a stage name`);
  checkRunOptions(spec);
  checkSshIds(spec.sshIds);
  checkAnnotations(spec);
  checkCache(spec);
  checkReproducible(spec);
  const policy =
    spec.emulation === EmulationPolicy.NATIVE_ONLY
      ? 'native-only'
      : spec.emulation === EmulationPolicy.ANY
        ? 'any'
        : 'prefer-native';
  return { platforms, tags, dockerfile, policy };
}

const NETWORKS = ['', 'default', 'none', 'host'];
const HOST_NAME = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;
export const MAX_ADD_HOSTS = 64;

/** --network and --add-host: what the engine's /build takes. */
function checkRunOptions(spec: BuildSpec): void {
  if (!NETWORKS.includes(spec.network))
    invalid(`network "${spec.network}" is not one of default, none, host`);
  if (spec.addHosts.length > MAX_ADD_HOSTS)
    invalid(`${spec.addHosts.length} extra hosts given; at most ${MAX_ADD_HOSTS}`);
  for (const entry of spec.addHosts) {
    const colon = entry.indexOf(':');
    const host = entry.slice(0, colon);
    const ip = entry.slice(colon + 1);
    if (colon <= 0 || !HOST_NAME.test(host) || (ip !== 'host-gateway' && isIP(ip) === 0))
      invalid(`extra host "${entry}" is not HOST:IP`);
  }
}

/** --cache-from and --cache-to: what braid's agents can honour through the Engine API. */
function checkCache(spec: BuildSpec): void {
  for (const source of spec.cacheFrom) {
    if (source.type === CacheType.INLINE) continue;
    if (source.type !== CacheType.REGISTRY) invalid('cache-from: type must be registry or inline');
    const ref = parseReference(source.ref, { defaultTag: false });
    if (!ref.tag && !ref.digest) invalid(`cache-from ref "${source.ref}" has no tag or digest`);
  }
  for (const target of spec.cacheTo) {
    if (target.mode === CacheMode.MAX)
      invalid(
        "cache-to mode=max: the Docker Engine API's /build exports cache only inline (mode=min)",
      );
    if (target.type === CacheType.INLINE) continue;
    if (target.type !== CacheType.REGISTRY) invalid('cache-to: type must be registry or inline');
    const ref = parseReference(target.ref, { defaultTag: false });
    if (!ref.tag || ref.digest) invalid(`cache-to ref "${target.ref}" needs a tag (and no digest)`);
  }
}

/** --source-date-epoch and --check-reproducible. */
function checkReproducible(spec: BuildSpec): void {
  const epoch = spec.sourceDateEpoch;
  if (epoch !== undefined && (epoch < 0n || epoch > MAX_SOURCE_DATE_EPOCH))
    invalid(`source date epoch ${epoch} is not between 0 and ${MAX_SOURCE_DATE_EPOCH}`);
  if (spec.checkReproducible && epoch === undefined)
    invalid(
      'check-reproducible needs a source date epoch (--source-date-epoch or SOURCE_DATE_EPOCH): without one every image records when it was built',
    );
}

const SSH_ID = /^[A-Za-z0-9._-]{1,128}$/;
export const MAX_SSH_IDS = 16;

/** --ssh ids: names a `RUN --mount=type=ssh,id=ID` can use. */
function checkSshIds(ids: readonly string[]): void {
  if (ids.length > MAX_SSH_IDS) invalid(`${ids.length} SSH ids given; at most ${MAX_SSH_IDS}`);
  for (const [i, id] of ids.entries()) {
    if (!SSH_ID.test(id))
      invalid(`SSH id "${id.slice(0, 140)}" must be 1 to 128 of A-Z a-z 0-9 . _ -`);
    if (ids.indexOf(id) !== i) invalid(`SSH id "${id}" is given twice`);
  }
}

export const MAX_ANNOTATIONS = 256;
const MAX_ANNOTATION_BYTES = 16 * 1024;

/** --annotation: where each goes, and nothing a registry would refuse. */
function checkAnnotations(spec: BuildSpec): void {
  if (spec.annotations.length > MAX_ANNOTATIONS)
    invalid(`${spec.annotations.length} annotations given; at most ${MAX_ANNOTATIONS}`);
  for (const annotation of spec.annotations) {
    const { key, value } = annotation;
    if (!key || /\s/.test(key)) invalid(`annotation key "${key}" is empty or has spaces`);
    if (key.length + value.length > MAX_ANNOTATION_BYTES)
      invalid(`annotation ${key} is longer than ${MAX_ANNOTATION_BYTES} bytes`);
    if (annotation.levels.length === 0) invalid(`annotation ${key} names no level`);
    for (const level of annotation.levels) {
      if (!(level in AnnotationLevel) || level === AnnotationLevel.UNSPECIFIED)
        invalid(`annotation ${key}: unknown level ${level}`);
    }
    if (annotation.platform) {
      if (annotation.levels.includes(AnnotationLevel.INDEX))
        invalid(`annotation ${key}: an index annotation applies to every platform`);
      const p = annotation.platform;
      parsePlatform([p.os, p.architecture, p.variant].filter(Boolean).join('/'));
    }
  }
}
