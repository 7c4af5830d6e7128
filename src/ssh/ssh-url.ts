/**
 * `ssh://user@host[:port][/path]` — the address of an SSH host, and (for
 * an engine) the unix socket on it. The user is required: a daemon's own
 * login name is rarely the one on the far host.
 */
import { SshError } from './errors.js';

export const DEFAULT_SSH_PORT = 22;

export interface SshTarget {
  user: string;
  /** Host name or IP address, lower case, IPv6 without brackets. */
  host: string;
  port: number;
  /** The absolute path after the host, when the URL names one (`/run/user/1000/docker.sock`). */
  path: string | undefined;
  /** `ssh://user@host:port`, for messages and logs (never holds a secret). */
  display: string;
}

const USAGE = 'expected ssh://user@host[:port][/path/to/socket]';
const USER = /^[A-Za-z0-9._][A-Za-z0-9._-]*\$?$/;
const HOST_NAME = /^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/;

/** Host and port as OpenSSH writes them: `host`, or `[host]:port` off port 22. */
export function hostPort(host: string, port: number): string {
  return port === DEFAULT_SSH_PORT ? host : `[${host}]:${port}`;
}

export function parseSshUrl(url: string): SshTarget {
  const refuse = (why: string): never => {
    throw new SshError('invalid_argument', `SSH URL "${redact(url)}"`, `${why}; ${USAGE}`);
  };
  if (!/^ssh:\/\//i.test(url)) refuse('not an ssh:// URL');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return refuse('not a valid URL');
  }
  if (parsed.password !== '') {
    refuse('a password in the URL is not supported (use a key or ssh-agent)');
  }
  if (parsed.search !== '' || parsed.hash !== '') refuse('a query or fragment is not supported');
  let user: string;
  try {
    user = decodeURIComponent(parsed.username);
  } catch {
    return refuse('the user is not valid');
  }
  if (user === '') refuse('the user is missing');
  if (!USER.test(user)) refuse(`"${user}" is not a valid user name`);

  const bracketed = /^\[([0-9A-Fa-f:.]+)\]$/.exec(parsed.hostname);
  const host = (bracketed?.[1] ?? parsed.hostname).toLowerCase();
  if (host === '' || (bracketed === null && !HOST_NAME.test(host))) {
    refuse(`"${parsed.hostname}" is not a valid host`);
  }
  const port = parsed.port === '' ? DEFAULT_SSH_PORT : Number(parsed.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    refuse(`port ${parsed.port} is out of range`);

  let path: string | undefined;
  if (parsed.pathname !== '' && parsed.pathname !== '/') {
    try {
      path = decodeURIComponent(parsed.pathname);
    } catch {
      return refuse('the path is not valid');
    }
    // URL has already resolved "." and ".." segments: the path is absolute.
    if (path.includes('\0')) refuse('the path holds a NUL byte');
  }
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return { user, host, port, path, display: `ssh://${user}@${shownHost}:${port}` };
}

/** The URL with any password replaced, safe to print. */
function redact(url: string): string {
  return url.replace(/^(ssh:\/\/[^:@/]*):[^@/]*@/i, '$1:***@');
}
