import { describe, expect, it } from 'vitest';
import {
  DEFAULT_CACHE_AFFINITY,
  canBuild,
  describeFarm,
  schedule,
  type AgentView,
  type CacheAffinity,
  type CacheRecord,
  type EmulationPolicy,
  type PendingJob,
  type Placement,
} from '../../src/coordinator/scheduler.js';
import { parsePlatform } from '../../src/oci/platform.js';

/**
 * A simulated agent: `native` and `emulates` are platform strings, handlers
 * are qemu-<arch>, and its engine id is `engine-<name>` unless given.
 */
function agent(
  name: string,
  native: string,
  options: { emulates?: string[]; capacity?: number; running?: number; engineId?: string } = {},
): AgentView {
  return {
    engineId: options.engineId ?? `engine-${name}`,
    name,
    nativePlatform: parsePlatform(native),
    emulated: (options.emulates ?? []).map((p) => ({
      platform: parsePlatform(p),
      handler: `qemu-${qemuName(p)}`,
    })),
    capacity: options.capacity ?? 4,
    running: options.running ?? 0,
    labels: {},
  };
}

function qemuName(platform: string): string {
  const arch = parsePlatform(platform).architecture;
  return arch === 'arm64' ? 'aarch64' : arch;
}

function job(
  jobId: string,
  platform: string,
  policy: EmulationPolicy = 'prefer-native',
): PendingJob {
  return { jobId, platform: parsePlatform(platform), policy };
}

/** The part of a placement a user reads in the log: where it went, or that it waits or cannot run. */
function outcome(placement: Placement): string {
  if (placement.kind !== 'assign') return placement.kind;
  return placement.emulated ? `${placement.agent} via ${placement.handler}` : placement.agent;
}

const amd1 = agent('a1', 'linux/amd64', { emulates: ['linux/arm64', 'linux/s390x'] });
const arm1 = agent('r1', 'linux/arm64');
const s390Emulator = agent('x1', 'linux/amd64', { emulates: ['linux/s390x'], capacity: 2 });

describe('the scheduler places one job', () => {
  const cases: Array<{
    name: string;
    agents: AgentView[];
    job: PendingJob;
    kind: Placement['kind'];
    outcome: string;
    reason: string;
  }> = [
    {
      name: 'on a native host when one is connected, even if another agent emulates the platform',
      agents: [amd1, arm1],
      job: job('j1', 'linux/arm64'),
      kind: 'assign',
      outcome: 'r1',
      reason: 'linux/arm64: native on agent r1 (0/4 busy), only capable (the only native host)',
    },
    {
      name: 'on an emulating agent when no native host is connected',
      agents: [s390Emulator],
      job: job('j1', 'linux/s390x'),
      kind: 'assign',
      outcome: 'x1 via qemu-s390x',
      reason:
        'linux/s390x: no native host connected; emulating on agent x1 via qemu-s390x (0/2 busy), ' +
        'only capable (the only emulating agent)',
    },
    {
      name: 'in the queue when the native host is full, rather than on a free emulator',
      agents: [amd1, agent('r1', 'linux/arm64', { capacity: 2, running: 2 })],
      job: job('j1', 'linux/arm64'),
      kind: 'wait',
      outcome: 'wait',
      reason:
        'linux/arm64: native hosts r1 (2/2 busy) are full; waiting for one rather than emulating on a1',
    },
    {
      name: 'in the queue when the only emulating agent is full',
      agents: [agent('x1', 'linux/amd64', { emulates: ['linux/s390x'], capacity: 1, running: 1 })],
      job: job('j1', 'linux/s390x'),
      kind: 'wait',
      outcome: 'wait',
      reason:
        'linux/s390x: no native host connected and emulating agents x1 (1/1 busy) are full; waiting',
    },
    {
      name: 'nowhere when no agent builds the platform, and says what the farm offers',
      agents: [amd1, arm1],
      job: job('j1', 'linux/riscv64'),
      kind: 'impossible',
      outcome: 'impossible',
      reason:
        'linux/riscv64: no connected agent can build it (agents offer: linux/amd64 (native on a1), ' +
        'linux/arm64 (native on r1; qemu-aarch64 on a1), linux/s390x (qemu-s390x on a1))',
    },
    {
      name: 'nowhere when no agent is connected at all',
      agents: [],
      job: job('j1', 'linux/amd64'),
      kind: 'impossible',
      outcome: 'impossible',
      reason: 'linux/amd64: no connected agent can build it (no agents connected)',
    },
    {
      name: 'nowhere under native-only when only an emulator is connected',
      agents: [s390Emulator],
      job: job('j1', 'linux/s390x', 'native-only'),
      kind: 'impossible',
      outcome: 'impossible',
      reason:
        'linux/s390x: no native host connected, and policy native-only forbids emulating on x1 ' +
        '(agents offer: linux/amd64 (native on x1), linux/s390x (qemu-s390x on x1))',
    },
    {
      name: 'on the native host under native-only',
      agents: [s390Emulator, agent('z1', 'linux/s390x', { capacity: 1 })],
      job: job('j1', 'linux/s390x', 'native-only'),
      kind: 'assign',
      outcome: 'z1',
      reason: 'linux/s390x: native on agent z1 (0/1 busy), only capable (the only native host)',
    },
    {
      name: 'in the queue under native-only when the native host is full',
      agents: [s390Emulator, agent('z1', 'linux/s390x', { capacity: 1, running: 1 })],
      job: job('j1', 'linux/s390x', 'native-only'),
      kind: 'wait',
      outcome: 'wait',
      reason: 'linux/s390x: native hosts z1 (1/1 busy) are full; waiting (policy native-only)',
    },
    {
      name: 'on a less loaded emulator under policy any, even with a native host connected',
      agents: [
        agent('r1', 'linux/arm64', { capacity: 4, running: 3 }),
        agent('a1', 'linux/amd64', { emulates: ['linux/arm64'], capacity: 4, running: 1 }),
      ],
      job: job('j1', 'linux/arm64', 'any'),
      kind: 'assign',
      outcome: 'a1 via qemu-aarch64',
      reason:
        'linux/arm64: emulating on agent a1 via qemu-aarch64 (1/4 busy), least loaded under policy any',
    },
    {
      name: 'on the native host under policy any when the load is equal',
      agents: [
        agent('a1', 'linux/amd64', { emulates: ['linux/arm64'], running: 1 }),
        agent('r1', 'linux/arm64', { running: 1 }),
      ],
      job: job('j1', 'linux/arm64', 'any'),
      kind: 'assign',
      outcome: 'r1',
      reason: 'linux/arm64: native on agent r1 (1/4 busy), least loaded under policy any',
    },
    {
      name: 'in the queue under policy any when every capable agent is full',
      agents: [
        agent('r1', 'linux/arm64', { capacity: 1, running: 1 }),
        agent('a1', 'linux/amd64', { emulates: ['linux/arm64'], capacity: 1, running: 1 }),
      ],
      job: job('j1', 'linux/arm64', 'any'),
      kind: 'wait',
      outcome: 'wait',
      reason: 'linux/arm64: all capable agents a1 (1/1 busy), r1 (1/1 busy) are full; waiting',
    },
    {
      name: 'on an arm64 host for an arm64/v8 job (v8 is the default variant)',
      agents: [agent('r1', 'linux/arm64/v8')],
      job: job('j1', 'linux/arm64'),
      kind: 'assign',
      outcome: 'r1',
      reason: 'linux/arm64: native on agent r1 (0/4 busy), only capable (the only native host)',
    },
    {
      name: 'on a plain arm64 host for a job that asks for arm64/v8',
      agents: [arm1],
      job: job('j1', 'linux/arm64/v8'),
      kind: 'assign',
      outcome: 'r1',
      reason: 'linux/arm64: native on agent r1 (0/4 busy), only capable (the only native host)',
    },
    {
      name: 'nowhere for arm/v7 on an arm64 host that does not list arm/v7 as emulated',
      agents: [arm1],
      job: job('j1', 'linux/arm/v7'),
      kind: 'impossible',
      outcome: 'impossible',
      reason:
        'linux/arm/v7: no connected agent can build it (agents offer: linux/arm64 (native on r1))',
    },
    {
      name: 'on an arm64 host for arm/v7 when it lists arm/v7 as emulated',
      agents: [agent('r1', 'linux/arm64', { emulates: ['linux/arm/v7'] })],
      job: job('j1', 'linux/arm/v7'),
      kind: 'assign',
      outcome: 'r1 via qemu-arm',
      reason:
        'linux/arm/v7: no native host connected; emulating on agent r1 via qemu-arm (0/4 busy), ' +
        'only capable (the only emulating agent)',
    },
  ];

  it.each(cases)('$name', ({ agents, job: pending, kind, outcome: expected, reason }) => {
    const [placement] = schedule([pending], agents);
    expect(placement?.kind).toBe(kind);
    expect(placement && outcome(placement)).toBe(expected);
    expect(placement?.reason).toBe(reason);
    expect(placement?.jobId).toBe(pending.jobId);
  });
});

describe('the scheduler places several jobs in one call', () => {
  it('spreads four jobs over two equal agents, two each, alternating', () => {
    const agents = [agent('r2', 'linux/arm64'), agent('r1', 'linux/arm64')];
    const jobs = ['j1', 'j2', 'j3', 'j4'].map((id) => job(id, 'linux/arm64'));
    expect(schedule(jobs, agents).map(outcome)).toEqual(['r1', 'r2', 'r1', 'r2']);
  });

  it('counts load as a ratio, so a bigger agent takes more of the jobs', () => {
    const agents = [
      agent('big', 'linux/amd64', { capacity: 4 }),
      agent('small', 'linux/amd64', { capacity: 2 }),
    ];
    const jobs = ['j1', 'j2', 'j3', 'j4', 'j5', 'j6'].map((id) => job(id, 'linux/amd64'));
    const placed = schedule(jobs, agents).map(outcome);
    expect(placed.filter((a) => a === 'big')).toHaveLength(4);
    expect(placed.filter((a) => a === 'small')).toHaveLength(2);
  });

  it('gives an agent of capacity 1 only one job and leaves the rest waiting', () => {
    const agents = [agent('z1', 'linux/s390x', { capacity: 1 })];
    const placed = schedule([job('j1', 'linux/s390x'), job('j2', 'linux/s390x')], agents);
    expect(placed.map(outcome)).toEqual(['z1', 'wait']);
    expect(placed[1]?.reason).toBe(
      'linux/s390x: native hosts z1 (1/1 busy) are full; waiting for one',
    );
  });

  it('starts from the load the agents report, not from zero', () => {
    const agents = [
      agent('r1', 'linux/arm64', { running: 2 }),
      agent('r2', 'linux/arm64', { running: 0 }),
    ];
    const jobs = ['j1', 'j2', 'j3'].map((id) => job(id, 'linux/arm64'));
    expect(schedule(jobs, agents).map(outcome)).toEqual(['r2', 'r2', 'r1']);
  });

  it('sends the s390x job to the idle emulator once the amd64 job has loaded the other', () => {
    const agents = [amd1, arm1, s390Emulator];
    const jobs = [job('amd', 'linux/amd64'), job('arm', 'linux/arm64'), job('s390', 'linux/s390x')];
    expect(schedule(jobs, agents).map(outcome)).toEqual(['a1', 'r1', 'x1 via qemu-s390x']);
  });

  it('breaks ties by name, whatever order the agents are listed in', () => {
    const names = ['c', 'a', 'b'];
    const forward = names.map((n) => agent(n, 'linux/amd64', { running: 1 }));
    const jobs = [job('j1', 'linux/amd64')];
    expect(schedule(jobs, forward).map(outcome)).toEqual(['a']);
    expect(schedule(jobs, [...forward].reverse()).map(outcome)).toEqual(['a']);
  });

  it('breaks equal ratios by the number of running jobs', () => {
    const agents = [
      agent('a', 'linux/amd64', { capacity: 4, running: 2 }),
      agent('b', 'linux/amd64', { capacity: 2, running: 1 }),
    ];
    expect(schedule([job('j1', 'linux/amd64')], agents).map(outcome)).toEqual(['b']);
  });

  it('does not change the agent views it was given', () => {
    const agents = [agent('r1', 'linux/arm64', { running: 1 })];
    schedule([job('j1', 'linux/arm64')], agents);
    expect(agents[0]?.running).toBe(1);
  });
});

describe('canBuild', () => {
  const host = agent('a1', 'linux/amd64', { emulates: ['linux/arm64'] });

  it('says native for the host platform under every policy', () => {
    for (const policy of ['prefer-native', 'native-only', 'any'] as const) {
      expect(canBuild(host, parsePlatform('linux/amd64'), policy)).toEqual({ native: true });
    }
  });

  it('names the QEMU handler for an emulated platform', () => {
    expect(canBuild(host, parsePlatform('linux/arm64/v8'), 'prefer-native')).toEqual({
      native: false,
      handler: 'qemu-aarch64',
    });
  });

  it('refuses an emulated platform under native-only', () => {
    expect(canBuild(host, parsePlatform('linux/arm64'), 'native-only')).toBeUndefined();
  });

  it('refuses a platform the agent neither runs nor emulates', () => {
    expect(canBuild(host, parsePlatform('linux/ppc64le'), 'any')).toBeUndefined();
  });
});

describe('describeFarm', () => {
  it('lists each platform once, sorted, with its native hosts and emulators', () => {
    const farm = [
      agent('a2', 'linux/amd64', { emulates: ['linux/arm64'] }),
      agent('a1', 'linux/amd64', { emulates: ['linux/arm64', 'linux/amd64'] }),
      agent('p1', 'linux/ppc64le'),
    ];
    expect(describeFarm(farm)).toBe(
      'agents offer: linux/amd64 (native on a1, a2), linux/arm64 (qemu-aarch64 on a1, a2), ' +
        'linux/ppc64le (native on p1)',
    );
  });
});

describe('cache affinity', () => {
  const NOW = new Date('2025-06-01T12:00:00Z');
  const LINEAGE = '127.0.0.1:5000/team/hello (Dockerfile)';
  const minutes = (n: number) => n * 60_000;

  /** A record of `agent` having built LINEAGE for `platform` on its engine `minutesAgo` ago. */
  function built(
    agentName: string,
    minutesAgo: number,
    options: { platform?: string; engineId?: string; lineage?: string } = {},
  ): CacheRecord {
    return {
      agent: agentName,
      engineId: options.engineId ?? `engine-${agentName}`,
      platform: parsePlatform(options.platform ?? 'linux/amd64'),
      lineage: options.lineage ?? LINEAGE,
      finishedAt: new Date(NOW.getTime() - minutes(minutesAgo)),
    };
  }

  function affinity(
    records: CacheRecord[],
    settings: Partial<Omit<CacheAffinity, 'records' | 'now'>> = {},
  ): { affinity: CacheAffinity } {
    return { affinity: { ...DEFAULT_CACHE_AFFINITY, ...settings, records, now: NOW } };
  }

  function place(
    agents: AgentView[],
    records: CacheRecord[],
    options: { platform?: string; policy?: EmulationPolicy; enabled?: boolean } = {},
  ): Placement {
    const pending = {
      ...job('j1', options.platform ?? 'linux/amd64', options.policy),
      lineage: LINEAGE,
    };
    const [placement] = schedule(
      [pending],
      agents,
      affinity(records, { enabled: options.enabled ?? true }),
    );
    if (!placement) throw new Error('no placement');
    return placement;
  }

  function basis(placement: Placement): string {
    return placement.kind === 'assign' ? placement.basis : placement.kind;
  }

  const twoHosts = (a1Running = 0, a2Running = 0) => [
    agent('a1', 'linux/amd64', { running: a1Running }),
    agent('a2', 'linux/amd64', { running: a2Running }),
  ];

  it('sends the job to the agent that built its lineage when the loads are equal', () => {
    const cold = place(twoHosts(), []);
    expect(outcome(cold)).toBe('a1');
    expect(cold.reason).toBe('linux/amd64: native on agent a1 (0/4 busy), least loaded');

    const warm = place(twoHosts(), [built('a2', 3)]);
    expect(outcome(warm)).toBe('a2');
    expect(basis(warm)).toBe('cache-affinity');
    expect(warm.reason).toBe(
      'linux/amd64: native on agent a2 (0/4 busy), cache affinity ' +
        `(built lineage ${LINEAGE} for linux/amd64 3m ago)`,
    );
  });

  it('keeps the warm agent while its load is at most 50 points above the least loaded', () => {
    const placement = place(twoHosts(0, 2), [built('a2', 3)]);
    expect(outcome(placement)).toBe('a2');
    expect(basis(placement)).toBe('cache-affinity');
  });

  it('passes over the warm agent when it is much busier, and says so', () => {
    const placement = place(twoHosts(0, 3), [built('a2', 3)]);
    expect(outcome(placement)).toBe('a1');
    expect(basis(placement)).toBe('least-loaded');
    expect(placement.reason).toBe(
      'linux/amd64: native on agent a1 (0/4 busy), least loaded ' +
        `(a2 built lineage ${LINEAGE} for linux/amd64 3m ago but is much busier: 3/4 busy vs 0/4 busy)`,
    );
  });

  it('passes over a full warm agent rather than waiting for it', () => {
    const agents = [
      agent('a1', 'linux/amd64', { capacity: 2, running: 1 }),
      agent('a2', 'linux/amd64', { capacity: 1, running: 1 }),
    ];
    const placement = place(agents, [built('a2', 3)]);
    expect(outcome(placement)).toBe('a1');
    expect(placement.reason).toContain('but is full: 1/1 busy');
  });

  it('honours a configured load gap', () => {
    const agents = twoHosts(0, 1);
    const strict = schedule(
      [{ ...job('j1', 'linux/amd64'), lineage: LINEAGE }],
      agents,
      affinity([built('a2', 3)], { maxLoadGapPercent: 0 }),
    );
    expect(strict.map(outcome)).toEqual(['a1']);
    const loose = schedule(
      [{ ...job('j1', 'linux/amd64'), lineage: LINEAGE }],
      agents,
      affinity([built('a2', 3)], { maxLoadGapPercent: 25 }),
    );
    expect(loose.map(outcome)).toEqual(['a2']);
  });

  it('keeps a burst of the same lineage on the warm agent until it is much busier', () => {
    const jobs = ['j1', 'j2', 'j3', 'j4'].map((id) => ({
      ...job(id, 'linux/amd64'),
      lineage: LINEAGE,
    }));
    const placed = schedule(jobs, twoHosts(), affinity([built('a2', 3)]));
    expect(placed.map(outcome)).toEqual(['a2', 'a2', 'a2', 'a1']);
  });

  it('never prefers an emulating agent over a native host because of its cache', () => {
    const agents = [
      agent('a1', 'linux/amd64', { emulates: ['linux/arm64'] }),
      agent('r1', 'linux/arm64'),
    ];
    const record = built('a1', 3, { platform: 'linux/arm64' });
    const preferNative = place(agents, [record], { platform: 'linux/arm64' });
    expect(outcome(preferNative)).toBe('r1');
    expect(basis(preferNative)).toBe('only-capable');
    const any = place(agents, [record], { platform: 'linux/arm64', policy: 'any' });
    expect(outcome(any)).toBe('r1');
    expect(basis(any)).toBe('least-loaded');
  });

  it('lets a warm native host win over a less loaded emulator under policy any', () => {
    const agents = [
      agent('a1', 'linux/amd64', { emulates: ['linux/arm64'] }),
      agent('r1', 'linux/arm64', { running: 1 }),
    ];
    const placement = place(agents, [built('r1', 3, { platform: 'linux/arm64' })], {
      platform: 'linux/arm64',
      policy: 'any',
    });
    expect(outcome(placement)).toBe('r1');
    expect(basis(placement)).toBe('cache-affinity');
  });

  it('applies among emulating agents when no native host is connected', () => {
    const agents = [
      agent('x1', 'linux/amd64', { emulates: ['linux/s390x'] }),
      agent('x2', 'linux/amd64', { emulates: ['linux/s390x'] }),
    ];
    const placement = place(agents, [built('x2', 10, { platform: 'linux/s390x' })], {
      platform: 'linux/s390x',
    });
    expect(outcome(placement)).toBe('x2 via qemu-s390x');
    expect(placement.reason).toBe(
      'linux/s390x: no native host connected; emulating on agent x2 via qemu-s390x (0/4 busy), ' +
        `cache affinity (built lineage ${LINEAGE} for linux/s390x 10m ago)`,
    );
  });

  it('ignores a record older than the maximum age', () => {
    const expired = place(twoHosts(), [built('a2', 24 * 60 + 1)]);
    expect(outcome(expired)).toBe('a1');
    expect(basis(expired)).toBe('least-loaded');
    const [shorter] = schedule(
      [{ ...job('j1', 'linux/amd64'), lineage: LINEAGE }],
      twoHosts(),
      affinity([built('a2', 30)], { maxAgeMs: minutes(20) }),
    );
    expect(shorter && outcome(shorter)).toBe('a1');
  });

  it('ignores a record made on another engine than the one the agent runs on now', () => {
    const placement = place(twoHosts(), [built('a2', 3, { engineId: 'engine-before-reinstall' })]);
    expect(outcome(placement)).toBe('a1');
    expect(basis(placement)).toBe('least-loaded');
  });

  it('gives no affinity to an agent that reports no engine id', () => {
    const agents = [agent('a1', 'linux/amd64'), agent('a2', 'linux/amd64', { engineId: '' })];
    expect(outcome(place(agents, [built('a2', 3, { engineId: '' })]))).toBe('a1');
  });

  it('ignores records of another lineage or another platform', () => {
    const records = [
      built('a2', 3, { lineage: '127.0.0.1:5000/team/other (Dockerfile)' }),
      built('a2', 3, { platform: 'linux/arm64' }),
    ];
    expect(outcome(place(twoHosts(), records))).toBe('a1');
  });

  it('prefers the agent that built the lineage most recently', () => {
    const agents = [...twoHosts(), agent('a3', 'linux/amd64')];
    const placement = place(agents, [built('a1', 60), built('a3', 5), built('a2', 30)]);
    expect(outcome(placement)).toBe('a3');
  });

  it('falls back to the next warm agent when the most recent one is much busier', () => {
    const agents = [...twoHosts(0, 0), agent('a3', 'linux/amd64', { running: 4 })];
    const placement = place(agents, [built('a2', 30), built('a3', 5)]);
    expect(outcome(placement)).toBe('a2');
    expect(basis(placement)).toBe('cache-affinity');
  });

  it('calls a single capable agent only capable, warm or not', () => {
    const placement = place([agent('a2', 'linux/amd64')], [built('a2', 3)]);
    expect(basis(placement)).toBe('only-capable');
  });

  it('places by load alone when affinity is turned off', () => {
    const placement = place(twoHosts(), [built('a2', 3)], { enabled: false });
    expect(outcome(placement)).toBe('a1');
    expect(basis(placement)).toBe('least-loaded');
    expect(placement.reason).toBe('linux/amd64: native on agent a1 (0/4 busy), least loaded');
  });
});

describe('a reproducibility check job (avoidAgent)', () => {
  const amd2 = agent('a2', 'linux/amd64');
  const check = (
    platform: string,
    avoidAgent: string,
    policy: EmulationPolicy = 'prefer-native',
  ) => ({
    ...job('c', platform, policy),
    avoidAgent,
  });

  it('goes to another native agent even when the avoided one is less loaded', () => {
    const busy = agent('a2', 'linux/amd64', { running: 3 });
    expect(schedule([check('linux/amd64', 'a1')], [amd1, busy]).map(outcome)).toEqual(['a2']);
  });

  it('goes to another agent that emulates it, when none other is native (prefer-native)', () => {
    expect(schedule([check('linux/arm64', 'r1')], [amd1, arm1]).map(outcome)).toEqual([
      'a1 via qemu-aarch64',
    ]);
  });

  it('stays on the avoided agent when it is the only one the policy allows', () => {
    expect(schedule([check('linux/amd64', 'a1')], [amd1]).map(outcome)).toEqual(['a1']);
    expect(
      schedule([check('linux/arm64', 'r1', 'native-only')], [amd1, arm1]).map(outcome),
    ).toEqual(['r1']);
  });

  it('leaves jobs without avoidAgent placed as before', () => {
    expect(schedule([job('j', 'linux/amd64')], [amd1, amd2]).map(outcome)).toEqual(['a1']);
  });
});
