/**
 * The Engine on a remote host over SSH (`ssh://user@host[:port][/socket]`):
 * the Docker Engine API of the remote unix socket, reached through one SSH
 * connection with a channel per request (OpenSSH streamlocal forwarding), as
 * `DOCKER_HOST=ssh://` does but without a docker CLI on either side. The
 * calls themselves are DockerEngine's; this driver owns the connection.
 */
import type { Logger } from '../log.js';
import { SshConnection } from '../ssh/connection.js';
import { SshError } from '../ssh/errors.js';
import { loadIdentities, describeIdentity } from '../ssh/identities.js';
import { knownHostsFiles as knownHostsList } from '../ssh/known-hosts.js';
import { runRemoteCommand } from '../ssh/remote-command.js';
import { StreamLocalAgent } from '../ssh/stream-local-agent.js';
import type { SshTarget } from '../ssh/ssh-url.js';
import { BINFMT_DIR, type BinfmtReader } from './capabilities.js';
import type { BuildOptions, Engine, EngineInfo, ProgressListener } from './engine.js';
import { DockerEngine, type DockerEngineOptions } from './engine-docker.js';
import { EngineError } from './engine-error.js';

/** The engine socket on the remote host when the URL names none. */
export const DEFAULT_REMOTE_SOCKET = '/var/run/docker.sock';

export interface SshEngineSettings {
  /** Private keys to log in with, and only those; none: ssh-agent, then ~/.ssh/id_{ed25519,ecdsa,rsa}. */
  keyFiles?: readonly string[];
  /** Passphrase of encrypted key files. */
  keyPassphrase?: string | undefined;
  /** The known_hosts file; default `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`. */
  knownHostsFile?: string | undefined;
  /** ssh-agent's socket (SSH_AUTH_SOCK). */
  agentSocket?: string | undefined;
  /** The home directory whose `.ssh` holds the default keys and known_hosts. */
  homeDir?: string | undefined;
  /** SSH keepalive interval (default 15000); three unanswered drop the connection. */
  keepaliveIntervalMs?: number;
  /** Deadline of one connection attempt, and of a call's wait for a reconnection (default 20000). */
  connectTimeoutMs?: number;
  /** Reconnect backoff (default 500 ms doubling to 30 s, jittered). */
  backoff?: { baseMs: number; maxMs: number };
}

export interface SshEngineOptions extends Omit<
  DockerEngineOptions,
  'url' | 'socketPath' | 'host' | 'port' | 'agent'
> {
  ssh?: SshEngineSettings;
  log?: Logger | undefined;
}

export class SshEngine implements Engine {
  readonly url: string;
  private readonly connection: SshConnection;
  private readonly agent: StreamLocalAgent;
  private readonly docker: DockerEngine;
  private readonly waitMs: number;
  private readonly log: Logger | undefined;
  private readonly fatalListeners: ((error: Error) => void)[] = [];

  constructor(url: string, target: SshTarget, options: SshEngineOptions = {}) {
    this.url = url;
    const { ssh = {}, log, ...engineOptions } = options;
    this.log = log;
    const identities = loadIdentities(
      {
        keyFiles: ssh.keyFiles ?? [],
        passphrase: ssh.keyPassphrase,
        agentSocket: ssh.agentSocket,
        homeDir: ssh.homeDir,
      },
      log,
    );
    const knownHostsFiles = knownHostsList(ssh.knownHostsFile, ssh.homeDir);
    this.waitMs = ssh.connectTimeoutMs ?? 20_000;
    const socketPath = target.path ?? DEFAULT_REMOTE_SOCKET;
    log?.info(
      {
        engine: url,
        ssh: target.display,
        socket: socketPath,
        identities: identities.map(describeIdentity),
        knownHosts: knownHostsFiles,
      },
      'engine over ssh',
    );
    this.connection = new SshConnection(target, {
      identities,
      knownHostsFiles,
      readyTimeoutMs: this.waitMs,
      keepaliveIntervalMs: ssh.keepaliveIntervalMs ?? 15_000,
      keepaliveCountMax: 3,
      log,
      ...(ssh.backoff !== undefined && { backoff: ssh.backoff }),
      onFailed: (error) => {
        for (const listener of this.fatalListeners) listener(error);
      },
    });
    this.agent = new StreamLocalAgent(this.connection, socketPath, this.waitMs);
    this.docker = new DockerEngine({ ...engineOptions, url, socketPath, agent: this.agent });
  }

  onFatal(listener: (error: Error) => void): void {
    this.fatalListeners.push(listener);
  }

  /** `idle`, `connecting`, `ready`, `waiting` (to reconnect), `failed` or `closed`. */
  get connectionState(): string {
    return this.connection.state;
  }

  info(): Promise<EngineInfo> {
    return this.call('engine info', () => this.docker.info());
  }

  async build(
    options: BuildOptions,
    onProgress: ProgressListener,
    signal: AbortSignal,
  ): Promise<{ imageId: string }> {
    try {
      await this.connected(`build ${options.platform}`);
    } catch (err) {
      (options.context as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      throw err;
    }
    return this.call(`build ${options.platform}`, () =>
      this.docker.build(options, onProgress, signal),
    );
  }

  exportImage(imageId: string, signal?: AbortSignal): Promise<NodeJS.ReadableStream> {
    return this.call(`export image ${imageId}`, () => this.docker.exportImage(imageId, signal));
  }

  removeImage(imageId: string): Promise<void> {
    return this.call(`remove image ${imageId}`, () => this.docker.removeImage(imageId));
  }

  hasNetwork(name: string): Promise<boolean> {
    return this.call(`inspect network ${name}`, () => this.docker.hasNetwork(name));
  }

  /**
   * The remote host's QEMU handlers, read in one `grep -r` over SSH: the
   * engine runs there, so its binfmt_misc decides what it can emulate. A
   * host where that fails (no shell, nothing mounted) reports none, and the
   * agent builds its native platform only.
   */
  binfmt(): BinfmtReader {
    let entries: Promise<Map<string, string>> | undefined;
    const load = (): Promise<Map<string, string>> => (entries ??= this.readBinfmt());
    return {
      list: async () => {
        try {
          return [...(await load()).keys()];
        } catch (err) {
          this.log?.warn(
            { engine: this.url, err: (err as Error).message },
            "cannot read the remote host's QEMU handlers; building its native platform only",
          );
          return [];
        }
      },
      read: async (name) => {
        const text = (await load()).get(name);
        if (text === undefined) throw new Error(`no binfmt entry ${name}`);
        return text;
      },
    };
  }

  private async readBinfmt(): Promise<Map<string, string>> {
    const command = `grep -rs '' ${BINFMT_DIR}`;
    const result = await runRemoteCommand(this.connection, command, {
      waitMs: this.waitMs,
      timeoutMs: this.waitMs,
      maxOutputBytes: 256 * 1024,
    });
    const lines = new Map<string, string[]>();
    for (const line of result.stdout.split('\n')) {
      if (!line.startsWith(`${BINFMT_DIR}/`)) continue;
      const rest = line.slice(BINFMT_DIR.length + 1);
      const colon = rest.indexOf(':');
      if (colon <= 0) continue;
      const name = rest.slice(0, colon);
      lines.set(name, [...(lines.get(name) ?? []), rest.slice(colon + 1)]);
    }
    // grep exits 2 when one file (`register`) cannot be read; what it printed still holds.
    if (lines.size === 0 && result.code !== 0 && result.code !== 1) {
      throw new SshError(
        'unavailable',
        this.connection.target.display,
        `"${command}" exited ${result.code ?? 'on a signal'}${result.stderr ? `: ${result.stderr.trim().split('\n')[0]}` : ''}`,
      );
    }
    return new Map([...lines].map(([name, text]) => [name, `${text.join('\n')}\n`]));
  }

  /** Closes the SSH connection and every channel on it; stops reconnecting. */
  async close(): Promise<void> {
    this.agent.destroy();
    await this.connection.close();
  }

  /** Waits for the connection, so a refused host key or login reads as itself. */
  private async connected(operation: string): Promise<void> {
    try {
      await this.connection.client(this.waitMs);
    } catch (err) {
      throw this.engineError(operation, err as SshError);
    }
  }

  private async call<T>(operation: string, work: () => Promise<T>): Promise<T> {
    await this.connected(operation);
    try {
      return await work();
    } catch (err) {
      // A channel that could not be opened reaches DockerEngine as a transport error.
      if (err instanceof EngineError && err.cause instanceof SshError) {
        throw this.engineError(err.operation, err.cause);
      }
      throw err;
    }
  }

  private engineError(operation: string, err: SshError): EngineError {
    return new EngineError(
      err.code,
      { operation, detail: err.message, engine: this.url },
      { cause: err },
    );
  }
}
