/**
 * Ctrl-C while `braid build` follows a build, as buildx does it. The first
 * Ctrl-C cancels the build; on a terminal it first asks, one key and no
 * Enter: `y` cancels, `n` or `d` detaches and leaves the build running.
 * With --detach-on-interrupt (CI, where a job's cancel should not cancel a
 * shared build) it detaches without asking. SIGTERM (a CI runner or a
 * supervisor stopping the step) never asks: it cancels, or detaches with
 * --detach-on-interrupt. A second signal (or Ctrl-C at the prompt) stops
 * waiting and says in one line what it left running and how to cancel it;
 * a cancel still on its way to the coordinator gets 1.5 s to arrive first
 * (a third signal does not wait). Detaching and leaving exit 130.
 */
import { errorLine } from '../errors.js';
import { EXIT_INTERRUPTED } from './exit.js';

export type InterruptSignal = 'SIGINT' | 'SIGTERM';

type KeyListener = (chunk: Buffer | string) => void;

/** The keyboard: process.stdin, or a fake in tests. */
export interface KeyInput {
  readonly isTTY?: boolean;
  /** Present on a terminal: keys arrive one by one, Ctrl-C as `\x03` instead of SIGINT. */
  setRawMode?(raw: boolean): unknown;
  on(event: 'data', listener: KeyListener): unknown;
  removeListener(event: 'data', listener: KeyListener): unknown;
  resume(): unknown;
  pause(): unknown;
}

/** The part of `process` this needs, injected so tests send signals and keys. */
export interface InterruptProcess {
  on(signal: InterruptSignal, listener: () => void): unknown;
  removeListener(signal: InterruptSignal, listener: () => void): unknown;
  readonly stdin: KeyInput;
  exit(code: number): void;
}

/** Where the words go: the progress renderer, which owns the screen. */
export interface InterruptScreen {
  /** Shows `text` under the live view until replaced; undefined takes it away. */
  prompt(text: string | undefined): void;
  /** One line that stays, above any live view. */
  say(line: string): void;
  /** The live view ends: its last state stays on screen. */
  finish(): void;
}

export interface InterruptOptions {
  buildId: string;
  /** --detach-on-interrupt: leave the build running instead of cancelling it. */
  detach: boolean;
  /** A person at a terminal: ask before cancelling. */
  ask: boolean;
  cancel(): Promise<void>;
  screen: InterruptScreen;
  process?: InterruptProcess;
  /** How long a second signal waits for a cancel already sent (default 1.5 s). */
  cancelSettleMs?: number;
}

/**
 * Where the user stands: nothing pressed yet, being asked, cancel sent (and
 * how the coordinator answered), leaving (a second signal gives a cancel
 * still on its way a moment), or done.
 */
export type InterruptState =
  | { kind: 'watching' }
  | { kind: 'asking' }
  | { kind: 'cancelling'; request: 'pending' | 'accepted' | 'failed' }
  | { kind: 'leaving' }
  | { kind: 'stopped' };

export interface InterruptHandler {
  readonly state: InterruptState;
  /** The build ended: forget the signals, take the prompt away, give the terminal back. */
  stop(): void;
}

const CTRL_C = '\x03';
/** How long a second signal waits for a cancel already sent; leaving sooner would drop it. */
const CANCEL_SETTLE_MS = 1500;

/** The prompt's answer to a key: undefined for a key that means nothing here. */
function answer(key: string): 'cancel' | 'detach' | 'leave' | undefined {
  if (key === CTRL_C) return 'leave';
  if (key === 'y' || key === 'Y') return 'cancel';
  if ('nNdD'.includes(key)) return 'detach';
  return undefined;
}

export function handleInterrupts(options: InterruptOptions): InterruptHandler {
  const proc: InterruptProcess = options.process ?? process;
  const { buildId, screen } = options;
  const settleMs = options.cancelSettleMs ?? CANCEL_SETTLE_MS;
  let state: InterruptState = { kind: 'watching' };
  let cancelling: Promise<void> = Promise.resolve();

  const move = (to: InterruptState) => {
    if (state.kind === 'asking') {
      proc.stdin.removeListener('data', onKey);
      proc.stdin.setRawMode?.(false);
      proc.stdin.pause();
      screen.prompt(undefined);
    }
    state = to;
  };
  const stop = () => {
    move({ kind: 'stopped' });
    proc.removeListener('SIGINT', onSigint);
    proc.removeListener('SIGTERM', onSigterm);
  };
  const exit = (line: string) => {
    stop();
    screen.finish();
    screen.say(line);
    proc.exit(EXIT_INTERRUPTED);
  };

  const detach = () =>
    exit(
      `detached; build ${buildId} goes on: braid logs -f ${buildId} follows it, braid cancel ${buildId} cancels it`,
    );
  const leaveNow = (cancelAccepted: boolean) =>
    exit(
      cancelAccepted
        ? `stopped waiting; build ${buildId} is being cancelled: braid status ${buildId} shows how it ends, braid cancel ${buildId} cancels it again`
        : `stopped waiting; build ${buildId} is still running: braid logs -f ${buildId} follows it, braid cancel ${buildId} cancels it`,
    );
  const leave = () => {
    if (state.kind !== 'cancelling' || state.request !== 'pending') {
      leaveNow(state.kind === 'cancelling' && state.request === 'accepted');
      return;
    }
    move({ kind: 'leaving' });
    const waited = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), settleMs);
      timer.unref?.();
      cancelling.then(
        () => resolve(true),
        () => resolve(false),
      );
    });
    void waited.then((accepted) => {
      if (state.kind === 'leaving') leaveNow(accepted);
    });
  };
  const cancel = () => {
    const sent: InterruptState = { kind: 'cancelling', request: 'pending' };
    move(sent);
    screen.say(`cancelling build ${buildId} (Ctrl-C again to stop waiting)`);
    cancelling = options.cancel();
    cancelling.then(
      () => {
        if (state === sent) move({ kind: 'cancelling', request: 'accepted' });
      },
      (err: unknown) => {
        if (state !== sent) return;
        move({ kind: 'cancelling', request: 'failed' });
        screen.say(
          `could not cancel build ${buildId}: ${errorLine(err)}; it goes on (braid cancel ${buildId} to try again)`,
        );
      },
    );
  };
  const ask = () => {
    move({ kind: 'asking' });
    screen.prompt(`cancel build ${buildId}? y: cancel it, n: leave it running (detach)`);
    proc.stdin.setRawMode?.(true);
    proc.stdin.on('data', onKey);
    proc.stdin.resume();
  };

  function onKey(chunk: Buffer | string): void {
    if (state.kind !== 'asking') return;
    // A paste or a key with an escape sequence: the first key that means something decides.
    const decided = [...String(chunk)].map(answer).find((a) => a !== undefined);
    if (decided === 'cancel') cancel();
    else if (decided === 'detach') detach();
    else if (decided === 'leave') leave();
  }

  function onSignal(signal: InterruptSignal): void {
    switch (state.kind) {
      case 'watching':
        if (options.detach) detach();
        else if (options.ask && signal === 'SIGINT') ask();
        else cancel();
        return;
      case 'asking':
      case 'cancelling':
        leave();
        return;
      case 'leaving':
        // A third signal: no more waiting for the cancel's answer.
        leaveNow(false);
        return;
      case 'stopped':
        return;
    }
  }
  function onSigint(): void {
    onSignal('SIGINT');
  }
  function onSigterm(): void {
    onSignal('SIGTERM');
  }

  proc.on('SIGINT', onSigint);
  proc.on('SIGTERM', onSigterm);
  return {
    get state() {
      return state;
    },
    stop,
  };
}
