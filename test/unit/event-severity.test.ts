import { describe, expect, it } from 'vitest';
import { EventLog, severityOf } from '../../src/coordinator/event-log.js';
import { EventKind, Severity } from '../../src/gen/braid/v1/system_pb.js';

const buildState = (message: string) => ({ kind: EventKind.BUILD_STATE, message });

describe('how grave an event in the coordinator event log is', () => {
  it('makes a failed or timed-out build an error and a cancelled one a warning', () => {
    expect(severityOf(buildState('failed: linux/arm64: RUN make: exit code 2'))).toBe(
      Severity.ERROR,
    );
    expect(severityOf(buildState('timed_out: build timed out after 1h; no tag was moved'))).toBe(
      Severity.ERROR,
    );
    expect(severityOf(buildState('cancelled: cancelled: by alice; no tag was moved'))).toBe(
      Severity.WARNING,
    );
  });

  it('keeps every other move of a build, and other kinds, at info', () => {
    for (const message of ['queued: x', 'running: building', 'stitching: y', 'succeeded: z']) {
      expect(severityOf(buildState(message)), message).toBe(Severity.INFO);
    }
    expect(severityOf({ kind: EventKind.AGENT_CONNECTED, message: 'failed: not a build' })).toBe(
      Severity.INFO,
    );
  });

  it('is what the log stamps on an event given no severity, and a given one wins', () => {
    const log = new EventLog({ retained: 10 });
    expect(log.append({ ...buildState('failed: linux/amd64: boom'), buildId: 'b1' }).severity).toBe(
      Severity.ERROR,
    );
    expect(
      log.append({
        kind: EventKind.AGENT_DISCONNECTED,
        message: 'gone',
        severity: Severity.WARNING,
      }).severity,
    ).toBe(Severity.WARNING);
  });
});
