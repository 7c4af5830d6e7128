/**
 * The agent's view of a container engine: the few calls it needs, behind
 * one interface, and the factory that picks the driver from the engine URL.
 */
import { EngineError } from './engine-error.js';
import type { ProgressEvent } from './buildkit-trace.js';
import type { BinfmtReader } from './capabilities.js';
import type { SessionProviders } from './buildkit-session.js';
import { DockerEngine, type DockerEngineOptions } from './engine-docker.js';
import { SshEngine, type SshEngineOptions } from './engine-ssh.js';
import { parseSshUrl } from '../ssh/ssh-url.js';
import { SshError } from '../ssh/errors.js';

export interface EngineInfo {
  /** `linux` or `windows`. */
  os: string;
  /** As the engine reports it (`x86_64`, `aarch64`): normalise with unameToPlatform. */
  architecture: string;
  serverVersion: string;
  kernelVersion: string;
  operatingSystem: string;
  cpus: number;
  memoryBytes: number;
  /** The engine host's name. */
  name: string;
  /** The engine's identity (`ID` of /info); '' when it reports none. */
  id: string;
}

export interface BuildOptions {
  /** The build context as a tar stream (optionally gzip); consumed by build. */
  context: NodeJS.ReadableStream;
  /** Path of the Dockerfile inside the context. */
  dockerfile: string;
  /** Target platform, e.g. `linux/arm64`; another one than the engine's runs under QEMU. */
  platform: string;
  buildArgs: Record<string, string>;
  /** Stage to build; the last one when absent. */
  target?: string;
  /** Applied to the image; braid passes `io.braid.build-id` and `io.braid.job-id`. */
  labels: Record<string, string>;
  noCache: boolean;
  /** Check the registry for newer base images even when cached. */
  pull: boolean;
  /** Network of RUN steps: `none`, `host`, …; the engine's default when absent. */
  networkMode?: string;
  /** Extra /etc/hosts entries of RUN steps, `host:ip`. */
  addHosts?: readonly string[];
  /** Images whose inline cache BuildKit may reuse (`registry/repo:tag`). */
  cacheFrom?: readonly string[];
  /** What the build's BuildKit session serves: secrets, SSH agents, registry credentials (default: none, anonymous). */
  session?: SessionProviders | undefined;
}

export type ProgressListener = (event: ProgressEvent) => void;

export interface Engine {
  /** The URL the engine was opened with. */
  readonly url: string;
  info(): Promise<EngineInfo>;
  /**
   * Builds with BuildKit, reporting progress as it comes. Resolves with the
   * image id; rejects with an EngineError naming the failed step. Aborting
   * `signal` closes the request, which makes the engine cancel the build.
   */
  build(
    options: BuildOptions,
    onProgress: ProgressListener,
    signal: AbortSignal,
  ): Promise<{ imageId: string }>;
  /** The image as a `docker save` tar (manifest.json, config, layer tars). */
  exportImage(imageId: string, signal?: AbortSignal): Promise<NodeJS.ReadableStream>;
  /** Removes the image; an image that is already gone is not an error. */
  removeImage(imageId: string): Promise<void>;
  /** Whether the engine has a network of this name (`bridge` is absent with --bridge=none). */
  hasNetwork(name: string): Promise<boolean>;
  /** Releases what the driver holds (the SSH connection); later calls fail. Idempotent. */
  close(): Promise<void>;
  /** The QEMU handlers of the engine's host when that is not this host (SSH); absent: this host's. */
  binfmt?(): BinfmtReader;
  /**
   * Registers who is told when the engine refuses for good (a remote host's
   * key changed, its login refused): every later call would fail alike.
   */
  onFatal?(listener: (error: Error) => void): void;
}

export const DEFAULT_ENGINE_URL = 'unix:///var/run/docker.sock';

export type EngineOptions = Omit<
  DockerEngineOptions,
  'url' | 'socketPath' | 'host' | 'port' | 'agent'
> &
  Pick<SshEngineOptions, 'ssh' | 'log'>;

/**
 * Opens the engine at `url`: `unix:///path/to/docker.sock`,
 * `tcp://host:port` (plain HTTP) or `ssh://user@host[:port][/path/to/docker.sock]`
 * (the remote socket over SSH, with `options.ssh`). Other schemes are errors
 * naming the URL. Nothing is dialled until the first call.
 */
export function createEngine(
  url: string = DEFAULT_ENGINE_URL,
  options: EngineOptions = {},
): Engine {
  const refuse = (code: 'invalid_argument' | 'unimplemented', detail: string): never => {
    throw new EngineError(code, { operation: `open engine ${url}`, detail, engine: url });
  };
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  const { ssh, log, ...dockerOptions } = options;
  switch (scheme) {
    case 'unix': {
      const socketPath = url.slice('unix://'.length);
      if (!socketPath.startsWith('/')) refuse('invalid_argument', 'expected unix:///absolute/path');
      return new DockerEngine({ ...dockerOptions, url, socketPath });
    }
    case 'tcp': {
      let parsed: URL;
      try {
        parsed = new URL(`http://${url.slice('tcp://'.length)}`);
      } catch {
        return refuse('invalid_argument', 'expected tcp://host:port');
      }
      if (parsed.port === '' || (parsed.pathname !== '/' && parsed.pathname !== '')) {
        refuse('invalid_argument', 'expected tcp://host:port');
      }
      const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
      return new DockerEngine({ ...dockerOptions, url, host, port: Number(parsed.port) });
    }
    case 'ssh': {
      let target;
      try {
        target = parseSshUrl(url);
      } catch (err) {
        return refuse('invalid_argument', (err as SshError).message);
      }
      return new SshEngine(url, target, { ...dockerOptions, ssh, log });
    }
    default:
      return refuse(
        'invalid_argument',
        'expected unix:///path/to/docker.sock, tcp://host:port or ssh://user@host[:port]',
      );
  }
}
