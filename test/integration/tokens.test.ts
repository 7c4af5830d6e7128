import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { braid, startTestCoordinator, type TestCoordinator } from '../support/braid-cli.js';

const TOKEN_LINE = /^braid_(api|join)_[a-z2-7]{52}\n$/;

describe('tokens on a coordinator that requires them (--require-auth on 127.0.0.1)', () => {
  let coordinator: TestCoordinator;
  let tokens: (...args: string[]) => ReturnType<typeof braid>;
  let version: (token?: string, env?: Record<string, string>) => ReturnType<typeof braid>;

  async function create(kind: 'api' | 'join', name: string): Promise<string> {
    const made = await tokens('create', '--kind', kind, '--name', name);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(TOKEN_LINE);
    return made.stdout.trim();
  }

  beforeAll(async () => {
    coordinator = await startTestCoordinator('127.0.0.1:0', ['--require-auth']);
    tokens = (...args) => braid(['tokens', ...args, '--data-dir', coordinator.dataDir]);
    version = (token, env) =>
      braid(
        ['version', '--coordinator', coordinator.address, ...(token ? ['--token', token] : [])],
        { env: env ?? {} },
      );
  });
  afterAll(async () => {
    await coordinator?.stop();
  });

  it('refuses a call without a token, in one line naming the problem', async () => {
    const result = await version();
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe(
      'braid: unauthenticated: this coordinator requires an API token: pass --token or set BRAID_TOKEN\n',
    );
    const events = await braid(['events', '--coordinator', coordinator.address]);
    expect(events.code).toBe(1);
    expect(events.stderr).toMatch(
      /^braid: unauthenticated: this coordinator requires an API token/,
    );
  });

  it('prints a new token once, on stdout alone, and takes it from --token or BRAID_TOKEN', async () => {
    const made = await tokens('create', '--kind', 'api', '--name', 'ci');
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(TOKEN_LINE);
    expect(made.stderr).toMatch(
      /^created api token "ci" \(tok_[0-9a-f]{12}\); it is shown only this once\n$/,
    );
    const token = made.stdout.trim();
    expect((await version(token)).code).toBe(0);
    const fromEnv = await version(undefined, { BRAID_TOKEN: token });
    expect(fromEnv.code, fromEnv.stderr).toBe(0);
    expect(fromEnv.stdout).toMatch(/^coordinator {2}/m);
    const agents = await braid(['agents', '--coordinator', coordinator.address, '--token', token]);
    expect(agents.code, agents.stderr).toBe(0);
  });

  it('refuses an unknown token and a malformed one', async () => {
    const unknown = `braid_api_${'a'.repeat(52)}`;
    const result = await version(unknown);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      'braid: unauthenticated: unknown token braid_api_aaaa…: this coordinator did not issue it\n',
    );
    const malformed = await version('hunter2');
    expect(malformed.code).toBe(1);
    expect(malformed.stderr).toBe(
      'braid: unauthenticated: the token sent is not a braid token (expected braid_api_ and 52 letters and digits)\n',
    );
  });

  it('refuses a join token where an API token is needed', async () => {
    const join = await create('join', 'builders');
    const result = await version(join);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      'braid: permission denied: token "builders" is a join token; braid.v1.SystemService needs an API token\n',
    );
  });

  it('lists tokens with a hint, never the token', async () => {
    const token = await create('api', 'lister');
    const text = await tokens('list');
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout.split('\n')[0]).toMatch(
      /^ID\s+NAME\s+KIND\s+TOKEN\s+STATE\s+CREATED\s+LAST USED$/,
    );
    expect(text.stdout).toMatch(
      new RegExp(`^tok_[0-9a-f]{12}\\s+lister\\s+api\\s+${token.slice(0, 14)}…\\s+active\\s`, 'm'),
    );
    expect(text.stdout).not.toContain(token.slice(14));
    const json = await tokens('list', '--output', 'json');
    const rows = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows.find((r) => r.name === 'lister')).toMatchObject({
      kind: 'api',
      state: 'active',
      hint: `${token.slice(0, 14)}…`,
      revokedAt: null,
    });
    expect(JSON.stringify(rows)).not.toContain(token.slice(14));
  });

  it('revokes by name: the next call with the token is refused, saying so', async () => {
    const token = await create('api', 'doomed');
    expect((await version(token)).code).toBe(0);
    const revoked = await tokens('revoke', 'doomed');
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toMatch(/^revoked api token "doomed" \(tok_[0-9a-f]{12}\)\n$/);
    const result = await version(token);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^braid: unauthenticated: token "doomed" \(braid_api_.{4}…\) was revoked on \d{4}-\d\d-\d\dT[\d:.]+Z\n$/,
    );
    const again = await tokens('revoke', 'doomed');
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/was already revoked on /);
    const list = await tokens('list');
    expect(list.stdout).toMatch(/\sdoomed\s+api\s+\S+\s+revoked\s/);
  });

  it('revokes by id', async () => {
    const token = await create('api', 'by-id');
    const json = await tokens('list', '--output', 'json');
    const id = json.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { id: string; name: string })
      .find((r) => r.name === 'by-id')?.id;
    expect(id).toMatch(/^tok_/);
    expect((await tokens('revoke', id ?? '')).code).toBe(0);
    expect((await version(token)).code).toBe(1);
  });

  it('rotates: the new token works, the old one is refused', async () => {
    const old = await create('api', 'rotating');
    const rotated = await tokens('rotate', 'rotating');
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(rotated.stdout).toMatch(TOKEN_LINE);
    const fresh = rotated.stdout.trim();
    expect(fresh).not.toBe(old);
    expect((await version(fresh)).code).toBe(0);
    const refused = await version(old);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^braid: unauthenticated: token "rotating" .* was revoked on /);
  });

  it('names what is wrong with a tokens command', async () => {
    const unknown = await tokens('revoke', 'nobody');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe('braid: no token with id or name "nobody"\n');
    const badName = await tokens('create', '--kind', 'api', '--name', 'no spaces');
    expect(badName.code).toBe(2);
    expect(badName.stderr).toMatch(/^braid: token name "no spaces": expected letters/);
    const taken = await tokens('create', '--kind', 'api', '--name', 'ci');
    expect(taken.code).toBe(1);
    expect(taken.stderr).toMatch(/^braid: a token named "ci" exists \(tok_[0-9a-f]{12}\)/);
    const noKind = await tokens('create');
    expect(noKind.code).toBe(2);
    expect(noKind.stderr).toMatch(/--kind/);
  });
});

describe('braid tokens against a data dir without a coordinator database', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-tokens-cli-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('says so instead of listing nothing', async () => {
    const result = await braid(['tokens', 'list', '--data-dir', join(dir, 'wrong')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `braid: no coordinator database in ${join(dir, 'wrong')} (braid.db is missing): pass the coordinator's --data-dir\n`,
    );
  });

  it('creates a token before the first start, and the coordinator then honours it', async () => {
    const dataDir = join(dir, 'fresh');
    const made = await braid(['tokens', 'create', '--kind', 'api', '--data-dir', dataDir]);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stderr).toMatch(/^note: .*braid\.db did not exist; created it/);
    const coordinator = await startTestCoordinator('127.0.0.1:0', [
      '--require-auth',
      '--data-dir',
      dataDir,
    ]);
    try {
      const ok = await braid([
        'version',
        '--coordinator',
        coordinator.address,
        '--token',
        made.stdout.trim(),
      ]);
      expect(ok.code, ok.stderr).toBe(0);
    } finally {
      await coordinator.stop();
    }
  });
});

describe('tokens on an open loopback coordinator (no --require-auth)', () => {
  let coordinator: TestCoordinator;
  beforeAll(async () => {
    coordinator = await startTestCoordinator();
  });
  afterAll(async () => {
    await coordinator?.stop();
  });

  it('admits calls without a token, but still refuses a bad one', async () => {
    const open = await braid(['version', '--coordinator', coordinator.address]);
    expect(open.code, open.stderr).toBe(0);
    const bad = await braid([
      'version',
      '--coordinator',
      coordinator.address,
      '--token',
      `braid_api_${'b'.repeat(52)}`,
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^braid: unauthenticated: unknown token braid_api_bbbb…/);
  });
});
