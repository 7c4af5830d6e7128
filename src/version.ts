import { readFileSync } from 'node:fs';

interface PackageJson {
  version: string;
}

// package.json sits one level above both src/ (tests, dev) and dist/ (builds).
const pkg = JSON.parse(
  readFileSync(new URL('../package.json', import.meta.url), 'utf8'),
) as PackageJson;

/** braid's own version, from package.json. */
export const BRAID_VERSION: string = pkg.version;

/** API packages this build serves. */
export const API_VERSIONS: readonly string[] = ['braid.v1'];
