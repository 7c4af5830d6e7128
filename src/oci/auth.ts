/**
 * Registry authentication: Basic, and the Bearer token flow driven by
 * `WWW-Authenticate` challenges (realm, service, scope), with tokens cached
 * per host and scope set until they expire.
 */
import { BraidError } from '../errors.js';
import type { CredentialSource, Credentials } from './credentials.js';
import { RegistryError } from './errors.js';
import type { HttpResponse, HttpTransport } from './http-transport.js';

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parse a `WWW-Authenticate` header (one or more challenges, RFC 7235). */
export function parseChallenges(header: string): Challenge[] {
  const challenges: Challenge[] = [];
  let i = 0;
  const skip = (chars: RegExp) => {
    while (i < header.length && chars.test(header.charAt(i))) i++;
  };
  const token = () => {
    const start = i;
    while (i < header.length && /[\w!#$%&'*+.^`|~/-]/.test(header.charAt(i))) i++;
    return header.slice(start, i);
  };
  while (i < header.length) {
    skip(/[\s,]/);
    const name = token();
    if (!name) break;
    skip(/\s/);
    if (header.charAt(i) !== '=') {
      challenges.push({ scheme: name.toLowerCase(), params: {} });
      continue;
    }
    i++;
    skip(/\s/);
    let value = '';
    if (header.charAt(i) === '"') {
      i++;
      while (i < header.length && header.charAt(i) !== '"') {
        if (header.charAt(i) === '\\') i++;
        value += header.charAt(i);
        i++;
      }
      i++;
    } else {
      value = token();
    }
    const current = challenges[challenges.length - 1];
    if (current) current.params[name.toLowerCase()] = value;
  }
  return challenges;
}

function basicHeader(credentials: Credentials & { kind: 'basic' }): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64')}`;
}

interface CachedToken {
  header: string;
  expiresAt: number;
}

export interface AuthOptions {
  credentials: CredentialSource;
  transport: HttpTransport;
  clock: () => number;
  timeoutMs: number;
  userAgent: string;
}

/** Scope strings like `repository:team/app:pull,push`. */
export function repositoryScope(repository: string, actions: readonly ('pull' | 'push')[]): string {
  return `repository:${repository}:${actions.join(',')}`;
}

export class RegistryAuth {
  private readonly tokens = new Map<string, CachedToken>();
  /** Hosts known to want Basic (after a Basic challenge). */
  private readonly basicHosts = new Set<string>();
  /** The last Bearer challenge per host, to fetch tokens before the 401. */
  private readonly bearerHosts = new Map<string, Record<string, string>>();

  constructor(private readonly options: AuthOptions) {}

  private key(host: string, scopes: readonly string[]): string {
    return `${host} ${[...scopes].sort().join(' ')}`;
  }

  /** The Authorization header to send up front, when already known. */
  async headerFor(host: string, scopes: readonly string[]): Promise<string | undefined> {
    if (this.basicHosts.has(host)) {
      const credentials = await this.options.credentials.credentialsFor(host);
      if (credentials?.kind === 'basic') return basicHeader(credentials);
      return undefined;
    }
    const cached = this.tokens.get(this.key(host, scopes));
    if (cached && cached.expiresAt > this.options.clock()) return cached.header;
    const challenge = this.bearerHosts.get(host);
    if (challenge) return this.fetchToken(host, challenge, scopes);
    return undefined;
  }

  /**
   * Answer a 401's challenge: returns the header to retry with, or throws
   * when the registry wants credentials braid does not have.
   */
  async answer(
    host: string,
    wwwAuthenticate: string | null,
    scopes: readonly string[],
    what: { operation: string; reference: string },
  ): Promise<string> {
    const challenges = parseChallenges(wwwAuthenticate ?? '');
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    if (bearer?.params.realm) {
      this.bearerHosts.set(host, bearer.params);
      const wanted = new Set(scopes);
      if (bearer.params.scope) for (const s of bearer.params.scope.split(' ')) wanted.add(s);
      return this.fetchToken(host, bearer.params, [...wanted], what);
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      const credentials = await this.options.credentials.credentialsFor(host);
      if (credentials?.kind !== 'basic') {
        throw new RegistryError('unauthenticated', {
          ...what,
          status: 401,
          message: `${host} wants a user name and password; none found for it (docker login ${host}, or ~/.docker/config.json)`,
        });
      }
      this.basicHosts.add(host);
      return basicHeader(credentials);
    }
    throw new RegistryError('unauthenticated', {
      ...what,
      status: 401,
      message: `${host} answered 401 without a usable WWW-Authenticate challenge ("${wwwAuthenticate ?? ''}")`,
    });
  }

  /** Forget what is cached for a host after credentials were refused. */
  forget(host: string): void {
    this.basicHosts.delete(host);
    for (const key of this.tokens.keys()) if (key.startsWith(`${host} `)) this.tokens.delete(key);
  }

  private async fetchToken(
    host: string,
    challenge: Record<string, string>,
    scopes: readonly string[],
    what: { operation: string; reference: string } = { operation: 'GET token', reference: host },
  ): Promise<string> {
    const key = this.key(host, scopes);
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > this.options.clock()) return cached.header;
    const realm = challenge.realm ?? '';
    let url: URL;
    try {
      url = new URL(realm);
    } catch (err) {
      throw new RegistryError(
        'unauthenticated',
        { ...what, message: `token realm "${realm}" from ${host} is not a URL` },
        { cause: err },
      );
    }
    const credentials = await this.options.credentials.credentialsFor(host);
    const headers: Record<string, string> = { 'user-agent': this.options.userAgent };
    let init: { method: string; body?: Buffer };
    if (credentials?.kind === 'identity-token') {
      const form = new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: credentials.token,
        client_id: 'braid',
      });
      if (challenge.service) form.set('service', challenge.service);
      if (scopes.length) form.set('scope', scopes.join(' '));
      headers['content-type'] = 'application/x-www-form-urlencoded';
      init = { method: 'POST', body: Buffer.from(form.toString()) };
    } else {
      if (challenge.service) url.searchParams.set('service', challenge.service);
      for (const scope of scopes) url.searchParams.append('scope', scope);
      if (credentials?.kind === 'basic') {
        headers.authorization = basicHeader(credentials);
        url.searchParams.set('account', credentials.username);
      }
      init = { method: 'GET' };
    }
    let response: HttpResponse;
    try {
      response = await this.options.transport({
        ...init,
        url: url.toString(),
        headers,
        stream: false,
        timeoutMs: this.options.timeoutMs,
      });
    } catch (err) {
      throw new RegistryError(
        'unavailable',
        {
          ...what,
          message: `token endpoint ${url.origin}${url.pathname} unreachable: ${(err as Error).message}`,
        },
        { cause: err },
      );
    }
    const text = response.bytes.toString('utf8');
    if (response.status < 200 || response.status > 299) {
      throw new RegistryError(
        response.status === 401 || response.status === 403 ? 'unauthenticated' : 'unavailable',
        {
          ...what,
          status: response.status,
          message: `token endpoint ${url.origin}${url.pathname} refused ${credentials ? `the credentials for ${host}` : 'anonymous access'}: ${text.trim().slice(0, 200)}`,
        },
      );
    }
    let body: { token?: string; access_token?: string; expires_in?: number };
    try {
      body = JSON.parse(text) as typeof body;
    } catch (err) {
      throw new BraidError(
        'unauthenticated',
        `${what.operation} ${what.reference}: token endpoint answered no JSON`,
        { cause: err },
      );
    }
    const token = body.token ?? body.access_token;
    if (!token) {
      throw new RegistryError('unauthenticated', {
        ...what,
        message: 'token endpoint answered without a token',
      });
    }
    // Renew 10% or at least 5 s before expiry; 60 s when the server says nothing.
    const lifetimeMs = (body.expires_in && body.expires_in > 0 ? body.expires_in : 60) * 1000;
    const header = `Bearer ${token}`;
    this.tokens.set(key, {
      header,
      expiresAt: this.options.clock() + lifetimeMs - Math.max(5000, lifetimeMs / 10),
    });
    return header;
  }
}
