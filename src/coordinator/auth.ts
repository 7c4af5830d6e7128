/**
 * Who may call what, in one place. BuildService and SystemService need an
 * API token, AgentService a join token, sent as `authorization: Bearer
 * <token>`. Tokens are required when the coordinator listens off the
 * machine (or with requireAuth); otherwise a call may come without one, but
 * a token that is sent is always checked. The guard runs before every
 * handler: a refused call never reaches build logic.
 */
import type { Metadata } from '@grpc/grpc-js';
import { AgentService } from '../gen/braid/v1/agent_pb.js';
import { BuildService } from '../gen/braid/v1/build_pb.js';
import { SystemService } from '../gen/braid/v1/system_pb.js';
import { BraidError } from '../errors.js';
import type { Logger } from '../log.js';
import { isLocalAddress, type GrpcAddress } from '../rpc/address.js';
import type { CallGuard, CallIdentity, GuardedCall } from '../rpc/service.js';
import { tokenHash, tokenHint, tokenKindOf, type TokenKind } from './token-format.js';
import type { TokenBook } from './token-store.js';

/** The token kind each service needs; a service not listed here is refused. */
const SERVICE_KINDS: ReadonlyMap<string, TokenKind> = new Map([
  [BuildService.typeName, 'api'],
  [SystemService.typeName, 'api'],
  [AgentService.typeName, 'join'],
]);

const KIND_TEXT: Record<TokenKind, { article: string; how: string }> = {
  api: { article: 'an API token', how: 'pass --token or set BRAID_TOKEN' },
  join: { article: 'a join token', how: 'pass --join-token or set BRAID_JOIN_TOKEN' },
};

export interface AuthOptions {
  /** Every call needs a token (non-loopback listen address, or requireAuth). */
  required: boolean;
  tokens: TokenBook;
  log: Logger;
  /** Tokens that live only in this process (the local agent of `braid serve`). */
  ephemeral?: readonly { token: string; identity: CallIdentity }[];
}

/** Tokens are required off the machine; on loopback and unix sockets only when asked for. */
export function authRequired(listen: GrpcAddress, requireAuth: boolean): boolean {
  return requireAuth || !isLocalAddress(listen);
}

function serviceOf(method: string): string {
  return method.split('/')[1] ?? method;
}

function bearer(metadata: Metadata): string | undefined {
  const values = metadata.get('authorization');
  if (values.length === 0) return undefined;
  const value = String(values[0]);
  const match = /^Bearer\s+(\S+)\s*$/i.exec(value);
  if (!match || values.length > 1) {
    throw new BraidError(
      'unauthenticated',
      'the authorization metadata is not one "Bearer <token>" value',
    );
  }
  return match[1];
}

export class Authenticator {
  /** Ephemeral tokens by hash: secrets are compared as hashes, like stored ones. */
  private readonly ephemeral: ReadonlyMap<string, CallIdentity>;

  constructor(private readonly options: AuthOptions) {
    this.ephemeral = new Map(
      (options.ephemeral ?? []).map((e) => [tokenHash(e.token), e.identity] as const),
    );
  }

  get required(): boolean {
    return this.options.required;
  }

  /** For addService: admits a call or throws its status. */
  readonly guard: CallGuard = (call) => {
    try {
      return this.admit(call);
    } catch (err) {
      this.options.log.warn(
        { peer: call.peer, method: call.method, reason: (err as Error).message },
        'call refused',
      );
      throw err;
    }
  };

  /** Whether the token behind an identity still works (revocation ends agent sessions). */
  isActive(identity: CallIdentity | undefined): boolean {
    if (!identity) return true;
    if ([...this.ephemeral.values()].some((e) => e.id === identity.id)) return true;
    const record = this.options.tokens.get(identity.id);
    return record !== undefined && record.revokedAt === undefined;
  }

  private admit(call: GuardedCall): CallIdentity | undefined {
    const service = serviceOf(call.method);
    const kind = SERVICE_KINDS.get(service);
    if (!kind) {
      throw new BraidError('permission_denied', `${service} is not open to any token`);
    }
    const wanted = KIND_TEXT[kind];
    const token = bearer(call.metadata);
    if (token === undefined) {
      if (!this.options.required) return undefined;
      throw new BraidError(
        'unauthenticated',
        `this coordinator requires ${wanted.article}: ${wanted.how}`,
      );
    }
    const ephemeral = this.ephemeral.get(tokenHash(token));
    if (ephemeral) return this.kindChecked(ephemeral, kind, service);
    const prefixKind = tokenKindOf(token);
    if (!prefixKind) {
      throw new BraidError(
        'unauthenticated',
        `the token sent is not a braid token (expected braid_${kind}_ and 52 letters and digits)`,
      );
    }
    const record = this.options.tokens.lookup(token);
    if (!record) {
      throw new BraidError(
        'unauthenticated',
        `unknown token ${tokenHint(token)}: this coordinator did not issue it`,
      );
    }
    if (record.revokedAt) {
      throw new BraidError(
        'unauthenticated',
        `token "${record.name}" (${record.hint}) was revoked on ${record.revokedAt.toISOString()}`,
      );
    }
    const identity: CallIdentity = { id: record.id, name: record.name, kind: record.kind };
    this.kindChecked(identity, kind, service);
    this.options.tokens.touch(record.id);
    return identity;
  }

  private kindChecked(identity: CallIdentity, kind: TokenKind, service: string): CallIdentity {
    if (identity.kind !== kind) {
      const have = KIND_TEXT[identity.kind as TokenKind]?.article ?? `a ${identity.kind} token`;
      throw new BraidError(
        'permission_denied',
        `token "${identity.name}" is ${have}; ${service} needs ${KIND_TEXT[kind].article}`,
      );
    }
    return identity;
  }
}
