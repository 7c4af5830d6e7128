/**
 * The agent's gRPC clients of its coordinators: one per address (those
 * configured, and any leader a standby names), made on first use with the
 * transport of that address, the join token on every call, and the
 * session's keepalives.
 */
import { AgentService } from '../gen/braid/v1/agent_pb.js';
import type { Logger } from '../log.js';
import { parseGrpcAddress, type GrpcAddress } from '../rpc/address.js';
import { createClient, type ServiceClient } from '../rpc/client.js';
import { ClientPool } from '../rpc/client-pool.js';
import type { ClientTransport } from '../rpc/credentials.js';
import type { SessionOptions } from './session.js';

export type AgentClient = ServiceClient<(typeof AgentService)['method']>;

export interface CoordinatorClientsOptions {
  /** The configured coordinators, in order (canonical addresses); at least one. */
  coordinators: readonly string[];
  /** The transport to `address` (TLS or plaintext, as configured). */
  transportTo(address: GrpcAddress): ClientTransport;
  joinToken?: string | undefined;
  log: Logger;
}

export class CoordinatorClients {
  private readonly pool: ClientPool<AgentClient>;

  constructor(private readonly options: CoordinatorClientsOptions) {
    this.pool = new ClientPool((address) => {
      const to = options.transportTo(parseGrpcAddress(address, 'coordinator address'));
      if (to.warning) options.log.warn({ coordinator: address }, to.warning);
      return createClient(AgentService, address, {
        credentials: to.credentials,
        transport: to.secure ? 'tls' : 'plaintext',
        metadata: options.joinToken ? { authorization: `Bearer ${options.joinToken}` } : {},
        channelOptions: {
          'grpc.keepalive_time_ms': 20_000,
          'grpc.keepalive_timeout_ms': 10_000,
          'grpc.max_receive_message_length': 16 * 1024 * 1024,
        },
      });
    });
  }

  /** The client of `address`; undefined: the first configured coordinator. */
  get(address?: string): AgentClient {
    return this.pool.get(address ?? this.options.coordinators[0]!);
  }

  /** What the session dials: one coordinator, or the leader among several. */
  sessionOptions(): Pick<SessionOptions, 'client' | 'coordinators'> {
    const { coordinators } = this.options;
    return {
      client: this.get(),
      ...(coordinators.length > 1 && {
        coordinators: {
          addresses: coordinators,
          connect: (address: string) => this.get(address).connect(),
        },
      }),
    };
  }

  /** Close every client (idempotent). */
  close(): void {
    this.pool.close();
  }
}
