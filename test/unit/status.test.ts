import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { BraidError, ERROR_CODES } from '../../src/errors.js';
import { fromServiceError, toStatusObject } from '../../src/rpc/status.js';

function asServiceError(obj: ReturnType<typeof toStatusObject>): ServiceError {
  return Object.assign(new Error(obj.details), {
    code: obj.code ?? status.UNKNOWN,
    details: obj.details ?? '',
    metadata: obj.metadata ?? new Metadata(),
  });
}

describe('error codes across gRPC', () => {
  it.each(ERROR_CODES)('round-trips %s with its message', (code) => {
    const back = fromServiceError(
      asServiceError(toStatusObject(new BraidError(code, `boom ${code}`))),
      '/x/Y',
      'host:1',
    );
    expect(back.code).toBe(code);
    expect(back.message).toBe(`boom ${code}`);
    expect(back.operation).toBe('/x/Y');
  });

  it('hides the text of unexpected errors as "internal error"', () => {
    const obj = toStatusObject(new TypeError('secret stack detail'));
    expect(obj.code).toBe(status.INTERNAL);
    expect(obj.details).toBe('internal error');
  });

  it('maps a status from a non-braid server by its gRPC code', () => {
    const err = Object.assign(new Error('x'), {
      code: status.PERMISSION_DENIED,
      details: 'no',
      metadata: new Metadata(),
    });
    expect(fromServiceError(err, '/x/Y', 'h:1').code).toBe('permission_denied');
  });

  it('turns a refused connection into one short line naming the target', () => {
    const err = Object.assign(new Error('x'), {
      code: status.UNAVAILABLE,
      details:
        'No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:9. Resolution note: ',
      metadata: new Metadata(),
    });
    expect(fromServiceError(err, '/x/Y', '127.0.0.1:9').message).toBe(
      'cannot reach 127.0.0.1:9: connection refused',
    );
  });
});
