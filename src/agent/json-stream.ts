/**
 * The one reader of the Docker engine's JSON-lines streams (build, push,
 * pull, load). Every line is read: the engine reports failures in-band as
 * `{"errorDetail":…,"error":…}` after answering HTTP 200, so a stream that
 * is not read to the end can turn a failed build into a success.
 */
import type { ErrorCode } from '../errors.js';
import { EngineError } from './engine-error.js';
import { LineTail } from './line-tail.js';

/** One line of a JSON-lines stream; every field is optional. */
export interface JsonMessage {
  stream?: string;
  status?: string;
  id?: string;
  progress?: string;
  progressDetail?: { current?: number; total?: number };
  error?: string;
  errorDetail?: { code?: number; message?: string };
  aux?: unknown;
}

/** An `aux` line: `{"id":"moby.image.id","aux":{"ID":"sha256:…"}}`. */
export interface AuxMessage {
  id?: string;
  aux: unknown;
}

export interface JsonStreamOptions {
  /** What braid was doing, for the error: `build linux/arm64`, `push …`. */
  operation: string;
  /** The engine, for the error. */
  engine?: string;
  /** Code of the EngineError for an in-band error (default `failed_precondition`). */
  errorCode?: ErrorCode;
  /** Called for every parsed line, in order, before it is checked for errors. */
  onMessage?: (message: JsonMessage) => void;
  /** Which aux messages to return (default: all). Traces are better streamed via onMessage. */
  keepAux?: (message: AuxMessage) => boolean;
  /** Receives `stream`/`status` text and unparsable lines; its lines go into the error. */
  tail?: LineTail;
  /** A longer line is an error rather than unbounded memory (default 16 MiB). */
  maxLineBytes?: number;
  /** At most this many aux messages are kept (default 1000). */
  maxAux?: number;
}

export interface JsonStreamResult {
  aux: AuxMessage[];
  /** Lines read, including unparsable ones. */
  lines: number;
}

const NEWLINE = 0x0a;

/**
 * Reads `source` to its end. Resolves with the kept aux messages; rejects
 * with an EngineError for the first `error`/`errorDetail` line (after the
 * whole stream was read), or for a line longer than the limit.
 */
export async function readJsonStream(
  source: AsyncIterable<Buffer | string>,
  options: JsonStreamOptions,
): Promise<JsonStreamResult> {
  const maxLineBytes = options.maxLineBytes ?? 16 * 1024 * 1024;
  const maxAux = options.maxAux ?? 1000;
  const tail = options.tail ?? new LineTail();
  const aux: AuxMessage[] = [];
  let failure: string | undefined;
  let lines = 0;

  const handle = (bytes: Buffer): void => {
    const text = bytes.toString('utf8').trim();
    if (text === '') return;
    lines++;
    const message = parseLine(text);
    if (message === undefined) {
      tail.push(text);
      return;
    }
    options.onMessage?.(message);
    if (typeof message.stream === 'string') tail.push(message.stream);
    if (typeof message.status === 'string') {
      tail.push(message.id ? `${message.id}: ${message.status}` : message.status);
    }
    const error = errorOf(message);
    if (error !== undefined) {
      failure ??= error;
      return;
    }
    if (message.aux !== undefined) {
      const entry: AuxMessage =
        message.id !== undefined ? { id: message.id, aux: message.aux } : { aux: message.aux };
      if (options.keepAux?.(entry) ?? true) {
        if (aux.length >= maxAux) {
          throw streamError(
            'resource_exhausted',
            options,
            `more than ${maxAux} aux messages`,
            tail,
          );
        }
        aux.push(entry);
      }
    }
  };

  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of source) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    let start = 0;
    for (let end = bytes.indexOf(NEWLINE); end !== -1; end = bytes.indexOf(NEWLINE, start)) {
      const piece = bytes.subarray(start, end);
      if (pendingBytes + piece.length > maxLineBytes) {
        throw streamError(
          'resource_exhausted',
          options,
          `a line exceeds ${maxLineBytes} bytes`,
          tail,
        );
      }
      handle(pendingBytes > 0 ? Buffer.concat([...pending, piece]) : piece);
      pending = [];
      pendingBytes = 0;
      start = end + 1;
    }
    if (start < bytes.length) {
      pendingBytes += bytes.length - start;
      if (pendingBytes > maxLineBytes) {
        throw streamError(
          'resource_exhausted',
          options,
          `a line exceeds ${maxLineBytes} bytes`,
          tail,
        );
      }
      pending.push(bytes.subarray(start));
    }
  }
  if (pendingBytes > 0) handle(Buffer.concat(pending));

  if (failure !== undefined) {
    throw new EngineError(options.errorCode ?? 'failed_precondition', {
      operation: options.operation,
      detail: failure,
      ...(options.engine !== undefined && { engine: options.engine }),
      logTail: tail.lines(),
    });
  }
  return { aux, lines };
}

function parseLine(text: string): JsonMessage | undefined {
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)
      ? (parsed as JsonMessage)
      : undefined;
  } catch {
    return undefined;
  }
}

/** The failure a line reports, if any: `errorDetail.message` wins over `error`. */
function errorOf(message: JsonMessage): string | undefined {
  const detail = message.errorDetail;
  if (detail === undefined && message.error === undefined) return undefined;
  if (detail && typeof detail.message === 'string' && detail.message !== '') return detail.message;
  if (typeof message.error === 'string' && message.error !== '') return message.error;
  // An error line without text still means failure.
  return 'the engine reported an error without a message';
}

function streamError(
  code: ErrorCode,
  options: JsonStreamOptions,
  detail: string,
  tail: LineTail,
): EngineError {
  return new EngineError(code, {
    operation: options.operation,
    detail,
    ...(options.engine !== undefined && { engine: options.engine }),
    logTail: tail.lines(),
  });
}
