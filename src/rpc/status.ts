/**
 * The one place where braid's error codes meet gRPC status codes, both ways.
 */
import {
  Metadata,
  status as GrpcStatus,
  type ServiceError,
  type StatusObject,
} from '@grpc/grpc-js';
import { BraidError, RpcError, isErrorCode, type ErrorCode } from '../errors.js';
import { LEADER_METADATA_KEY } from './leader-hint.js';

const TO_GRPC: Record<ErrorCode, GrpcStatus> = {
  invalid_argument: GrpcStatus.INVALID_ARGUMENT,
  not_found: GrpcStatus.NOT_FOUND,
  already_exists: GrpcStatus.ALREADY_EXISTS,
  failed_precondition: GrpcStatus.FAILED_PRECONDITION,
  permission_denied: GrpcStatus.PERMISSION_DENIED,
  unauthenticated: GrpcStatus.UNAUTHENTICATED,
  resource_exhausted: GrpcStatus.RESOURCE_EXHAUSTED,
  unavailable: GrpcStatus.UNAVAILABLE,
  deadline_exceeded: GrpcStatus.DEADLINE_EXCEEDED,
  cancelled: GrpcStatus.CANCELLED,
  unimplemented: GrpcStatus.UNIMPLEMENTED,
  internal: GrpcStatus.INTERNAL,
};

const FROM_GRPC = new Map<GrpcStatus, ErrorCode>([
  ...Object.entries(TO_GRPC).map(([code, grpc]) => [grpc, code as ErrorCode] as const),
  [GrpcStatus.UNKNOWN, 'internal'],
  [GrpcStatus.ABORTED, 'failed_precondition'],
  [GrpcStatus.OUT_OF_RANGE, 'invalid_argument'],
  [GrpcStatus.DATA_LOSS, 'internal'],
]);

/** Trailer carrying braid's own code, so clients keep the exact code. */
const CODE_TRAILER = 'braid-error-code';

/** A BraidError that sends trailer metadata with its status (a StandbyError: `braid-leader`). */
interface WithTrailers {
  readonly trailers: Readonly<Record<string, string>>;
}

function trailersOf(err: BraidError): Readonly<Record<string, string>> {
  const trailers = (err as Partial<WithTrailers>).trailers;
  return typeof trailers === 'object' && trailers !== null ? trailers : {};
}

/** A thrown value as the status object a grpc-js handler returns. */
export function toStatusObject(err: unknown): Partial<StatusObject> {
  const braid = err instanceof BraidError ? err : undefined;
  const code: ErrorCode = braid?.code ?? 'internal';
  const metadata = new Metadata();
  for (const [key, value] of Object.entries(braid ? trailersOf(braid) : {})) {
    if (key !== CODE_TRAILER && typeof value === 'string') metadata.set(key, value);
  }
  metadata.set(CODE_TRAILER, code);
  const details = braid ? braid.message : 'internal error';
  return { code: TO_GRPC[code], details, metadata };
}

/** A grpc-js client error as a typed RpcError with braid's code. */
export function fromServiceError(
  err: ServiceError,
  operation: string,
  target: string,
  transport?: 'plaintext' | 'tls',
): RpcError {
  const trailer = err.metadata?.get(CODE_TRAILER)[0];
  const sent = typeof trailer === 'string' && isErrorCode(trailer) ? trailer : undefined;
  const code = sent ?? FROM_GRPC.get(err.code) ?? 'internal';
  const details = err.details || GrpcStatus[err.code] || 'unknown error';
  const message =
    code === 'unavailable' && !sent ? unreachable(target, details, transport) : details;
  const leader = err.metadata?.get(LEADER_METADATA_KEY)[0];
  return new RpcError(code, operation, target, message, {
    cause: err,
    leader: typeof leader === 'string' && leader !== '' ? leader : undefined,
  });
}

const SOCKET_ERRORS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOENT: 'no such socket',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'host not found',
  EACCES: 'permission denied',
};

/** TLS failures as OpenSSL and Node word them, and what the user can do. */
const TLS_ERRORS: [RegExp, (match: RegExpExecArray) => string][] = [
  [
    /wrong version number|packet length too long|http request/i,
    () =>
      'TLS handshake failed: the coordinator does not speak TLS (on loopback, drop the --tls-* flags; elsewhere --insecure allows plaintext)',
  ],
  [
    /alert certificate required/i,
    () => 'the coordinator requires a client certificate: pass --tls-cert and --tls-key',
  ],
  [
    /alert (unknown ca|bad certificate|certificate unknown|unsupported certificate|certificate revoked|certificate expired|decrypt error)/i,
    (m) => `the coordinator refused the client certificate (${m[1]?.toLowerCase()})`,
  ],
  [
    /(unable to verify the first certificate|self[- ]signed certificate(?: in certificate chain)?|unable to get (?:local )?issuer certificate)/i,
    (m) =>
      `the coordinator's certificate is not trusted (${m[1]}): pass the CA that signed it with --tls-ca`,
  ],
  [
    /certificate has expired|certificate is not yet valid/i,
    (m) => `the coordinator's ${m[0].toLowerCase()}`,
  ],
  [
    /Hostname\/IP does not match certificate's altnames: (.*)$/s,
    (m) => `the coordinator's certificate does not name this address (${m[1]})`,
  ],
];

/** The one line a user sees when no connection could be set up. */
function unreachable(target: string, details: string, transport?: 'plaintext' | 'tls'): string {
  const errno = /\b(E[A-Z]{4,})\b/.exec(details)?.[1];
  const last = details
    .replace(/\s*Resolution note:.*$/s, '')
    .replace(/^No connection established\. Last error: (Error: )?/, '')
    .replace(/\s*\(\d{4}-\d\d-\d\dT[\d:.]+Z\)/, '')
    .trim()
    .replace(/\.$/, '');
  // Opened, then closed or reset during setup: over TLS most likely a refused
  // client certificate, in plaintext most likely a TLS server.
  if (/^Failed to connect$/.test(last) || (errno === 'ECONNRESET' && transport !== undefined)) {
    if (transport === 'tls') {
      return `cannot reach ${target}: the TLS connection was closed during setup (the coordinator may have refused the client certificate: check --tls-cert and --tls-key)`;
    }
    if (transport === 'plaintext') {
      return `cannot reach ${target}: the connection was closed during setup (if the coordinator serves TLS, pass its CA with --tls-ca)`;
    }
  }
  const socketReason = errno && SOCKET_ERRORS[errno];
  if (socketReason) return `cannot reach ${target}: ${socketReason}`;
  for (const [pattern, reason] of TLS_ERRORS) {
    const match = pattern.exec(last);
    if (match) return `cannot reach ${target}: ${reason(match)}`;
  }
  return `cannot reach ${target}: ${last}`;
}
