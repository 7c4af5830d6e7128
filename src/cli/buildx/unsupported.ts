/**
 * The `docker buildx build` flags braid does not honour, each with the
 * reason a user reads, and the check that refuses them before anything is
 * packed or sent: `braid build does not support --load: ...`, exit 2.
 * buildx's own no-ops (`--rm`, `--force-rm`, `--compress`) are accepted
 * and ignored, as buildx ignores them. build.ts loads this on every run:
 * it imports nothing heavy.
 */
import { BraidError, UsageError } from '../../errors.js';
import { goBool } from './flag-value.js';

export interface BuildxFlag {
  /** commander's spelling: `-o, --output <spec>`. */
  readonly spec: string;
  /** commander's key in the parsed flags: `output`. */
  readonly key: string;
  /** The flag as braid names it: `--output`. */
  readonly long: string;
}

export interface RefusedFlag extends BuildxFlag {
  readonly why: string;
  /** A command line that is refused, for the tests and the docs: `['--output', 'type=local,dest=out']`. */
  readonly example: readonly string[];
}

const NO_ENGINE_LIMITS =
  "braid's agents build through the Docker Engine API, which does not apply per-step resource limits to BuildKit builds";
const NO_FRONTEND_METHODS =
  'braid build runs builds only; run checks, outlines and target lists locally with docker buildx build --call (they need no farm)';
const DEPRECATED = (what: string) => `${what} (buildx ignores it with a warning too): drop it`;

/** commander's key for a long flag: `--cpu-shares` is `cpuShares`, `--no-cache-filter` `cacheFilter`. */
function keyOf(long: string): string {
  return long.replace(/^--(no-)?/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

function refused(spec: string, example: readonly string[], why: string): RefusedFlag {
  const long = /--[a-z-]+/.exec(spec)?.[0] ?? spec;
  return { spec, key: keyOf(long), long, why, example };
}

/** Every flag of `docker buildx build` (buildx v0.36) that braid refuses whatever its value. */
export const REFUSED_FLAGS: readonly RefusedFlag[] = [
  refused(
    '--builder <name>',
    ['--builder', 'mybuilder'],
    'braid builds on the farm that --coordinator (BRAID_COORDINATOR) names; it has no buildx builder instances',
  ),
  refused(
    '--cgroup-parent <parent>',
    ['--cgroup-parent', 'ci'],
    "RUN steps run in cgroups of the agents' hosts, and the Docker Engine API ignores it for BuildKit builds",
  ),
  refused('--check', ['--check'], NO_FRONTEND_METHODS),
  refused('--print <method>', ['--print', 'outline'], NO_FRONTEND_METHODS),
  refused(
    '-D, --debug',
    ['--debug'],
    "use --log-level debug for braid's own logs; the build's logs are in --progress plain and braid logs ID",
  ),
  refused(
    '--iidfile <file>',
    ['--iidfile', 'iid.txt'],
    'a farm build has no image ID in a local engine; the index digest is printed on stdout and written by --metadata-file (containerimage.digest)',
  ),
  refused(
    '--load',
    ['--load'],
    'a farm pushes one index to the registry and cannot load the image into your local engine: pull it (docker pull TAG)',
  ),
  refused(
    '-o, --output <spec>',
    ['--output', 'type=local,dest=out'],
    'braid always pushes one index under every -t, as --push does; other outputs (docker, local, tar, oci) cannot reach your machine from a farm',
  ),
  refused(
    '-q, --quiet',
    ['--quiet'],
    'braid build already prints only the index digest on stdout, and its progress on stderr: drop -q (or send stderr elsewhere)',
  ),
  refused(
    '--no-cache-filter <stages>',
    ['--no-cache-filter', 'build'],
    "the Docker Engine API's /build takes no per-stage cache filter: use --no-cache",
  ),
  refused(
    '--policy <spec>',
    ['--policy', 'filename=policy.rego'],
    'build policies are evaluated by buildx on your machine, and braid does not evaluate them yet',
  ),
  refused('--resource <limit>', ['--resource', 'memory=2g'], NO_ENGINE_LIMITS),
  refused(
    '--shm-size <bytes>',
    ['--shm-size', '1g'],
    "the Docker Engine API's /build ignores it for BuildKit builds (checked on dockerd 20.10: /dev/shm stays 64 MiB), so RUN steps would not get it",
  ),
  refused(
    '--ulimit <limit>',
    ['--ulimit', 'nofile=1024:2048'],
    "the Docker Engine API's /build ignores it for BuildKit builds (checked on dockerd 20.10: RUN steps keep the engine's limits), so RUN steps would not get it",
  ),
  refused(
    '--build-context <name=value>',
    ['--build-context', 'base=docker-image://registry.example/base:1'],
    "the Docker Engine API's /build takes one context and does not pass BuildKit's named contexts to the Dockerfile frontend (dockerd 20.10): use a build arg in FROM (ARG BASE / FROM $BASE) instead",
  ),
  refused('-m, --memory <bytes>', ['--memory', '2g'], NO_ENGINE_LIMITS),
  refused('--memory-swap <bytes>', ['--memory-swap', '-1'], NO_ENGINE_LIMITS),
  refused('-c, --cpu-shares <shares>', ['--cpu-shares', '512'], NO_ENGINE_LIMITS),
  refused('--cpu-period <us>', ['--cpu-period', '100000'], NO_ENGINE_LIMITS),
  refused('--cpu-quota <us>', ['--cpu-quota', '50000'], NO_ENGINE_LIMITS),
  refused('--cpuset-cpus <cpus>', ['--cpuset-cpus', '0-3'], NO_ENGINE_LIMITS),
  refused('--cpuset-mems <mems>', ['--cpuset-mems', '0'], NO_ENGINE_LIMITS),
  refused('--isolation <mode>', ['--isolation', 'hyperv'], DEPRECATED('deprecated with BuildKit')),
  refused(
    '--security-opt <option>',
    ['--security-opt', 'seccomp=unconfined'],
    DEPRECATED('deprecated with BuildKit; the Dockerfile says RUN --security=insecure'),
  ),
  refused(
    '--squash',
    ['--squash'],
    DEPRECATED('removed with BuildKit; squash with a multi-stage Dockerfile'),
  ),
];

/** Flags refused for some values only; the example is one that is refused. */
export const REFUSED_VALUES: readonly RefusedFlag[] = [
  refused(
    '--call <method>',
    ['--call', 'check'],
    `${NO_FRONTEND_METHODS} (--call build is accepted)`,
  ),
  refused(
    '--sbom <spec>',
    ['--sbom', 'true'],
    'braid writes provenance attestations but no SBOM (--sbom=false is accepted: there is nothing to turn off)',
  ),
  refused(
    '--allow <entitlement>',
    ['--allow', 'security.insecure'],
    "braid's agents grant only network.host (for --network host)",
  ),
];

/** buildx's own no-ops, accepted and ignored as buildx ignores them. */
export const IGNORED_FLAGS: readonly BuildxFlag[] = ['--rm', '--force-rm', '--compress'].map(
  (long) => ({ spec: long, long, key: keyOf(long) }),
);

/** A negatable commander option (`--no-cache-filter`) defaults to true: only a value means it was given. */
function given(flag: BuildxFlag, value: unknown): boolean {
  return flag.long.startsWith('--no-')
    ? value !== undefined && value !== true
    : value !== undefined;
}

function unsupported(flag: string, why: string): BraidError {
  return new UsageError(`braid build does not support ${flag}: ${why}`);
}

const asList = (value: unknown): string[] =>
  value === undefined ? [] : Array.isArray(value) ? value.map(String) : [String(value)];

/**
 * Throws the one line for the first flag in `flags` (commander's parsed
 * options) that braid does not support, whatever else was given.
 */
export function refuseUnsupported(flags: Readonly<Record<string, unknown>>): void {
  for (const flag of REFUSED_FLAGS) {
    if (given(flag, flags[flag.key])) throw unsupported(flag.long, flag.why);
  }
  const why = (long: string) => REFUSED_VALUES.find((f) => f.long === long)?.why ?? '';
  for (const method of asList(flags.call)) {
    if (method !== 'build') throw unsupported(`--call ${method}`, why('--call'));
  }
  // buildx keeps the last --sbom (empty: not given) and reads a boolean as on or off.
  const sbom = asList(flags.sbom).at(-1);
  if (sbom !== undefined && sbom !== '' && goBool(sbom) !== false) {
    throw unsupported('--sbom', why('--sbom'));
  }
  for (const entitlement of asList(flags.allow)) {
    if (entitlement !== 'network.host') throw unsupported(`--allow ${entitlement}`, why('--allow'));
  }
  if (asList(flags.ssh).length > 0 && flags.detach === true) {
    throw unsupported(
      '--ssh with --detach',
      'the agents reach your ssh-agent or keys through braid build while it runs: leave out --detach',
    );
  }
}
