/** The annotations a build asked for, at one level of what braid pushes. */
import type { Annotation, AnnotationLevel } from '../gen/braid/v1/build_pb.js';
import { platformsEqual, type Platform } from '../oci/platform.js';
import { fromProtoPlatform } from '../rpc/platform.js';

/** The annotations of one level (and, for manifests and descriptors, one platform). */
export function annotationsAt(
  annotations: readonly Annotation[],
  level: AnnotationLevel,
  platform?: Platform,
): Record<string, string> {
  const found: Record<string, string> = {};
  for (const annotation of annotations) {
    if (!annotation.levels.includes(level)) continue;
    if (annotation.platform && platform) {
      const wanted = fromProtoPlatform(annotation.platform);
      if (!platformsEqual(wanted, platform)) continue;
    }
    found[annotation.key] = annotation.value;
  }
  return found;
}
