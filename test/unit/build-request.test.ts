import { describe, expect, it } from 'vitest';
import { buildxSpecFields } from '../../src/cli/build-request.js';
import { parseBuildxFlags, type ProvenanceChoice } from '../../src/cli/buildx-flags.js';
import { ProvenanceMode } from '../../src/gen/braid/v1/build_pb.js';

const noPaths = () => 'missing' as const;

describe('the build request from buildx flags', () => {
  it.each<[ProvenanceChoice, ProvenanceMode]>([
    ['disabled', ProvenanceMode.DISABLED],
    ['min', ProvenanceMode.MIN],
    ['max', ProvenanceMode.MAX],
  ])('sends provenance %s as ProvenanceMode %i', (choice, mode) => {
    const flags = { ...parseBuildxFlags({}, {}, noPaths), provenance: choice };
    expect(buildxSpecFields(flags).provenance).toBe(mode);
  });

  it.each<[Record<string, unknown>, Record<string, string>, ProvenanceMode]>([
    // No flag: buildx's default with --push, sent as MIN (never UNSPECIFIED).
    [{}, {}, ProvenanceMode.MIN],
    [{}, { BUILDX_NO_DEFAULT_ATTESTATIONS: '1' }, ProvenanceMode.DISABLED],
    [{ provenance: ['false'] }, {}, ProvenanceMode.DISABLED],
    [{ provenance: ['true'] }, {}, ProvenanceMode.MAX],
    [{ provenance: ['mode=min'] }, { BUILDX_NO_DEFAULT_ATTESTATIONS: '1' }, ProvenanceMode.MIN],
    [{ attest: ['type=provenance,mode=max'] }, {}, ProvenanceMode.MAX],
    [{ attest: ['type=provenance,disabled=true'] }, {}, ProvenanceMode.DISABLED],
  ])('maps %j (environment %j) to ProvenanceMode %i', (given, env, mode) => {
    expect(buildxSpecFields(parseBuildxFlags(given, env, noPaths)).provenance).toBe(mode);
  });
});
