import { describe, expect, it } from 'vitest';
import { EventLog, buildStateSeverity } from '../../src/coordinator/event-log.js';
import { buildStateName } from '../../src/coordinator/transitions.js';
import { BuildState } from '../../src/gen/braid/v1/build_pb.js';
import { EventKind, Severity } from '../../src/gen/braid/v1/system_pb.js';

describe('how grave an event in the coordinator event log is', () => {
  it('makes a failed or timed-out build an error and a cancelled one a warning', () => {
    expect(buildStateSeverity(buildStateName(BuildState.FAILED))).toBe(Severity.ERROR);
    expect(buildStateSeverity(buildStateName(BuildState.TIMED_OUT))).toBe(Severity.ERROR);
    expect(buildStateSeverity(buildStateName(BuildState.CANCELLED))).toBe(Severity.WARNING);
  });

  it('keeps every other move of a build at info', () => {
    for (const state of [
      BuildState.QUEUED,
      BuildState.RUNNING,
      BuildState.STITCHING,
      BuildState.SUCCEEDED,
    ]) {
      expect(buildStateSeverity(buildStateName(state)), buildStateName(state)).toBe(Severity.INFO);
    }
  });

  it('stamps info on an event given no severity, and a given one wins', () => {
    const log = new EventLog({ retained: 10 });
    expect(log.append({ kind: EventKind.AGENT_CONNECTED, message: 'a1' }).severity).toBe(
      Severity.INFO,
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
