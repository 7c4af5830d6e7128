/**
 * A build's lineage: what stays the same when the sources change, and so
 * names the build cache an engine keeps for it — the first tag's repository
 * (without the tag), the Dockerfile path and the target stage. Build args
 * and the context digest are left out on purpose: a one-line edit or a new
 * version number still finds most of its layers in the same cache.
 */
import type { ImageReference } from '../oci/reference.js';

/** `registry/team/app (Dockerfile)`, `registry/team/app (docker/Dockerfile, target build)`. */
export function buildLineage(firstTag: ImageReference, dockerfile: string, target: string): string {
  const stage = target ? `, target ${target}` : '';
  return `${firstTag.domain}/${firstTag.repository} (${dockerfile || 'Dockerfile'}${stage})`;
}
