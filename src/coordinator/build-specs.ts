/**
 * The validated specs of builds in flight, parsed once from the build's
 * spec, and the cache lineage each implies (lineage.ts).
 */
import { BraidError } from '../errors.js';
import type { ImageReference } from '../oci/reference.js';
import { buildLineage } from './lineage.js';
import { validateSpec, type ValidSpec } from './spec-validation.js';
import type { LiveBuilds } from './live-builds.js';

export class BuildSpecs {
  private readonly specs = new Map<string, ValidSpec>();
  private readonly lineages = new Map<string, string>();

  constructor(private readonly live: LiveBuilds) {}

  remember(buildId: string, valid: ValidSpec): void {
    this.specs.set(buildId, valid);
  }

  forget(buildId: string): void {
    this.specs.delete(buildId);
    this.lineages.delete(buildId);
  }

  of(buildId: string): ValidSpec {
    let valid = this.specs.get(buildId);
    if (!valid) {
      const record = this.live.build(buildId);
      if (!record) throw new BraidError('not_found', `no build "${buildId}"`);
      valid = validateSpec(record.spec);
      this.specs.set(buildId, valid);
    }
    return valid;
  }

  /** The lineage of a build's cache (lineage.ts). */
  lineageOf(buildId: string): string {
    let lineage = this.lineages.get(buildId);
    if (lineage === undefined) {
      const valid = this.of(buildId);
      lineage = buildLineage(
        valid.tags[0] as ImageReference,
        valid.dockerfile,
        this.live.build(buildId)?.spec.target ?? '',
      );
      // Builds in flight only: forget() drops it when the build ends.
      if (this.live.build(buildId)) this.lineages.set(buildId, lineage);
    }
    return lineage;
  }
}
