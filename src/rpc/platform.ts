/**
 * braid.v1.Platform <-> the OCI layer's Platform, shared by coordinator,
 * agent and CLI.
 */
import { create } from '@bufbuild/protobuf';
import { PlatformSchema, type Platform as ProtoPlatform } from '../gen/braid/v1/common_pb.js';
import { normalizePlatform, type Platform } from '../oci/platform.js';

export function toProtoPlatform(p: Platform): ProtoPlatform {
  const n = normalizePlatform(p);
  return create(PlatformSchema, {
    os: n.os,
    architecture: n.architecture,
    variant: n.variant ?? '',
    osVersion: n.osVersion ?? '',
    osFeatures: n.osFeatures ?? [],
  });
}

export function fromProtoPlatform(p: ProtoPlatform | undefined): Platform {
  if (!p) return { os: '', architecture: '' };
  return normalizePlatform({
    os: p.os,
    architecture: p.architecture,
    ...(p.variant ? { variant: p.variant } : {}),
    ...(p.osVersion ? { osVersion: p.osVersion } : {}),
    ...(p.osFeatures.length ? { osFeatures: [...p.osFeatures] } : {}),
  });
}
