/**
 * One SSH connection kept up for as long as it is wanted: opened on first
 * use, kept alive with SSH keepalives, re-established with capped, jittered
 * exponential backoff when it drops. A refused host key or login is not
 * retried: the connection fails, and every later call says why.
 */
import type { Client, ClientChannel } from 'ssh2';
import type { Logger } from '../log.js';
import { backoffDelayMs } from '../oci/retry.js';
import { connectSsh, type SshConnectOptions } from './connect.js';
import { SshError, isFatalSshError } from './errors.js';
import type { SshTarget } from './ssh-url.js';

export type SshConnectionState =
  | { kind: 'idle' }
  | { kind: 'connecting'; attempt: number }
  | { kind: 'ready'; client: Client; since: number }
  | { kind: 'waiting'; attempt: number; lastError: SshError; timer: NodeJS.Timeout }
  | { kind: 'failed'; error: SshError }
  | { kind: 'closed' };

export interface SshConnectionOptions extends SshConnectOptions {
  /** Reconnect backoff (default 500 ms doubling to 30 s, jittered). */
  backoff?: { baseMs: number; maxMs: number };
  /** A connection that lasted this long before it dropped is reconnected at once. */
  stableAfterMs?: number;
  random?: () => number;
  now?: () => number;
  /** Told once when the connection fails for good (a refused host key or login). */
  onFailed?: (error: SshError) => void;
  /** One connection attempt; connectSsh unless a test replaces it. */
  connect?: (target: SshTarget, options: SshConnectOptions) => Promise<Client>;
}

interface Waiter {
  resolve: (client: Client) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class SshConnection {
  private current: SshConnectionState = { kind: 'idle' };
  private readonly waiters = new Set<Waiter>();
  private readonly log: Logger | undefined;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly connect: NonNullable<SshConnectionOptions['connect']>;
  /** Attempts that failed since the last stable connection. */
  private failures = 0;

  constructor(
    readonly target: SshTarget,
    private readonly options: SshConnectionOptions,
  ) {
    this.log = options.log;
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
    this.connect = options.connect ?? connectSsh;
  }

  get state(): SshConnectionState['kind'] {
    return this.current.kind;
  }

  /**
   * The connected client. Opens the connection on first use; while it is
   * being re-established, waits up to `waitMs` for it.
   */
  async client(waitMs: number): Promise<Client> {
    const state = this.current;
    if (state.kind === 'ready') return state.client;
    if (state.kind === 'failed') throw state.error;
    if (state.kind === 'closed') throw this.closedError();
    const waiting = new Promise<Client>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(this.notReadyError(waitMs));
        }, waitMs),
      };
      this.waiters.add(waiter);
    });
    if (state.kind === 'idle') this.attempt(1);
    return waiting;
  }

  /** A channel to the unix socket `socketPath` on the remote host (OpenSSH streamlocal forwarding). */
  async openStreamLocal(socketPath: string, waitMs: number): Promise<ClientChannel> {
    const client = await this.client(waitMs);
    return new Promise<ClientChannel>((resolve, reject) => {
      client.openssh_forwardOutStreamLocal(socketPath, (err, channel) => {
        if (!err) return resolve(channel);
        // sshd answers "open failed" alike for a missing socket, a refused one and its own policy.
        reject(
          new SshError(
            'unavailable',
            this.target.display,
            `cannot open ${socketPath} on the remote host (${err.message}): check that the engine ` +
              `listens there, that ${this.target.user} may open it, and that sshd allows the ` +
              'forwarding (AllowStreamLocalForwarding yes, AllowTcpForwarding not no)',
            { cause: err },
          ),
        );
      });
    });
  }

  /** Closes the connection and stops reconnecting; waiting calls fail. Idempotent. */
  async close(): Promise<void> {
    const state = this.current;
    if (state.kind === 'closed') return;
    this.move({ kind: 'closed' });
    if (state.kind === 'waiting') clearTimeout(state.timer);
    if (state.kind === 'ready') {
      const closed = new Promise<void>((resolve) => state.client.once('close', () => resolve()));
      state.client.end();
      // A dead peer never answers the disconnect: the socket goes after a bound.
      const timer = setTimeout(() => state.client.destroy(), 2_000);
      await closed;
      clearTimeout(timer);
    }
    this.settleWaiters(this.closedError());
  }

  private attempt(attempt: number): void {
    this.move({ kind: 'connecting', attempt });
    this.connect(this.target, this.options).then(
      (client) => this.connected(client),
      (err: unknown) => this.attemptFailed(attempt, err),
    );
  }

  private connected(client: Client): void {
    if (this.current.kind === 'closed') {
      client.end();
      return;
    }
    const since = this.now();
    this.move({ kind: 'ready', client, since });
    client.on('error', (err: Error) => {
      this.log?.warn({ ssh: this.target.display, err: err.message }, 'ssh connection error');
    });
    client.once('close', () => this.dropped(client, since));
    for (const waiter of this.waiters) {
      clearTimeout(waiter.timer);
      waiter.resolve(client);
    }
    this.waiters.clear();
  }

  private dropped(client: Client, since: number): void {
    const state = this.current;
    if (state.kind !== 'ready' || state.client !== client) return;
    const lasted = this.now() - since;
    this.log?.warn(
      { ssh: this.target.display, lastedMs: lasted },
      'ssh connection lost; reconnecting',
    );
    if (lasted >= (this.options.stableAfterMs ?? 30_000)) {
      this.failures = 0;
      this.attempt(1);
      return;
    }
    // A connection that drops right after login is a failure like any other: back off.
    this.failures++;
    this.wait(1, new SshError('unavailable', this.target.display, 'the connection dropped'));
  }

  private attemptFailed(attempt: number, err: unknown): void {
    if (this.current.kind === 'closed') return;
    const error =
      err instanceof SshError
        ? err
        : new SshError('unavailable', this.target.display, (err as Error).message, { cause: err });
    if (isFatalSshError(error)) {
      this.log?.error(
        { ssh: this.target.display, err: error.message },
        'ssh connection refused; not retrying',
      );
      this.move({ kind: 'failed', error });
      this.settleWaiters(error);
      this.options.onFailed?.(error);
      return;
    }
    this.failures++;
    this.wait(attempt + 1, error);
  }

  private wait(attempt: number, lastError: SshError): void {
    const delay = backoffDelayMs(
      {
        maxAttempts: Number.POSITIVE_INFINITY,
        baseDelayMs: this.options.backoff?.baseMs ?? 500,
        maxDelayMs: this.options.backoff?.maxMs ?? 30_000,
      },
      Math.min(Math.max(this.failures, 1), 30),
      this.random,
    );
    this.log?.warn(
      { ssh: this.target.display, attempt, retryInMs: delay, err: lastError.message },
      'ssh connection failed; retrying',
    );
    const timer = setTimeout(() => this.attempt(attempt), delay);
    // Backoff alone keeps no process alive; a waiting call does.
    timer.unref();
    this.move({ kind: 'waiting', attempt, lastError, timer });
  }

  private move(next: SshConnectionState): void {
    const from = this.current.kind;
    this.current = next;
    if (from !== next.kind) {
      this.log?.debug({ ssh: this.target.display, from, to: next.kind }, 'ssh connection state');
    }
  }

  private settleWaiters(err: Error): void {
    for (const waiter of this.waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(err);
    }
    this.waiters.clear();
  }

  private notReadyError(waitMs: number): SshError {
    const state = this.current;
    const last = state.kind === 'waiting' ? `: ${stripTarget(state.lastError, this.target)}` : '';
    return new SshError(
      'unavailable',
      this.target.display,
      `not connected within ${waitMs} ms (${state.kind}${last})`,
    );
  }

  private closedError(): SshError {
    return new SshError('cancelled', this.target.display, 'the connection was closed');
  }
}

function stripTarget(err: SshError, target: SshTarget): string {
  const prefix = `${target.display}: `;
  return err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
}
