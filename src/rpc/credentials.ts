/**
 * Transport security for both ends of braid's gRPC.
 *
 * Server: TLS when a certificate is configured; with a CA as well, every
 * client must present a certificate that chains to it (mTLS). Plaintext is
 * served on loopback and unix sockets, anywhere else only with `insecure`.
 *
 * Client: TLS when any TLS file is configured, and by default for a
 * non-loopback coordinator (verified against the system's CAs unless a CA
 * is given). Plaintext on loopback and unix sockets, anywhere else only with
 * `insecure`.
 */
import { credentials, ServerCredentials, type ChannelCredentials } from '@grpc/grpc-js';
import { isIP } from 'node:net';
import { UsageError } from '../errors.js';
import { formatGrpcAddress, isLocalAddress, type GrpcAddress } from './address.js';

/** PEM bytes a client uses: `ca` verifies the server, `cert`+`key` identify the client. */
export interface ClientTls {
  ca?: Buffer | undefined;
  cert?: Buffer | undefined;
  key?: Buffer | undefined;
}

/** PEM bytes a server uses: its `cert`+`key`, and `ca` to require client certificates. */
export interface ServerTls {
  cert: Buffer;
  key: Buffer;
  ca?: Buffer | undefined;
}

export interface ClientTransportOptions {
  /** Allow plaintext to a non-loopback address when no TLS is configured. */
  insecure: boolean;
  /** Configured TLS files; undefined when none are. */
  tls?: ClientTls | undefined;
}

export interface ClientTransport {
  credentials: ChannelCredentials;
  /** False for plaintext. */
  secure: boolean;
  /** Set when plaintext leaves the machine (`insecure`): the caller logs it. */
  warning?: string;
}

export function clientTransport(
  address: GrpcAddress,
  options: ClientTransportOptions,
): ClientTransport {
  const target = formatGrpcAddress(address);
  if (options.tls) {
    quietIpServernameWarning(address);
    const { ca, cert, key } = options.tls;
    return {
      credentials: credentials.createSsl(ca ?? null, key ?? null, cert ?? null),
      secure: true,
    };
  }
  if (isLocalAddress(address)) {
    return { credentials: credentials.createInsecure(), secure: false };
  }
  if (options.insecure) {
    return {
      credentials: credentials.createInsecure(),
      secure: false,
      warning: `plaintext gRPC to ${target} (--insecure): traffic and tokens cross the network unencrypted`,
    };
  }
  // Off the machine, TLS is the default: the system's CAs verify the server.
  quietIpServernameWarning(address);
  return { credentials: credentials.createSsl(), secure: true };
}

/** Channel credentials for `address` (see clientTransport). */
export function clientCredentials(
  address: GrpcAddress,
  options: ClientTransportOptions,
): ChannelCredentials {
  return clientTransport(address, options).credentials;
}

/** Server credentials for `address`; refuses plaintext off the machine without `insecure`. */
export function serverCredentials(
  address: GrpcAddress,
  options: { insecure: boolean; tls?: ServerTls | undefined },
): ServerCredentials {
  if (options.tls) {
    const { cert, key, ca } = options.tls;
    return ServerCredentials.createSsl(ca ?? null, [{ private_key: key, cert_chain: cert }], !!ca);
  }
  if (!isLocalAddress(address) && !options.insecure) {
    throw new UsageError(
      `listen address ${formatGrpcAddress(address)} is not loopback: serve TLS (--tls-cert, --tls-key) or allow plaintext with --insecure`,
    );
  }
  return ServerCredentials.createInsecure();
}

let warningFiltered = false;

/**
 * grpc-js hands an IP target to TLS as the SNI server name; Node then prints
 * DEP0123 ("Setting the TLS ServerName to an IP address is not permitted")
 * on stderr. Verification against the certificate's IP SANs is unaffected,
 * so that one warning is dropped: braid's stderr carries one-line errors and
 * JSON logs, not runtime noise. Every other warning passes through.
 */
function quietIpServernameWarning(address: GrpcAddress): void {
  if (warningFiltered || address.kind !== 'tcp' || isIP(address.host) === 0) return;
  warningFiltered = true;
  const listeners = process.listeners('warning');
  process.removeAllListeners('warning');
  process.on('warning', (warning: Error & { code?: string }) => {
    if (warning.code === 'DEP0123') return;
    for (const listener of listeners) listener(warning);
  });
}
