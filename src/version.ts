import { readFileSync } from 'node:fs';

interface PackageJson {
  version: string;
}

/** Set by scripts/bundle.mjs: the bundle's files sit where no package.json is one level up. */
declare const BRAID_BUNDLED_VERSION: string | undefined;

// package.json sits one level above both src/ (tests, dev) and dist/ (builds).
function readPackageVersion(): string {
  const pkg = JSON.parse(
    readFileSync(new URL('../package.json', import.meta.url), 'utf8'),
  ) as PackageJson;
  return pkg.version;
}

/** braid's own version, from package.json. */
export const BRAID_VERSION: string =
  typeof BRAID_BUNDLED_VERSION === 'string' ? BRAID_BUNDLED_VERSION : readPackageVersion();

/** API packages this build serves. */
export const API_VERSIONS: readonly string[] = ['braid.v1'];
