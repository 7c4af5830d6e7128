/**
 * One decision of what is worth retrying, shared by the agent's session,
 * its first look at the engine and SSH connections to engine hosts.
 */
import { describe, expect, it } from 'vitest';
import { BraidError, ERROR_CODES, RpcError } from '../../src/errors.js';
import { isRetryable, isUnrecoverable } from '../../src/rpc/retryable.js';
import { SshError, isFatalSshError } from '../../src/ssh/errors.js';

const UNRECOVERABLE = new Set([
  'unauthenticated',
  'permission_denied',
  'invalid_argument',
  'already_exists',
  'unimplemented',
  'failed_precondition',
]);

describe('which errors are retried', () => {
  for (const code of ERROR_CODES) {
    const retried = !UNRECOVERABLE.has(code);
    it(`${retried ? 'retries' : 'does not retry'} ${code}, for the session and for SSH alike`, () => {
      const rpc = new RpcError(code, '/braid.v1.AgentService/Connect', 'fake', 'x');
      const ssh = new SshError(code, 'ssh://u@h', 'x');
      expect(isRetryable(rpc)).toBe(retried);
      expect(isUnrecoverable(new BraidError(code, 'x'))).toBe(!retried);
      expect(isFatalSshError(ssh)).toBe(!retried);
    });
  }

  it('retries errors without a code: a reset socket, a refused connection', () => {
    expect(isRetryable(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }))).toBe(
      true,
    );
    expect(isRetryable('weird')).toBe(true);
  });

  it('calls only an SshError a fatal SSH error', () => {
    expect(isFatalSshError(new BraidError('unauthenticated', 'x'))).toBe(false);
  });
});
