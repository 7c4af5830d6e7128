import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import {
  BuildFailedError,
  BuildTracker,
  createProgressRenderer,
  failureReport,
  resolveProgressMode,
  TtyRenderer,
  type ProgressRenderer,
  type Ticker,
} from '../../src/cli/progress/index.js';
import { exitCodeFor } from '../../src/cli/exit.js';
import {
  BuildEventSchema,
  BuildState,
  LogSource,
  type BuildEvent,
} from '../../src/gen/braid/v1/build_pb.js';
import { JobState } from '../../src/gen/braid/v1/common_pb.js';

type Body = MessageInitShape<typeof BuildEventSchema>['body'];

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0);
const AMD64 = { os: 'linux', architecture: 'amd64' };
const S390X = { os: 'linux', architecture: 's390x' };
const DIGEST_AMD64 = `sha256:${'a'.repeat(64)}`;
const DIGEST_S390X = `sha256:${'b'.repeat(64)}`;
const DIGEST_INDEX = `sha256:${'c'.repeat(64)}`;
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const INDEX = 'application/vnd.oci.image.index.v1+json';

/** Events numbered from 1, stamped `atMs` milliseconds after T0. */
function script(...steps: [atMs: number, body: Body][]): BuildEvent[] {
  return continued([], ...steps);
}

/** `events`, then `steps` numbered on from the last of them. */
function continued(
  events: readonly BuildEvent[],
  ...steps: [atMs: number, body: Body][]
): BuildEvent[] {
  const next = events.length === 0 ? 1n : (events[events.length - 1]?.sequence ?? 0n) + 1n;
  return [
    ...events,
    ...steps.map(([atMs, body], i) =>
      create(BuildEventSchema, {
        sequence: next + BigInt(i),
        time: timestampFromMs(T0 + atMs),
        body,
      }),
    ),
  ];
}

const buildState = (state: BuildState, extra: object = {}): Body => ({
  case: 'buildState',
  value: { state, ...extra },
});
const jobState = (extra: object): Body => ({ case: 'jobState', value: extra });
const log = (extra: object): Body => ({
  case: 'log',
  value: { source: LogSource.BUILD, ...extra },
});
const decision = (extra: object): Body => ({ case: 'decision', value: extra });

/** amd64 natively on a1 and s390x under QEMU on a2, both succeed, the index is pushed. */
function successfulBuild(): BuildEvent[] {
  return script(
    [0, buildState(BuildState.QUEUED)],
    [10, decision({ platform: AMD64, agent: 'a1', reason: 'native host connected' })],
    [
      11,
      jobState({ jobId: 'j1', platform: AMD64, state: JobState.ASSIGNED, agent: 'a1', attempt: 1 }),
    ],
    [
      12,
      decision({
        platform: S390X,
        agent: 'a2',
        emulated: true,
        reason: 'no native host connected; emulating via qemu-s390x',
      }),
    ],
    [
      13,
      jobState({
        jobId: 'j2',
        platform: S390X,
        state: JobState.ASSIGNED,
        agent: 'a2',
        emulated: true,
        attempt: 1,
      }),
    ],
    [20, buildState(BuildState.RUNNING)],
    [
      100,
      jobState({ jobId: 'j1', platform: AMD64, state: JobState.RUNNING, agent: 'a1', attempt: 1 }),
    ],
    [150, log({ platform: AMD64, jobId: 'j1', text: '#5 [2/4] RUN make' })],
    [160, log({ platform: AMD64, jobId: 'j1', text: '#5 0.512 cc -o app main.c' })],
    [
      200,
      jobState({
        jobId: 'j2',
        platform: S390X,
        state: JobState.RUNNING,
        agent: 'a2',
        emulated: true,
        attempt: 1,
      }),
    ],
    [250, log({ jobId: 'j2', text: '#5 [2/4] RUN make' })],
    [
      12_400,
      jobState({
        jobId: 'j1',
        platform: AMD64,
        state: JobState.SUCCEEDED,
        agent: 'a1',
        attempt: 1,
        durationMs: 12_300n,
        image: { digest: DIGEST_AMD64, sizeBytes: 528n, mediaType: MANIFEST, platform: AMD64 },
      }),
    ],
    [
      95_100,
      jobState({
        jobId: 'j2',
        platform: S390X,
        state: JobState.SUCCEEDED,
        agent: 'a2',
        emulated: true,
        attempt: 1,
        durationMs: 95_000n,
        image: { digest: DIGEST_S390X, sizeBytes: 530n, mediaType: MANIFEST, platform: S390X },
      }),
    ],
    [95_200, buildState(BuildState.STITCHING)],
    [95_300, log({ source: LogSource.COORDINATOR, text: 'pushing index to reg/app:1' })],
    [
      96_000,
      buildState(BuildState.SUCCEEDED, {
        index: { digest: DIGEST_INDEX, sizeBytes: 856n, mediaType: INDEX },
      }),
    ],
  );
}

/** s390x fails after twelve lines of output; amd64 had succeeded. */
function failedBuild(): BuildEvent[] {
  const output = Array.from({ length: 12 }, (_, i): [number, Body] => [
    300 + i,
    log({ platform: S390X, jobId: 'j2', text: `#6 0.${i} make: line ${i + 1}` }),
  ]);
  return script(
    [0, buildState(BuildState.QUEUED)],
    [
      10,
      jobState({
        jobId: 'j1',
        platform: AMD64,
        state: JobState.RUNNING,
        agent: 'a1',
        attempt: 1,
      }),
    ],
    [
      20,
      jobState({
        jobId: 'j2',
        platform: S390X,
        state: JobState.RUNNING,
        agent: 'a2',
        emulated: true,
        attempt: 1,
      }),
    ],
    [
      200,
      jobState({
        jobId: 'j1',
        platform: AMD64,
        state: JobState.SUCCEEDED,
        agent: 'a1',
        durationMs: 190n,
        image: { digest: DIGEST_AMD64, sizeBytes: 528n, mediaType: MANIFEST },
      }),
    ],
    ...output,
    [
      9_020,
      jobState({
        jobId: 'j2',
        platform: S390X,
        state: JobState.FAILED,
        agent: 'a2',
        emulated: true,
        message: 'RUN make: exit code 2',
        durationMs: 9_000n,
      }),
    ],
    [9_100, buildState(BuildState.FAILED, { message: 'linux/s390x: RUN make: exit code 2' })],
  );
}

function capture(columns?: number): { write(text: string): void; columns?: number; text: string } {
  return {
    columns,
    text: '',
    write(chunk: string) {
      this.text += chunk;
    },
  };
}

function feed(renderer: ProgressRenderer, events: readonly BuildEvent[]): void {
  for (const event of events) renderer.event(event);
  renderer.finish();
}

/** A ticker the test drives by hand. */
function manualTicker(): { ticker: Ticker; tick(): void; stopped: boolean } {
  const state = {
    tick: () => undefined as void,
    stopped: false,
    ticker: ((tick: () => void) => {
      state.tick = tick;
      return () => {
        state.stopped = true;
      };
    }) as Ticker,
  };
  return state;
}

describe('plain progress', () => {
  it('prints one stable, prefixed line per event for a successful two-platform build', () => {
    const out = capture();
    feed(createProgressRenderer('plain', { out }), successfulBuild());
    expect(out.text.split('\n')).toEqual([
      '[build] queued',
      '[linux/amd64] scheduled on agent a1 (native): native host connected',
      '[linux/amd64] assigned to agent a1 (native)',
      '[linux/s390x] scheduled on agent a2 (qemu): no native host connected; emulating via qemu-s390x',
      '[linux/s390x] assigned to agent a2 (qemu)',
      '[build] running',
      '[linux/amd64] running on agent a1 (native)',
      '[linux/amd64] #5 [2/4] RUN make',
      '[linux/amd64] #5 0.512 cc -o app main.c',
      '[linux/s390x] running on agent a2 (qemu)',
      '[linux/s390x] #5 [2/4] RUN make',
      `[linux/amd64] succeeded ${DIGEST_AMD64} (12.3s)`,
      `[linux/s390x] succeeded ${DIGEST_S390X} (1m35s)`,
      '[build] stitching index',
      '[build] pushing index to reg/app:1',
      `[build] succeeded ${DIGEST_INDEX}`,
      '',
    ]);
  });

  it('names the failure of a platform and of the build, leaving the error to the failure report', () => {
    const out = capture();
    feed(createProgressRenderer('plain', { out }), failedBuild());
    const lines = out.text.trimEnd().split('\n');
    expect(lines.slice(-2)).toEqual(['[linux/s390x] failed (9.0s)', '[build] failed']);
    expect(out.text).not.toContain('RUN make: exit code 2');
  });

  it('strips escape sequences from log text, splits multi-line text and marks dropped lines', () => {
    const out = capture();
    feed(
      createProgressRenderer('plain', { out }),
      script(
        [0, log({ platform: AMD64, text: '\x1b[31mred\x1b[0m\nsecond\r\n' })],
        [1, log({ platform: AMD64, text: 'after the gap', droppedBefore: 3 })],
      ),
    );
    expect(out.text).toBe(
      '[linux/amd64] red\n[linux/amd64] second\n[linux/amd64] [3 log lines dropped]\n[linux/amd64] after the gap\n',
    );
    expect(out.text).not.toContain('\x1b');
  });

  it('skips events it has already seen when a watch is resumed', () => {
    const out = capture();
    const renderer = createProgressRenderer('plain', { out });
    const events = successfulBuild();
    for (const event of events.slice(0, 3)) renderer.event(event);
    for (const event of events.slice(0, 4)) renderer.event(event);
    expect(out.text.trimEnd().split('\n')).toHaveLength(4);
  });

  it('shows a retried job queued again for its next attempt, with no agent', () => {
    const out = capture();
    const renderer = createProgressRenderer('plain', { out });
    feed(
      renderer,
      script(
        [0, jobState({ jobId: 'j2', platform: S390X, state: JobState.RUNNING, agent: 'a2' })],
        [
          5,
          jobState({
            jobId: 'j2',
            platform: S390X,
            state: JobState.QUEUED,
            attempt: 2,
            message: 'agent a2 disconnected',
          }),
        ],
      ),
    );
    expect(out.text.trimEnd().split('\n')[1]).toBe(
      '[linux/s390x] queued (attempt 2): agent a2 disconnected',
    );
    expect(renderer.tracker.job('linux/s390x')?.agent).toBe('');
  });
});

describe('json progress', () => {
  it('writes one parseable object per event with typed fields and lowercase states', () => {
    const out = capture();
    const events = successfulBuild();
    feed(createProgressRenderer('json', { out }), events);
    const objects = out.text
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(objects).toHaveLength(events.length);
    expect(objects.map((o) => o.sequence)).toEqual(events.map((e) => e.sequence.toString()));
    expect(objects[0]).toEqual({
      sequence: '1',
      time: '2030-01-01T12:00:00.000Z',
      type: 'build-state',
      state: 'queued',
      message: '',
      index: null,
    });
    expect(objects[3]).toMatchObject({
      type: 'decision',
      platform: 'linux/s390x',
      agent: 'a2',
      emulated: true,
    });
    // Sent with only its job id: the platform comes from the job's earlier events.
    expect(objects[10]).toMatchObject({
      type: 'log',
      platform: 'linux/s390x',
      jobId: 'j2',
      source: 'build',
      text: '#5 [2/4] RUN make',
      droppedBefore: 0,
    });
    expect(objects[12]).toMatchObject({
      type: 'job-state',
      platform: 'linux/s390x',
      state: 'succeeded',
      emulated: true,
      durationMs: 95_000,
      image: { digest: DIGEST_S390X, size: 530, mediaType: MANIFEST },
    });
    expect(objects[14]).toMatchObject({ type: 'log', platform: null, source: 'coordinator' });
    expect(objects[15]).toMatchObject({
      type: 'build-state',
      state: 'succeeded',
      index: { digest: DIGEST_INDEX, size: 856, mediaType: INDEX },
    });
  });

  it('spells a timed-out build as timed-out', () => {
    const out = capture();
    feed(createProgressRenderer('json', { out }), script([0, buildState(BuildState.TIMED_OUT)]));
    expect(JSON.parse(out.text)).toMatchObject({ state: 'timed-out' });
  });
});

describe('tty progress', () => {
  it('redraws a line per platform in place and ends with the summary table', () => {
    let now = T0;
    const ticks = manualTicker();
    const out = capture(200);
    const renderer = new TtyRenderer({ out, clock: () => now, ticker: ticks.ticker });
    const events = successfulBuild();
    for (const event of events.slice(0, 11)) {
      now = T0 + 300;
      renderer.event(event);
    }
    now += 1000;
    ticks.tick();
    const live = out.text;
    expect(live).toMatch(/linux\/amd64 +running +a1 +native +1\.2s +#5 \[2\/4\] RUN make/);
    expect(live).toMatch(/linux\/s390x +running +a2 +qemu +1\.2s +#5 \[2\/4\] RUN make/);
    // The first frame had one line (the header); the next starts by moving up over it.
    expect(live).toContain('\x1b[1A\r\x1b[2K[+] Building 1.3s (0/2 platforms done)\n');

    for (const event of events.slice(11)) {
      now = T0 + 96_000;
      renderer.event(event);
    }
    renderer.finish();
    expect(ticks.stopped).toBe(true);
    expect(out.text).toContain('[+] Build succeeded in 1m36s (2/2 platforms done)');
    expect(
      out.text.endsWith(
        [
          '',
          'PLATFORM     STATE      AGENT  MODE    DURATION  DIGEST',
          `linux/amd64  succeeded  a1     native  12.3s     ${DIGEST_AMD64}`,
          `linux/s390x  succeeded  a2     qemu    1m35s     ${DIGEST_S390X}`,
          '',
        ].join('\n'),
      ),
    ).toBe(true);
  });

  it('draws at most one frame per 100 ms of the clock, and the ticker draws what was held back', () => {
    let now = T0;
    const ticks = manualTicker();
    const out = capture(120);
    const renderer = new TtyRenderer({ out, clock: () => now, ticker: ticks.ticker });
    const frames = () => out.text.split('[+] ').length - 1;
    for (const event of successfulBuild().slice(0, 8)) renderer.event(event);
    expect(frames()).toBe(1);
    now += 99;
    ticks.tick();
    expect(frames()).toBe(1);
    now += 1;
    ticks.tick();
    expect(frames()).toBe(2);
    expect(out.text).toContain('#5 [2/4] RUN make');
  });

  it('cuts live lines to the terminal width so they never wrap', () => {
    const out = capture(40);
    const renderer = new TtyRenderer({ out, clock: () => T0, ticker: manualTicker().ticker });
    renderer.event(
      script([0, log({ platform: AMD64, text: `#7 [3/4] RUN ${'x'.repeat(100)}` })])[0]!,
    );
    // Every drawn line starts with the clear-line sequence and ends at the newline.
    const drawn = out.text
      .split('\u001b[2K')
      .slice(1)
      .map((chunk) => chunk.split('\n')[0] ?? '');
    expect(drawn).toHaveLength(2);
    expect(drawn[1]).toMatch(/^ => linux\/amd64 .*…$/);
    expect(Math.max(...drawn.map((l) => l.length))).toBeLessThanOrEqual(39);
  });
});

describe('the failure report', () => {
  it('names the failing platform and shows its last ten log lines', () => {
    const renderer = createProgressRenderer('plain', {
      out: capture(),
      tracker: new BuildTracker('b-42'),
    });
    feed(renderer, failedBuild());
    const report = failureReport(renderer.tracker);
    expect(report?.platforms).toEqual(['linux/s390x']);
    expect(report?.headline).toBe('build b-42 failed on linux/s390x: RUN make: exit code 2');
    expect(report?.details).toBe(
      [
        // The headline carries the error; the block does not repeat it.
        'linux/s390x failed on agent a2 (qemu) after 9.0s',
        '  last 10 log lines:',
        ...Array.from({ length: 10 }, (_, i) => `    #6 0.${i + 2} make: line ${i + 3}`),
        '',
      ].join('\n'),
    );
  });

  it('shows as many log lines as asked for', () => {
    const renderer = createProgressRenderer('json', { out: capture() });
    feed(renderer, failedBuild());
    const details = failureReport(renderer.tracker, { lines: 2 })?.details ?? '';
    expect(details.split('\n').slice(1, 4)).toEqual([
      '  last 2 log lines:',
      '    #6 0.10 make: line 11',
      '    #6 0.11 make: line 12',
    ]);
  });

  it('is absent while the build runs and once it succeeded', () => {
    const renderer = createProgressRenderer('plain', { out: capture() });
    const events = successfulBuild();
    for (const event of events.slice(0, 8)) renderer.event(event);
    expect(failureReport(renderer.tracker)).toBeUndefined();
    feed(renderer, events.slice(8));
    expect(failureReport(renderer.tracker)).toBeUndefined();
  });

  it('names the unfinished platforms of a cancelled build', () => {
    const renderer = createProgressRenderer('plain', {
      out: capture(),
      tracker: new BuildTracker('b-7'),
    });
    feed(
      renderer,
      continued(successfulBuild().slice(0, 12), [
        20_000,
        buildState(BuildState.CANCELLED, { message: 'cancelled by alice' }),
      ]),
    );
    const report = failureReport(renderer.tracker);
    expect(report?.headline).toBe(
      'build b-7 cancelled with linux/s390x unfinished: cancelled by alice',
    );
    // A cancel was asked for: no log tails.
    expect(report?.details).toBe('');
  });

  it('shows the build-wide log when the stitch, not a platform, failed', () => {
    const renderer = createProgressRenderer('plain', {
      out: capture(),
      tracker: new BuildTracker('b-9'),
    });
    feed(
      renderer,
      continued(successfulBuild().slice(0, 15), [
        97_000,
        buildState(BuildState.FAILED, { message: 'PUT reg/app:1: 401 unauthorized' }),
      ]),
    );
    const report = failureReport(renderer.tracker);
    expect(report?.headline).toBe('build b-9 failed: PUT reg/app:1: 401 unauthorized');
    expect(report?.details).toBe('  last 1 build log line:\n    pushing index to reg/app:1\n');
  });

  it('becomes an error whose one line is the headline and that exits 1', () => {
    const renderer = createProgressRenderer('plain', { out: capture() });
    feed(renderer, failedBuild());
    const report = failureReport(renderer.tracker);
    if (!report) throw new Error('expected a failure report');
    const error = new BuildFailedError(report);
    expect(error.message).toBe(report.headline);
    expect(error.platforms).toEqual(['linux/s390x']);
    expect(exitCodeFor(error)).toBe(1);
  });
});

describe('choosing the progress mode', () => {
  it('picks tty for auto on a terminal and plain otherwise', () => {
    expect(resolveProgressMode('auto', { isTTY: true })).toBe('tty');
    expect(resolveProgressMode('auto', { isTTY: false })).toBe('plain');
    expect(resolveProgressMode('auto', { isTTY: true }, { TERM: 'dumb' })).toBe('plain');
    expect(resolveProgressMode('json', { isTTY: true })).toBe('json');
  });

  it('refuses an unknown mode naming the flag', () => {
    expect(() => resolveProgressMode('fancy', {})).toThrow(/--progress "fancy"/);
  });
});
