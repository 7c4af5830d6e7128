/**
 * The request id that follows a build from the client to every agent's log
 * lines: the client's (checked) or, when it sent none, one made here. The
 * CLI checks a given one with the same rule before it sends anything.
 */
import { randomBytes } from 'node:crypto';
import { UsageError } from '../errors.js';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

/** The client's request id, checked, or a new random one (16 hex) when it sent none. */
export function requestIdFor(sent: string, random: () => string = newRequestId): string {
  if (sent === '') return random();
  if (!REQUEST_ID.test(sent)) {
    const shown = sent.length > 80 ? `${sent.slice(0, 80)}…` : sent;
    throw new UsageError(
      `request id ${JSON.stringify(shown)}: expected 1 to 64 of A-Z a-z 0-9 . _ : -`,
    );
  }
  return sent;
}

export function newRequestId(): string {
  return randomBytes(8).toString('hex');
}
