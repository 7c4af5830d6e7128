/**
 * A client of the OCI distribution API: manifests (GET/HEAD/PUT with Accept
 * negotiation), blobs (HEAD, GET verified while streaming, monolithic and
 * chunked upload, cross-repository mount), with auth, per-request timeouts
 * and retries with capped, jittered backoff; and the auth handshake and
 * upload probe that push-access.ts asks whether braid may push with.
 */
import { PassThrough, Readable } from 'node:stream';
import { isLoopbackHost } from '../loopback.js';
import type { ErrorCode } from '../errors.js';
import { RegistryAuth, repositoryScope, type AuthScheme } from './auth.js';
import { NO_CREDENTIALS, type CredentialSource } from './credentials.js';
import {
  DigestMismatchError,
  VerifyingStream,
  digestLike,
  isValidDigest,
  sha256Digest,
} from './digest.js';
import { RegistryError } from './errors.js';
import { MANIFEST_ACCEPT, type Descriptor } from './media-types.js';
import {
  HttpTimeoutError,
  fetchTransport,
  nodeHttpTransport,
  readCapped,
  type HttpResponse,
  type HttpTransport,
} from './http-transport.js';
import { DEFAULT_RETRY, backoffDelayMs, parseRetryAfter, type RetryPolicy } from './retry.js';

/** A repository in a registry: `domain` as in references (`docker.io`, `host:5000`). */
export interface Repository {
  domain: string;
  repository: string;
}

export interface RegistryClientOptions {
  credentials?: CredentialSource;
  /** Registries (`HOST[:PORT]`) spoken to over plain HTTP besides loopback ones. */
  insecureRegistries?: readonly string[];
  /** Deadline for a request's headers, and for each pause in a body. */
  requestTimeoutMs?: number;
  retry?: RetryPolicy;
  /** Manifests larger than this are refused (the spec suggests 4 MiB). */
  maxManifestBytes?: number;
  userAgent?: string;
  /** How requests travel; node:http/https by default. */
  transport?: HttpTransport;
  /** Shorthand for `transport: fetchTransport(fetch)` (tests play registries with it). */
  fetch?: typeof fetch;
  clock?: () => number;
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Called for each retried request, e.g. for logs. */
  onRetry?: (info: {
    operation: string;
    reference: string;
    attempt: number;
    delayMs: number;
    reason: string;
  }) => void;
}

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

type Method = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';

interface RequestSpec {
  method: Method;
  repo: Repository;
  /** Path after `/v2/<name>/`, or a full URL (upload locations). */
  path: string;
  operation: string;
  reference: string;
  scopes: readonly string[];
  headers?: Record<string, string>;
  body?: Buffer | (() => Readable);
  /** Statuses that are answers, not errors. */
  expect: readonly number[];
  /** Keep the body for streaming instead of reading it. */
  stream?: boolean;
  /** Retry this request on transient failures (only with a replayable body). */
  retry?: boolean;
  /** Registry error codes that are transient for this request (retried like a 503). */
  transientCodes?: readonly string[];
}

const DOCKER_HUB_API = 'registry-1.docker.io';
/** Blobs copied between registries travel in chunks of this size (bounded memory). */
const COPY_CHUNK_BYTES = 8 * 1024 * 1024;
/** What the client keeps of manifests and small blobs read by digest. */
const MEMO_BYTES = 4 * 1024 * 1024;
const MEMO_ITEM_BYTES = 256 * 1024;

function statusCode(status: number): ErrorCode {
  if (status === 401) return 'unauthenticated';
  if (status === 403) return 'permission_denied';
  if (status === 404) return 'not_found';
  if (status === 429) return 'resource_exhausted';
  if (status === 400 || status === 405 || status === 413 || status === 416)
    return 'invalid_argument';
  if (status >= 500) return 'unavailable';
  return 'internal';
}

function isTransientStatus(status: number): boolean {
  return status === 429 || status === 408 || status >= 500;
}

async function registryErrorText(
  response: HttpResponse,
): Promise<{ code?: string; message: string }> {
  let text = response.bytes.toString('utf8');
  if (response.body) {
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of response.body) {
        chunks.push(chunk as Buffer);
        total += (chunk as Buffer).length;
        if (total > 64 * 1024) break;
      }
    } catch {
      // Body unreadable: the status says enough.
    }
    response.discard();
    text = Buffer.concat(chunks).toString('utf8');
  }
  try {
    const parsed = JSON.parse(text) as {
      errors?: { code?: string; message?: string; detail?: unknown }[];
    };
    const first = parsed.errors?.[0];
    if (first) {
      // Object details repeat the request (the tag, the digest); text details add to it.
      const detail =
        typeof first.detail === 'string' && first.detail ? ` (${first.detail.slice(0, 200)})` : '';
      return { code: first.code, message: `${first.message ?? 'error'}${detail}` };
    }
  } catch {
    // Not the registry's JSON error format.
  }
  return { message: text.trim().slice(0, 300) || response.statusText || 'no message' };
}

export class RegistryClient {
  private readonly auth: RegistryAuth;
  private readonly options: Required<
    Omit<RegistryClientOptions, 'credentials' | 'onRetry' | 'insecureRegistries' | 'fetch'>
  > &
    Pick<RegistryClientOptions, 'onRetry'>;
  private readonly insecure: Set<string>;
  /**
   * Manifests and small blobs read by digest, per repository: content-addressed
   * and verified, so a second read (the stitch reads each child up to three
   * times: to learn its platform, to check it, to copy it) needs no request.
   */
  private readonly byDigest = new Map<string, { bytes: Buffer; mediaType: string }>();
  private byDigestBytes = 0;

  constructor(options: RegistryClientOptions = {}) {
    this.options = {
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      retry: options.retry ?? DEFAULT_RETRY,
      maxManifestBytes: options.maxManifestBytes ?? 4 * 1024 * 1024,
      userAgent: options.userAgent ?? 'braid',
      transport:
        options.transport ?? (options.fetch ? fetchTransport(options.fetch) : nodeHttpTransport()),
      clock: options.clock ?? Date.now,
      random: options.random ?? Math.random,
      sleep: options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms))),
      onRetry: options.onRetry,
    };
    this.insecure = new Set((options.insecureRegistries ?? []).map((h) => h.toLowerCase()));
    this.auth = new RegistryAuth({
      credentials: options.credentials ?? NO_CREDENTIALS,
      transport: this.options.transport,
      clock: this.options.clock,
      timeoutMs: this.options.requestTimeoutMs,
      userAgent: this.options.userAgent,
    });
  }

  /** The host HTTP requests go to for a reference's domain. */
  apiHost(domain: string): string {
    return domain === 'docker.io' ? DOCKER_HUB_API : domain;
  }

  /** Plain HTTP for loopback registries (as Docker does) and those named insecure. */
  isPlainHttp(domain: string): boolean {
    const host = domain.toLowerCase();
    if (this.insecure.has(host)) return true;
    const bare = host.startsWith('[')
      ? host.slice(1, host.indexOf(']'))
      : host.replace(/:\d+$/, '');
    return isLoopbackHost(bare);
  }

  baseUrl(domain: string): string {
    return `${this.isPlainHttp(domain) ? 'http' : 'https'}://${this.apiHost(domain)}`;
  }

  // --- manifests -------------------------------------------------------------

  /** GET a manifest by tag or digest; bytes are verified against the digest. */
  async getManifest(
    repo: Repository,
    reference: string,
    accept: readonly string[] = MANIFEST_ACCEPT,
  ): Promise<FetchedManifest> {
    const ref = this.refText(repo, reference);
    const known = isValidDigest(reference) ? this.byDigest.get(`manifest ${ref}`) : undefined;
    if (known && accept.includes(known.mediaType)) {
      return { bytes: known.bytes, mediaType: known.mediaType, digest: reference };
    }
    const response = await this.request({
      method: 'GET',
      repo,
      path: `manifests/${reference}`,
      operation: 'GET manifest',
      reference: ref,
      scopes: [repositoryScope(repo.repository, ['pull'])],
      headers: { accept: accept.join(', ') },
      expect: [200],
      retry: true,
      stream: true,
    });
    const bytes = await this.readLimited(
      response,
      this.options.maxManifestBytes,
      'GET manifest',
      ref,
    );
    const mediaType = this.mediaTypeOf(response, bytes);
    const digest = this.verifyManifestDigest(
      bytes,
      reference,
      response.headers.get('docker-content-digest'),
      ref,
    );
    this.remember(`manifest ${this.refText(repo, digest)}`, bytes, mediaType);
    return { bytes, mediaType, digest };
  }

  /** HEAD a manifest: its descriptor, or undefined when the registry has none. */
  async headManifest(
    repo: Repository,
    reference: string,
    accept: readonly string[] = MANIFEST_ACCEPT,
  ): Promise<Descriptor | undefined> {
    const ref = this.refText(repo, reference);
    const response = await this.request({
      method: 'HEAD',
      repo,
      path: `manifests/${reference}`,
      operation: 'HEAD manifest',
      reference: ref,
      scopes: [repositoryScope(repo.repository, ['pull'])],
      headers: { accept: accept.join(', ') },
      expect: [200, 404],
      retry: true,
    });
    if (response.status === 404) return undefined;
    const digest = response.headers.get('docker-content-digest');
    const size = Number(response.headers.get('content-length'));
    const mediaType = (response.headers.get('content-type') ?? '').split(';')[0]?.trim() ?? '';
    if (!digest || !isValidDigest(digest) || !Number.isFinite(size) || !mediaType) {
      // Some registries omit headers on HEAD: fall back to GET, which verifies.
      const fetched = await this.getManifest(repo, reference, accept);
      return { mediaType: fetched.mediaType, digest: fetched.digest, size: fetched.bytes.length };
    }
    if (reference.includes(':') && reference !== digest) {
      throw new RegistryError('internal', {
        operation: 'HEAD manifest',
        reference: ref,
        message: `registry answered digest ${digest}`,
      });
    }
    return { mediaType, digest, size };
  }

  /**
   * PUT manifest bytes under a tag or their digest. `confirmed`: the
   * registry's answer named the digest it stored (Docker-Content-Digest),
   * and it is ours; a registry that names another one is an error.
   */
  async putManifest(
    repo: Repository,
    reference: string,
    bytes: Buffer,
    mediaType: string,
  ): Promise<{ digest: string; confirmed: boolean }> {
    const ref = this.refText(repo, reference);
    const digest = reference.includes(':') ? digestLike(reference, bytes) : sha256Digest(bytes);
    if (reference.includes(':') && digest !== reference) {
      throw new DigestMismatchError(`PUT manifest ${ref}`, reference, digest);
    }
    const response = await this.request({
      method: 'PUT',
      repo,
      path: `manifests/${reference}`,
      operation: 'PUT manifest',
      reference: ref,
      scopes: [repositoryScope(repo.repository, ['pull', 'push'])],
      headers: { 'content-type': mediaType },
      body: bytes,
      expect: [201, 200],
      retry: true,
      // The digest was checked above, so DIGEST_INVALID is the registry's: distribution
      // answers it while another push into the repository is committing a blob this
      // manifest references (the blob's link file is read half-written). It passes.
      transientCodes: ['DIGEST_INVALID'],
    });
    const answered = response.headers.get('docker-content-digest');
    if (answered && answered !== digest) {
      throw new RegistryError('internal', {
        operation: 'PUT manifest',
        reference: ref,
        message: `registry stored digest ${answered}, braid sent ${digest}`,
      });
    }
    return { digest, confirmed: answered === digest };
  }

  async deleteManifest(repo: Repository, digest: string): Promise<void> {
    await this.request({
      method: 'DELETE',
      repo,
      path: `manifests/${digest}`,
      operation: 'DELETE manifest',
      reference: this.refText(repo, digest),
      scopes: [repositoryScope(repo.repository, ['pull', 'push'])],
      expect: [202, 200],
      retry: true,
    });
  }

  // --- blobs -------------------------------------------------------------------

  /** Size of a blob, or undefined when the repository does not have it. */
  async headBlob(repo: Repository, digest: string): Promise<number | undefined> {
    const response = await this.request({
      method: 'HEAD',
      repo,
      path: `blobs/${digest}`,
      operation: 'HEAD blob',
      reference: this.refText(repo, digest),
      scopes: [repositoryScope(repo.repository, ['pull'])],
      expect: [200, 404],
      retry: true,
    });
    if (response.status === 404) return undefined;
    const size = Number(response.headers.get('content-length'));
    return Number.isFinite(size) ? size : undefined;
  }

  /** A blob as a stream that fails unless its bytes hash to `digest` (and match `size`). */
  async getBlob(repo: Repository, digest: string, size?: number): Promise<Readable> {
    const ref = this.refText(repo, digest);
    const response = await this.request({
      method: 'GET',
      repo,
      path: `blobs/${digest}`,
      operation: 'GET blob',
      reference: ref,
      scopes: [repositoryScope(repo.repository, ['pull'])],
      expect: [200],
      retry: true,
      stream: true,
    });
    const body = response.body;
    if (!body)
      throw new RegistryError('internal', {
        operation: 'GET blob',
        reference: ref,
        message: 'empty body',
      });
    const verifying = new VerifyingStream(digest, `GET blob ${ref}`, size);
    body.on('error', (err) => verifying.destroy(err));
    verifying.on('close', () => {
      if (!body.destroyed) body.destroy();
    });
    return body.pipe(verifying);
  }

  /** A small blob (a config) read whole and verified. */
  async getBlobBytes(
    repo: Repository,
    digest: string,
    maxBytes = 16 * 1024 * 1024,
  ): Promise<Buffer> {
    const key = `blob ${this.refText(repo, digest)}`;
    const known = this.byDigest.get(key);
    if (known) return known.bytes;
    const bytes = await readCapped(await this.getBlob(repo, digest), maxBytes);
    if (bytes === undefined) {
      throw new RegistryError('resource_exhausted', {
        operation: 'GET blob',
        reference: this.refText(repo, digest),
        message: `blob is larger than ${maxBytes} bytes`,
      });
    }
    this.remember(key, bytes, '');
    return bytes;
  }

  /** Keeps what was read by digest, oldest out first beyond MEMO_BYTES; large items not at all. */
  private remember(key: string, bytes: Buffer, mediaType: string): void {
    if (bytes.length > MEMO_ITEM_BYTES || this.byDigest.has(key)) return;
    this.byDigest.set(key, { bytes, mediaType });
    this.byDigestBytes += bytes.length;
    for (const [oldKey, old] of this.byDigest) {
      if (this.byDigestBytes <= MEMO_BYTES) break;
      this.byDigest.delete(oldKey);
      this.byDigestBytes -= old.bytes.length;
    }
  }

  /**
   * Ask the registry to mount `digest` from `from` into `to` (same registry).
   * True when mounted; false when the registry declined (then upload instead).
   */
  async mountBlob(to: Repository, digest: string, from: Repository): Promise<boolean> {
    if (to.domain !== from.domain) return false;
    const query = new URLSearchParams({ mount: digest, from: from.repository });
    const response = await this.request({
      method: 'POST',
      repo: to,
      path: `blobs/uploads/?${query.toString()}`,
      operation: 'POST blob mount',
      reference: this.refText(to, digest),
      scopes: [
        repositoryScope(to.repository, ['pull', 'push']),
        repositoryScope(from.repository, ['pull']),
      ],
      expect: [201, 202],
      retry: true,
    });
    if (response.status === 201) return true;
    // 202: the registry opened an upload session instead; close it.
    const location = response.headers.get('location');
    if (location) await this.cancelUpload(to, location, digest).catch(() => undefined);
    return false;
  }

  /**
   * Upload a blob. With a Buffer: one monolithic PUT. With a stream factory
   * and `chunkBytes`: PATCH chunks then PUT. Skips the upload when the
   * repository already has the blob.
   */
  async uploadBlob(
    repo: Repository,
    digest: string,
    size: number,
    content: Buffer | (() => Readable),
    options: { chunkBytes?: number } = {},
  ): Promise<'exists' | 'uploaded'> {
    if ((await this.headBlob(repo, digest)) !== undefined) return 'exists';
    const ref = this.refText(repo, digest);
    if (Buffer.isBuffer(content) && digestLike(digest, content) !== digest) {
      throw new DigestMismatchError(`upload ${ref}`, digest, digestLike(digest, content));
    }
    const location = await this.startUpload(repo, ref);
    if (!options.chunkBytes) {
      await this.request({
        method: 'PUT',
        repo,
        path: this.withDigest(location, digest),
        operation: 'PUT blob upload',
        reference: ref,
        scopes: [repositoryScope(repo.repository, ['pull', 'push'])],
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
        body: content,
        expect: [201],
        retry: Buffer.isBuffer(content),
      });
      return 'uploaded';
    }
    let next = location;
    let offset = 0;
    const source = Buffer.isBuffer(content) ? Readable.from([content]) : content();
    for await (const chunk of this.chunks(source, options.chunkBytes)) {
      const response = await this.request({
        method: 'PATCH',
        repo,
        path: next,
        operation: 'PATCH blob upload',
        reference: ref,
        scopes: [repositoryScope(repo.repository, ['pull', 'push'])],
        headers: {
          'content-type': 'application/octet-stream',
          'content-length': String(chunk.length),
          'content-range': `${offset}-${offset + chunk.length - 1}`,
        },
        body: chunk,
        expect: [202],
        retry: false,
      });
      offset += chunk.length;
      next = response.headers.get('location') ?? next;
    }
    if (offset !== size) {
      await this.cancelUpload(repo, next, digest).catch(() => undefined);
      throw new RegistryError('invalid_argument', {
        operation: 'PATCH blob upload',
        reference: ref,
        message: `sent ${offset} bytes, expected ${size}`,
      });
    }
    await this.request({
      method: 'PUT',
      repo,
      path: this.withDigest(next, digest),
      operation: 'PUT blob upload',
      reference: ref,
      scopes: [repositoryScope(repo.repository, ['pull', 'push'])],
      headers: { 'content-length': '0' },
      body: Buffer.alloc(0),
      expect: [201],
      retry: true,
    });
    return 'uploaded';
  }

  /**
   * Make `digest` present in `to`: mounted from `from` in the same registry
   * (one request, whether or not `to` had it), already there, or copied.
   */
  async copyBlob(
    from: Repository,
    to: Repository,
    descriptor: Pick<Descriptor, 'digest' | 'size'>,
  ): Promise<'exists' | 'mounted' | 'copied'> {
    if (await this.mountBlob(to, descriptor.digest, from)) return 'mounted';
    if ((await this.headBlob(to, descriptor.digest)) !== undefined) return 'exists';
    const source = await this.getBlob(from, descriptor.digest, descriptor.size);
    try {
      await this.uploadBlob(
        to,
        descriptor.digest,
        descriptor.size,
        () => source.pipe(new PassThrough()),
        {
          chunkBytes: COPY_CHUNK_BYTES,
        },
      );
    } finally {
      source.destroy();
    }
    return 'copied';
  }

  // --- push access ---------------------------------------------------------------

  /**
   * GET /v2/ with the registry's auth handshake for `scopes` (the distribution
   * spec's token flow, or Basic): how the registry let braid in. Throws a
   * RegistryError when it does not (no answer, refused credentials).
   */
  async handshake(repo: Repository, scopes: readonly string[]): Promise<AuthScheme> {
    await this.request({
      method: 'GET',
      repo,
      path: '/v2/',
      operation: 'GET /v2/',
      reference: `${repo.domain}/${repo.repository}`,
      scopes,
      expect: [200],
      retry: true,
    });
    return this.auth.schemeFor(this.apiHost(repo.domain), scopes);
  }

  /**
   * Open a blob upload in `repo` and cancel it at once: the registry's own
   * answer to "may braid push here?", leaving nothing behind.
   */
  async probeUpload(repo: Repository): Promise<void> {
    const reference = `${repo.domain}/${repo.repository}`;
    const location = await this.startUpload(repo, reference);
    await this.request({
      method: 'DELETE',
      repo,
      path: location,
      operation: 'DELETE blob upload',
      reference,
      scopes: [repositoryScope(repo.repository, ['pull', 'push'])],
      expect: [204, 200, 202, 404],
      retry: false,
    });
  }

  // --- plumbing ----------------------------------------------------------------

  private refText(repo: Repository, reference: string): string {
    return `${repo.domain}/${repo.repository}${reference.includes(':') ? '@' : ':'}${reference}`;
  }

  private mediaTypeOf(response: HttpResponse, bytes: Buffer): string {
    const header = (response.headers.get('content-type') ?? '').split(';')[0]?.trim() ?? '';
    if (header && header !== 'application/json' && header !== 'text/plain') return header;
    try {
      const parsed = JSON.parse(bytes.toString('utf8')) as {
        mediaType?: string;
        manifests?: unknown;
      };
      if (parsed.mediaType) return parsed.mediaType;
      return parsed.manifests
        ? 'application/vnd.oci.image.index.v1+json'
        : 'application/vnd.oci.image.manifest.v1+json';
    } catch {
      return header;
    }
  }

  private verifyManifestDigest(
    bytes: Buffer,
    reference: string,
    header: string | null,
    ref: string,
  ): string {
    if (reference.includes(':')) {
      const actual = digestLike(reference, bytes);
      if (actual !== reference)
        throw new DigestMismatchError(`GET manifest ${ref}`, reference, actual);
      return reference;
    }
    const actual =
      header && isValidDigest(header) ? digestLike(header, bytes) : sha256Digest(bytes);
    if (header && isValidDigest(header) && actual !== header) {
      throw new DigestMismatchError(`GET manifest ${ref}`, header, actual);
    }
    return header && isValidDigest(header) ? header : actual;
  }

  private async readLimited(
    response: HttpResponse,
    maxBytes: number,
    operation: string,
    ref: string,
  ): Promise<Buffer> {
    const declared = Number(response.headers.get('content-length'));
    if (Number.isFinite(declared) && declared > maxBytes) {
      response.discard();
      throw new RegistryError('resource_exhausted', {
        operation,
        reference: ref,
        message: `manifest of ${declared} bytes exceeds the ${maxBytes}-byte limit`,
      });
    }
    if (!response.body) return response.bytes;
    const bytes = await readCapped(response.body, maxBytes);
    if (bytes === undefined) {
      throw new RegistryError('resource_exhausted', {
        operation,
        reference: ref,
        message: `manifest exceeds the ${maxBytes}-byte limit`,
      });
    }
    return bytes;
  }

  /** `reference`: what errors name (the blob, or the repository when no blob is meant yet). */
  private async startUpload(repo: Repository, reference: string): Promise<string> {
    const response = await this.request({
      method: 'POST',
      repo,
      path: 'blobs/uploads/',
      operation: 'POST blob upload',
      reference,
      scopes: [repositoryScope(repo.repository, ['pull', 'push'])],
      headers: { 'content-length': '0' },
      expect: [202],
      retry: true,
    });
    const location = response.headers.get('location');
    if (!location) {
      throw new RegistryError('internal', {
        operation: 'POST blob upload',
        reference,
        message: 'no Location for the upload',
      });
    }
    return location;
  }

  private async cancelUpload(repo: Repository, location: string, digest: string): Promise<void> {
    await this.request({
      method: 'DELETE',
      repo,
      path: location,
      operation: 'DELETE blob upload',
      reference: this.refText(repo, digest),
      scopes: [repositoryScope(repo.repository, ['pull', 'push'])],
      expect: [204, 200, 202, 404],
      retry: false,
    });
  }

  private withDigest(location: string, digest: string): string {
    const url = new URL(location, 'http://placeholder');
    url.searchParams.set('digest', digest);
    return /^https?:\/\//.test(location) ? url.toString() : `${url.pathname}${url.search}`;
  }

  private async *chunks(source: Readable, chunkBytes: number): AsyncGenerator<Buffer> {
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    for await (const data of source) {
      let chunk = data as Buffer;
      while (chunk.length > 0) {
        const take = Math.min(chunk.length, chunkBytes - pendingBytes);
        pending.push(chunk.subarray(0, take));
        pendingBytes += take;
        chunk = chunk.subarray(take);
        if (pendingBytes === chunkBytes) {
          yield Buffer.concat(pending);
          pending = [];
          pendingBytes = 0;
        }
      }
    }
    if (pendingBytes > 0) yield Buffer.concat(pending);
  }

  private urlFor(spec: RequestSpec): string {
    if (/^https?:\/\//.test(spec.path)) return spec.path;
    const base = this.baseUrl(spec.repo.domain);
    if (spec.path.startsWith('/')) return `${base}${spec.path}`;
    return `${base}/v2/${spec.repo.repository}/${spec.path}`;
  }

  /** One logical request: auth challenges answered, transient failures retried. */
  private async request(spec: RequestSpec): Promise<HttpResponse> {
    const host = this.apiHost(spec.repo.domain);
    const policy = this.options.retry;
    let authorization = await this.auth.headerFor(host, spec.scopes);
    let answeredChallenge = false;
    for (let attempt = 1; ; attempt++) {
      let response: HttpResponse;
      try {
        response = await this.send(spec, authorization);
      } catch (err) {
        const reason =
          err instanceof HttpTimeoutError
            ? `no answer within ${this.options.requestTimeoutMs} ms`
            : this.networkReason(err);
        if (spec.retry && attempt < policy.maxAttempts) {
          await this.pause(spec, attempt, reason);
          continue;
        }
        throw new RegistryError(
          'unavailable',
          {
            operation: spec.operation,
            reference: spec.reference,
            message: `${reason}${attempt > 1 ? ` (after ${attempt} attempts)` : ''}`,
          },
          { cause: err },
        );
      }
      if (response.status === 401 && !answeredChallenge) {
        response.discard();
        authorization = await this.auth.answer(
          host,
          response.headers.get('www-authenticate'),
          spec.scopes,
          spec,
        );
        answeredChallenge = true;
        attempt--;
        continue;
      }
      if (spec.expect.includes(response.status)) return response;
      if (spec.retry && isTransientStatus(response.status) && attempt < policy.maxAttempts) {
        const retryAfter = parseRetryAfter(
          response.headers.get('retry-after'),
          this.options.clock(),
        );
        response.discard();
        await this.pause(spec, attempt, `HTTP ${response.status}`, retryAfter);
        continue;
      }
      const error =
        spec.method === 'HEAD'
          ? { message: response.statusText || 'error' }
          : await registryErrorText(response);
      if (
        spec.retry &&
        error.code !== undefined &&
        spec.transientCodes?.includes(error.code) &&
        attempt < policy.maxAttempts
      ) {
        await this.pause(spec, attempt, `HTTP ${response.status} ${error.code}`);
        continue;
      }
      if (response.status === 401) this.auth.forget(host);
      throw new RegistryError(statusCode(response.status), {
        operation: spec.operation,
        reference: spec.reference,
        status: response.status,
        registryCode: error.code,
        message: `${error.message}${attempt > 1 ? ` (after ${attempt} attempts)` : ''}`,
      });
    }
  }

  private networkReason(err: unknown): string {
    const { code, cause } = err as { code?: string; cause?: { code?: string; message?: string } };
    return code ?? cause?.code ?? cause?.message ?? (err as Error).message;
  }

  private async pause(
    spec: RequestSpec,
    attempt: number,
    reason: string,
    retryAfterMs?: number,
  ): Promise<void> {
    const delayMs = backoffDelayMs(this.options.retry, attempt, this.options.random, retryAfterMs);
    this.options.onRetry?.({
      operation: spec.operation,
      reference: spec.reference,
      attempt,
      delayMs,
      reason,
    });
    await this.options.sleep(delayMs);
  }

  private send(spec: RequestSpec, authorization: string | undefined): Promise<HttpResponse> {
    const headers: Record<string, string> = {
      'user-agent': this.options.userAgent,
      ...spec.headers,
    };
    if (authorization) headers.authorization = authorization;
    const url = this.urlFor(spec);
    const hostname = new URL(url).hostname.toLowerCase();
    // RFC 6761 §6.4: names under .invalid never resolve, so none is looked up.
    if (hostname === 'invalid' || hostname.endsWith('.invalid')) {
      return Promise.reject(
        Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), {
          code: 'ENOTFOUND',
          syscall: 'getaddrinfo',
          hostname,
        }),
      );
    }
    return this.options.transport({
      method: spec.method,
      url,
      headers,
      body: typeof spec.body === 'function' ? spec.body() : spec.body,
      stream: spec.stream === true,
      timeoutMs: this.options.requestTimeoutMs,
    });
  }
}
