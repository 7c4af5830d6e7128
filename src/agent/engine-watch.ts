/**
 * Whether the agent's engine answers: asks it for /info every so often,
 * within a deadline, and keeps the last answer and when it came, for the
 * agent's metrics.
 */
import { errorLine } from '../errors.js';
import type { Logger } from '../log.js';
import type { Engine } from './engine.js';

export interface EngineWatchOptions {
  /** Time between checks (default 15 s). */
  intervalMs?: number;
  /** A check that takes longer counts as down (default 5 s). */
  timeoutMs?: number;
  now?: () => number;
  log: Logger;
}

export class EngineWatch {
  private up = false;
  private checkedAtMs = 0;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;
  private readonly now: () => number;

  constructor(
    private readonly engine: Pick<Engine, 'info' | 'url'>,
    private readonly options: EngineWatchOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  /** The last check's answer; `checkedAtMs` 0 when none ran yet. */
  get last(): { up: boolean; checkedAtMs: number } {
    return { up: this.up, checkedAtMs: this.checkedAtMs };
  }

  /** Record an answer the agent got anyway (its start-up /info). */
  record(up: boolean): void {
    this.set(up);
  }

  /** Checks every `intervalMs` until stopped; the timer keeps no process alive. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.check(), this.options.intervalMs ?? 15_000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One check, at most one at a time; never rejects. */
  check(): Promise<void> {
    this.checking ??= this.ask().finally(() => (this.checking = undefined));
    return this.checking;
  }

  private async ask(): Promise<void> {
    const timeoutMs = this.options.timeoutMs ?? 5_000;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.engine.info(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${timeoutMs} ms`)),
            timeoutMs,
          );
        }),
      ]);
      this.set(true);
    } catch (err) {
      if (this.up || this.checkedAtMs === 0)
        this.options.log.warn(
          { engine: this.engine.url, err: errorLine(err) },
          'the engine does not answer',
        );
      this.set(false);
    } finally {
      clearTimeout(timer);
    }
  }

  private set(up: boolean): void {
    if (up && !this.up && this.checkedAtMs !== 0)
      this.options.log.info({ engine: this.engine.url }, 'the engine answers again');
    this.up = up;
    this.checkedAtMs = this.now();
  }
}
