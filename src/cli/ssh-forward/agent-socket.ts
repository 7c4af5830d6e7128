/**
 * A running ssh-agent reached through its unix socket (e.g. $SSH_AUTH_SOCK),
 * with ssh2's OpenSSHAgent client: one connection per request, each with a
 * connect timeout and a deadline for the whole request.
 */
import { statSync } from 'node:fs';
import { Socket } from 'node:net';
import { OpenSSHAgent, type GetStreamCallback, type ParsedKey } from 'ssh2';
import { SourceProblem, type KeySource, type SignHash, type SourceTimeouts } from './key-source.js';

/** ssh2's agent client whose every connection ends on a deadline. */
class BoundedAgentClient extends OpenSSHAgent {
  constructor(
    private readonly path: string,
    private readonly timeouts: SourceTimeouts,
  ) {
    super(path);
  }

  override getStream(cb: GetStreamCallback): void {
    const socket = new Socket();
    const { connectTimeoutMs, requestTimeoutMs } = this.timeouts;
    let settled = false;
    const settle = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(connecting);
      if (err) {
        socket.destroy();
        cb(err);
      } else {
        cb(null, socket);
      }
    };
    const connecting = setTimeout(
      () => settle(new Error(`no connection within ${connectTimeoutMs} ms`)),
      connectTimeoutMs,
    );
    socket.once('connect', () => {
      // OpenSSHAgent destroys the socket when its one request is answered.
      const deadline = setTimeout(
        () => socket.destroy(new Error(`no answer within ${requestTimeoutMs} ms`)),
        requestTimeoutMs,
      );
      socket.once('close', () => clearTimeout(deadline));
      settle();
    });
    socket.once('error', (err: NodeJS.ErrnoException) =>
      settle(new Error(err.code ?? err.message)),
    );
    socket.connect(this.path);
  }
}

class AgentSocket implements KeySource {
  readonly description: string;
  private readonly client: BoundedAgentClient;

  constructor(path: string, timeouts: SourceTimeouts) {
    this.description = `ssh-agent at ${path}`;
    this.client = new BoundedAgentClient(path, timeouts);
  }

  identities(): Promise<ParsedKey[]> {
    return new Promise((resolve, reject) => {
      // OpenSSHAgent lists parsed keys (ones ssh2 cannot parse, e.g. certificates, are left out).
      this.client.getIdentities((err, keys) =>
        err ? reject(err) : resolve((keys ?? []) as ParsedKey[]),
      );
    });
  }

  sign(publicKey: ParsedKey, data: Buffer, hash: SignHash | undefined): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.client.sign(publicKey, data, hash ? { hash } : {}, (err, signature) => {
        if (err) reject(err);
        else if (!signature) reject(new Error('the agent sent no signature'));
        else resolve(signature);
      });
    });
  }
}

/** The agent at `path`, checked now: a socket that answers a list request. */
export async function openAgentSocket(path: string, timeouts: SourceTimeouts): Promise<KeySource> {
  let isSocket: boolean;
  try {
    isSocket = statSync(path).isSocket();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new SourceProblem(
      code === 'ENOENT' || code === 'ENOTDIR'
        ? `agent socket ${path} does not exist`
        : `agent socket ${path} cannot be used (${code ?? 'unreadable'})`,
      { cause: err },
    );
  }
  if (!isSocket)
    throw new SourceProblem(`${path} is not a socket (an ssh-agent's, such as $SSH_AUTH_SOCK)`);
  const source = new AgentSocket(path, timeouts);
  try {
    await source.identities();
  } catch (err) {
    throw new SourceProblem(`ssh-agent at ${path} does not answer (${(err as Error).message})`, {
      cause: err,
    });
  }
  return source;
}
