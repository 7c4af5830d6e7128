import { describe, expect, it } from 'vitest';
import {
  parseProvenance,
  type AttestationFlags,
  type ProvenanceChoice,
} from '../../src/cli/buildx/provenance.js';
import { BraidError } from '../../src/errors.js';

/** The one line a bad value gets, which must be a usage error (exit 2). */
function errorOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(BraidError);
    expect((err as BraidError).code).toBe('invalid_argument');
    const message = (err as Error).message;
    expect(message).not.toContain('\n');
    return message;
  }
  throw new Error('expected a BraidError');
}

const flags = (given: Partial<AttestationFlags>): AttestationFlags => ({
  attest: [],
  provenance: [],
  ...given,
});

describe('--provenance', () => {
  it.each<[string, ProvenanceChoice]>([
    // Go's strconv.ParseBool spellings, as buildx's CanonicalizeAttest reads them.
    ['false', 'disabled'],
    ['0', 'disabled'],
    ['f', 'disabled'],
    ['F', 'disabled'],
    ['FALSE', 'disabled'],
    ['False', 'disabled'],
    // Turned on without a mode: BuildKit's default, max (docker/docs#16764).
    ['true', 'max'],
    ['1', 'max'],
    ['t', 'max'],
    ['T', 'max'],
    ['TRUE', 'max'],
    ['True', 'max'],
    ['mode=min', 'min'],
    ['mode=max', 'max'],
    ['mode=full', 'max'],
    ['disabled=true', 'disabled'],
    ['disabled=1,mode=max', 'disabled'],
    ['disabled=false,mode=min', 'min'],
    ['DISABLED=true', 'disabled'],
    ['mode=min,version=v1', 'min'],
    ['mode=min,inline-only=true', 'min'],
    ['mode=max,inline-only=false', 'max'],
    ['mode=min,filename=prov.json', 'min'],
    ['mode=max,reproducible=false,capture-usage=0,complete-materials=F', 'max'],
    ['"mode=min","version=v1"', 'min'],
  ])('%j is %s', (value, mode) => {
    expect(parseProvenance(flags({ provenance: [value] }), {})).toBe(mode);
  });

  it('keeps the last value given, as buildx (a string flag) does', () => {
    expect(parseProvenance(flags({ provenance: ['mode=max', 'false'] }), {})).toBe('disabled');
    expect(parseProvenance(flags({ provenance: ['builder-id=x', 'mode=min'] }), {})).toBe('min');
  });

  it('takes an empty value as not given', () => {
    expect(parseProvenance(flags({ provenance: ['false', ''] }), {})).toBe('min');
  });

  it.each([
    [
      'builder-id=https://ci.example/run/1',
      '--provenance "builder-id=https://ci.example/run/1": braid does not support the attribute "builder-id": the coordinator sets runDetails.builder.id for every build it runs (braid coordinator --builder-id, default braid://ITS-ADDRESS)',
    ],
    [
      'mode=min,version=v0.2',
      '--provenance "mode=min,version=v0.2": version=v0.2 is not supported: braid writes SLSA Provenance v1 only (version=v1)',
    ],
    ['version=v2', '--provenance "version=v2": unknown SLSA provenance version "v2" (v1 or v0.2)'],
    [
      'reproducible=true',
      '--provenance "reproducible=true": reproducible=true is not supported: braid does not record runDetails.metadata.buildkit_reproducible: a build request carries the provenance mode only',
    ],
    [
      'capture-usage=1',
      '--provenance "capture-usage=1": capture-usage=true is not supported: braid\'s agents do not sample the resources a build used',
    ],
    [
      'complete-materials=true',
      '--provenance "complete-materials=true": complete-materials=true is not supported: braid records the context and the base images BuildKit resolved, and cannot prove that nothing else was fetched',
    ],
    ['reproducible=yes', '--provenance "reproducible=yes": reproducible must be true or false'],
    ['inline-only=maybe', '--provenance "inline-only=maybe": inline-only must be true or false'],
    ['mode=medium', '--provenance "mode=medium": mode must be min or max, not "medium"'],
    ['mode=MAX', '--provenance "mode=MAX": mode must be min or max, not "MAX"'],
    [
      'Mode=max',
      '--provenance "Mode=max": braid does not support the attribute "Mode": braid takes mode, version=v1, inline-only, filename and disabled',
    ],
    [
      'mode=max,generator=img',
      '--provenance "mode=max,generator=img": braid does not support the attribute "generator": braid takes mode, version=v1, inline-only, filename and disabled',
    ],
    ['min', '--provenance "min": "min" is not KEY=VALUE'],
    ['yes', '--provenance "yes": "yes" is not KEY=VALUE'],
    [
      'disabled=maybe',
      '--provenance "disabled=maybe": disabled must be true or false, not "maybe"',
    ],
    [
      'mode="max',
      '--provenance "mode="max": not valid CSV: a bare " in the unquoted field mode="max',
    ],
    [
      'type=sbom',
      '--provenance "type=sbom": type=sbom is not supported: braid writes provenance attestations but no SBOM (type=sbom,disabled=true is accepted: there is nothing to turn off)',
    ],
  ])('refuses %j in one line', (value, line) => {
    expect(errorOf(() => parseProvenance(flags({ provenance: [value] }), {}))).toBe(line);
  });
});

describe('--attest', () => {
  it.each<[string[], ProvenanceChoice]>([
    [['type=provenance'], 'max'],
    [['type=provenance,mode=min'], 'min'],
    [['type=provenance,mode=max,version=v1'], 'max'],
    [['type=Provenance,mode=min'], 'min'],
    [[' TYPE =provenance,mode=min'], 'min'],
    [['type=provenance,disabled=true'], 'disabled'],
    [['type=provenance,disabled=true,builder-id=ignored'], 'disabled'],
    [['type=sbom,disabled=true'], 'min'],
    [['type=sbom,disabled=1', 'type=provenance,mode=max'], 'max'],
    // buildx: the first entry of a type wins.
    [['type=provenance,mode=min', 'type=provenance,mode=max'], 'min'],
    [['type=provenance,disabled=true', 'type=provenance,mode=max'], 'disabled'],
  ])('%j is %s', (attest, mode) => {
    expect(parseProvenance(flags({ attest }), {})).toBe(mode);
  });

  it('comes before --provenance, as buildx appends --provenance after every --attest', () => {
    expect(
      parseProvenance(flags({ attest: ['type=provenance,mode=min'], provenance: ['false'] }), {}),
    ).toBe('min');
    expect(
      parseProvenance(flags({ attest: ['type=sbom,disabled=true'], provenance: ['mode=max'] }), {}),
    ).toBe('max');
  });

  it.each([
    ['', '--attest "": the attestation type is missing (type=provenance)'],
    ['mode=max', '--attest "mode=max": the attestation type is missing (type=provenance)'],
    ['type=', '--attest "type=": the attestation type is missing (type=provenance)'],
    ['type=slsa', '--attest "type=slsa": unknown attestation type "slsa" (provenance or sbom)'],
    [
      'type=sbom',
      '--attest "type=sbom": type=sbom is not supported: braid writes provenance attestations but no SBOM (type=sbom,disabled=true is accepted: there is nothing to turn off)',
    ],
    [
      'type=sbom,generator=docker/scout-sbom-indexer:1',
      '--attest "type=sbom,generator=docker/scout-sbom-indexer:1": type=sbom is not supported: braid writes provenance attestations but no SBOM (type=sbom,disabled=true is accepted: there is nothing to turn off)',
    ],
    [
      'type=provenance,builder-id=urn:ci:1',
      '--attest "type=provenance,builder-id=urn:ci:1": braid does not support the attribute "builder-id": the coordinator sets runDetails.builder.id for every build it runs (braid coordinator --builder-id, default braid://ITS-ADDRESS)',
    ],
    [
      'type=provenance,version=v0.2',
      '--attest "type=provenance,version=v0.2": version=v0.2 is not supported: braid writes SLSA Provenance v1 only (version=v1)',
    ],
    ['type=provenance,max', '--attest "type=provenance,max": "max" is not KEY=VALUE'],
    [
      'type=provenance,disabled=no',
      '--attest "type=provenance,disabled=no": disabled must be true or false, not "no"',
    ],
  ])('refuses %j in one line', (value, line) => {
    expect(errorOf(() => parseProvenance(flags({ attest: [value] }), {}))).toBe(line);
  });

  it('checks every entry, also one a first entry of its type overrides', () => {
    expect(
      errorOf(() =>
        parseProvenance(
          flags({ attest: ['type=provenance,mode=min', 'type=provenance,builder-id=x'] }),
          {},
        ),
      ),
    ).toMatch(/^--attest "type=provenance,builder-id=x": braid does not support the attribute /);
  });
});

describe('the default provenance', () => {
  it("is min, buildx's default with --push", () => {
    expect(parseProvenance(flags({}), {})).toBe('min');
  });

  it.each<[string, ProvenanceChoice]>([
    ['1', 'disabled'],
    ['true', 'disabled'],
    ['T', 'disabled'],
    ['0', 'min'],
    ['false', 'min'],
  ])('is %s when BUILDX_NO_DEFAULT_ATTESTATIONS=%j', (value, mode) => {
    expect(parseProvenance(flags({}), { BUILDX_NO_DEFAULT_ATTESTATIONS: value })).toBe(mode);
  });

  it('gives way to a --provenance or --attest type=provenance, which the variable does not touch', () => {
    const off = { BUILDX_NO_DEFAULT_ATTESTATIONS: '1' };
    expect(parseProvenance(flags({ provenance: ['mode=min'] }), off)).toBe('min');
    expect(parseProvenance(flags({ attest: ['type=provenance'] }), off)).toBe('max');
    // An SBOM entry is not a provenance entry: the variable still applies.
    expect(parseProvenance(flags({ attest: ['type=sbom,disabled=true'] }), off)).toBe('disabled');
    // As buildx, the variable is read only when it decides.
    expect(
      parseProvenance(flags({ provenance: ['true'] }), { BUILDX_NO_DEFAULT_ATTESTATIONS: 'x' }),
    ).toBe('max');
  });

  it.each([
    ['yes', 'BUILDX_NO_DEFAULT_ATTESTATIONS "yes": must be a boolean (1, true, 0 or false)'],
    ['', 'BUILDX_NO_DEFAULT_ATTESTATIONS "": must be a boolean (1, true, 0 or false)'],
  ])('refuses BUILDX_NO_DEFAULT_ATTESTATIONS=%j in one line, as buildx does', (value, line) => {
    expect(
      errorOf(() => parseProvenance(flags({}), { BUILDX_NO_DEFAULT_ATTESTATIONS: value })),
    ).toBe(line);
  });
});
