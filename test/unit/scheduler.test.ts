import { describe, expect, it } from 'vitest';
import {
  canBuild,
  describeFarm,
  schedule,
  type AgentView,
  type EmulationPolicy,
  type PendingJob,
  type Placement,
} from '../../src/coordinator/scheduler.js';
import { parsePlatform } from '../../src/oci/platform.js';

/** A simulated agent: `native` and `emulates` are platform strings, handlers are qemu-<arch>. */
function agent(
  name: string,
  native: string,
  options: { emulates?: string[]; capacity?: number; running?: number } = {},
): AgentView {
  return {
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
      reason: 'linux/arm64: native on agent r1 (0/4 busy)',
    },
    {
      name: 'on an emulating agent when no native host is connected',
      agents: [s390Emulator],
      job: job('j1', 'linux/s390x'),
      kind: 'assign',
      outcome: 'x1 via qemu-s390x',
      reason:
        'linux/s390x: no native host connected; emulating on agent x1 via qemu-s390x (0/2 busy)',
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
      reason: 'linux/s390x: native on agent z1 (0/1 busy)',
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
      reason: 'linux/arm64: native on agent r1 (0/4 busy)',
    },
    {
      name: 'on a plain arm64 host for a job that asks for arm64/v8',
      agents: [arm1],
      job: job('j1', 'linux/arm64/v8'),
      kind: 'assign',
      outcome: 'r1',
      reason: 'linux/arm64: native on agent r1 (0/4 busy)',
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
        'linux/arm/v7: no native host connected; emulating on agent r1 via qemu-arm (0/4 busy)',
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
