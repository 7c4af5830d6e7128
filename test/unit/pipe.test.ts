import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { EXIT_CLOSED_PIPE } from '../../src/cli/exit.js';
import { endQuietlyOnClosedPipe, isClosedPipe } from '../../src/cli/pipe.js';

function closedPipe(): NodeJS.ErrnoException {
  return Object.assign(new Error('write EPIPE'), { code: 'EPIPE', syscall: 'write' });
}

describe('a closed pipe on stdout or stderr', () => {
  it('ends the process with 141, the code of a Unix tool ended by SIGPIPE', () => {
    const stdout = new EventEmitter();
    const stderr = new EventEmitter();
    const exits: number[] = [];
    endQuietlyOnClosedPipe([stdout, stderr], (code) => exits.push(code));
    stdout.emit('error', closedPipe());
    stderr.emit('error', closedPipe());
    expect(exits).toEqual([EXIT_CLOSED_PIPE, EXIT_CLOSED_PIPE]);
    expect(EXIT_CLOSED_PIPE).toBe(128 + 13);
  });

  it('leaves any other write error to crash loudly', () => {
    const stdout = new EventEmitter();
    const exits: number[] = [];
    endQuietlyOnClosedPipe([stdout], (code) => exits.push(code));
    const full = Object.assign(new Error('write ENOSPC'), { code: 'ENOSPC' });
    expect(() => stdout.emit('error', full)).toThrow('write ENOSPC');
    expect(exits).toEqual([]);
  });

  it('is told apart by its code alone', () => {
    expect(isClosedPipe(closedPipe())).toBe(true);
    expect(isClosedPipe(new Error('EPIPE'))).toBe(false);
    expect(isClosedPipe(undefined)).toBe(false);
  });
});
