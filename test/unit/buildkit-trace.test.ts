import { create, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import { BuildkitTrace, decodeTrace, type ProgressEvent } from '../../src/agent/buildkit-trace.js';
import { StatusResponseSchema } from '../../src/gen/moby/buildkit/v1/control_pb.js';

/** Trace payloads captured from Docker 20.10's BuildKit (an s390x build under QEMU). */
const CAPTURED = {
  stderr:
    'GmQKR3NoYTI1NjpmYWYxYmMzNTZjNWI3ZDU2MGU1MWVlYzY0NGI3ZGNhN2FmZDI4YjA4N2Q4ZTE0ZDMzMGQxYTZlYTI2ZGYyYTRlEgsI5/Sb2AYQj5utWBgCIgpoZWxsby1lcnIK',
  stdout:
    'GmQKR3NoYTI1NjpmYWYxYmMzNTZjNWI3ZDU2MGU1MWVlYzY0NGI3ZGNhN2FmZDI4YjA4N2Q4ZTE0ZDMzMGQxYTZlYTI2ZGYyYTRlEgsI5/Sb2AYQtZWwWBgBIgpoZWxsby1vdXQK',
  failedRun:
    'CoICCkdzaGEyNTY6NzFjMmViZmNhMzE1YmZlNzRiYWU3ODY3YzM0NDJhMjU2ZWQyNWM1OTRmZmE1OWE2OTJlOTU2MDhmY2U1ZTJmOBJHc2hhMjU2OjUwYjRkNGZmODU4MjMxNDVkOTJiODdkNmYwZDIzZGU2N2RlZWRkN2RjN2RhM2Y4NzllNWRlNTQ2ZmY4MTIzNDUaGFtzdGFnZS0xIDMvM10gUlVOIGV4aXQgMyoLCOf0m9gGEJunw2IyDAjn9JvYBhCKn8aCATo5ZXhlY3V0b3IgZmFpbGVkIHJ1bm5pbmcgWy9iaW4vc2ggLWMgZXhpdCAzXTogZXhpdCBjb2RlOiAz',
};

const RUN = 'sha256:faf1bc356c5b7d560e51eec644b7dca7afd28b087d8e14d330d1a6ea26df2a4e';
const AT = timestampFromDate(new Date(0));

function encode(status: MessageInitShape<typeof StatusResponseSchema>): string {
  return Buffer.from(toBinary(StatusResponseSchema, create(StatusResponseSchema, status))).toString(
    'base64',
  );
}

function feed(trace: BuildkitTrace, ...statuses: MessageInitShape<typeof StatusResponseSchema>[]) {
  return statuses.flatMap((status) => trace.update(decodeTrace(encode(status))));
}

const log = (vertex: string, stream: number, text: string) => ({
  logs: [{ vertex, stream: BigInt(stream), msg: Buffer.from(text, 'utf8'), timestamp: AT }],
});

describe('decodeTrace', () => {
  it('decodes payloads captured from a real BuildKit: a vertex with its error and log lines', () => {
    const failed = decodeTrace(CAPTURED.failedRun);
    expect(failed.vertexes).toHaveLength(1);
    const vertex = failed.vertexes[0];
    expect(vertex?.name).toBe('[stage-1 3/3] RUN exit 3');
    expect(vertex?.error).toBe('executor failed running [/bin/sh -c exit 3]: exit code: 3');
    expect(vertex?.started).toBeDefined();
    expect(vertex?.completed).toBeDefined();
    expect(vertex?.inputs).toEqual([
      'sha256:50b4d4ff85823145d92b87d6f0d23de67deedd7dc7da3f879e5de546ff812345',
    ]);

    const stdout = decodeTrace(CAPTURED.stdout).logs[0];
    expect(stdout?.vertex).toBe(RUN);
    expect(stdout?.stream).toBe(1n);
    expect(Buffer.from(stdout?.msg ?? []).toString()).toBe('hello-out\n');
    expect(decodeTrace(CAPTURED.stderr).logs[0]?.stream).toBe(2n);
  });

  it('refuses an aux that is not base64 text', () => {
    expect(() => decodeTrace({ ID: 'x' })).toThrow(/not base64 text/);
  });
});

describe('BuildkitTrace', () => {
  it('reports each step once as started and completed, with BuildKit names', () => {
    const trace = new BuildkitTrace();
    const vertex = { digest: RUN, name: '[2/4] RUN make' };
    const events = feed(
      trace,
      { vertexes: [vertex] },
      { vertexes: [{ ...vertex, started: AT }] },
      { vertexes: [{ ...vertex, started: AT }] },
      { vertexes: [{ ...vertex, started: AT, completed: AT }] },
      { vertexes: [{ ...vertex, started: AT, completed: AT }] },
    );
    expect(events).toEqual<ProgressEvent[]>([
      { kind: 'step', name: '[2/4] RUN make', state: 'started', digest: RUN, inputs: [] },
      { kind: 'step', name: '[2/4] RUN make', state: 'completed', digest: RUN, inputs: [] },
    ]);
  });

  it('reports a cache hit as cached, not as completed', () => {
    const trace = new BuildkitTrace();
    const events = feed(trace, {
      vertexes: [
        { digest: RUN, name: '[2/2] COPY a /a', cached: true, started: AT, completed: AT },
      ],
    });
    expect(events).toEqual([
      { kind: 'step', name: '[2/2] COPY a /a', state: 'cached', digest: RUN, inputs: [] },
    ]);
  });

  it('turns real log payloads into stdout and stderr lines of their step', () => {
    const trace = new BuildkitTrace();
    feed(trace, { vertexes: [{ digest: RUN, name: '[build 2/2] RUN echo', started: AT }] });
    const events = [CAPTURED.stdout, CAPTURED.stderr].flatMap((aux) =>
      trace.update(decodeTrace(aux)),
    );
    expect(events).toEqual([
      { kind: 'log', step: '[build 2/2] RUN echo', stream: 'stdout', text: 'hello-out' },
      { kind: 'log', step: '[build 2/2] RUN echo', stream: 'stderr', text: 'hello-err' },
    ]);
  });

  it('splits output into lines across messages and flushes the unfinished one at the end', () => {
    const trace = new BuildkitTrace();
    const events = feed(
      trace,
      { vertexes: [{ digest: RUN, name: 'step' }] },
      log(RUN, 1, 'one\ntw'),
      log(RUN, 1, 'o\r\nthr'),
      log(RUN, 2, 'err\n'),
      log(RUN, 1, 'ee'),
    );
    events.push(...trace.end());
    expect(events.map((event) => (event.kind === 'log' ? event.text : event.state))).toEqual([
      'one',
      'two',
      'err',
      'three',
    ]);
  });

  it('keeps a multi-byte character split across messages whole', () => {
    const trace = new BuildkitTrace();
    const bytes = Buffer.from('é\n', 'utf8');
    const events = feed(
      trace,
      { logs: [{ vertex: RUN, stream: 1n, msg: bytes.subarray(0, 1), timestamp: AT }] },
      { logs: [{ vertex: RUN, stream: 1n, msg: bytes.subarray(1), timestamp: AT }] },
    );
    expect(events).toEqual([{ kind: 'log', step: RUN, stream: 'stdout', text: 'é' }]);
  });

  it('caps long lines and bounds a line that never ends', () => {
    const trace = new BuildkitTrace({ maxLineChars: 10 });
    const events = feed(trace, log(RUN, 1, `${'a'.repeat(25)}\n`), log(RUN, 1, 'b'.repeat(5000)));
    feed(trace, log(RUN, 1, 'b'.repeat(5000)));
    events.push(...trace.end());
    expect(events.map((event) => (event.kind === 'log' ? event.text : ''))).toEqual([
      'aaaaaaaaaa … [15 characters cut]',
      'bbbbbbbbbb … [9990 characters cut]',
    ]);
  });

  it('shows what a terminal shows when a line is redrawn with carriage returns', () => {
    const trace = new BuildkitTrace();
    const events = feed(trace, log(RUN, 1, ' 10%\r 50%\r100%\n'));
    expect(events).toEqual([{ kind: 'log', step: RUN, stream: 'stdout', text: '100%' }]);
  });

  it('names the failed step with its error and its last lines, not a step cancelled beside it', () => {
    const trace = new BuildkitTrace({ tailLines: 2 });
    const sibling = 'sha256:0000000000000000000000000000000000000000000000000000000000000001';
    const events = feed(
      trace,
      {
        vertexes: [
          { digest: RUN, name: '[stage-1 3/3] RUN make', started: AT },
          { digest: sibling, name: '[build 2/2] RUN sleep 60', started: AT },
        ],
      },
      log(RUN, 1, 'cc -c a.c\ncc -c b.c\nerror: b.c:1: oops\n'),
      {
        vertexes: [
          {
            digest: sibling,
            name: '[build 2/2] RUN sleep 60',
            started: AT,
            error: 'context canceled',
          },
        ],
      },
      {
        vertexes: [
          {
            digest: RUN,
            name: '[stage-1 3/3] RUN make',
            started: AT,
            completed: AT,
            error: 'executor failed running [/bin/sh -c make]: exit code: 2',
          },
        ],
      },
    );
    expect(events.filter((event) => event.kind === 'step' && event.state === 'error')).toEqual([
      expect.objectContaining({
        kind: 'step',
        name: '[build 2/2] RUN sleep 60',
        state: 'error',
        error: 'context canceled',
      }),
      expect.objectContaining({
        kind: 'step',
        name: '[stage-1 3/3] RUN make',
        state: 'error',
        error: 'executor failed running [/bin/sh -c make]: exit code: 2',
      }),
    ]);
    expect(trace.failedStep()).toEqual({
      name: '[stage-1 3/3] RUN make',
      error: 'executor failed running [/bin/sh -c make]: exit code: 2',
      logTail: ['cc -c b.c', 'error: b.c:1: oops'],
    });
  });

  it('reports warnings as stderr lines of their step', () => {
    const trace = new BuildkitTrace();
    const events = feed(trace, {
      vertexes: [{ digest: RUN, name: '[1/2] FROM base' }],
      warnings: [{ vertex: RUN, level: 1n, short: Buffer.from('legacy syntax') }],
    });
    expect(events).toEqual([
      { kind: 'log', step: '[1/2] FROM base', stream: 'stderr', text: 'WARNING: legacy syntax' },
    ]);
  });
});
