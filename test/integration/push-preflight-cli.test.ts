/**
 * The push check through the real `braid` binary against a real coordinator
 * process: a tag whose registry takes no push is refused before anything is
 * stored or assigned; a tag in a loopback docker-registry passes. The agent
 * is faked at the protocol level (a gRPC session that says hello), so what
 * reaches it is what is checked.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AgentService, type ConnectResponse } from '../../src/gen/braid/v1/agent_pb.js';
import { createClient, type ServiceClient } from '../../src/rpc/client.js';
import { braid, startTestCoordinator, type TestCoordinator } from '../support/braid-cli.js';
import { freePort, startRegistry, type TestRegistry } from '../support/registry.js';

type AgentClient = ServiceClient<(typeof AgentService)['method']>;

describe('braid build with a tag the coordinator cannot push to', () => {
  let coordinator: TestCoordinator;
  let registry: TestRegistry;
  let agent: AgentClient;
  let session: ReturnType<AgentClient['connect']>;
  const received: ConnectResponse[] = [];
  let dir: string;

  beforeAll(async () => {
    registry = await startRegistry();
    coordinator = await startTestCoordinator('127.0.0.1:0', [], {
      BRAID_PUSH_CHECK_TIMEOUT_MS: '3000',
    });
    dir = await mkdtemp(join(tmpdir(), 'braid-pushcheck-cli-'));
    await writeFile(join(dir, 'Dockerfile'), 'FROM scratch\n');
    agent = createClient(AgentService, coordinator.address, {
      credentials: credentials.createInsecure(),
    });
    session = agent.connect();
    const welcomed = new Promise<void>((resolve) => {
      void (async () => {
        try {
          for await (const message of session) {
            received.push(message);
            if (message.body.case === 'welcome') resolve();
          }
        } catch {
          // The session ends when the test cancels it.
        }
      })();
    });
    await session.send({
      body: {
        case: 'hello',
        value: {
          name: 'amd',
          version: 'test',
          nativePlatform: { os: 'linux', architecture: 'amd64' },
          capacity: 1,
        },
      },
    });
    await welcomed;
  });
  afterAll(async () => {
    session?.cancel();
    agent?.close();
    await coordinator?.stop();
    await registry?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const build = (tag: string, extra: string[] = []) =>
    braid([
      'build',
      dir,
      '-t',
      tag,
      '--platform',
      'linux/amd64',
      '--progress',
      'plain',
      '--coordinator',
      coordinator.address,
      ...extra,
    ]);

  it('fails within seconds with one line naming the tag and why, exit 1, and records nothing', async () => {
    const port = await freePort();
    const started = Date.now();
    const result = await build(`127.0.0.1:${port}/x:1`);
    const elapsedMs = Date.now() - started;
    expect(result.code, result.stderr).toBe(1);
    const lines = result.stderr.trim().split('\n');
    expect(lines.pop()).toBe(
      `braid: cannot push to 127.0.0.1:${port}/x: nothing listens on 127.0.0.1:${port} (connection refused)`,
    );
    // Only the context line comes before it.
    expect(lines.every((l) => l.startsWith('context '))).toBe(true);
    expect(elapsedMs).toBeLessThan(5000);

    const builds = await braid([
      'builds',
      '--coordinator',
      coordinator.address,
      '--output',
      'json',
    ]);
    expect(builds.code, builds.stderr).toBe(0);
    expect(builds.stdout.trim()).toBe('');
    expect(received.filter((m) => m.body.case === 'assign')).toEqual([]);
  });

  it('refuses a registry under a name that does not resolve, without looking it up', async () => {
    const result = await build('registry.invalid/team/x:1');
    expect(result.code).toBe(1);
    expect(result.stderr.trim().split('\n').pop()).toBe(
      'braid: cannot push to registry.invalid/team/x: registry.invalid could not be resolved (ENOTFOUND)',
    );
  });

  it('accepts a build whose registry takes the push, and assigns it', async () => {
    const tag = `${registry.host}/team/ok:1`;
    const result = await build(tag, ['--detach']);
    expect(result.code, result.stderr).toBe(0);
    const buildId = result.stdout.trim();
    expect(buildId).toMatch(/^b[0-9a-z]+$/);
    const deadline = Date.now() + 10_000;
    while (!received.some((m) => m.body.case === 'assign') && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    const assign = received.find((m) => m.body.case === 'assign');
    expect(assign?.body.case === 'assign' && assign.body.value).toMatchObject({
      buildId,
      pushRepository: `${registry.host}/team/ok`,
    });
    const cancelled = await braid(['cancel', buildId, '--coordinator', coordinator.address]);
    expect(cancelled.code, cancelled.stderr).toBe(0);
  });
});
