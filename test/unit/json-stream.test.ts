import { describe, expect, it } from 'vitest';
import { EngineError, exitCodeOf } from '../../src/agent/engine-error.js';
import { readJsonStream, type JsonMessage } from '../../src/agent/json-stream.js';
import { LineTail } from '../../src/agent/line-tail.js';

async function* chunks(...parts: (string | Buffer)[]): AsyncGenerator<Buffer> {
  for (const part of parts) yield Buffer.isBuffer(part) ? part : Buffer.from(part, 'utf8');
}

const line = (value: unknown): string => `${JSON.stringify(value)}\r\n`;

describe('readJsonStream', () => {
  it('returns the aux messages of a stream that reports no error', async () => {
    const result = await readJsonStream(
      chunks(
        line({ stream: 'Step 1/2 : FROM base\n' }),
        line({ id: 'moby.image.id', aux: { ID: 'sha256:abc' } }),
      ),
      { operation: 'build linux/amd64' },
    );
    expect(result.aux).toEqual([{ id: 'moby.image.id', aux: { ID: 'sha256:abc' } }]);
    expect(result.lines).toBe(2);
  });

  it('reassembles lines split across chunks, even inside a multi-byte character', async () => {
    const text = line({ stream: 'grüße\n' });
    const bytes = Buffer.from(text, 'utf8');
    const cut = bytes.indexOf(Buffer.from('ü', 'utf8')) + 1;
    const seen: JsonMessage[] = [];
    await readJsonStream(chunks(bytes.subarray(0, cut), bytes.subarray(cut)), {
      operation: 'build',
      onMessage: (message) => seen.push(message),
    });
    expect(seen).toEqual([{ stream: 'grüße\n' }]);
  });

  it('reads a last line that has no newline', async () => {
    const result = await readJsonStream(chunks('{"aux":{"ID":"sha256:1"}}'), {
      operation: 'build',
    });
    expect(result.aux).toEqual([{ aux: { ID: 'sha256:1' } }]);
  });

  it('rejects with an EngineError for an in-band errorDetail although the stream ended normally', async () => {
    const tail = new LineTail(10);
    const error = await readJsonStream(
      chunks(
        line({ stream: 'compiling\n' }),
        line({
          errorDetail: { message: 'executor failed running [/bin/sh -c exit 3]: exit code: 3' },
          error: 'executor failed running [/bin/sh -c exit 3]: exit code: 3',
        }),
      ),
      { operation: 'build linux/s390x', engine: 'unix:///var/run/docker.sock', tail },
    ).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(EngineError);
    const engineError = error as EngineError;
    expect(engineError.code).toBe('failed_precondition');
    expect(engineError.operation).toBe('build linux/s390x');
    expect(engineError.engine).toBe('unix:///var/run/docker.sock');
    expect(engineError.exitCode).toBe(3);
    expect(engineError.logTail).toEqual(['compiling']);
    expect(engineError.message).toBe(
      'build linux/s390x failed: executor failed running [/bin/sh -c exit 3]: exit code: 3',
    );
  });

  it('treats an error line without errorDetail as a failure too', async () => {
    await expect(
      readJsonStream(
        chunks(line({ error: 'denied: requested access to the resource is denied' })),
        {
          operation: 'push',
          errorCode: 'permission_denied',
        },
      ),
    ).rejects.toMatchObject({
      code: 'permission_denied',
      detail: 'denied: requested access to the resource is denied',
    });
  });

  it('reads every line after an error and reports the first error', async () => {
    const seen: JsonMessage[] = [];
    await expect(
      readJsonStream(
        chunks(line({ error: 'first' }), line({ status: 'after' }), line({ error: 'second' })),
        { operation: 'push', onMessage: (message) => seen.push(message) },
      ),
    ).rejects.toMatchObject({ detail: 'first' });
    expect(seen).toHaveLength(3);
  });

  it('keeps unparsable lines as log text instead of failing', async () => {
    const tail = new LineTail(10);
    const result = await readJsonStream(chunks('not json\n', line({ aux: 1 })), {
      operation: 'build',
      tail,
    });
    expect(result.aux).toEqual([{ aux: 1 }]);
    expect(tail.lines()).toEqual(['not json']);
  });

  it('returns only the aux messages the caller keeps', async () => {
    const result = await readJsonStream(
      chunks(
        line({ id: 'moby.buildkit.trace', aux: 'AAAA' }),
        line({ id: 'moby.image.id', aux: { ID: 'sha256:2' } }),
      ),
      { operation: 'build', keepAux: (message) => message.id === 'moby.image.id' },
    );
    expect(result.aux.map((message) => message.id)).toEqual(['moby.image.id']);
  });

  it('refuses a line longer than the limit instead of buffering it', async () => {
    await expect(
      readJsonStream(chunks('{"stream":"', 'x'.repeat(100), 'y'.repeat(100)), {
        operation: 'build',
        maxLineBytes: 150,
      }),
    ).rejects.toMatchObject({ code: 'resource_exhausted' });
  });

  it('refuses more aux messages than the limit', async () => {
    await expect(
      readJsonStream(chunks(line({ aux: 1 }), line({ aux: 2 }), line({ aux: 3 })), {
        operation: 'build',
        maxAux: 2,
      }),
    ).rejects.toMatchObject({ code: 'resource_exhausted' });
  });
});

describe('exitCodeOf', () => {
  it('finds the exit code in the messages of old and new BuildKit', () => {
    expect(exitCodeOf('executor failed running [/bin/sh -c exit 3]: exit code: 3')).toBe(3);
    expect(
      exitCodeOf('process "/bin/sh -c make" did not complete successfully: exit code: 127'),
    ).toBe(127);
    expect(exitCodeOf('failed to solve: no such file')).toBeUndefined();
  });
});

describe('LineTail', () => {
  it('keeps the last lines, each cut to the width with a marker', () => {
    const tail = new LineTail(2, 5);
    tail.push('one\ntwo\r\n\nthree-and-more\n');
    expect(tail.lines()).toEqual(['two', 'three … [9 characters cut]']);
  });
});
