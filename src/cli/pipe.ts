/**
 * A reader that goes away (`braid logs ID | head -1`) ends braid as it ends a
 * Unix tool: quietly, with the code of a process ended by SIGPIPE. Node
 * ignores SIGPIPE and reports the closed pipe as an `EPIPE` error on the
 * stream instead, which, unheard, is a stack trace and exit 1.
 */
import { EXIT_CLOSED_PIPE } from './exit.js';

/** What braid writes its output to: process.stdout and process.stderr. */
export interface OutputStream {
  on(event: 'error', listener: (err: Error) => void): unknown;
}

export function isClosedPipe(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | null | undefined)?.code === 'EPIPE';
}

/** Ends the process with EXIT_CLOSED_PIPE when any of `outputs` finds its reader gone. */
export function endQuietlyOnClosedPipe(
  outputs: readonly OutputStream[],
  exit: (code: number) => void,
): void {
  for (const output of outputs) {
    output.on('error', (err) => {
      if (!isClosedPipe(err)) throw err;
      exit(EXIT_CLOSED_PIPE);
    });
  }
}
