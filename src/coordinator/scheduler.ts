/**
 * The platform resolver: decides, for each pending job, which connected agent
 * builds it — natively when a host of that platform is connected, otherwise
 * under a registered QEMU handler — or why it must wait or cannot run at all.
 * Pure: no I/O, no clock; the coordinator passes in a view of its registry.
 */
import { formatPlatform, platformMatches, type Platform } from '../oci/platform.js';

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
}

export interface PendingJob {
  jobId: string;
  platform: Platform;
  policy: EmulationPolicy;
}

export type Placement =
  | {
      kind: 'assign';
      jobId: string;
      agent: string;
      emulated: boolean;
      handler?: string;
      reason: string;
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
  if (platformMatches(platform, agent.nativePlatform)) return { native: true };
  if (policy === 'native-only') return undefined;
  const emulator = agent.emulated.find((entry) => platformMatches(platform, entry.platform));
  return emulator === undefined ? undefined : { native: false, handler: emulator.handler };
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
): Placement[] {
  const running = new Map<string, number>();
  for (const agent of agents) running.set(agent.name, agent.running);

  return pending.map((job) => {
    const placement = placeJob(job, agents, running);
    if (placement.kind === 'assign') {
      running.set(placement.agent, (running.get(placement.agent) ?? 0) + 1);
    }
    return placement;
  });
}

function placeJob(
  job: PendingJob,
  agents: readonly AgentView[],
  running: ReadonlyMap<string, number>,
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

  const assign = (chosen: Candidate, reason: string): Placement => ({
    kind: 'assign',
    jobId: job.jobId,
    agent: chosen.agent.name,
    emulated: !chosen.mode.native,
    ...(chosen.mode.handler !== undefined && { handler: chosen.mode.handler }),
    reason,
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
      const chosen = leastLoaded(native);
      if (chosen === undefined) {
        return wait(
          `${target}: native hosts ${loads(native)} are full; waiting (policy native-only)`,
        );
      }
      return assign(chosen, `${target}: native on agent ${chosen.agent.name} (${busy(chosen)})`);
    }

    case 'prefer-native': {
      // A connected but busy native host is waited for rather than passed over
      // for an emulator: an emulated build runs many times slower, so it would
      // usually finish after the native host frees up and takes the job.
      if (native.length > 0) {
        const chosen = leastLoaded(native);
        if (chosen !== undefined) {
          return assign(
            chosen,
            `${target}: native on agent ${chosen.agent.name} (${busy(chosen)})`,
          );
        }
        const instead = emulating.length > 0 ? ` rather than emulating on ${names(emulating)}` : '';
        return wait(`${target}: native hosts ${loads(native)} are full; waiting for one${instead}`);
      }
      if (emulating.length === 0) return impossible('no connected agent can build it');
      const chosen = leastLoaded(emulating);
      if (chosen === undefined) {
        return wait(
          `${target}: no native host connected and emulating agents ${loads(emulating)} are full; waiting`,
        );
      }
      return assign(
        chosen,
        `${target}: no native host connected; emulating on agent ${chosen.agent.name} via ${chosen.mode.handler} (${busy(chosen)})`,
      );
    }

    case 'any': {
      const capable = [...native, ...emulating];
      if (capable.length === 0) return impossible('no connected agent can build it');
      const chosen = leastLoaded(capable);
      if (chosen === undefined) {
        return wait(`${target}: all capable agents ${loads(capable)} are full; waiting`);
      }
      const how = chosen.mode.native
        ? `native on agent ${chosen.agent.name}`
        : `emulating on agent ${chosen.agent.name} via ${chosen.mode.handler}`;
      return assign(chosen, `${target}: ${how} (${busy(chosen)}), least loaded under policy any`);
    }
  }
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

/** Code-unit order: the same on every machine, whatever the locale. */
function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
