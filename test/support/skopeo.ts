/**
 * What e2e suites read back from the registry with skopeo, the tool users
 * have, instead of braid's own parser: raw manifests and the in-toto
 * statement of an attestation manifest.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect } from 'vitest';
import { run } from './process.js';

export const IN_TOTO_LAYER = 'application/vnd.in-toto+json';

/** `skopeo ARGS`, which must succeed; its stdout. */
export async function skopeoRun(skopeo: string, args: string[]): Promise<string> {
  const result = await run(skopeo, args, { timeoutMs: 120_000 });
  expect(result.code, `skopeo ${args.join(' ')}: ${result.stderr}`).toBe(0);
  return result.stdout;
}

/** `skopeo inspect --raw docker://REF` (plain-HTTP loopback registry), parsed. */
export async function rawManifest<T>(skopeo: string, ref: string): Promise<T> {
  return JSON.parse(
    await skopeoRun(skopeo, ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`]),
  ) as T;
}

/**
 * The in-toto statement of the attestation manifest `repository@digest`,
 * copied into `dir` by skopeo; its one layer must be an in-toto statement.
 */
export async function attestationStatement<T>(
  skopeo: string,
  repository: string,
  digest: string,
  dir: string,
): Promise<{ statement: T; layer: { mediaType: string; annotations?: Record<string, string> } }> {
  const out = join(dir, `${repository.replace(/[/:]/g, '_')}-${digest.replace(':', '-')}`);
  await skopeoRun(skopeo, [
    'copy',
    '--src-tls-verify=false',
    '--quiet',
    `docker://${repository}@${digest}`,
    `dir:${out}`,
  ]);
  const manifest = JSON.parse(await readFile(join(out, 'manifest.json'), 'utf8')) as {
    layers: { digest: string; mediaType: string; annotations?: Record<string, string> }[];
  };
  expect(manifest.layers.map((l) => l.mediaType)).toEqual([IN_TOTO_LAYER]);
  const layer = manifest.layers[0] as (typeof manifest.layers)[number];
  const statement = JSON.parse(
    await readFile(join(out, layer.digest.replace('sha256:', '')), 'utf8'),
  ) as T;
  return { statement, layer };
}
