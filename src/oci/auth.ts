/**
 * Registry authentication: Basic, and the Bearer token flow driven by
 * `WWW-Authenticate` challenges (realm, service, scope), with tokens cached
 * per host and scope set until they expire.
 */
import type { ErrorCode } from '../errors.js';
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

/**
 * The registry's token service failed or refused: `realm` is the endpoint,
 * `words` what it said (or why it could not be asked).
 */
export class TokenServiceError extends RegistryError {
  readonly realm: string;
  readonly words: string;
  constructor(
    code: ErrorCode,
    details: {
      operation: string;
      reference: string;
      status?: number;
      realm: string;
      words: string;
    },
    options?: { cause?: unknown },
  ) {
    super(
      code,
      {
        operation: details.operation,
        reference: details.reference,
        status: details.status,
        message: `token endpoint ${details.realm} ${details.words}`,
      },
      options,
    );
    this.realm = details.realm;
    this.words = details.words;
  }
}

/** How a host lets braid in for a set of scopes, as far as braid knows now. */
export type AuthScheme =
  | { kind: 'anonymous' }
  | { kind: 'basic'; username: string }
  /** `account`: the user name the token was asked for with; undefined when anonymous. */
  | { kind: 'bearer'; token: string; account: string | undefined };

/** What a token service said when it refused: its JSON's words when it has some, else its text. */
export function tokenServiceWords(text: string): string {
  try {
    const parsed = JSON.parse(text) as {
      details?: unknown;
      error_description?: unknown;
      error?: unknown;
      errors?: { message?: unknown }[];
    };
    const words = [
      parsed.details,
      parsed.errors?.[0]?.message,
      parsed.error_description,
      parsed.error,
    ].find((w): w is string => typeof w === 'string' && w.trim() !== '');
    if (words) return words.trim().slice(0, 200);
  } catch {
    // Not JSON: the text itself.
  }
  return text.trim().slice(0, 200) || 'no message';
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

  /**
   * How requests to `host` for `scopes` are authorised after a handshake:
   * Basic, a Bearer token (fetched now if the host challenged before and
   * none is cached), or nothing.
   */
  async schemeFor(host: string, scopes: readonly string[]): Promise<AuthScheme> {
    const credentials = await this.options.credentials.credentialsFor(host);
    if (this.basicHosts.has(host) && credentials?.kind === 'basic') {
      return { kind: 'basic', username: credentials.username };
    }
    const header = await this.headerFor(host, scopes);
    if (!header?.startsWith('Bearer ')) return { kind: 'anonymous' };
    return {
      kind: 'bearer',
      token: header.slice('Bearer '.length),
      account:
        credentials?.kind === 'basic'
          ? credentials.username
          : credentials
            ? 'an identity-token login'
            : undefined,
    };
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
      throw new TokenServiceError(
        'unauthenticated',
        { ...what, realm: `"${realm}"`, words: `from ${host} is not a URL` },
        { cause: err },
      );
    }
    const endpoint = `${url.origin}${url.pathname}`;
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
      throw new TokenServiceError(
        'unavailable',
        { ...what, realm: endpoint, words: `unreachable: ${(err as Error).message}` },
        { cause: err },
      );
    }
    const text = response.bytes.toString('utf8');
    if (response.status < 200 || response.status > 299) {
      throw new TokenServiceError(
        response.status === 401 || response.status === 403 ? 'unauthenticated' : 'unavailable',
        {
          ...what,
          status: response.status,
          realm: endpoint,
          words: `refused ${credentials ? `the credentials for ${host}` : 'anonymous access'}: ${tokenServiceWords(text)}`,
        },
      );
    }
    let body: { token?: string; access_token?: string; expires_in?: number };
    try {
      body = JSON.parse(text) as typeof body;
    } catch (err) {
      throw new TokenServiceError(
        'unauthenticated',
        { ...what, realm: endpoint, words: 'answered no JSON' },
        { cause: err },
      );
    }
    const token = body.token ?? body.access_token;
    if (!token) {
      throw new TokenServiceError('unauthenticated', {
        ...what,
        realm: endpoint,
        words: 'answered without a token',
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
