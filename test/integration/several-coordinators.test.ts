/**
 * Several coordinators, one leading: the CLI and an agent's session given
 * `standby,leader` find the leader over real gRPC on 127.0.0.1. The far
 * side is faked: a standby that refuses every call naming the leader (the
 * protocol of src/rpc/leader-hint.ts), and a leader that serves.
 */
import { createServer } from 'node:net';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { credentials } from '@grpc/grpc-js';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { AgentService, type ConnectRequest } from '../../src/gen/braid/v1/agent_pb.js';
import { BuildService, BuildState } from '../../src/gen/braid/v1/build_pb.js';
import { BraidError } from '../../src/errors.js';
import { CoordinatorClients } from '../../src/agent/coordinator-clients.js';
import { AgentSessionLoop } from '../../src/agent/session.js';
import { coordinatorClient } from '../../src/cli/client.js';
import { loadConfig } from '../../src/config/loader.js';
import { clientSettings } from '../../src/config/settings.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { formatGrpcAddress } from '../../src/rpc/address.js';
import { StandbyError } from '../../src/rpc/leader-hint.js';
import { addService, type ImplOf } from '../../src/rpc/service.js';
import { startServer, type RunningServer } from '../../src/rpc/server.js';
import { toProtoPlatform } from '../../src/rpc/platform.js';
import { braid } from '../support/braid-cli.js';

const BUILD_ID = 'b-several-1';

/** Every method of `service` throws what `refuse` makes, except those in `served`. */
function impl<S extends typeof BuildService | typeof AgentService>(
  _service: S,
  served: Partial<ImplOf<S>>,
  refuse: () => Error,
): ImplOf<S> {
  return new Proxy(served as object, {
    get(target, key) {
      const own = Reflect.get(target, key) as unknown;
      if (own !== undefined || typeof key !== 'string') return own;
      // A generator for streams and a plain function for unary calls both throw on first use.
      return () => {
        throw refuse();
      };
    },
  }) as ImplOf<S>;
}

/** A standby: refuses every call of both services, naming `leader` (or none). */
async function startStandby(leader: string | undefined): Promise<RunningServer> {
  return startServer({
    address: { kind: 'tcp', host: '127.0.0.1', port: 0 },
    insecure: false,
    register: (server) => {
      addService(
        server,
        BuildService,
        impl(BuildService, {}, () => new StandbyError(leader)),
      );
      addService(
        server,
        AgentService,
        impl(AgentService, {}, () => new StandbyError(leader)),
      );
    },
  });
}

/** The leader: answers GetBuild and WatchBuild, and welcomes agents, recording each hello. */
async function startLeader(hellos: ConnectRequest[]): Promise<RunningServer> {
  const unimplemented = () => new BraidError('unimplemented', 'not in this fake');
  const build = {
    id: BUILD_ID,
    state: BuildState.SUCCEEDED,
    createdAt: timestampFromDate(new Date('2026-01-01T00:00:00Z')),
    finishedAt: timestampFromDate(new Date('2026-01-01T00:01:00Z')),
    spec: {
      platforms: [toProtoPlatform(parsePlatform('linux/amd64'))],
      tags: ['registry.example/app:1'],
    },
    index: { digest: `sha256:${'c'.repeat(64)}` },
  };
  return startServer({
    address: { kind: 'tcp', host: '127.0.0.1', port: 0 },
    insecure: false,
    register: (server) => {
      addService(
        server,
        BuildService,
        impl(
          BuildService,
          {
            getBuild: () => ({ build }),
            async *watchBuild(request) {
              for (let n = request.afterSequence + 1n; n <= 3n; n++) {
                yield {
                  event: {
                    sequence: n,
                    body: { case: 'log' as const, value: { text: `line ${n} from the leader` } },
                  },
                };
              }
            },
          },
          unimplemented,
        ),
      );
      addService(
        server,
        AgentService,
        impl(
          AgentService,
          {
            async *connect(requests, ctx) {
              for await (const request of requests) {
                if (request.body.case === 'hello') {
                  hellos.push(request);
                  yield {
                    body: {
                      case: 'welcome',
                      value: { coordinatorVersion: 'fake-leader', heartbeatIntervalMs: 60_000 },
                    },
                  };
                }
                if (ctx.signal.aborted) return;
              }
            },
          },
          unimplemented,
        ),
      );
    },
  });
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('several coordinators, one leading', () => {
  const hellos: ConnectRequest[] = [];
  let leader: RunningServer;
  let standby: RunningServer;
  let lostStandby: RunningServer;
  let leaderAddress: string;
  let standbyAddress: string;
  let lostStandbyAddress: string;
  let deadAddress: string;

  beforeAll(async () => {
    leader = await startLeader(hellos);
    leaderAddress = formatGrpcAddress(leader.address);
    standby = await startStandby(leaderAddress);
    standbyAddress = formatGrpcAddress(standby.address);
    lostStandby = await startStandby(undefined);
    lostStandbyAddress = formatGrpcAddress(lostStandby.address);
    deadAddress = `127.0.0.1:${await closedPort()}`;
  });

  afterAll(async () => {
    await Promise.all([leader?.stop(0), standby?.stop(0), lostStandby?.stop(0)]);
  });

  describe('braid status', () => {
    it('reaches the leader a standby names', async () => {
      const result = await braid([
        'status',
        BUILD_ID,
        '--coordinator',
        `${standbyAddress},${leaderAddress}`,
        '--output',
        'json',
      ]);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(JSON.parse(result.stdout)).toMatchObject({ id: BUILD_ID });
    });

    it('follows the braid-leader trailer to a leader the list does not name', async () => {
      const result = await braid([
        'status',
        BUILD_ID,
        '--coordinator',
        `${standbyAddress},${deadAddress}`,
        '--output',
        'json',
      ]);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(JSON.parse(result.stdout)).toMatchObject({ id: BUILD_ID });
    });

    it('with one address, as before, reports what that coordinator said', async () => {
      const result = await braid(['status', BUILD_ID, '--coordinator', standbyAddress]);
      expect(result.code).toBe(1);
      const lines = result.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(`standby coordinator: the leader is ${leaderAddress}`);
    });

    it('skips a first address that cannot be reached (BRAID_COORDINATOR)', async () => {
      const result = await braid(['status', BUILD_ID, '--output', 'json'], {
        env: { BRAID_COORDINATOR: `${deadAddress},${leaderAddress}` },
      });
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(JSON.parse(result.stdout)).toMatchObject({ id: BUILD_ID });
    });

    it('names every address it tried, in one line, when none can serve', async () => {
      const result = await braid([
        'status',
        BUILD_ID,
        '--coordinator',
        `${deadAddress},${lostStandbyAddress}`,
      ]);
      expect(result.code).toBe(1);
      const lines = result.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toBe(
        `braid: no coordinator could serve the call: ${deadAddress} (connection refused), ${lostStandbyAddress} (standby coordinator: no leader elected yet)`,
      );
      expect(lines[0]).toContain(`${deadAddress} (connection refused)`);
      expect(lines[0]).toContain(
        `${lostStandbyAddress} (standby coordinator: no leader elected yet)`,
      );
    });
  });

  describe("the CLI's client", () => {
    it('resumes a response stream on the leader when the first address is a standby', async () => {
      const config = loadConfig(clientSettings(), {
        flags: { coordinator: `${standbyAddress},${leaderAddress}` },
        env: {},
      });
      const client = coordinatorClient(BuildService, config);
      try {
        const lines: string[] = [];
        for await (const { event } of client.watchBuild({ buildId: BUILD_ID, afterSequence: 1n })) {
          if (event?.body.case === 'log') lines.push(event.body.value.text);
        }
        expect(lines).toEqual(['line 2 from the leader', 'line 3 from the leader']);
        // The calls after it go to the leader first.
        expect(client.coordinator()).toBe(leaderAddress);
      } finally {
        client.close();
      }
    });
  });

  it('sends the next call of a broken stream to the leader the old one named, which resumes it', async () => {
    // A leader that steps down after its first event, naming the new one.
    const stepping = await startServer({
      address: { kind: 'tcp', host: '127.0.0.1', port: 0 },
      insecure: false,
      register: (server) =>
        addService(
          server,
          BuildService,
          impl(
            BuildService,
            {
              async *watchBuild() {
                yield {
                  event: {
                    sequence: 1n,
                    body: { case: 'log' as const, value: { text: 'line 1' } },
                  },
                };
                throw new StandbyError(leaderAddress);
              },
            },
            () => new StandbyError(leaderAddress),
          ),
        ),
    });
    const steppingAddress = formatGrpcAddress(stepping.address);
    const config = loadConfig(clientSettings(), {
      flags: { coordinator: `${steppingAddress},${deadAddress}` },
      env: {},
    });
    const client = coordinatorClient(BuildService, config);
    try {
      const lines: string[] = [];
      let after = 0n;
      // As `braid build` does: a dropped stream resumes after the last event seen.
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          for await (const { event } of client.watchBuild({
            buildId: BUILD_ID,
            afterSequence: after,
          })) {
            if (event?.body.case === 'log') lines.push(event.body.value.text);
            after = event?.sequence ?? after;
          }
          break;
        } catch (err) {
          expect((err as Error).message).toBe(
            `standby coordinator: the leader is ${leaderAddress}`,
          );
          expect(client.coordinator()).toBe(leaderAddress);
        }
      }
      expect(lines).toEqual(['line 1', 'line 2 from the leader', 'line 3 from the leader']);
    } finally {
      client.close();
      await stepping.stop(0);
    }
  });

  describe("an agent's session", () => {
    let session: AgentSessionLoop | undefined;
    let clients: CoordinatorClients | undefined;
    let done: Promise<void> | undefined;

    afterEach(async () => {
      session?.stop();
      await done;
      clients?.close();
      session = undefined;
      clients = undefined;
      done = undefined;
    });

    async function join(coordinators: string[]): Promise<AgentSessionLoop> {
      const log = pino({ level: 'silent' });
      clients = new CoordinatorClients({
        coordinators,
        transportTo: () => ({ credentials: credentials.createInsecure(), secure: false }),
        log,
      });
      session = new AgentSessionLoop({
        name: `agent-${hellos.length}`,
        capacity: 1,
        labels: {},
        native: parsePlatform('linux/amd64'),
        emulated: [],
        engineVersion: 'test',
        ...clients.sessionOptions(),
        log,
        runJob: () => Promise.reject(new Error('no job expected')),
        backoff: { baseMs: 50, maxMs: 200 },
      });
      done = session.run(new AbortController().signal);
      const deadline = Date.now() + 10_000;
      while (session.state !== 'joined' && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 20));
      }
      return session;
    }

    it('given standby,leader, ends up connected to the leader, which gets its hello', async () => {
      const before = hellos.length;
      const joined = await join([standbyAddress, leaderAddress]);
      expect(joined.state).toBe('joined');
      expect(joined.coordinator).toBe(leaderAddress);
      expect(hellos.slice(before).map((h) => h.body.case === 'hello' && h.body.value.name)).toEqual(
        ['agent-0'],
      );
    });

    it("follows the standby's braid-leader trailer on the Connect stream, listed or not", async () => {
      const before = hellos.length;
      const joined = await join([standbyAddress, deadAddress]);
      expect(joined.state).toBe('joined');
      expect(joined.coordinator).toBe(leaderAddress);
      expect(hellos.length).toBe(before + 1);
    });

    it('skips an unreachable first address', async () => {
      const before = hellos.length;
      const joined = await join([deadAddress, leaderAddress]);
      expect(joined.state).toBe('joined');
      expect(joined.coordinator).toBe(leaderAddress);
      expect(hellos.length).toBe(before + 1);
    });
  });
});
