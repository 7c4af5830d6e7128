/**
 * `--provenance`, `--attest` and buildx's default provenance, read as
 * buildx reads them (commands/build.go, util/buildflags/attests.go) into
 * the one provenance mode a farm build carries: `disabled`, `min` or `max`.
 *
 * As in buildx: `--provenance V` is `--attest type=provenance,V` (a Go
 * boolean is `disabled=!V`), placed after every `--attest`; the first entry
 * of each type wins. An entry without `mode` is BuildKit's default, max
 * (solver/llbsolver/provenance.go; docker/docs#16764); no entry at all is
 * buildx's default with --push, min, unless BUILDX_NO_DEFAULT_ATTESTATIONS
 * is true. braid writes no SBOM: `type=sbom` only as `disabled=true`.
 */
import type { Env } from '../../config/loader.js';
import { csvFields } from './csv.js';
import { badValue, goBool } from './flag-value.js';

export type ProvenanceChoice = 'disabled' | 'min' | 'max';

const NO_DEFAULT_ATTESTATIONS = 'BUILDX_NO_DEFAULT_ATTESTATIONS';

/** What commander collected: every `--attest`, every `--provenance` (the last one counts). */
export interface AttestationFlags {
  readonly attest: readonly string[];
  readonly provenance: readonly string[];
}

type AttestType = 'provenance' | 'sbom';

interface Entry {
  readonly type: AttestType;
  /** Absent when the entry is disabled. */
  readonly mode?: 'min' | 'max';
}

const SBOM_WHY =
  'braid writes provenance attestations but no SBOM (type=sbom,disabled=true is accepted: there is nothing to turn off)';

const TAKEN = 'braid takes mode, version=v1, inline-only, filename and disabled';

/** Attributes braid refuses whatever their value, with the reason. */
const REFUSED_ATTRIBUTES: Readonly<Record<string, string>> = {
  'builder-id':
    'the coordinator sets runDetails.builder.id for every build it runs (braid coordinator --builder-id, default braid://ITS-ADDRESS)',
};

/** Boolean attributes braid honours only at BuildKit's default, false, with the reason true is refused. */
const FALSE_ONLY: Readonly<Record<string, string>> = {
  reproducible:
    'braid does not record runDetails.metadata.buildkit_reproducible: a build request carries the provenance mode only',
  'capture-usage': "braid's agents do not sample the resources a build used",
  'complete-materials':
    'braid records the context and the base images BuildKit resolved, and cannot prove that nothing else was fetched',
};

/** The provenance mode of a build, from its flags and the environment buildx reads. */
export function parseProvenance(flags: AttestationFlags, env: Env): ProvenanceChoice {
  const entries = flags.attest.map((text) => parseEntry('--attest', text, text));
  const provenance = flags.provenance.at(-1);
  // buildx keeps the last --provenance; an empty one is as if none were given.
  if (provenance !== undefined && provenance !== '') {
    entries.push(parseEntry('--provenance', provenance, canonical(provenance)));
  }
  const chosen = entries.find((entry) => entry.type === 'provenance');
  if (chosen !== undefined) return chosen.mode ?? 'disabled';
  return defaultOff(env) ? 'disabled' : 'min';
}

/** buildflags.CanonicalizeAttest: `true` is `disabled=false`, anything else attributes. */
function canonical(value: string): string {
  const on = goBool(value);
  return on === undefined ? `type=provenance,${value}` : `type=provenance,disabled=${!on}`;
}

function defaultOff(env: Env): boolean {
  const value = env[NO_DEFAULT_ATTESTATIONS];
  if (value === undefined) return false;
  const off = goBool(value);
  if (off === undefined) {
    throw badValue(NO_DEFAULT_ATTESTATIONS, value, 'must be a boolean (1, true, 0 or false)');
  }
  return off;
}

/** One entry; `flag` and `given` name it in an error, `text` is what is parsed. */
function parseEntry(flag: string, given: string, text: string): Entry {
  let type: string | undefined;
  let disabled = false;
  const attributes = new Map<string, string>();
  const parsed = csvFields(text);
  if ('problem' in parsed) throw badValue(flag, given, `not valid CSV: ${parsed.problem}`);
  for (const field of text === '' ? [] : parsed.fields) {
    const eq = field.indexOf('=');
    if (eq < 0) throw badValue(flag, given, `"${field}" is not KEY=VALUE`);
    const key = field.slice(0, eq);
    const value = field.slice(eq + 1);
    // buildx matches these two keys trimmed and in any case, and keeps other keys as given.
    const known = key.trim().toLowerCase();
    if (known === 'type') {
      type = value;
    } else if (known === 'disabled') {
      const off = goBool(value);
      if (off === undefined) {
        throw badValue(flag, given, `disabled must be true or false, not "${value}"`);
      }
      disabled = off;
    } else {
      attributes.set(key, value);
    }
  }
  if (type === undefined || type === '') {
    throw badValue(flag, given, 'the attestation type is missing (type=provenance)');
  }
  const kind = type.toLowerCase();
  if (kind !== 'provenance' && kind !== 'sbom') {
    throw badValue(flag, given, `unknown attestation type "${type}" (provenance or sbom)`);
  }
  // A disabled entry turns its type off whatever else it says, as in buildx.
  if (disabled) return { type: kind };
  if (kind === 'sbom') throw badValue(flag, given, `type=sbom is not supported: ${SBOM_WHY}`);
  return { type: kind, mode: provenanceMode(flag, given, attributes) };
}

function provenanceMode(
  flag: string,
  given: string,
  attributes: ReadonlyMap<string, string>,
): 'min' | 'max' {
  for (const [key, value] of attributes) {
    const refused = REFUSED_ATTRIBUTES[key];
    if (refused !== undefined) {
      throw badValue(flag, given, `braid does not support the attribute "${key}": ${refused}`);
    }
    const falseOnly = FALSE_ONLY[key];
    if (falseOnly !== undefined) {
      const on = goBool(value);
      if (on === undefined) throw badValue(flag, given, `${key} must be true or false`);
      if (on) throw badValue(flag, given, `${key}=true is not supported: ${falseOnly}`);
      continue;
    }
    if (key === 'inline-only') {
      // braid only pushes images, which hold provenance inline: true and false alike hold.
      if (goBool(value) === undefined) {
        throw badValue(flag, given, 'inline-only must be true or false');
      }
      continue;
    }
    if (key === 'version') {
      if (value === 'v1') continue;
      if (value === 'v0.2') {
        throw badValue(
          flag,
          given,
          'version=v0.2 is not supported: braid writes SLSA Provenance v1 only (version=v1)',
        );
      }
      throw badValue(flag, given, `unknown SLSA provenance version "${value}" (v1 or v0.2)`);
    }
    // filename names the file of a local or tar output; braid pushes an image, as buildx --push.
    if (key === 'filename' || key === 'mode') continue;
    throw badValue(flag, given, `braid does not support the attribute "${key}": ${TAKEN}`);
  }
  const mode = attributes.get('mode');
  // BuildKit's default when provenance is asked for without a mode; full is its alias of max.
  if (mode === undefined || mode === 'max' || mode === 'full') return 'max';
  if (mode === 'min') return 'min';
  throw badValue(flag, given, `mode must be min or max, not "${mode}"`);
}
