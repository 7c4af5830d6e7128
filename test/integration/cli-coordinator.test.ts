import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BRAID_BIN,
  braid,
  cleanEnv,
  startTestCoordinator,
  type TestCoordinator,
} from '../support/braid-cli.js';
import { startProcess } from '../support/process.js';

const VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

describe.each([
  ['TCP on 127.0.0.1', '127.0.0.1:0'],
  ['a unix socket', 'unix:%DIR%/braid.sock'],
])('braid coordinator serving on %s', (_name, listen) => {
  let coordinator: TestCoordinator;
  beforeAll(async () => {
    coordinator = await startTestCoordinator(listen);
  });
  afterAll(async () => {
    await coordinator?.stop();
  });

  it('answers braid version with both versions', async () => {
    const result = await braid([
      'version',
      '--coordinator',
      coordinator.address,
      '--output',
      'json',
    ]);
    expect(result.code, result.stderr).toBe(0);
    const parsed = JSON.parse(result.stdout) as {
      client: { version: string };
      coordinator: { version: string; apiVersions: string[]; address: string; platform: string };
    };
    expect(parsed.client.version).toBe(VERSION);
    expect(parsed.coordinator).toMatchObject({
      version: VERSION,
      apiVersions: ['braid.v1'],
      address: coordinator.address,
    });
    expect(parsed.coordinator.platform).toMatch(/^linux\//);
  });

  it('lists the coordinator-started event through braid events', async () => {
    const result = await braid(['events', '--coordinator', coordinator.address]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(
      new RegExp(`^1 \\S+ info coordinator-started coordinator ${VERSION} listening on `, 'm'),
    );
  });
});

describe('braid coordinator shutdown', () => {
  it('on SIGTERM tells followers it is stopping, ends their streams, and exits 0', async () => {
    const coordinator = await startTestCoordinator();
    const follower = startProcess(
      process.execPath,
      [BRAID_BIN, 'events', '--follow', '--output', 'json', '--coordinator', coordinator.address],
      { env: cleanEnv() },
    );
    try {
      await follower.waitForStdout(/coordinator-started/, 10_000);
      process.kill(coordinator.process.pid, 'SIGTERM');
      const exit = await coordinator.process.exited;
      expect(exit.code).toBe(0);
      const followerExit = await follower.exited;
      expect(followerExit.code, follower.stderr()).toBe(0);
      const kinds = follower
        .stdout()
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { kind: string }).kind);
      expect(kinds).toEqual(['coordinator-started', 'coordinator-stopping']);
      const logs = coordinator.process
        .stderr()
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { msg: string; component: string });
      expect(logs.map((l) => l.msg)).toEqual([
        'coordinator started',
        'draining: no new work; running work may finish',
        'coordinator stopping',
        'coordinator stopped',
      ]);
      expect(new Set(logs.map((l) => l.component))).toEqual(new Set(['coordinator']));
    } finally {
      await follower.stop('SIGKILL');
      await coordinator.stop('SIGKILL');
    }
  });
});

describe('braid with bad input', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-cli-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each([
    [
      ['coordinator', '--listen', 'nowhere'],
      {},
      'braid: invalid config --listen: listen address "nowhere": expected HOST:PORT, [IPv6]:PORT or unix:/path',
    ],
    [
      ['version'],
      { BRAID_COORDINATOR: 'x:y' },
      'braid: invalid config BRAID_COORDINATOR: coordinator address "x:y": expected HOST:PORT, [IPv6]:PORT or unix:/path',
    ],
    [
      ['version', '--timeout-ms', 'soon'],
      {},
      'braid: invalid config --timeout-ms: expected an integer, got "soon"',
    ],
    [
      ['coordinator', '--listen', '0.0.0.0:0'],
      {},
      'braid: listen address 0.0.0.0:0 is not loopback: serve TLS (--tls-cert, --tls-key) or allow plaintext with --insecure',
    ],
    [
      ['events', '--kind', 'agent-exploded'],
      {},
      'braid: unknown event kind "agent-exploded" (known: coordinator-started, coordinator-stopping, agent-connected, agent-disconnected, build-state)',
    ],
    [['frobnicate'], {}, "braid: unknown command 'frobnicate'"],
    [['status'], {}, "braid: missing required argument 'id'"],
    [['manifest', 'create', '--frobnicate'], {}, "braid: unknown option '--frobnicate'"],
  ])('braid %j exits 2 with one line naming the offending value', async (args, env, line) => {
    const result = await braid(args, { env });
    expect(result.code).toBe(2);
    expect(result.stderr.trim().split('\n')[0]).toBe(line);
    expect(result.stdout).toBe('');
  });

  it('names the YAML file and key of a bad config value, exit 2', async () => {
    const file = join(dir, 'coordinator.yaml');
    await writeFile(file, 'shutdownGraceMs: forever\n');
    const result = await braid(['coordinator', '--config', file]);
    expect(result.code).toBe(2);
    expect(result.stderr.trim()).toBe(
      `braid: invalid config ${file}: shutdownGraceMs: expected an integer, got "forever"`,
    );
  });

  it('exits 1 with one line when no coordinator answers', async () => {
    const socket = join(dir, 'nobody.sock');
    const result = await braid([
      'version',
      '--coordinator',
      `unix:${socket}`,
      '--timeout-ms',
      '3000',
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(`braid: cannot reach unix:${socket}: no such socket`);
  });
});
