/**
 * The parts of a SubmitBuildRequest that come from buildx's flags: what the
 * parsed flags (buildx-flags.ts) mean in braid's API.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import {
  AnnotationLevel,
  CacheMode,
  CacheType,
  ProvenanceMode,
  type BuildSpecSchema,
} from '../gen/braid/v1/build_pb.js';
import { formatReference } from '../oci/reference.js';
import { toProtoPlatform } from '../rpc/platform.js';
import {
  extraHostForEngine,
  type AnnotationLevel as FlagLevel,
  type BuildxFlags,
  type ProvenanceChoice,
} from './buildx-flags.js';

type SpecInit = MessageInitShape<typeof BuildSpecSchema>;

const LEVELS: Record<FlagLevel, AnnotationLevel> = {
  manifest: AnnotationLevel.MANIFEST,
  index: AnnotationLevel.INDEX,
  'manifest-descriptor': AnnotationLevel.MANIFEST_DESCRIPTOR,
};

// Sent as chosen, never UNSPECIFIED: the CLI has already applied buildx's default.
const PROVENANCE: Record<ProvenanceChoice, ProvenanceMode> = {
  disabled: ProvenanceMode.DISABLED,
  min: ProvenanceMode.MIN,
  max: ProvenanceMode.MAX,
};

export function buildxSpecFields(
  flags: BuildxFlags,
): Pick<
  SpecInit,
  | 'keepGoing'
  | 'network'
  | 'addHosts'
  | 'cacheFrom'
  | 'cacheTo'
  | 'sshIds'
  | 'annotations'
  | 'provenance'
> {
  return {
    keepGoing: flags.keepGoing,
    network: flags.network ?? '',
    addHosts: flags.extraHosts.map(extraHostForEngine),
    cacheFrom: flags.cacheFrom.map((c) => ({
      type: CacheType.REGISTRY,
      ref: formatReference(c.ref),
    })),
    cacheTo: flags.cacheTo.map((c) =>
      c.type === 'inline'
        ? { type: CacheType.INLINE }
        : {
            type: CacheType.REGISTRY,
            ref: formatReference(c.ref),
            mode: CacheMode.MIN,
            ignoreError: c.ignoreError,
          },
    ),
    sshIds: flags.ssh.map((s) => s.id),
    annotations: flags.annotations.map((a) => ({
      levels: a.types.map((t) => LEVELS[t]),
      ...(a.platform && { platform: toProtoPlatform(a.platform) }),
      key: a.key,
      value: a.value,
    })),
    provenance: PROVENANCE[flags.provenance],
  };
}
