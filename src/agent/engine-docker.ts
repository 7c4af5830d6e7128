/**
 * The Engine over the Docker Engine API (dockerode's HTTP layer). Builds go
 * to `POST /build?version=2` — BuildKit — because the classic builder mixes
 * up platforms on one engine; no session or buildx is needed for a tar
 * context. Every line of the build stream is read for in-band errors.
 */
import { request as httpRequest, type Agent, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import Docker from 'dockerode';
import type DockerModem from 'docker-modem';
import type { ErrorCode } from '../errors.js';
import { isLoopbackHost } from '../loopback.js';
import { formatPlatform, parsePlatform } from '../oci/platform.js';
import { BUILDKIT_TRACE_ID, BuildkitTrace, decodeTrace } from './buildkit-trace.js';
import { BuildkitSession, type SessionHeaders } from './buildkit-session.js';
import { NO_BINFMT, type BinfmtReader } from './capabilities.js';
import type { BuildOptions, Engine, EngineInfo, ProgressListener } from './engine.js';
import { EngineError } from './engine-error.js';
import { readJsonStream, type AuxMessage } from './json-stream.js';
import { LineTail } from './line-tail.js';

export interface DockerEngineOptions {
  /** As given to createEngine; named in errors. */
  url: string;
  socketPath?: string;
  host?: string;
  port?: number;
  /** Carries every request (the SSH driver's channels); Node's default agent when absent. */
  agent?: Agent;
  /** Deadline of short calls (info, inspect, remove) and of an export's first byte. */
  requestTimeoutMs?: number;
  /** Log lines an error of a failed build carries (default 20). */
  errorLogLines?: number;
}

const IMAGE_ID_AUX = 'moby.image.id';

interface ModemError extends Error {
  statusCode?: number;
  json?: unknown;
  code?: string;
}

export class DockerEngine implements Engine {
  readonly url: string;
  private readonly modem: DockerModem;
  /** Where raw requests go (the session's upgrade, which dockerode cannot make). */
  private readonly endpoint: Pick<DockerEngineOptions, 'socketPath' | 'host' | 'port' | 'agent'>;
  private readonly requestTimeoutMs: number;
  private readonly errorLogLines: number;
  /**
   * Set only for a tcp:// engine on another host: its host's QEMU handlers
   * cannot be read through the Engine API, so it offers its native platform
   * alone (absent: the engine runs here, and this host's handlers are its).
   */
  readonly binfmt?: () => BinfmtReader;

  constructor(options: DockerEngineOptions) {
    this.url = options.url;
    const docker = new Docker({
      ...(options.socketPath !== undefined
        ? { socketPath: options.socketPath }
        : { host: options.host, port: options.port, protocol: 'http' as const }),
      // dockerode hands its options to docker-modem, which takes an agent; its types omit it.
      ...(options.agent !== undefined && ({ agent: options.agent } as Docker.DockerOptions)),
    });
    this.modem = docker.modem;
    this.endpoint = {
      socketPath: options.socketPath,
      host: options.host,
      port: options.port,
      agent: options.agent,
    };
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.errorLogLines = options.errorLogLines ?? 20;
    if (
      options.host !== undefined &&
      options.agent === undefined &&
      !isLoopbackHost(options.host)
    ) {
      this.binfmt = () => NO_BINFMT;
    }
  }

  async info(): Promise<EngineInfo> {
    const info = (await this.call('engine info', { path: '/info', method: 'GET' })) as Record<
      string,
      unknown
    >;
    const text = (key: string): string =>
      typeof info[key] === 'string' ? (info[key] as string) : '';
    const count = (key: string): number =>
      typeof info[key] === 'number' ? (info[key] as number) : 0;
    return {
      os: text('OSType'),
      architecture: text('Architecture'),
      serverVersion: text('ServerVersion'),
      kernelVersion: text('KernelVersion'),
      operatingSystem: text('OperatingSystem'),
      cpus: count('NCPU'),
      memoryBytes: count('MemTotal'),
      name: text('Name'),
      id: text('ID'),
    };
  }

  async build(
    options: BuildOptions,
    onProgress: ProgressListener,
    signal: AbortSignal,
  ): Promise<{ imageId: string }> {
    const platform = formatPlatform(parsePlatform(options.platform));
    const operation = `build ${platform}`;
    const query: Record<string, string | string[]> = {
      version: '2',
      dockerfile: options.dockerfile,
      platform,
      buildargs: JSON.stringify(options.buildArgs),
      labels: JSON.stringify(options.labels),
    };
    if (options.target !== undefined && options.target !== '') query.target = options.target;
    if (options.noCache) query.nocache = '1';
    if (options.pull) query.pull = '1';
    if (options.networkMode !== undefined && options.networkMode !== '') {
      query.networkmode = options.networkMode;
    }
    // Repeated `extrahosts=` parameters and a JSON `cachefrom`, as the docker CLI sends them.
    // (shmsize and ulimits are not sent: dockerd 20.10's BuildKit ignores both.)
    if (options.addHosts?.length) query.extrahosts = [...options.addHosts];
    if (options.cacheFrom?.length) query.cachefrom = JSON.stringify(options.cacheFrom);
    // Every build has a session: without one, any `RUN --mount=type=secret`
    // (even optional) fails with BuildKit's "no active sessions".
    const session = new BuildkitSession(options.session);

    const cancelled = (): EngineError =>
      new EngineError('cancelled', { operation, detail: 'cancelled', engine: this.url });
    if (signal.aborted) {
      destroyContext(options.context);
      session.close();
      throw cancelled();
    }

    const trace = new BuildkitTrace({ tailLines: this.errorLogLines });
    const tail = new LineTail(this.errorLogLines);
    const report = (events: ReturnType<BuildkitTrace['update']>): void => {
      for (const event of events) {
        if (event.kind === 'log') tail.push(`${event.step}: ${event.text}`);
        onProgress(event);
      }
    };

    let skippedTraces = 0;
    let response: IncomingMessage | undefined;
    const closeOnAbort = (): void => {
      response?.destroy();
    };
    signal.addEventListener('abort', closeOnAbort, { once: true });
    try {
      session.serve(await this.dialSession(operation, session.headers(), signal));
      query.session = session.id;
      response = await this.open(operation, {
        path: '/build?',
        method: 'POST',
        options: query,
        file: options.context,
        statusCodes: { 200: true, 400: 'bad parameter', 500: 'server error' },
        abortSignal: signal,
      });
      const { aux } = await readJsonStream(response, {
        operation,
        engine: this.url,
        tail,
        keepAux: (message) => message.id === IMAGE_ID_AUX,
        onMessage: (message) => {
          if (message.id !== BUILDKIT_TRACE_ID || message.aux === undefined) return;
          let status;
          try {
            status = decodeTrace(message.aux);
          } catch {
            // Progress is for people: a garbled update must not fail the build.
            skippedTraces++;
            return;
          }
          report(trace.update(status));
        },
      });
      report(trace.end());
      if (skippedTraces > 0)
        tail.push(`${skippedTraces} undecodable BuildKit progress messages skipped`);
      const imageId = imageIdOf(aux);
      if (imageId === undefined) {
        throw new EngineError('internal', {
          operation,
          detail: 'the engine reported no image id',
          engine: this.url,
          logTail: tail.lines(),
        });
      }
      await this.checkLabels(operation, imageId, options.labels);
      return { imageId };
    } catch (err) {
      if (signal.aborted) throw cancelled();
      if (
        err instanceof EngineError &&
        err.operation === operation &&
        err.code === 'failed_precondition'
      ) {
        report(trace.end());
        const failed = trace.failedStep();
        throw new EngineError(
          'failed_precondition',
          {
            operation,
            detail: err.detail,
            engine: this.url,
            ...(failed !== undefined && { step: failed.name }),
            logTail:
              failed !== undefined && failed.logTail.length > 0 ? failed.logTail : err.logTail,
          },
          { cause: err },
        );
      }
      throw err instanceof EngineError ? err : this.translate(operation, err);
    } finally {
      signal.removeEventListener('abort', closeOnAbort);
      // A stream left open would keep the build running on the engine.
      if (response !== undefined && !response.readableEnded) response.destroy();
      destroyContext(options.context);
      session.close();
    }
  }

  /**
   * `POST /session`, upgraded to h2c: the connection on which the engine
   * calls the session's services. Bounded by the request timeout.
   */
  private dialSession(
    operation: string,
    headers: SessionHeaders,
    signal: AbortSignal,
  ): Promise<Duplex> {
    const deadline = AbortSignal.any([signal, AbortSignal.timeout(this.requestTimeoutMs)]);
    return new Promise<Duplex>((resolve, reject) => {
      const fail = (detail: string, code: ErrorCode = 'unavailable', cause?: unknown): void =>
        reject(
          new EngineError(
            deadline.aborted && !signal.aborted ? 'deadline_exceeded' : code,
            { operation, detail: `BuildKit session: ${detail}`, engine: this.url },
            { cause },
          ),
        );
      const request = httpRequest({
        ...(this.endpoint.socketPath !== undefined
          ? { socketPath: this.endpoint.socketPath }
          : { host: this.endpoint.host, port: this.endpoint.port }),
        ...(this.endpoint.agent !== undefined && { agent: this.endpoint.agent }),
        method: 'POST',
        path: '/session',
        headers: { ...headers, Connection: 'Upgrade', Upgrade: 'h2c' },
        signal: deadline,
      });
      request.on('upgrade', (_response, socket, head) => {
        if (head.length > 0) socket.unshift(head);
        resolve(socket);
      });
      request.on('response', (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          if (body.length < 4096) body += chunk;
        });
        response.on('end', () => {
          let message = body.trim();
          try {
            message = (JSON.parse(body) as { message?: string }).message ?? message;
          } catch {
            // Not JSON: the text as it came.
          }
          fail(
            `the engine answered ${response.statusCode ?? '?'}: ${message || 'no upgrade'}`,
            statusCode(response.statusCode ?? 500),
          );
        });
      });
      request.on('error', (err: NodeJS.ErrnoException) =>
        fail(err.code ?? err.message, 'unavailable', err),
      );
      request.end();
    });
  }

  async exportImage(imageId: string, signal?: AbortSignal): Promise<NodeJS.ReadableStream> {
    return this.open(
      `export image ${imageId}`,
      {
        path: `/images/${encodeURIComponent(imageId)}/get`,
        method: 'GET',
        statusCodes: { 200: true, 404: 'no such image', 500: 'server error' },
        ...(signal !== undefined && { abortSignal: signal }),
      },
      this.requestTimeoutMs,
    );
  }

  async removeImage(imageId: string): Promise<void> {
    try {
      await this.call(`remove image ${imageId}`, {
        path: `/images/${encodeURIComponent(imageId)}`,
        method: 'DELETE',
        statusCodes: { 200: true, 404: 'no such image', 409: 'conflict', 500: 'server error' },
      });
    } catch (err) {
      if (err instanceof EngineError && err.code === 'not_found') return;
      throw err;
    }
  }

  /** Holds no connection of its own: nothing to release. */
  async close(): Promise<void> {}

  async hasNetwork(name: string): Promise<boolean> {
    try {
      await this.call(`inspect network ${name}`, {
        path: `/networks/${encodeURIComponent(name)}`,
        method: 'GET',
        statusCodes: { 200: true, 404: 'no such network', 500: 'server error' },
      });
      return true;
    } catch (err) {
      if (err instanceof EngineError && err.code === 'not_found') return false;
      throw err;
    }
  }

  /** Labels the caller asked for are on the image, or the image is removed and the build fails. */
  private async checkLabels(
    operation: string,
    imageId: string,
    wanted: Record<string, string>,
  ): Promise<void> {
    const inspected = (await this.call(`inspect image ${imageId}`, {
      path: `/images/${encodeURIComponent(imageId)}/json`,
      method: 'GET',
      statusCodes: { 200: true, 404: 'no such image', 500: 'server error' },
    })) as { Config?: { Labels?: Record<string, string> | null } };
    const labels = inspected.Config?.Labels ?? {};
    const missing = Object.entries(wanted).filter(([key, value]) => labels[key] !== value);
    if (missing.length === 0) return;
    await this.removeImage(imageId).catch(() => undefined);
    throw new EngineError('internal', {
      operation,
      detail: `image ${imageId} lacks label ${missing.map(([key]) => key).join(', ')}`,
      engine: this.url,
    });
  }

  /** A JSON call with a deadline. */
  private async call(operation: string, dial: DockerModem.DialOptions): Promise<unknown> {
    const deadline = AbortSignal.timeout(this.requestTimeoutMs);
    return new Promise((resolve, reject) => {
      this.modem.dial(
        { statusCodes: { 200: true }, ...dial, abortSignal: deadline },
        (err, result) => {
          if (err) reject(this.translate(operation, err, deadline));
          else resolve(result);
        },
      );
    });
  }

  /**
   * A streaming call: resolves with the response once the engine answered.
   * `headerTimeoutMs` bounds the wait for that answer, not the stream.
   */
  private async open(
    operation: string,
    dial: DockerModem.DialOptions,
    headerTimeoutMs?: number,
  ): Promise<IncomingMessage> {
    const controller = new AbortController();
    const caller = dial.abortSignal;
    const forward = (): void => controller.abort(caller?.reason);
    if (caller?.aborted) forward();
    caller?.addEventListener('abort', forward, { once: true });
    const timer =
      headerTimeoutMs !== undefined
        ? setTimeout(
            () => controller.abort(new DOMException('no answer', 'TimeoutError')),
            headerTimeoutMs,
          )
        : undefined;
    try {
      return await new Promise<IncomingMessage>((resolve, reject) => {
        this.modem.dial(
          { statusCodes: { 200: true }, ...dial, isStream: true, abortSignal: controller.signal },
          (err, result) => {
            if (err) reject(this.translate(operation, err, controller.signal));
            else resolve(result as IncomingMessage);
          },
        );
      });
    } finally {
      clearTimeout(timer);
    }
  }

  private translate(operation: string, err: unknown, signal?: AbortSignal): EngineError {
    const error = err as ModemError;
    const base = { operation, engine: this.url };
    if (signal?.aborted) {
      const timedOut = (signal.reason as Error | undefined)?.name === 'TimeoutError';
      return new EngineError(
        timedOut ? 'deadline_exceeded' : 'cancelled',
        { ...base, detail: timedOut ? 'the engine did not answer in time' : 'cancelled' },
        { cause: err },
      );
    }
    if (typeof error.statusCode === 'number') {
      const json = error.json as { message?: unknown } | undefined;
      // dockerode prefixes the engine's message with "(HTTP code 500) server error - ".
      const detail =
        typeof json?.message === 'string'
          ? json.message
          : (error.message ?? 'engine error').replace(/^\(HTTP code \d+\) [^-]*- /, '').trim();
      return new EngineError(
        statusCode(error.statusCode),
        { ...base, detail, status: error.statusCode },
        { cause: err },
      );
    }
    const transport = [
      'ECONNREFUSED',
      'ENOENT',
      'ECONNRESET',
      'EPIPE',
      'ETIMEDOUT',
      'EHOSTUNREACH',
    ];
    const code: ErrorCode = transport.includes(error.code ?? '') ? 'unavailable' : 'internal';
    return new EngineError(code, { ...base, detail: error.message ?? String(err) }, { cause: err });
  }
}

function statusCode(status: number): ErrorCode {
  if (status === 400) return 'invalid_argument';
  if (status === 401) return 'unauthenticated';
  if (status === 403) return 'permission_denied';
  if (status === 404) return 'not_found';
  if (status === 409) return 'failed_precondition';
  return 'internal';
}

function imageIdOf(aux: readonly AuxMessage[]): string | undefined {
  for (const message of aux) {
    const id = (message.aux as { ID?: unknown } | null)?.ID;
    if (typeof id === 'string' && id !== '') return id;
  }
  return undefined;
}

function destroyContext(context: NodeJS.ReadableStream): void {
  const destroyable = context as NodeJS.ReadableStream & { destroy?: () => void };
  destroyable.destroy?.();
}
