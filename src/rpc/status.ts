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

export function grpcStatusOf(code: ErrorCode): GrpcStatus {
  return TO_GRPC[code];
}

/** A thrown value as the status object a grpc-js handler returns. */
export function toStatusObject(err: unknown): Partial<StatusObject> {
  const braid = err instanceof BraidError ? err : undefined;
  const code: ErrorCode = braid?.code ?? 'internal';
  const metadata = new Metadata();
  metadata.set(CODE_TRAILER, code);
  const details = braid ? braid.message : 'internal error';
  return { code: TO_GRPC[code], details, metadata };
}

/** A grpc-js client error as a typed RpcError with braid's code. */
export function fromServiceError(err: ServiceError, operation: string, target: string): RpcError {
  const trailer = err.metadata?.get(CODE_TRAILER)[0];
  const sent = typeof trailer === 'string' && isErrorCode(trailer) ? trailer : undefined;
  const code = sent ?? FROM_GRPC.get(err.code) ?? 'internal';
  const details = err.details || GrpcStatus[err.code] || 'unknown error';
  const message = code === 'unavailable' && !sent ? unreachable(target, details) : details;
  return new RpcError(code, operation, target, message, { cause: err });
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

function unreachable(target: string, details: string): string {
  const errno = /\b(E[A-Z]{4,})\b/.exec(details)?.[1];
  const reason = (errno && SOCKET_ERRORS[errno]) ?? details.replace(/\s*Resolution note:.*$/s, '');
  return `cannot reach ${target}: ${reason}`;
}
