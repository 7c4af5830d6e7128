/**
 * May braid push into a repository? Asked before anything is built: the
 * registry's auth handshake for `pull,push`, then — where the handshake alone
 * proves nothing (no auth, Basic, a token that is not a JWT or lacks the
 * push action) — a blob upload opened and cancelled. The answer says why in
 * words a user acts on.
 */
import { errorLine } from '../errors.js';
import { repositoryScope, TokenServiceError, type AuthScheme } from './auth.js';
import { RegistryError } from './errors.js';
import type { RegistryClient, Repository } from './registry.js';

export type PushAccess =
  | { kind: 'allowed'; proof: 'token' | 'upload' }
  /** The registry could not be asked: DNS, connection, TLS, deadline, its own failure. */
  | { kind: 'unreachable'; reason: string }
  /** The registry answered, and not with push rights. */
  | { kind: 'denied'; reason: string }
  /** The registry called the repository name itself wrong. */
  | { kind: 'invalid'; reason: string };

/** The registry client calls the check needs (tests play them). */
export type PushProbe = Pick<RegistryClient, 'apiHost' | 'baseUrl' | 'handshake' | 'probeUpload'>;

/** What a token's `access` claims grant on a repository: push, not push, or unknown (not a JWT). */
export type TokenGrant = 'push' | 'no-push' | 'unknown';

interface AccessClaim {
  type?: unknown;
  name?: unknown;
  actions?: unknown;
}

/**
 * Reads the `access` claims of a registry token (docker/distribution's token
 * format: a JWT whose `access` lists type, name and actions). The signature
 * is the registry's business; the claims only spare a request.
 */
export function tokenGrant(token: string, repository: string): TokenGrant {
  const parts = token.split('.');
  if (parts.length !== 3 || !parts[1]) return 'unknown';
  let claims: { access?: unknown };
  try {
    claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as typeof claims;
  } catch {
    return 'unknown';
  }
  if (!claims || typeof claims !== 'object' || !Array.isArray(claims.access)) return 'unknown';
  const granted = (claims.access as AccessClaim[]).some(
    (claim) =>
      claim?.type === 'repository' &&
      claim.name === repository &&
      Array.isArray(claim.actions) &&
      claim.actions.some((a) => a === 'push' || a === '*'),
  );
  return granted ? 'push' : 'no-push';
}

/** `HOST:PORT` the registry's API is reached at (the scheme's default port when none is given). */
function endpointOf(registry: PushProbe, domain: string): { hostname: string; hostPort: string } {
  const url = new URL(registry.baseUrl(domain));
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  return { hostname: url.hostname, hostPort: `${url.hostname}:${port}` };
}

/** The registry's own words of a RegistryError: its message without the operation prefix. */
export function registryWords(err: RegistryError): string {
  if (err instanceof TokenServiceError) return `token endpoint ${err.realm} ${err.words}`;
  const answer = [err.status !== undefined ? `HTTP ${err.status}` : undefined, err.registryCode]
    .filter(Boolean)
    .join(' ');
  const prefix = `${err.operation} ${err.reference}: ${answer ? `${answer}: ` : ''}`;
  return err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
}

const TLS_CODES = /^(ERR_SSL_|ERR_TLS_|EPROTO$|CERT_|DEPTH_ZERO_|SELF_SIGNED_|UNABLE_TO_)/;

/** The network error under a failed request (node:http puts the code on it, fetch on its cause). */
function networkCode(err: unknown): string | undefined {
  for (let e = err, depth = 0; e && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[A-Z_]+$/.test(code) && !(e instanceof RegistryError))
      return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** A failed handshake or probe, in words: why braid cannot push. */
export function refusalOf(
  err: unknown,
  endpoint: { hostname: string; hostPort: string },
): Exclude<PushAccess, { kind: 'allowed' }> {
  if (!(err instanceof RegistryError)) {
    return { kind: 'unreachable', reason: `${endpoint.hostPort}: ${errorLine(err)}` };
  }
  const words = registryWords(err);
  const status = err.status;
  const answer = `${status ?? ''}${err.registryCode ? ` ${err.registryCode}` : ''}`.trim();
  if (err instanceof TokenServiceError) {
    return status === 401 || status === 403
      ? { kind: 'denied', reason: `the registry refused push (${status}: ${words})` }
      : { kind: 'unreachable', reason: `the registry's ${words}` };
  }
  if (status === undefined) {
    if (err.code === 'unauthenticated') {
      // The registry wants credentials braid does not have (auth.ts says which).
      return { kind: 'denied', reason: `the registry refused push (${words})` };
    }
    const code = networkCode(err.cause);
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME') {
      return {
        kind: 'unreachable',
        reason: `${endpoint.hostname} could not be resolved (${code})`,
      };
    }
    if (code === 'ECONNREFUSED') {
      return {
        kind: 'unreachable',
        reason: `nothing listens on ${endpoint.hostPort} (connection refused)`,
      };
    }
    if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') {
      return { kind: 'unreachable', reason: `${endpoint.hostPort} is unreachable (${code})` };
    }
    if (code === 'ECONNRESET' || code === 'EPIPE') {
      return {
        kind: 'unreachable',
        reason: `${endpoint.hostPort} closed the connection (${code})`,
      };
    }
    if (code && TLS_CODES.test(code)) {
      return {
        kind: 'unreachable',
        reason: `TLS with ${endpoint.hostPort} failed (${code}); a registry served over plain HTTP must be named in insecureRegistry`,
      };
    }
    if (words.startsWith('no answer within')) {
      return {
        kind: 'unreachable',
        reason: `no answer from ${endpoint.hostPort}${words.slice('no answer'.length)}`,
      };
    }
    return { kind: 'unreachable', reason: `${endpoint.hostPort}: ${words}` };
  }
  if (status === 401 || status === 403) {
    return { kind: 'denied', reason: `the registry refused push (${answer}: ${words})` };
  }
  if (status === 404 && err.operation === 'GET /v2/') {
    return {
      kind: 'denied',
      reason: `${endpoint.hostPort} does not serve the registry API (GET /v2/ answered 404)`,
    };
  }
  if (status === 405) {
    return { kind: 'denied', reason: `the registry takes no pushes (${answer}: ${words})` };
  }
  if (status === 400 && err.registryCode === 'NAME_INVALID') {
    return { kind: 'invalid', reason: `the registry refused the name (${answer}: ${words})` };
  }
  if (status === 429 || status >= 500) {
    return { kind: 'unreachable', reason: `the registry failed (${answer}: ${words})` };
  }
  return { kind: 'denied', reason: `the registry refused push (${answer}: ${words})` };
}

/** Why a refusal may be the credentials': who the token was issued to, or that none were sent. */
function credentialNote(
  scheme: AuthScheme,
  grant: TokenGrant,
  repository: string,
  domain: string,
): string | undefined {
  if (scheme.kind === 'bearer' && grant === 'no-push') {
    return scheme.account
      ? `the token issued to ${scheme.account} grants no push on ${repository}`
      : `the token issued without credentials (none for ${domain} in the docker config) grants no push on ${repository}`;
  }
  if (scheme.kind === 'anonymous')
    return `braid sent no credentials (none for ${domain} in the docker config)`;
  return undefined;
}

export interface PushCheckOptions {
  /** The whole check's deadline: handshake, token and probe together. */
  deadlineMs: number;
}

/**
 * Whether braid may push into `repo`, answered within `deadlineMs`. Never
 * throws: every failure is a PushAccess saying why.
 */
export async function checkPushAccess(
  registry: PushProbe,
  repo: Repository,
  options: PushCheckOptions,
): Promise<PushAccess> {
  const endpoint = endpointOf(registry, repo.domain);
  const scopes = [repositoryScope(repo.repository, ['pull', 'push'])];
  const check = async (): Promise<PushAccess> => {
    let scheme: AuthScheme;
    try {
      scheme = await registry.handshake(repo, scopes);
    } catch (err) {
      return refusalOf(err, endpoint);
    }
    const grant = scheme.kind === 'bearer' ? tokenGrant(scheme.token, repo.repository) : 'unknown';
    if (grant === 'push') return { kind: 'allowed', proof: 'token' };
    try {
      // The claims lack push: the upload confirms it in the registry's words (a claim may be a glob).
      await registry.probeUpload(repo);
      return { kind: 'allowed', proof: 'upload' };
    } catch (err) {
      const refusal = refusalOf(err, endpoint);
      const byAuth = err instanceof RegistryError && (err.status === 401 || err.status === 403);
      const note = byAuth ? credentialNote(scheme, grant, repo.repository, repo.domain) : undefined;
      return note ? { kind: 'denied', reason: `${refusal.reason}; ${note}` } : refusal;
    }
  };
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<PushAccess>((resolve) => {
    timer = setTimeout(
      () =>
        resolve({
          kind: 'unreachable',
          reason: `no answer from ${endpoint.hostPort} within ${options.deadlineMs} ms`,
        }),
      options.deadlineMs,
    );
  });
  try {
    return await Promise.race([check(), deadline]);
  } finally {
    clearTimeout(timer);
  }
}
