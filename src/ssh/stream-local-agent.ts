/**
 * HTTP over a unix socket on an SSH host: an http.Agent whose every
 * connection is a new streamlocal channel (`direct-streamlocal@openssh.com`,
 * as `ssh -L local.sock:/remote.sock`) on one shared SSH connection. No
 * local socket file and no CLI on either side. Closing an HTTP request
 * closes its channel, and so the remote socket connection.
 */
import { Agent, type ClientRequestArgs } from 'node:http';
import type { Duplex } from 'node:stream';
import type { ClientChannel } from 'ssh2';
import type { SshConnection } from './connection.js';

export class StreamLocalAgent extends Agent {
  constructor(
    private readonly connection: SshConnection,
    /** The socket on the remote host, e.g. `/var/run/docker.sock`. */
    readonly socketPath: string,
    /** How long a request waits for the SSH connection to be (re)established. */
    private readonly waitMs: number,
  ) {
    // One channel per request: channels are cheap, and none outlives its request.
    super({ keepAlive: false });
  }

  override createConnection(
    _options: ClientRequestArgs,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    this.connection.openStreamLocal(this.socketPath, this.waitMs).then(
      (channel) => callback?.(null, asSocket(channel)),
      (err: Error) => callback?.(err, undefined as unknown as Duplex),
    );
    return undefined;
  }
}

/** The few net.Socket methods Node's HTTP client calls, on a channel that has none of them. */
function asSocket(channel: ClientChannel): Duplex {
  const socket = channel as ClientChannel & Record<string, unknown>;
  const noop = (): unknown => socket;
  for (const name of ['setKeepAlive', 'setNoDelay', 'setTimeout', 'ref', 'unref']) {
    if (typeof socket[name] !== 'function') socket[name] = noop;
  }
  socket.destroySoon = () => channel.destroy();
  return channel;
}
