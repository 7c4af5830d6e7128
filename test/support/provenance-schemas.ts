/**
 * The in-toto Statement v1 and SLSA Provenance v1 JSON schemas (written by
 * hand from the specs: test/fixtures/provenance/README.md), compiled once,
 * and a check that reports what a statement gets wrong as readable lines.
 */
import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsPlugin from 'ajv-formats';
import { SLSA_PROVENANCE_V1 } from '../../src/oci/provenance.js';

export const fixture = (name: string): Buffer =>
  readFileSync(new URL(`../fixtures/provenance/${name}`, import.meta.url));
export const fixtureJson = (name: string): object =>
  JSON.parse(fixture(name).toString('utf8')) as object;

// ajv-formats is CommonJS: its default import is the plugin function itself.
const addFormats = addFormatsPlugin as unknown as typeof addFormatsPlugin.default;
// strictRequired would refuse the spec's "one of uri, digest, content" (required inside anyOf).
const ajv = new Ajv2020({ strict: true, strictRequired: false, allErrors: true });
addFormats(ajv);
ajv.addSchema(fixtureJson('in-toto-statement-v1.schema.json'));
ajv.addSchema(fixtureJson('slsa-provenance-v1.schema.json'));
const validStatement = ajv.getSchema('https://braid.build/test/schemas/in-toto-statement-v1.json');
const validSlsa = ajv.getSchema('https://braid.build/test/schemas/slsa-provenance-v1.json');

/** Schema errors as readable lines; [] when the statement is valid. */
export function schemaErrors(statement: unknown): string[] {
  if (!validStatement || !validSlsa) throw new Error('schemas not loaded');
  const errors: string[] = [];
  if (!validStatement(statement)) {
    for (const e of validStatement.errors ?? [])
      errors.push(`statement${e.instancePath} ${e.message}`);
  }
  const { predicateType, predicate } = statement as { predicateType?: string; predicate?: unknown };
  if (predicateType !== SLSA_PROVENANCE_V1) errors.push(`predicateType ${predicateType}`);
  if (!validSlsa(predicate)) {
    for (const e of validSlsa.errors ?? []) errors.push(`predicate${e.instancePath} ${e.message}`);
  }
  return errors;
}
