/**
 * The validated specs of builds in flight, parsed once from the stored
 * spec, and the cache lineage each implies (lineage.ts).
 */
import { BraidError } from '../errors.js';
import type { ImageReference } from '../oci/reference.js';
import { buildLineage } from './lineage.js';
import { validateSpec, type ValidSpec } from './spec-validation.js';
import type { BuildStore } from './store.js';

export class BuildSpecs {
  private readonly specs = new Map<string, ValidSpec>();

  constructor(private readonly store: BuildStore) {}

  remember(buildId: string, valid: ValidSpec): void {
    this.specs.set(buildId, valid);
  }

  forget(buildId: string): void {
    this.specs.delete(buildId);
  }

  of(buildId: string): ValidSpec {
    let valid = this.specs.get(buildId);
    if (!valid) {
      const record = this.store.getBuildRecord(buildId);
      if (!record) throw new BraidError('not_found', `no build "${buildId}"`);
      valid = validateSpec(record.spec);
      this.specs.set(buildId, valid);
    }
    return valid;
  }

  /** The lineage of a build's cache (lineage.ts). */
  lineageOf(buildId: string, target?: string): string {
    const valid = this.of(buildId);
    return buildLineage(
      valid.tags[0] as ImageReference,
      valid.dockerfile,
      target ?? this.store.getBuildRecord(buildId)?.spec.target ?? '',
    );
  }
}
