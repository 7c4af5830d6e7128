import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import {
  BuildTracker,
  createProgressRenderer,
  failureReport,
  TtyRenderer,
  type ProgressRenderer,
  type Ticker,
} from '../../src/cli/progress/index.js';
import {
  BuildEventSchema,
  BuildState,
  LogSource,
  type Build,
  type BuildEvent,
} from '../../src/gen/braid/v1/build_pb.js';
import { JobState } from '../../src/gen/braid/v1/common_pb.js';
import { screenOf } from '../support/terminal-screen.js';

type Body = MessageInitShape<typeof BuildEventSchema>['body'];

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0);
const AMD64 = { os: 'linux', architecture: 'amd64' };
const ARM64 = { os: 'linux', architecture: 'arm64' };
const DIGEST_AMD64 = `sha256:${'a'.repeat(64)}`;
const DIGEST_ARM64 = `sha256:${'b'.repeat(64)}`;
const DIGEST_INDEX = `sha256:${'c'.repeat(64)}`;
const LONG_TAG = `registry.example:5000/team/app:release-2030-01-01-${'x'.repeat(60)}`;

function events(...steps: [atMs: number, body: Body][]): BuildEvent[] {
  return steps.map(([atMs, body], i) =>
    create(BuildEventSchema, { sequence: BigInt(i + 1), time: timestampFromMs(T0 + atMs), body }),
  );
}

const buildState = (state: BuildState, message = '', extra: object = {}): Body => ({
  case: 'buildState',
  value: { state, message, ...extra },
});
const jobState = (value: object): Body => ({ case: 'jobState', value });
const log = (platform: object, jobId: string, text: string): Body => ({
  case: 'log',
  value: { source: LogSource.BUILD, platform, jobId, text },
});
const decision = (value: object): Body => ({ case: 'decision', value });

/** The events as the coordinator sends them: a job's `assigned` comes just before its decision. */
function placed(platform: object, jobId: string, emulated: boolean, atMs: number) {
  const name = `${platform === AMD64 ? 'linux/amd64' : 'linux/arm64'}`;
  return [
    [
      atMs,
      jobState({
        jobId,
        platform,
        state: JobState.ASSIGNED,
        agent: 'a1',
        emulated,
        attempt: 1,
        message: emulated ? 'assigned to a1 (QEMU qemu-aarch64)' : 'assigned to a1 (native)',
      }),
    ],
    [
      atMs + 1,
      decision({
        platform,
        agent: 'a1',
        emulated,
        reason: emulated
          ? `${name}: no native host connected; emulating on agent a1 via qemu-aarch64 (1/2 busy), only capable`
          : `${name}: native on agent a1 (0/2 busy), only capable`,
      }),
    ],
    [
      atMs + 5,
      jobState({ jobId, platform, state: JobState.RUNNING, agent: 'a1', emulated, attempt: 1 }),
    ],
  ] as [number, Body][];
}

function succeeded(): BuildEvent[] {
  return events(
    [0, buildState(BuildState.QUEUED, 'build queued: linux/amd64, linux/arm64 -> reg/app:1')],
    ...placed(AMD64, 'j1', false, 10),
    ...placed(ARM64, 'j2', true, 20),
    [30, buildState(BuildState.RUNNING, 'building')],
    [40, log(AMD64, 'j1', '[2/2] RUN make')],
    [
      2_000,
      jobState({
        jobId: 'j1',
        platform: AMD64,
        state: JobState.SUCCEEDED,
        agent: 'a1',
        attempt: 1,
        durationMs: 1_990n,
        image: { digest: DIGEST_AMD64 },
      }),
    ],
    [
      9_000,
      jobState({
        jobId: 'j2',
        platform: ARM64,
        state: JobState.SUCCEEDED,
        agent: 'a1',
        emulated: true,
        attempt: 1,
        durationMs: 8_980n,
        image: { digest: DIGEST_ARM64 },
      }),
    ],
    [9_100, buildState(BuildState.STITCHING, 'every platform pushed; verifying')],
    [
      9_500,
      buildState(BuildState.SUCCEEDED, `pushed ${DIGEST_INDEX} to reg/app:1, ${LONG_TAG}`, {
        index: { digest: DIGEST_INDEX },
      }),
    ],
  );
}

const ERROR = 'build linux/arm64 failed at [2/2] RUN make: exit code: 2';

/** arm64 fails after 15 lines of output; the coordinator cancels amd64. */
function failed(): BuildEvent[] {
  const output = Array.from({ length: 15 }, (_, i): [number, Body] => [
    100 + i,
    log(ARM64, 'j2', `make: line ${i + 1}`),
  ]);
  return events(
    [0, buildState(BuildState.QUEUED, 'build queued: linux/amd64, linux/arm64 -> reg/app:1')],
    ...placed(AMD64, 'j1', false, 10),
    ...placed(ARM64, 'j2', true, 20),
    ...output,
    [
      3_000,
      jobState({
        jobId: 'j2',
        platform: ARM64,
        state: JobState.FAILED,
        agent: 'a1',
        emulated: true,
        message: ERROR,
      }),
    ],
    [
      3_010,
      jobState({
        jobId: 'j1',
        platform: AMD64,
        state: JobState.CANCELLED,
        agent: 'a1',
        message: 'cancelled: linux/arm64 failed',
      }),
    ],
    [3_020, buildState(BuildState.FAILED, `linux/arm64: ${ERROR}`)],
  );
}

function capture(columns?: number) {
  const out = {
    columns,
    text: '',
    write(chunk: string) {
      out.text += chunk;
    },
  };
  return out;
}

function feed(renderer: ProgressRenderer, stream: readonly BuildEvent[]): void {
  for (const event of stream) renderer.event(event);
  renderer.finish();
}

/** The tracker as `braid build` seeds it from the submit answer: it knows the tags. */
function seeded(buildId: string, tags: string[]): BuildTracker {
  const tracker = new BuildTracker(buildId);
  tracker.applyBuild({
    id: buildId,
    state: BuildState.QUEUED,
    error: '',
    spec: { tags },
    jobs: [],
  } as unknown as Build);
  return tracker;
}

const noTicker: Ticker = () => () => undefined;

describe('plain progress says each thing once, in order', () => {
  it('prints scheduled before assigned, and no line repeats its own words', () => {
    const out = capture();
    feed(createProgressRenderer('plain', { out }), succeeded().slice(0, 9));
    expect(out.text.trimEnd().split('\n')).toEqual([
      '[build] queued: linux/amd64, linux/arm64 -> reg/app:1',
      '[linux/amd64] scheduled on agent a1 (native): native on agent a1 (0/2 busy), only capable',
      '[linux/amd64] assigned to agent a1 (native)',
      '[linux/amd64] running on agent a1 (native)',
      '[linux/arm64] scheduled on agent a1 (qemu): no native host connected; emulating on agent a1 via qemu-aarch64 (1/2 busy), only capable',
      '[linux/arm64] assigned to agent a1 (qemu)',
      '[linux/arm64] running on agent a1 (qemu)',
      '[build] running',
      '[linux/amd64] [2/2] RUN make',
    ]);
  });

  it('still prints an assigned line whose decision never comes, before the next event or at the end', () => {
    const out = capture();
    const renderer = createProgressRenderer('plain', { out });
    const [queued, assigned, , running] = succeeded();
    feed(renderer, [queued!, assigned!, running!]);
    const lines = out.text.trimEnd().split('\n');
    expect(lines.slice(1)).toEqual([
      '[linux/amd64] assigned to agent a1 (native)',
      '[linux/amd64] running on agent a1 (native)',
    ]);
    const alone = capture();
    feed(createProgressRenderer('plain', { out: alone }), [queued!, assigned!]);
    expect(alone.text.trimEnd().split('\n').at(-1)).toBe(
      '[linux/amd64] assigned to agent a1 (native)',
    );
  });

  it('leaves a failure error to the report, and says why a platform was cancelled once', () => {
    const out = capture();
    feed(createProgressRenderer('plain', { out }), failed());
    expect(out.text.trimEnd().split('\n').slice(-3)).toEqual([
      '[linux/arm64] failed (2.9s)',
      '[linux/amd64] cancelled: linux/arm64 failed',
      '[build] failed',
    ]);
    expect(out.text).not.toContain('exit code: 2');
  });
});

describe('the final view on a terminal', () => {
  it('replaces the live view, prints once, and puts every tag whole on its own line', () => {
    let now = T0;
    const out = capture(60);
    const renderer = new TtyRenderer({
      out,
      tracker: seeded('b1', ['reg/app:1', LONG_TAG, 'reg/app']),
      clock: () => now,
      ticker: noTicker,
    });
    for (const event of succeeded()) {
      now += 150;
      renderer.event(event);
    }
    renderer.finish();
    expect(screenOf(out.text)).toEqual([
      '[+] Build b1 succeeded in 9.5s (2/2 platforms done)',
      'PLATFORM     STATE      AGENT  MODE    DURATION  DIGEST',
      `linux/amd64  succeeded  a1     native  1.9s      ${DIGEST_AMD64}`,
      `linux/arm64  succeeded  a1     qemu    8.9s      ${DIGEST_ARM64}`,
      'tagged reg/app:1',
      `tagged ${LONG_TAG}`,
      // A tag given without one is where the coordinator put the index: latest.
      'tagged reg/app:latest',
    ]);
  });

  it('of a failed build states how it ended and leaves the error to the one line after it', () => {
    let now = T0;
    const out = capture(80);
    const renderer = new TtyRenderer({
      out,
      tracker: seeded('b2', ['reg/app:1']),
      clock: () => now,
      ticker: noTicker,
    });
    for (const event of failed()) {
      now += 150;
      renderer.event(event);
    }
    renderer.finish();
    const shown = screenOf(out.text);
    expect(shown[0]).toBe('[+] Build b2 failed in 3.0s (0/2 platforms done)');
    expect(shown.join('\n')).not.toContain('exit code: 2');
    expect(shown.filter((line) => line.startsWith('[+]'))).toHaveLength(1);
    expect(shown.some((line) => line.startsWith(' => '))).toBe(false);
  });
});

describe('the failure report says the error once', () => {
  function trackerOf(stream: readonly BuildEvent[], buildId = 'b3'): BuildTracker {
    const renderer = createProgressRenderer('plain', {
      out: capture(),
      tracker: new BuildTracker(buildId),
    });
    feed(renderer, stream);
    return renderer.tracker;
  }

  it("in the headline, after the failing platform's last lines and a pointer to braid logs", () => {
    const report = failureReport(trackerOf(failed()), { pointToLogs: true });
    expect(report?.headline).toBe(`build b3 failed on linux/arm64: ${ERROR}`);
    expect(report?.details.split('\n')).toEqual([
      'linux/arm64 failed on agent a1 (qemu) after 2.9s',
      '  last 10 log lines:',
      ...Array.from({ length: 10 }, (_, i) => `    make: line ${i + 6}`),
      'all log lines: braid logs b3',
      '',
    ]);
    // The cancelled amd64 platform is not at fault: no block of its own.
    expect(report?.details).not.toContain('linux/amd64');
  });

  it('shows no log tails for a cancelled build', () => {
    const stream = [
      ...succeeded().slice(0, 9),
      create(BuildEventSchema, {
        sequence: 10n,
        time: timestampFromMs(T0 + 5_000),
        body: buildState(BuildState.CANCELLED, 'cancelled: by alice; no tag was moved'),
      }),
    ];
    const report = failureReport(trackerOf(stream), { pointToLogs: true });
    expect(report?.headline).toBe(
      'build b3 cancelled with linux/amd64, linux/arm64 unfinished: by alice; no tag was moved',
    );
    expect(report?.details).toBe('');
  });

  it('with several failed platforms, gives each its own error and none to the headline', () => {
    const both = [
      ...failed().slice(0, -3),
      create(BuildEventSchema, {
        sequence: 100n,
        time: timestampFromMs(T0 + 3_000),
        body: jobState({
          jobId: 'j1',
          platform: AMD64,
          state: JobState.FAILED,
          agent: 'a1',
          message: 'build linux/amd64 failed: out of disk',
        }),
      }),
      create(BuildEventSchema, {
        sequence: 101n,
        time: timestampFromMs(T0 + 3_001),
        body: jobState({
          jobId: 'j2',
          platform: ARM64,
          state: JobState.FAILED,
          agent: 'a1',
          emulated: true,
          message: ERROR,
        }),
      }),
      create(BuildEventSchema, {
        sequence: 102n,
        time: timestampFromMs(T0 + 3_002),
        body: buildState(BuildState.FAILED, 'linux/amd64: build linux/amd64 failed: out of disk'),
      }),
    ];
    const report = failureReport(trackerOf(both), { lines: 0 });
    expect(report?.headline).toBe('build b3 failed on linux/amd64, linux/arm64');
    expect(report?.details.split('\n').filter((line) => !line.startsWith(' '))).toEqual([
      'linux/amd64 failed on agent a1 (native) after 2.9s: build linux/amd64 failed: out of disk',
      `linux/arm64 failed on agent a1 (qemu) after 2.9s: ${ERROR}`,
      '',
    ]);
  });
});
