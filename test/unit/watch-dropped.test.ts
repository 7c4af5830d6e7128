/** Which broken WatchBuild streams `braid build` resumes from its last event. */
import { describe, expect, it } from 'vitest';
import { watchDropped } from '../../src/cli/commands/build-run.js';
import { BraidError, RpcError } from '../../src/errors.js';

const rpc = (code: ConstructorParameters<typeof RpcError>[0], message: string) =>
  new RpcError(code, 'WatchBuild', '127.0.0.1:7465', message);

describe('watchDropped', () => {
  it('resumes a stream the coordinator could not be reached on, or that was reset under it', () => {
    expect(watchDropped(rpc('unavailable', 'connection refused'))).toBe(true);
    expect(
      watchDropped(
        rpc('internal', 'Received RST_STREAM with code 2 triggered by internal client error'),
      ),
    ).toBe(true);
  });

  it('does not resume a stream the coordinator ended on purpose, or any other error', () => {
    expect(watchDropped(rpc('internal', 'stitch crashed'))).toBe(false);
    expect(watchDropped(rpc('not_found', 'no build "b1"'))).toBe(false);
    expect(watchDropped(rpc('unauthenticated', 'token revoked'))).toBe(false);
    expect(watchDropped(new BraidError('unavailable', 'not from the wire'))).toBe(false);
    expect(watchDropped(new Error('ECONNRESET'))).toBe(false);
  });
});
