import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { credentials } from '@grpc/grpc-js';
import { EchoService } from '../gen/braid/testing/v1/echo_pb.js';
import { BraidError, RpcError, isErrorCode } from '../../src/errors.js';
import { formatGrpcAddress, type GrpcAddress } from '../../src/rpc/address.js';
import { createClient, type ServiceClient } from '../../src/rpc/client.js';
import { addService, type ImplOf } from '../../src/rpc/service.js';
import { startServer, type RunningServer } from '../../src/rpc/server.js';

function failIfAsked(code: string): void {
  if (code) {
    if (!isErrorCode(code)) throw new Error(`not a braid code: ${code}`);
    throw new BraidError(code, `asked to fail with ${code}`);
  }
}

/** What the server saw of cancelled Count streams, to prove cancellation reaches handlers. */
const serverSaw = { countCancelled: 0 };

const echoImpl: ImplOf<typeof EchoService> = {
  echo(request) {
    failIfAsked(request.failWithCode);
    return { text: request.text, payloadBytes: BigInt(request.payload.length) };
  },
  async *count(request, ctx) {
    for (let index = 0; index < request.count; index++) {
      if (request.intervalMs) await new Promise((r) => setTimeout(r, request.intervalMs));
      if (ctx.signal.aborted) {
        serverSaw.countCancelled++;
        return;
      }
      yield { text: `n${index}`, index };
    }
  },
  async collect(requests) {
    const texts: string[] = [];
    for await (const request of requests) {
      failIfAsked(request.failWithCode);
      texts.push(request.text);
    }
    return { text: texts.join(','), index: texts.length };
  },
  async *chat(requests) {
    let index = 0;
    for await (const request of requests) {
      failIfAsked(request.failWithCode);
      yield { text: request.text.toUpperCase(), index: index++ };
    }
  },
};

const transports: [string, () => Promise<GrpcAddress>][] = [
  ['TCP on 127.0.0.1', async () => ({ kind: 'tcp', host: '127.0.0.1', port: 0 })],
  [
    'a unix socket',
    async () => ({
      kind: 'unix',
      path: join(await mkdtemp(join(tmpdir(), 'braid-rpc-')), 'braid.sock'),
    }),
  ],
];

describe.each(transports)('the gRPC bridge over %s', (_name, makeAddress) => {
  let running: RunningServer;
  let client: ServiceClient<(typeof EchoService)['method']>;
  let address: GrpcAddress;

  beforeAll(async () => {
    running = await startServer({
      address: await makeAddress(),
      insecure: false,
      limits: { maxReceiveMessageBytes: 64 * 1024, maxSendMessageBytes: 64 * 1024 },
      register: (server) => addService(server, EchoService, echoImpl),
    });
    address = running.address;
    client = createClient(EchoService, formatGrpcAddress(address), {
      credentials: credentials.createInsecure(),
    });
  });
  afterAll(async () => {
    client?.close();
    await running?.stop(1000);
    if (address?.kind === 'unix')
      await rm(join(address.path, '..'), { recursive: true, force: true });
  });

  it('answers a unary call with the decoded message', async () => {
    const response = await client.echo({ text: 'hello', payload: new Uint8Array([1, 2, 3]) });
    expect(response.text).toBe('hello');
    expect(response.payloadBytes).toBe(3n);
  });

  it('streams every server-stream message in order', async () => {
    const seen: number[] = [];
    for await (const message of client.count({ count: 50 })) seen.push(message.index);
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('collects a client stream into one response', async () => {
    const response = await client.collect(
      (async function* () {
        for (const text of ['a', 'b', 'c']) yield { text };
      })(),
    );
    expect(response).toMatchObject({ text: 'a,b,c', index: 3 });
  });

  it('carries a bidi conversation both ways', async () => {
    const chat = client.chat();
    const replies: string[] = [];
    const reading = (async () => {
      for await (const reply of chat) replies.push(`${reply.index}:${reply.text}`);
    })();
    for (const text of ['one', 'two', 'three']) await chat.send({ text });
    chat.end();
    await reading;
    expect(replies).toEqual(['0:ONE', '1:TWO', '2:THREE']);
  });

  it.each([
    ['not_found', 'unary'],
    ['permission_denied', 'client stream'],
    ['invalid_argument', 'bidi stream'],
  ] as const)(
    'maps a %s thrown by a %s handler to the same braid code on the client',
    async (code, kind) => {
      const call =
        kind === 'unary'
          ? client.echo({ failWithCode: code })
          : kind === 'client stream'
            ? client.collect([{ text: 'x' }, { failWithCode: code }])
            : (async () => {
                const chat = client.chat();
                await chat.send({ failWithCode: code });
                chat.end();
                for await (const _ of chat) void _;
              })();
      const err = await call.then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(RpcError);
      expect((err as RpcError).code).toBe(code);
      expect((err as RpcError).message).toBe(`asked to fail with ${code}`);
      expect((err as RpcError).operation).toMatch(/^\/braid\.testing\.v1\.EchoService\//);
    },
  );

  it('rejects a message over the server limit with resource_exhausted', async () => {
    const err = await client.echo({ payload: new Uint8Array(128 * 1024) }).catch((e: unknown) => e);
    expect((err as RpcError).code).toBe('resource_exhausted');
  });

  it('fails a call past its deadline with deadline_exceeded', async () => {
    const err = await (async () => {
      for await (const _ of client.count({ count: 10, intervalMs: 200 }, { timeoutMs: 150 }))
        void _;
    })().catch((e: unknown) => e);
    expect((err as RpcError).code).toBe('deadline_exceeded');
  });

  it('cancels a server stream when the reader stops early, and the handler sees it', async () => {
    const before = serverSaw.countCancelled;
    const got: number[] = [];
    for await (const message of client.count({ count: 1000, intervalMs: 20 })) {
      got.push(message.index);
      if (got.length === 3) break;
    }
    expect(got).toEqual([0, 1, 2]);
    await expect.poll(() => serverSaw.countCancelled, { timeout: 2000 }).toBe(before + 1);
  });

  it('ends a stream quietly when the caller aborts its signal', async () => {
    const controller = new AbortController();
    const got: number[] = [];
    for await (const message of client.count(
      { count: 1000, intervalMs: 10 },
      { signal: controller.signal },
    )) {
      got.push(message.index);
      if (got.length === 2) controller.abort();
    }
    expect(got.length).toBeGreaterThanOrEqual(2);
    expect(got.length).toBeLessThan(1000);
  });
});

describe('the gRPC client facing no server', () => {
  it('says which address it could not reach, as unavailable', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'braid-rpc-'));
    const target = `unix:${join(dir, 'nobody.sock')}`;
    const client = createClient(EchoService, target, { credentials: credentials.createInsecure() });
    try {
      const err = (await client
        .echo({ text: 'x' }, { timeoutMs: 5000 })
        .catch((e: unknown) => e)) as RpcError;
      expect(err.code).toBe('unavailable');
      expect(err.message).toContain(target);
    } finally {
      client.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
