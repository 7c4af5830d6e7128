import { Metadata } from '@grpc/grpc-js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Authenticator, authRequired } from '../../src/coordinator/auth.js';
import { newToken } from '../../src/coordinator/token-format.js';
import { TokenStore } from '../../src/coordinator/token-store.js';
import { BraidError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { parseGrpcAddress } from '../../src/rpc/address.js';

const log = createLogger({ level: 'silent', format: 'json', component: 'test' });
const BUILD = '/braid.v1.BuildService/SubmitBuild';
const SYSTEM = '/braid.v1.SystemService/Version';
const AGENT = '/braid.v1.AgentService/Connect';

function call(method: string, authorization?: string | string[]) {
  const metadata = new Metadata();
  for (const value of [authorization ?? []].flat()) metadata.add('authorization', value);
  return { method, peer: 'ipv4:127.0.0.1:5', metadata };
}

function refusal(run: () => unknown): { code: string; message: string } {
  try {
    run();
  } catch (err) {
    if (err instanceof BraidError) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('the call was admitted');
}

describe('who may call what', () => {
  let dir: string;
  let tokens: TokenStore;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'braid-auth-'));
    tokens = new TokenStore(join(dir, 'braid.db'));
  });
  afterEach(async () => {
    tokens.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('requires tokens off the machine, and on loopback only when asked to', () => {
    expect(authRequired(parseGrpcAddress('0.0.0.0:7465'), false)).toBe(true);
    expect(authRequired(parseGrpcAddress('build.example:7465'), false)).toBe(true);
    expect(authRequired(parseGrpcAddress('127.0.0.1:7465'), false)).toBe(false);
    expect(authRequired(parseGrpcAddress('[::1]:7465'), false)).toBe(false);
    expect(authRequired(parseGrpcAddress('unix:/run/braid.sock'), false)).toBe(false);
    expect(authRequired(parseGrpcAddress('127.0.0.1:7465'), true)).toBe(true);
  });

  it('admits API tokens to BuildService and SystemService, join tokens to AgentService', () => {
    const auth = new Authenticator({ required: true, tokens, log });
    const api = tokens.create('api', 'ci');
    const join = tokens.create('join', 'farm');
    for (const method of [BUILD, SYSTEM]) {
      expect(auth.guard(call(method, `Bearer ${api.token}`))).toEqual({
        id: api.record.id,
        name: 'ci',
        kind: 'api',
      });
    }
    expect(auth.guard(call(AGENT, `bearer ${join.token}`))?.name).toBe('farm');
    expect(tokens.get(api.record.id)?.lastUsedAt).toBeDefined();
  });

  it('refuses a missing, malformed, unknown, revoked or wrong-kind token, naming the problem', () => {
    const auth = new Authenticator({ required: true, tokens, log });
    const api = tokens.create('api', 'ci');
    const join = tokens.create('join', 'farm');
    expect(refusal(() => auth.guard(call(BUILD)))).toEqual({
      code: 'unauthenticated',
      message: 'this coordinator requires an API token: pass --token or set BRAID_TOKEN',
    });
    expect(refusal(() => auth.guard(call(AGENT)))).toEqual({
      code: 'unauthenticated',
      message: 'this coordinator requires a join token: pass --join-token or set BRAID_JOIN_TOKEN',
    });
    expect(refusal(() => auth.guard(call(BUILD, api.token))).message).toMatch(
      /not one "Bearer <token>" value/,
    );
    expect(
      refusal(() => auth.guard(call(BUILD, [`Bearer ${api.token}`, `Bearer ${api.token}`]))).code,
    ).toBe('unauthenticated');
    expect(refusal(() => auth.guard(call(BUILD, 'Bearer hunter2'))).message).toMatch(
      /not a braid token/,
    );
    const stranger = newToken('api');
    expect(refusal(() => auth.guard(call(BUILD, `Bearer ${stranger}`)))).toEqual({
      code: 'unauthenticated',
      message: `unknown token ${stranger.slice(0, 14)}…: this coordinator did not issue it`,
    });
    expect(refusal(() => auth.guard(call(BUILD, `Bearer ${join.token}`)))).toEqual({
      code: 'permission_denied',
      message: 'token "farm" is a join token; braid.v1.BuildService needs an API token',
    });
    expect(refusal(() => auth.guard(call(AGENT, `Bearer ${api.token}`))).code).toBe(
      'permission_denied',
    );
    tokens.revoke('ci');
    expect(refusal(() => auth.guard(call(SYSTEM, `Bearer ${api.token}`))).message).toMatch(
      /^token "ci" \(braid_api_.{4}…\) was revoked on \d{4}-/,
    );
    expect(refusal(() => auth.guard(call('/grpc.health.v1.Health/Check'))).code).toBe(
      'permission_denied',
    );
  });

  it('lets anonymous calls in when tokens are optional, but still checks a token that is sent', () => {
    const auth = new Authenticator({ required: false, tokens, log });
    expect(auth.guard(call(BUILD))).toBeUndefined();
    expect(auth.guard(call(AGENT))).toBeUndefined();
    expect(refusal(() => auth.guard(call(BUILD, `Bearer ${newToken('api')}`))).code).toBe(
      'unauthenticated',
    );
  });

  it('knows ephemeral tokens and when a token stops working', () => {
    const local = newToken('join');
    const auth = new Authenticator({
      required: true,
      tokens,
      log,
      ephemeral: [
        { token: local, identity: { id: 'local-agent', name: 'local-agent', kind: 'join' } },
      ],
    });
    const identity = auth.guard(call(AGENT, `Bearer ${local}`));
    expect(identity?.id).toBe('local-agent');
    expect(auth.isActive(identity)).toBe(true);
    expect(refusal(() => auth.guard(call(BUILD, `Bearer ${local}`))).code).toBe(
      'permission_denied',
    );
    const join = tokens.create('join', 'farm');
    const joined = auth.guard(call(AGENT, `Bearer ${join.token}`));
    expect(auth.isActive(joined)).toBe(true);
    tokens.revoke('farm');
    expect(auth.isActive(joined)).toBe(false);
    expect(auth.isActive(undefined)).toBe(true);
  });
});
