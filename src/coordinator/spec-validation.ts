/**
 * A submitted BuildSpec checked before anything is stored or scheduled:
 * every bad value is named in one line.
 */
import type { BuildSpec } from '../gen/braid/v1/build_pb.js';
import { EmulationPolicy } from '../gen/braid/v1/common_pb.js';
import { BraidError } from '../errors.js';
import { formatPlatform, parsePlatform, platformsEqual, type Platform } from '../oci/platform.js';
import { parseReference, type ImageReference } from '../oci/reference.js';

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
  const policy =
    spec.emulation === EmulationPolicy.NATIVE_ONLY
      ? 'native-only'
      : spec.emulation === EmulationPolicy.ANY
        ? 'any'
        : 'prefer-native';
  return { platforms, tags, dockerfile, policy };
}
