import { BraidError } from '../errors.js';

/**
 * One client per coordinator address, made on first use and closed
 * together: the addresses a caller was given, and any leader a standby
 * names.
 */
export class ClientPool<C extends { close(): void }> {
  private readonly clients = new Map<string, C>();
  private closed = false;

  constructor(private readonly make: (address: string) => C) {}

  /** The client of `address` (a canonical address string). */
  get(address: string): C {
    let client = this.clients.get(address);
    if (!client) {
      if (this.closed)
        throw new BraidError('cancelled', `no client for ${address}: the clients are closed`);
      client = this.make(address);
      this.clients.set(address, client);
    }
    return client;
  }

  /** Close every client made (idempotent). */
  close(): void {
    this.closed = true;
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }
}
