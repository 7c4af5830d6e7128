/**
 * Channel credentials for clients. Plaintext is used on loopback and unix
 * sockets; anywhere else it needs the caller's explicit `insecure`.
 */
import { credentials, type ChannelCredentials } from '@grpc/grpc-js';
import { BraidError } from '../errors.js';
import { formatGrpcAddress, isLocalAddress, type GrpcAddress } from './address.js';

export function clientCredentials(address: GrpcAddress, insecure: boolean): ChannelCredentials {
  if (!isLocalAddress(address) && !insecure) {
    throw new BraidError(
      'invalid_argument',
      `coordinator ${formatGrpcAddress(address)} is not loopback: plaintext gRPC there needs --insecure`,
    );
  }
  return credentials.createInsecure();
}
