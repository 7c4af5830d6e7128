import { describe, expect, it } from 'vitest';
import { EventLog } from '../../src/coordinator/event-log.js';
import { EventKind } from '../../src/gen/braid/v1/system_pb.js';

function fill(log: EventLog, n: number): void {
  for (let i = 0; i < n; i++) log.append({ kind: EventKind.BUILD_STATE, message: `e${i + 1}` });
}

async function collect(iterable: AsyncIterable<{ message: string }>): Promise<string[]> {
  const out: string[] = [];
  for await (const e of iterable) out.push(e.message);
  return out;
}

describe('the event log', () => {
  it('numbers events from 1 and replays after any sequence', async () => {
    const log = new EventLog({ retained: 100 });
    fill(log, 5);
    expect(log.lastSequence).toBe(5n);
    expect(await collect(log.read(0n, false, new AbortController().signal))).toEqual([
      'e1',
      'e2',
      'e3',
      'e4',
      'e5',
    ]);
    expect(await collect(log.read(3n, false, new AbortController().signal))).toEqual(['e4', 'e5']);
    expect(await collect(log.read(9n, false, new AbortController().signal))).toEqual([]);
  });

  it('keeps only the retained window, oldest dropped first', () => {
    const log = new EventLog({ retained: 3 });
    fill(log, 10);
    expect(log.since(0n).map((e) => e.message)).toEqual(['e8', 'e9', 'e10']);
    expect(log.since(8n).map((e) => e.sequence)).toEqual([9n, 10n]);
  });

  it('follows new events and, on abort, delivers what was appended before ending', async () => {
    const log = new EventLog({ retained: 100 });
    const controller = new AbortController();
    const reading = collect(log.read(0n, true, controller.signal));
    fill(log, 2);
    await new Promise((r) => setTimeout(r, 5));
    log.append({ kind: EventKind.COORDINATOR_STOPPING, message: 'stopping' });
    controller.abort();
    expect(await reading).toEqual(['e1', 'e2', 'stopping']);
  });

  it('stamps events with the injected clock', () => {
    const log = new EventLog({ retained: 10, clock: () => new Date(Date.UTC(2030, 0, 1)) });
    const event = log.append({ kind: EventKind.AGENT_CONNECTED, message: 'x', agent: 'a1' });
    expect(event.time?.seconds).toBe(BigInt(Date.UTC(2030, 0, 1) / 1000));
    expect(event.agent).toBe('a1');
  });
});
