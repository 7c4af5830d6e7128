/**
 * Agents against a coordinator that requires join tokens and TLS: real
 * agent processes on the local engine (`braid agent` checks it first).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BRAID_BIN, braid, cleanEnv, startTestCoordinator } from '../support/braid-cli.js';
import { requireEngine } from '../support/components.js';
import { startTestAgent, type TestAgent } from '../support/farm.js';
import { startProcess, type Started } from '../support/process.js';

let dir: string;

beforeAll(async () => {
  await requireEngine();
  dir = await mkdtemp(join(tmpdir(), 'braid-agent-trust-'));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function createToken(dataDir: string, kind: 'api' | 'join', name: string): Promise<string> {
  const made = await braid([
    'tokens',
    'create',
    '--kind',
    kind,
    '--name',
    name,
    '--data-dir',
    dataDir,
  ]);
  expect(made.code, made.stderr).toBe(0);
  return made.stdout.trim();
}

/** `braid agent` run to its end: it should be refused and say why. */
function agentRun(
  coordinator: string,
  name: string,
  args: string[],
  env: Record<string, string> = {},
) {
  return braid(
    [
      'agent',
      '--coordinator',
      coordinator,
      '--name',
      name,
      '--build-network',
      'none',
      '--cache-dir',
      join(dir, `cache-${name}`),
      '--log-format',
      'json',
      ...args,
    ],
    { env, timeoutMs: 30_000 },
  );
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop() ?? '';
}

async function agentNames(coordinator: string, extra: string[]): Promise<string[]> {
  const result = await braid([
    'agents',
    '--coordinator',
    coordinator,
    '--output',
    'json',
    ...extra,
  ]);
  expect(result.code, result.stderr).toBe(0);
  return result.stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => (JSON.parse(l) as { name: string }).name);
}

async function eventually(check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`not within ${timeoutMs} ms`);
}

describe('an agent joining a coordinator that requires tokens', () => {
  let coordinator: Awaited<ReturnType<typeof startTestCoordinator>>;
  let api: string;
  let agent: TestAgent | undefined;

  beforeAll(async () => {
    coordinator = await startTestCoordinator('127.0.0.1:0', ['--require-auth']);
    api = await createToken(coordinator.dataDir, 'api', 'cli');
  });
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await coordinator?.stop();
  });

  it('is refused with a wrong join token: exit 1 and one line naming it', async () => {
    const result = await agentRun(coordinator.address, 'intruder', [
      '--join-token',
      `braid_join_${'a'.repeat(52)}`,
    ]);
    expect(result.code).toBe(1);
    expect(lastLine(result.stderr)).toBe(
      'braid: unauthenticated: unknown token braid_join_aaaa…: this coordinator did not issue it',
    );
  });

  it('is refused without a join token, and with an API token', async () => {
    const none = await agentRun(coordinator.address, 'anonymous', []);
    expect(none.code).toBe(1);
    expect(lastLine(none.stderr)).toBe(
      'braid: unauthenticated: this coordinator requires a join token: pass --join-token or set BRAID_JOIN_TOKEN',
    );
    const wrongKind = await agentRun(coordinator.address, 'confused', [], {
      BRAID_JOIN_TOKEN: api,
    });
    expect(wrongKind.code).toBe(1);
    expect(lastLine(wrongKind.stderr)).toBe(
      'braid: permission denied: token "cli" is an API token; braid.v1.AgentService needs a join token',
    );
    expect(await agentNames(coordinator.address, ['--token', api])).toEqual([]);
  });

  it('joins with its join token, and leaves with a clear line when the token is revoked', async () => {
    const joinToken = await createToken(coordinator.dataDir, 'join', 'builders');
    agent = await startTestAgent(coordinator.address, 'member', ['--join-token', joinToken]);
    await eventually(async () =>
      (await agentNames(coordinator.address, ['--token', api])).includes('member'),
    );
    const revoked = await braid([
      'tokens',
      'revoke',
      'builders',
      '--data-dir',
      coordinator.dataDir,
    ]);
    expect(revoked.code, revoked.stderr).toBe(0);
    const exit = await agent.process.exited;
    expect(exit.code).toBe(1);
    expect(lastLine(agent.process.stderr())).toBe(
      'braid: unauthenticated: join token "builders" was revoked',
    );
    await eventually(
      async () => !(await agentNames(coordinator.address, ['--token', api])).includes('member'),
    );
  });
});

describe('an agent joining over mTLS', () => {
  let certs: string;
  let coordinator: Awaited<ReturnType<typeof startTestCoordinator>>;
  let agent: TestAgent | undefined;
  const file = (name: string) => join(certs, name);

  beforeAll(async () => {
    certs = join(dir, 'certs');
    const made = await braid(['certs', 'init', '--dir', certs]);
    expect(made.code, made.stderr).toBe(0);
    coordinator = await startTestCoordinator('127.0.0.1:0', [
      '--tls-cert',
      file('server.pem'),
      '--tls-key',
      file('server-key.pem'),
      '--tls-ca',
      file('ca.pem'),
      '--require-auth',
    ]);
  });
  afterAll(async () => {
    await agent?.stop();
    await coordinator?.stop();
  });

  it('joins with the CA, its client certificate and a join token', async () => {
    const joinToken = await createToken(coordinator.dataDir, 'join', 'tls-builders');
    const api = await createToken(coordinator.dataDir, 'api', 'tls-cli');
    const tls = [
      '--tls-ca',
      file('ca.pem'),
      '--tls-cert',
      file('client.pem'),
      '--tls-key',
      file('client-key.pem'),
    ];
    agent = await startTestAgent(coordinator.address, 'secure', [
      ...tls,
      '--join-token',
      joinToken,
    ]);
    await eventually(async () =>
      (await agentNames(coordinator.address, [...tls, '--token', api])).includes('secure'),
    );
    const joined = agent.process
      .stderr()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { msg: string; transport?: string });
    expect(joined.find((l) => l.msg === 'agent starting')?.transport).toBe('tls');
  });
});

describe('braid serve with TLS, mTLS and tokens required', () => {
  let serve: Started | undefined;

  afterAll(async () => {
    await serve?.stop('SIGTERM', 15_000);
  });

  it('lets its own agent in through its private socket, and remote callers only with both', async () => {
    const certs = join(dir, 'serve-certs');
    expect((await braid(['certs', 'init', '--dir', certs])).code).toBe(0);
    const dataDir = join(dir, 'serve-data');
    serve = startProcess(
      process.execPath,
      [
        BRAID_BIN,
        'serve',
        '--listen',
        '127.0.0.1:0',
        '--data-dir',
        dataDir,
        '--tls-cert',
        join(certs, 'server.pem'),
        '--tls-key',
        join(certs, 'server-key.pem'),
        '--tls-ca',
        join(certs, 'ca.pem'),
        '--require-auth',
        '--build-network',
        'none',
        '--cache-dir',
        join(dir, 'serve-cache'),
        '--log-format',
        'json',
      ],
      { env: cleanEnv() },
    );
    const address = (await serve.waitForStdout(/^listening (\S+)$/m, 30_000))[1] ?? '';
    const api = await createToken(dataDir, 'api', 'serve-cli');
    const tls = [
      '--tls-ca',
      join(certs, 'ca.pem'),
      '--tls-cert',
      join(certs, 'client.pem'),
      '--tls-key',
      join(certs, 'client-key.pem'),
    ];
    await eventually(async () =>
      (await agentNames(address, [...tls, '--token', api])).includes('local'),
    );
    const noToken = await braid(['agents', '--coordinator', address, ...tls]);
    expect(noToken.code).toBe(1);
    expect(noToken.stderr).toMatch(/^braid: unauthenticated: /);
  });
});
