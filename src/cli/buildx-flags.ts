/**
 * The `docker buildx build` flags braid build honours beyond docker
 * build's, parsed as buildx parses them into one typed object. Every value
 * is checked here, before anything is packed or sent: a bad one is one
 * line naming the flag and the problem (exit 2). Secret values are read
 * later, by readSecrets, only when the build is about to be submitted.
 */
import type { Env } from '../config/loader.js';
import { parseAnnotations, type Annotation } from './buildx/annotations.js';
import {
  parseCacheFrom,
  parseCacheTo,
  type CacheExport,
  type CacheImport,
} from './buildx/cache.js';
import { probePath, type PathProbe } from './buildx/path-probe.js';
import { parseProvenance, type ProvenanceChoice } from './buildx/provenance.js';
import {
  parseAddHosts,
  parseNetwork,
  type ExtraHost,
  type NetworkMode,
} from './buildx/run-settings.js';
import { parseSecrets, type SecretSpec } from './buildx/secrets.js';
import { parseSshSpecs, type SshSpec } from './buildx/ssh.js';
import { refuseUnsupported } from './buildx/unsupported.js';

export type { Annotation, AnnotationLevel } from './buildx/annotations.js';
export type { CacheExport, CacheImport } from './buildx/cache.js';
export type { PathKind, PathProbe } from './buildx/path-probe.js';
export type { ProvenanceChoice } from './buildx/provenance.js';
export type { ExtraHost, NetworkMode } from './buildx/run-settings.js';
export type { SecretSource, SecretSources, SecretSpec, SecretValue } from './buildx/secrets.js';
export type { SshSource, SshSpec } from './buildx/ssh.js';
export { extraHostForEngine } from './buildx/run-settings.js';
export { readSecretFile, readSecrets, SECRET_MAX_BYTES } from './buildx/secrets.js';
export { refuseUnsupported } from './buildx/unsupported.js';

export interface BuildxFlags {
  /** Where each secret's value comes from; read them with readSecrets. */
  readonly secrets: readonly SecretSpec[];
  readonly ssh: readonly SshSpec[];
  readonly cacheFrom: readonly CacheImport[];
  readonly cacheTo: readonly CacheExport[];
  readonly annotations: readonly Annotation[];
  /** Absent: the agent's own build network (`--build-network`). */
  readonly network?: NetworkMode;
  readonly extraHosts: readonly ExtraHost[];
  /** When a platform fails, the others run to the end; no tag moves either way. */
  readonly keepGoing: boolean;
  /** SLSA provenance per platform (--provenance, --attest type=provenance; default min). */
  readonly provenance: ProvenanceChoice;
}

const list = (value: unknown): string[] =>
  value === undefined ? [] : Array.isArray(value) ? value.map(String) : [String(value)];

const text = (value: unknown): string | undefined =>
  typeof value === 'string' ? value : undefined;

/**
 * `flags` are commander's parsed options of `braid build` (keys such as
 * `secret`, `cacheFrom`, `addHost`); `env` the environment the secrets,
 * SSH_AUTH_SOCK and BUILDX_NO_DEFAULT_ATTESTATIONS come from; `probe`
 * tells sockets, key files and directories apart (stat, by default).
 */
export function parseBuildxFlags(
  flags: Readonly<Record<string, unknown>>,
  env: Env,
  probe: PathProbe = probePath,
): BuildxFlags {
  refuseUnsupported(flags);
  const network = text(flags.network);
  return {
    secrets: parseSecrets(list(flags.secret), env),
    ssh: parseSshSpecs(list(flags.ssh), env, probe),
    cacheFrom: parseCacheFrom(list(flags.cacheFrom)),
    cacheTo: parseCacheTo(list(flags.cacheTo)),
    annotations: parseAnnotations(list(flags.annotation)),
    ...(network !== undefined && { network: parseNetwork(network) }),
    extraHosts: parseAddHosts(list(flags.addHost)),
    keepGoing: flags.keepGoing === true,
    provenance: parseProvenance(
      { attest: list(flags.attest), provenance: list(flags.provenance) },
      env,
    ),
  };
}
