/**
 * The agent's BuildKit session served on a real socket, called as BuildKit
 * calls it (a gRPC client on the connection): health, secrets, credentials,
 * and SSH forwarding — including a forwarded agent that goes away while a
 * step waits for its answer, which must end the step's stream at once.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { credentials } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { BuildkitSession, type SessionProviders } from '../../src/agent/buildkit-session.js';
import { Health } from '../../src/gen/grpc/health/v1/health_pb.js';
import { HealthCheckResponse_ServingStatus } from '../../src/gen/grpc/health/v1/health_pb.js';
import { Secrets } from '../../src/gen/moby/buildkit/secrets/v1/secrets_pb.js';
import { Auth } from '../../src/gen/moby/filesync/v1/auth_pb.js';
import { SSH } from '../../src/gen/moby/sshforward/v1/ssh_pb.js';
import { RpcError } from '../../src/errors.js';
import { createClient } from '../../src/rpc/client.js';

interface Served {
  path: string;
  session: BuildkitSession;
  close(): Promise<void>;
}

const started: Served[] = [];

/** A unix socket whose every connection is handed to the session, as the engine's upgrade is. */
async function serve(providers: SessionProviders): Promise<Served> {
  const dir = await mkdtemp(join(tmpdir(), 'braid-session-'));
  const path = join(dir, 's.sock');
  const session = new BuildkitSession(providers);
  const server: Server = createServer((socket) => session.serve(socket));
  await new Promise<void>((resolve) => server.listen(path, resolve));
  const served = {
    path,
    session,
    async close() {
      session.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
  started.push(served);
  return served;
}

const over = (path: string) => ({
  target: `unix:${path}`,
  options: { credentials: credentials.createInsecure() },
});

afterEach(async () => {
  for (const served of started.splice(0)) await served.close();
});

const noSecrets: SessionProviders = { secrets: new Map(), credentials: async () => undefined };

describe("the agent's BuildKit session, called as BuildKit calls it", () => {
  it('announces the methods it serves, and answers health, secrets and credentials', async () => {
    const served = await serve({
      secrets: new Map([['tok', new TextEncoder().encode('value')]]),
      credentials: async (host) =>
        host === 'registry.example:5000'
          ? { kind: 'basic', username: 'ci', password: 'pw' }
          : undefined,
    });
    const methods = served.session.headers()['X-Docker-Expose-Session-Grpc-Method'];
    expect(methods).toEqual(
      expect.arrayContaining([
        '/grpc.health.v1.Health/Check',
        '/moby.buildkit.secrets.v1.Secrets/GetSecret',
        '/moby.filesync.v1.Auth/Credentials',
        '/moby.sshforward.v1.SSH/ForwardAgent',
      ]),
    );
    // Only Credentials of Auth: BuildKit then runs the token flow itself.
    expect(methods).not.toContain('/moby.filesync.v1.Auth/FetchToken');

    const health = createClient(Health, over(served.path).target, over(served.path).options);
    expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const secrets = createClient(Secrets, over(served.path).target, over(served.path).options);
    expect(new TextDecoder().decode((await secrets.getSecret({ id: 'tok' })).data)).toBe('value');
    // NOT_FOUND is what BuildKit reads as "no such secret".
    const missing = await secrets.getSecret({ id: 'other' }).catch((err: unknown) => err);
    expect((missing as RpcError).code).toBe('not_found');
    const auth = createClient(Auth, over(served.path).target, over(served.path).options);
    expect(await auth.credentials({ host: 'registry.example:5000' })).toMatchObject({
      username: 'ci',
      secret: 'pw',
    });
    expect(await auth.credentials({ host: 'elsewhere:5000' })).toMatchObject({
      username: '',
      secret: '',
    });
    for (const c of [health, secrets, auth]) c.close();
  });

  it('relays an SSH agent connection both ways, by the id in the metadata', async () => {
    const opened: string[] = [];
    const served = await serve({
      ...noSecrets,
      ssh: {
        ids: ['default', 'gh'],
        async open(id) {
          opened.push(id);
          // An "agent" that answers each chunk with it reversed.
          return new Duplex({
            read() {},
            write(chunk: Buffer, _encoding, done) {
              this.push(Buffer.from(chunk).reverse());
              done();
            },
            final(done) {
              this.push(null);
              done();
            },
          });
        },
      },
    });
    const ssh = createClient(SSH, over(served.path).target, over(served.path).options);
    await ssh.checkAgent({ id: 'gh' });
    const refused = await ssh.checkAgent({ id: 'nope' }).catch((err: unknown) => err);
    expect((refused as RpcError).code).toBe('not_found');

    const call = ssh.forwardAgent({ metadata: { 'buildkit.ssh.id': 'gh' } });
    await call.send({ data: Buffer.from('abc') });
    const answers: string[] = [];
    for await (const message of call) {
      answers.push(Buffer.from(message.data).toString());
      if (answers.length === 1) call.end();
    }
    expect(answers).toEqual(['cba']);
    expect(opened).toEqual(['gh']);
    ssh.close();
  });

  it('ends the step’s stream at once when the forwarded agent goes away mid-request', async () => {
    let agentSide: Duplex | undefined;
    const served = await serve({
      ...noSecrets,
      ssh: {
        ids: ['default'],
        async open() {
          // Takes the request, never answers: then the coordinator cuts it.
          agentSide = new Duplex({
            read() {},
            write(_chunk, _encoding, done) {
              done();
              setTimeout(() => agentSide?.destroy(new Error('the relay was cut')), 50);
            },
          });
          return agentSide;
        },
      },
    });
    const ssh = createClient(SSH, over(served.path).target, over(served.path).options);
    const call = ssh.forwardAgent();
    await call.send({ data: Buffer.from([0, 0, 0, 1, 11]) });
    // BuildKit's side stays open (it waits for the answer): the stream must still end.
    const startedAt = Date.now();
    const outcome = await (async () => {
      for await (const _message of call) {
        // No answer is expected.
      }
      return 'ended';
    })().catch((err: unknown) => err);
    expect(Date.now() - startedAt).toBeLessThan(5_000);
    expect(outcome).toBeInstanceOf(RpcError);
    expect((outcome as RpcError).message).toMatch(/the relay was cut/);
    ssh.close();
  });
});
