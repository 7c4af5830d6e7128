import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { EXIT_INTERRUPTED } from '../../src/cli/exit.js';
import {
  handleInterrupts,
  type InterruptOptions,
  type InterruptProcess,
  type InterruptSignal,
  type KeyInput,
} from '../../src/cli/interrupt.js';
import { BuildTracker, TtyRenderer, type Ticker } from '../../src/cli/progress/index.js';
import { BuildState, type Build } from '../../src/gen/braid/v1/build_pb.js';
import { JobState } from '../../src/gen/braid/v1/common_pb.js';
import { screenOf } from '../support/terminal-screen.js';

/** A keyboard: raw mode and flowing as flags, keys typed by the test. */
class FakeKeyboard extends EventEmitter implements KeyInput {
  raw = false;
  flowing = false;
  constructor(readonly isTTY: boolean) {
    super();
  }
  setRawMode(raw: boolean): this {
    this.raw = raw;
    return this;
  }
  resume(): this {
    this.flowing = true;
    return this;
  }
  pause(): this {
    this.flowing = false;
    return this;
  }
  type(keys: string): void {
    this.emit('data', Buffer.from(keys));
  }
}

/** The process: signals sent by the test, exit codes recorded instead of exiting. */
class FakeProcess extends EventEmitter implements InterruptProcess {
  readonly exits: number[] = [];
  constructor(readonly stdin: FakeKeyboard) {
    super();
  }
  exit(code: number): void {
    this.exits.push(code);
  }
  signal(signal: InterruptSignal): void {
    this.emit(signal);
  }
}

/** The screen as a person reads it: the question shown now, and the lines said. */
class FakeScreen {
  question: string | undefined;
  readonly said: string[] = [];
  finished = false;
  prompt(text: string | undefined): void {
    this.question = text;
  }
  say(line: string): void {
    this.said.push(line);
  }
  finish(): void {
    this.finished = true;
  }
}

interface Cancels {
  /** How many times the coordinator was asked to cancel. */
  readonly sent: number;
  answer(): void;
  refuse(err: Error): void;
}

function setup(
  options: Partial<InterruptOptions> & { terminal?: boolean; cancelAnswers?: 'now' | 'later' } = {},
) {
  const keyboard = new FakeKeyboard(options.terminal ?? false);
  const proc = new FakeProcess(keyboard);
  const screen = new FakeScreen();
  let sent = 0;
  let answer: () => void = () => undefined;
  let refuse: (err: Error) => void = () => undefined;
  const cancels: Cancels = {
    get sent() {
      return sent;
    },
    answer: () => answer(),
    refuse: (err) => refuse(err),
  };
  const handler = handleInterrupts({
    buildId: 'b1',
    detach: options.detach ?? false,
    ask: options.ask ?? options.terminal ?? false,
    cancel: () => {
      sent++;
      if (options.cancelAnswers !== 'later') return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        answer = resolve;
        refuse = reject;
      });
    },
    screen,
    process: proc,
    cancelSettleMs: options.cancelSettleMs ?? 50,
  });
  return { keyboard, proc, screen, handler, cancels };
}

const settle = () => new Promise((r) => setTimeout(r, 0));

describe('Ctrl-C without a terminal', () => {
  it('cancels the build at the first Ctrl-C and says so', async () => {
    const { proc, screen, handler, cancels } = setup();
    proc.signal('SIGINT');
    await settle();
    expect(cancels.sent).toBe(1);
    expect(screen.said).toEqual(['cancelling build b1 (Ctrl-C again to stop waiting)']);
    expect(handler.state).toEqual({ kind: 'cancelling', request: 'accepted' });
    expect(proc.exits).toEqual([]);
  });

  it('leaves at the second Ctrl-C, saying in one line what goes on and how to cancel it, exit 130', async () => {
    const { proc, screen, cancels } = setup();
    proc.signal('SIGINT');
    await settle();
    proc.signal('SIGINT');
    expect(proc.exits).toEqual([EXIT_INTERRUPTED]);
    expect(screen.finished).toBe(true);
    expect(screen.said.at(-1)).toBe(
      'stopped waiting; build b1 is being cancelled: braid status b1 shows how it ends, braid cancel b1 cancels it again',
    );
    expect(cancels.sent).toBe(1);
  });

  it('gives a cancel still on its way a moment to arrive before leaving', async () => {
    const { proc, screen, cancels } = setup({ cancelAnswers: 'later', cancelSettleMs: 5_000 });
    proc.signal('SIGINT');
    proc.signal('SIGINT');
    // Leaving now would drop the cancel with the process.
    expect(proc.exits).toEqual([]);
    cancels.answer();
    await settle();
    expect(proc.exits).toEqual([EXIT_INTERRUPTED]);
    expect(screen.said.at(-1)).toContain('build b1 is being cancelled');
  });

  it('says the build still runs when the cancel gets no answer in time', async () => {
    const { proc, screen } = setup({ cancelAnswers: 'later', cancelSettleMs: 10 });
    proc.signal('SIGINT');
    proc.signal('SIGINT');
    await new Promise((r) => setTimeout(r, 30));
    expect(proc.exits).toEqual([EXIT_INTERRUPTED]);
    expect(screen.said.at(-1)).toBe(
      'stopped waiting; build b1 is still running: braid logs -f b1 follows it, braid cancel b1 cancels it',
    );
  });

  it('does not wait for the cancel at a third Ctrl-C', () => {
    const { proc, screen } = setup({ cancelAnswers: 'later', cancelSettleMs: 60_000 });
    proc.signal('SIGINT');
    proc.signal('SIGINT');
    proc.signal('SIGINT');
    expect(proc.exits).toEqual([EXIT_INTERRUPTED]);
    expect(screen.said.at(-1)).toContain('braid cancel b1 cancels it');
  });

  it('says in one line when the coordinator refuses the cancel', async () => {
    const { proc, screen, cancels } = setup({ cancelAnswers: 'later' });
    proc.signal('SIGINT');
    cancels.refuse(new Error('connection refused'));
    await settle();
    expect(screen.said.at(-1)).toBe(
      'could not cancel build b1: connection refused; it goes on (braid cancel b1 to try again)',
    );
    proc.signal('SIGINT');
    expect(proc.exits).toEqual([EXIT_INTERRUPTED]);
    expect(screen.said.at(-1)).toContain('build b1 is still running');
  });

  it('with --detach-on-interrupt leaves the build running at once, exit 130', () => {
    const { proc, screen, cancels } = setup({ detach: true, terminal: true });
    proc.signal('SIGINT');
    expect(cancels.sent).toBe(0);
    expect(screen.question).toBeUndefined();
    expect(proc.exits).toEqual([EXIT_INTERRUPTED]);
    expect(screen.said).toEqual([
      'detached; build b1 goes on: braid logs -f b1 follows it, braid cancel b1 cancels it',
    ]);
  });
});

describe('SIGTERM', () => {
  it('never asks, even on a terminal: it cancels', () => {
    const { proc, screen, cancels, keyboard } = setup({ terminal: true });
    proc.signal('SIGTERM');
    expect(screen.question).toBeUndefined();
    expect(keyboard.raw).toBe(false);
    expect(cancels.sent).toBe(1);
  });

  it('detaches with --detach-on-interrupt', () => {
    const { proc, cancels } = setup({ detach: true });
    proc.signal('SIGTERM');
    expect(cancels.sent).toBe(0);
    expect(proc.exits).toEqual([EXIT_INTERRUPTED]);
  });

  it('a second signal of either kind leaves', async () => {
    const { proc } = setup();
    proc.signal('SIGTERM');
    await settle();
    proc.signal('SIGINT');
    expect(proc.exits).toEqual([EXIT_INTERRUPTED]);
  });
});

describe('Ctrl-C on a terminal', () => {
  it('asks once and reads one key in raw mode: y cancels with no Enter and takes the question away', async () => {
    const { proc, screen, keyboard, cancels, handler } = setup({ terminal: true });
    proc.signal('SIGINT');
    expect(screen.question).toBe('cancel build b1? y: cancel it, n: leave it running (detach)');
    expect(keyboard.raw).toBe(true);
    expect(keyboard.flowing).toBe(true);
    expect(cancels.sent).toBe(0);
    keyboard.type('y');
    await settle();
    expect(cancels.sent).toBe(1);
    expect(screen.question).toBeUndefined();
    // The terminal is given back: cooked mode, and stdin no longer holds the process open.
    expect(keyboard.raw).toBe(false);
    expect(keyboard.flowing).toBe(false);
    expect(screen.said).toEqual(['cancelling build b1 (Ctrl-C again to stop waiting)']);
    expect(handler.state.kind).toBe('cancelling');
  });

  it.each(['n', 'N', 'd', 'D'])('%s detaches and leaves the build running, exit 130', (key) => {
    const { proc, screen, keyboard, cancels } = setup({ terminal: true });
    proc.signal('SIGINT');
    keyboard.type(key);
    expect(cancels.sent).toBe(0);
    expect(keyboard.raw).toBe(false);
    expect(screen.question).toBeUndefined();
    expect(proc.exits).toEqual([EXIT_INTERRUPTED]);
    expect(screen.said.at(-1)).toContain('detached; build b1 goes on');
  });

  it('keeps asking through keys that mean nothing (Enter, x, arrows)', () => {
    const { proc, screen, keyboard, cancels } = setup({ terminal: true });
    proc.signal('SIGINT');
    keyboard.type('\r');
    keyboard.type('x');
    keyboard.type('\x1b[A');
    expect(screen.question).toContain('cancel build b1?');
    expect(cancels.sent).toBe(0);
    expect(proc.exits).toEqual([]);
  });

  it('Ctrl-C at the question (a key in raw mode, not a signal) leaves at once', () => {
    const { proc, screen, keyboard, cancels } = setup({ terminal: true });
    proc.signal('SIGINT');
    keyboard.type('\x03');
    expect(cancels.sent).toBe(0);
    expect(keyboard.raw).toBe(false);
    expect(proc.exits).toEqual([EXIT_INTERRUPTED]);
    expect(screen.said.at(-1)).toBe(
      'stopped waiting; build b1 is still running: braid logs -f b1 follows it, braid cancel b1 cancels it',
    );
  });

  it('a SIGTERM while asking leaves too', () => {
    const { proc, keyboard } = setup({ terminal: true });
    proc.signal('SIGINT');
    proc.signal('SIGTERM');
    expect(keyboard.raw).toBe(false);
    expect(proc.exits).toEqual([EXIT_INTERRUPTED]);
  });
});

describe('once the build ended', () => {
  it('stop() takes the question away, gives the terminal back and no longer hears signals', () => {
    const { proc, screen, keyboard, handler, cancels } = setup({ terminal: true });
    proc.signal('SIGINT');
    handler.stop();
    expect(screen.question).toBeUndefined();
    expect(keyboard.raw).toBe(false);
    expect(keyboard.flowing).toBe(false);
    expect(keyboard.listenerCount('data')).toBe(0);
    expect(proc.listenerCount('SIGINT')).toBe(0);
    expect(proc.listenerCount('SIGTERM')).toBe(0);
    keyboard.type('y');
    expect(cancels.sent).toBe(0);
  });
});

describe('the question on a live terminal view', () => {
  const noTicker: Ticker = () => () => undefined;
  const seeded = (): BuildTracker => {
    const tracker = new BuildTracker('b1');
    tracker.applyBuild({
      id: 'b1',
      state: BuildState.RUNNING,
      error: '',
      jobs: [
        {
          id: 'j1',
          platform: { os: 'linux', architecture: 'amd64' },
          state: JobState.RUNNING,
          agent: 'a1',
          emulated: false,
          attempt: 1,
          currentStep: '[2/2] RUN make',
          error: '',
          durationMs: 0n,
        },
      ],
    } as unknown as Build);
    return tracker;
  };

  it('shows under the live view, is gone after the answer, and leaves no old frame behind', () => {
    const out = { columns: 100, text: '', write: (t: string) => (out.text += t) };
    let now = 0;
    const renderer = new TtyRenderer({
      out,
      tracker: seeded(),
      clock: () => now,
      ticker: noTicker,
    });
    renderer.tick();
    const { proc, keyboard } = setupWithScreen(renderer);
    proc.signal('SIGINT');
    expect(screenOf(out.text).at(-1)).toBe(
      'cancel build b1? y: cancel it, n: leave it running (detach)',
    );
    now += 1000;
    renderer.tick();
    keyboard.type('y');
    now += 1000;
    renderer.tick();
    const shown = screenOf(out.text);
    expect(shown).toEqual([
      'cancelling build b1 (Ctrl-C again to stop waiting)',
      '[+] Building b1 2.0s (0/1 platforms done)',
      ' => linux/amd64  running  a1  native  -  [2/2] RUN make',
    ]);
  });

  function setupWithScreen(renderer: TtyRenderer) {
    const keyboard = new FakeKeyboard(true);
    const proc = new FakeProcess(keyboard);
    handleInterrupts({
      buildId: 'b1',
      detach: false,
      ask: true,
      cancel: () => Promise.resolve(),
      screen: renderer,
      process: proc,
    });
    return { proc, keyboard };
  }
});
