/**
 * Shutdown in stages: the first SIGTERM/SIGINT drains (stop taking work,
 * finish what runs within the grace period), the second cancels running
 * work, the third exits at once.
 */
import type { Logger } from '../log.js';
import { EXIT_INTERRUPTED } from './exit.js';

export function stagedShutdown(
  log: Logger,
  stages: { drain(): Promise<void>; cancel(): Promise<void> },
): void {
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals += 1;
    if (signals === 1) {
      log.info({ signal }, 'draining: no new work; running work may finish');
      void stages.drain().then(() => process.exit(0));
    } else if (signals === 2) {
      log.warn({ signal }, 'second signal: cancelling running work');
      void stages.cancel().then(() => process.exit(0));
    } else {
      process.exit(EXIT_INTERRUPTED);
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
