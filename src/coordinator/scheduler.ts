/**
 * The platform resolver: decides, for each pending job, which connected agent
 * builds it — natively when a host of that platform is connected, otherwise
 * under a registered QEMU handler — or why it must wait or cannot run at all.
 * Among the agents of the best mode it prefers the one that still holds the
 * build cache of the job's lineage (cache affinity), unless that agent is
 * much busier than the least loaded one.
 * Pure: no I/O, no clock; the coordinator passes in a view of its registry,
 * the cache records of its store and the time.
 */
import { formatPlatform, platformMatches, platformsEqual, type Platform } from '../oci/platform.js';
import { compareText, formatAge } from '../text.js';

/**
 * How a job may be placed:
 * - `prefer-native`: a native host if one is connected (waiting for it when it
 *   is busy), an emulating agent only when no native host is connected;
 * - `native-only`: never emulate;
 * - `any`: the least loaded capable agent, native or emulating.
 */
export type EmulationPolicy = 'prefer-native' | 'native-only' | 'any';

/** What the scheduler needs to know about one connected agent. */
export interface AgentView {
  name: string;
  nativePlatform: Platform;
  /** Platforms the agent can run under emulation, with the binfmt handler (`qemu-s390x`). */
  emulated: { platform: Platform; handler: string }[];
  /** Jobs the agent runs at once. */
  capacity: number;
  /** Jobs the agent runs now. */
  running: number;
  labels: Record<string, string>;
  /**
   * The identity of the agent's engine (Docker /info `ID`); empty or absent
   * when the agent did not report one, which rules out cache affinity.
   */
  engineId?: string;
}

export interface PendingJob {
  jobId: string;
  platform: Platform;
  policy: EmulationPolicy;
  /** What the job's build cache is keyed by across source edits (see lineage.ts). */
  lineage?: string;
  /**
   * Another agent if one can build it (under the job's policy): a
   * --check-reproducible build goes to a second host when there is one.
   */
  avoidAgent?: string;
}

/**
 * A successful build that left its cache on an engine: the agent that ran it,
 * the engine it ran on, the platform and lineage it built, and when.
 */
export interface CacheRecord {
  agent: string;
  engineId: string;
  platform: Platform;
  lineage: string;
  finishedAt: Date;
}

/** How cache affinity weighs a warm cache against load. */
export interface CacheAffinitySettings {
  enabled: boolean;
  /** A record older than this is taken to be gone (pruned, garbage-collected). */
  maxAgeMs: number;
  /**
   * The warm agent is passed over when its load ratio (running/capacity)
   * exceeds the least loaded candidate's by more than this many percentage
   * points, or when it has no free slot.
   */
  maxLoadGapPercent: number;
}

export const DEFAULT_CACHE_AFFINITY: CacheAffinitySettings = {
  enabled: true,
  maxAgeMs: 24 * 3_600_000,
  maxLoadGapPercent: 50,
};

export interface CacheAffinity extends CacheAffinitySettings {
  /** Records of the lineages pending (older or other ones are ignored here anyway). */
  records: readonly CacheRecord[];
  now: Date;
}

/**
 * Why a job went to the agent it went to, among the capable agents of the
 * best mode: the only one there was, the least loaded, or the one that still
 * holds the lineage's build cache.
 */
export type PlacementBasis = 'only-capable' | 'least-loaded' | 'cache-affinity';

export type Placement =
  | {
      kind: 'assign';
      jobId: string;
      agent: string;
      emulated: boolean;
      handler?: string;
      /** The whole decision in one line, for the build's event log. */
      reason: string;
      basis: PlacementBasis;
      /** The basis as a user reads it: `cache affinity (built lineage L for linux/amd64 3m ago)`. */
      basisText: string;
    }
  /** Capable agents are connected, but all of those the policy allows are full. */
  | { kind: 'wait'; jobId: string; reason: string }
  /** No connected agent can build the platform under the policy. */
  | { kind: 'impossible'; jobId: string; reason: string };

/** How an agent would build a platform. */
export interface BuildMode {
  native: boolean;
  handler?: string;
}

/**
 * Whether `agent` can build `platform` under `policy`, and how. Matching
 * follows containerd (arm64 and arm64/v8 are one platform); an arm64 host is
 * not assumed to run arm/v7: it must list arm/v7 among its emulated platforms.
 */
export function canBuild(
  agent: AgentView,
  platform: Platform,
  policy: EmulationPolicy,
): BuildMode | undefined {
  if (matches(platform, agent.nativePlatform)) return { native: true };
  if (policy === 'native-only') return undefined;
  const emulator = agent.emulated.find((entry) => matches(platform, entry.platform));
  return emulator === undefined ? undefined : { native: false, handler: emulator.handler };
}

/** Normalised platform strings, by platform object (views and jobs keep theirs). */
const platformKeys = new WeakMap<Platform, string>();

function keyOf(platform: Platform): string {
  let key = platformKeys.get(platform);
  if (key === undefined) {
    key = formatPlatform(platform);
    platformKeys.set(platform, key);
  }
  return key;
}

/**
 * platformMatches, answered from the normalised strings when neither side
 * names an OS version or features (every Linux platform): a placement
 * pass asks this of every agent.
 */
function matches(wanted: Platform, offered: Platform): boolean {
  const plain = (p: Platform) => p.osVersion === undefined && (p.osFeatures?.length ?? 0) === 0;
  if (plain(wanted) && plain(offered)) return keyOf(wanted) === keyOf(offered);
  return platformMatches(wanted, offered);
}

/**
 * Whether some connected agent can build `platform` under `policy` at all
 * (busy or not): the question a submit asks, without placing anything.
 */
export function anyCapable(
  agents: readonly AgentView[],
  platform: Platform,
  policy: EmulationPolicy,
): boolean {
  return agents.some((agent) => canBuild(agent, platform, policy) !== undefined);
}

/** A capable agent and its load as seen by the job being placed. */
interface Candidate {
  agent: AgentView;
  mode: BuildMode;
  running: number;
}

/**
 * Places the pending jobs in the order given. Each assignment counts toward
 * its agent's load for the jobs after it in the same call, so a burst of jobs
 * spreads over the farm instead of piling onto the agent that was idle first.
 */
export function schedule(
  pending: readonly PendingJob[],
  agents: readonly AgentView[],
  options: { affinity?: CacheAffinity } = {},
): Placement[] {
  const running = new Map<string, number>();
  for (const agent of agents) running.set(agent.name, agent.running);

  return pending.map((job) => {
    const placement = placeJob(job, agents, running, options.affinity);
    if (placement.kind === 'assign') {
      running.set(placement.agent, (running.get(placement.agent) ?? 0) + 1);
    }
    return placement;
  });
}

/**
 * Places one job among `agents`, whose loads are `running` (by agent name;
 * an agent missing there counts its own `running`). The caller counts an
 * assignment toward the agent's load for the jobs it places next.
 */
export function placeJob(
  job: PendingJob,
  agents: readonly AgentView[],
  running: ReadonlyMap<string, number>,
  affinity: CacheAffinity | undefined,
): Placement {
  const target = formatPlatform(job.platform);
  const native: Candidate[] = [];
  const emulating: Candidate[] = [];
  for (const agent of agents) {
    const mode = canBuild(agent, job.platform, 'any');
    if (mode === undefined) continue;
    const candidate = { agent, mode, running: running.get(agent.name) ?? agent.running };
    (mode.native ? native : emulating).push(candidate);
  }
  if (job.avoidAgent !== undefined) {
    const isOther = (c: Candidate) => c.agent.name !== job.avoidAgent;
    const others =
      native.filter(isOther).length +
      (job.policy === 'native-only' ? 0 : emulating.filter(isOther).length);
    if (others > 0) {
      for (const tier of [native, emulating]) {
        const at = tier.findIndex((c) => !isOther(c));
        if (at >= 0) tier.splice(at, 1);
      }
    }
  }

  /** Among `tier` (the capable agents of the best mode), the least loaded one or a warm one. */
  const pick = (tier: readonly Candidate[], least: Candidate, only: string): Choice =>
    tier.length === 1
      ? { chosen: least, basis: 'only-capable', text: only }
      : chooseWithAffinity(job, tier, least, affinity);
  const assign = ({ chosen, basis, text }: Choice, how: string): Placement => ({
    kind: 'assign',
    jobId: job.jobId,
    agent: chosen.agent.name,
    emulated: !chosen.mode.native,
    ...(chosen.mode.handler !== undefined && { handler: chosen.mode.handler }),
    reason: `${target}: ${how} (${busy(chosen)}), ${text}`,
    basis,
    basisText: text,
  });
  const wait = (reason: string): Placement => ({ kind: 'wait', jobId: job.jobId, reason });
  const impossible = (why: string): Placement => ({
    kind: 'impossible',
    jobId: job.jobId,
    reason: `${target}: ${why} (${describeFarm(agents)})`,
  });

  switch (job.policy) {
    case 'native-only': {
      if (native.length === 0) {
        return emulating.length === 0
          ? impossible('no connected agent can build it')
          : impossible(
              `no native host connected, and policy native-only forbids emulating on ${names(emulating)}`,
            );
      }
      const least = leastLoaded(native);
      if (least === undefined) {
        return wait(
          `${target}: native hosts ${loads(native)} are full; waiting (policy native-only)`,
        );
      }
      const choice = pick(native, least, 'only capable (the only native host)');
      return assign(choice, `native on agent ${choice.chosen.agent.name}`);
    }

    case 'prefer-native': {
      // A connected but busy native host is waited for rather than passed over
      // for an emulator: an emulated build runs many times slower, so it would
      // usually finish after the native host frees up and takes the job.
      if (native.length > 0) {
        const least = leastLoaded(native);
        if (least !== undefined) {
          const choice = pick(native, least, 'only capable (the only native host)');
          return assign(choice, `native on agent ${choice.chosen.agent.name}`);
        }
        const instead = emulating.length > 0 ? ` rather than emulating on ${names(emulating)}` : '';
        return wait(`${target}: native hosts ${loads(native)} are full; waiting for one${instead}`);
      }
      if (emulating.length === 0) return impossible('no connected agent can build it');
      const least = leastLoaded(emulating);
      if (least === undefined) {
        return wait(
          `${target}: no native host connected and emulating agents ${loads(emulating)} are full; waiting`,
        );
      }
      const choice = pick(emulating, least, 'only capable (the only emulating agent)');
      return assign(
        choice,
        `no native host connected; emulating on agent ${choice.chosen.agent.name} via ${choice.chosen.mode.handler}`,
      );
    }

    case 'any': {
      const capable = [...native, ...emulating];
      if (capable.length === 0) return impossible('no connected agent can build it');
      const least = leastLoaded(capable);
      if (least === undefined) {
        return wait(`${target}: all capable agents ${loads(capable)} are full; waiting`);
      }
      const choice = pick(capable, least, 'only capable');
      const { chosen } = choice;
      const how = chosen.mode.native
        ? `native on agent ${chosen.agent.name}`
        : `emulating on agent ${chosen.agent.name} via ${chosen.mode.handler}`;
      return assign(
        choice.basis === 'least-loaded'
          ? { ...choice, text: `${choice.text} under policy any` }
          : choice,
        how,
      );
    }
  }
}

interface Choice {
  chosen: Candidate;
  basis: PlacementBasis;
  text: string;
}

/**
 * The agent among `tier` that most recently built the job's lineage for its
 * platform and still holds that cache — the same agent name on the same
 * engine id, within maxAgeMs — unless it is much busier than `least`: it has
 * no free slot, or its load ratio exceeds `least`'s by more than
 * maxLoadGapPercent points. A warm emulating agent never wins over a native
 * `least` (policy any): emulation costs more than a cold cache. Without a
 * warm agent that qualifies, `least`.
 */
function chooseWithAffinity(
  job: PendingJob,
  tier: readonly Candidate[],
  least: Candidate,
  affinity: CacheAffinity | undefined,
): Choice {
  const leastLoadedChoice = (note = ''): Choice => ({
    chosen: least,
    basis: 'least-loaded',
    text: `least loaded${note}`,
  });
  if (affinity === undefined || !affinity.enabled || !job.lineage) return leastLoadedChoice();
  const now = affinity.now.getTime();
  const warm = affinity.records
    .filter(
      (r) =>
        r.lineage === job.lineage &&
        platformsEqual(r.platform, job.platform) &&
        r.engineId !== '' &&
        now - r.finishedAt.getTime() <= affinity.maxAgeMs,
    )
    .flatMap((record) => {
      const candidate = tier.find(
        (c) => c.agent.name === record.agent && c.agent.engineId === record.engineId,
      );
      return candidate === undefined ? [] : [{ record, candidate }];
    })
    .sort(
      (a, b) =>
        b.record.finishedAt.getTime() - a.record.finishedAt.getTime() ||
        compareText(a.candidate.agent.name, b.candidate.agent.name),
    );
  const built = (record: CacheRecord, agent: string) =>
    `${agent} built lineage ${record.lineage} for ${formatPlatform(record.platform)} ${formatAge(now - record.finishedAt.getTime())} ago`;
  let passedOver = '';
  for (const { record, candidate } of warm) {
    if (!candidate.mode.native && least.mode.native) continue;
    const gapPercent = (ratio(candidate) - ratio(least)) * 100;
    if (candidate.running >= candidate.agent.capacity) {
      passedOver ||= ` (${built(record, candidate.agent.name)} but is full: ${busy(candidate)})`;
      continue;
    }
    // A hair of tolerance so 2/4 - 0/4 counts as exactly 50 points.
    if (gapPercent > affinity.maxLoadGapPercent + 1e-9) {
      passedOver ||= ` (${built(record, candidate.agent.name)} but is much busier: ${busy(candidate)} vs ${busy(least)})`;
      continue;
    }
    return {
      chosen: candidate,
      basis: 'cache-affinity',
      text: `cache affinity (built lineage ${record.lineage} for ${formatPlatform(record.platform)} ${formatAge(now - record.finishedAt.getTime())} ago)`,
    };
  }
  return leastLoadedChoice(passedOver);
}

function ratio(candidate: Candidate): number {
  return candidate.running / candidate.agent.capacity;
}

/**
 * The candidate with free capacity and the lowest running/capacity ratio,
 * then the fewest running jobs, then (only under policy any, where both kinds
 * compete) a native host before an emulator, then the name: the same farm
 * always gives the same answer.
 */
function leastLoaded(candidates: readonly Candidate[]): Candidate | undefined {
  const free = candidates.filter((c) => c.running < c.agent.capacity);
  free.sort(
    (a, b) =>
      a.running / a.agent.capacity - b.running / b.agent.capacity ||
      a.running - b.running ||
      Number(b.mode.native) - Number(a.mode.native) ||
      compareText(a.agent.name, b.agent.name),
  );
  return free[0];
}

function busy(candidate: Candidate): string {
  return `${candidate.running}/${candidate.agent.capacity} busy`;
}

function names(candidates: readonly Candidate[]): string {
  return candidates
    .map((c) => c.agent.name)
    .sort(compareText)
    .join(', ');
}

function loads(candidates: readonly Candidate[]): string {
  return [...candidates]
    .sort((a, b) => compareText(a.agent.name, b.agent.name))
    .map((c) => `${c.agent.name} (${busy(c)})`)
    .join(', ');
}

/**
 * One line saying what the connected agents can build, for logs and for the
 * reason of an impossible job: `agents offer: linux/amd64 (native on a1),
 * linux/arm64 (native on a2; qemu-aarch64 on a1)`.
 */
export function describeFarm(agents: readonly AgentView[]): string {
  if (agents.length === 0) return 'no agents connected';
  const offers = new Map<string, { native: Set<string>; emulators: Map<string, Set<string>> }>();
  const offer = (platform: Platform) => {
    const key = formatPlatform(platform);
    let entry = offers.get(key);
    if (entry === undefined) {
      entry = { native: new Set(), emulators: new Map() };
      offers.set(key, entry);
    }
    return entry;
  };
  for (const agent of agents) {
    offer(agent.nativePlatform).native.add(agent.name);
    for (const { platform, handler } of agent.emulated) {
      if (platformMatches(platform, agent.nativePlatform)) continue;
      const byHandler = offer(platform).emulators;
      const hosts = byHandler.get(handler) ?? new Set<string>();
      hosts.add(agent.name);
      byHandler.set(handler, hosts);
    }
  }
  const sorted = (items: Iterable<string>) => [...items].sort(compareText).join(', ');
  const parts = [...offers.entries()]
    .sort(([a], [b]) => compareText(a, b))
    .map(([key, { native, emulators }]) => {
      const how = native.size > 0 ? [`native on ${sorted(native)}`] : [];
      for (const [handler, hosts] of [...emulators.entries()].sort(([a], [b]) =>
        compareText(a, b),
      )) {
        how.push(`${handler} on ${sorted(hosts)}`);
      }
      return `${key} (${how.join('; ')})`;
    });
  return `agents offer: ${parts.join(', ')}`;
}
