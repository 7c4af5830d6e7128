/**
 * `--ssh` as buildx reads it: `default|ID[=SOCKET|KEY[,KEY...]]`. No path,
 * or an empty one, means $SSH_AUTH_SOCK; each path is a socket or a key
 * file by stat (BuildKit's sshprovider): one socket, or key files, never
 * both, and an id once.
 */
import type { Env } from '../../config/loader.js';
import { badValue } from './flag-value.js';
import { describeKind, type PathProbe } from './path-probe.js';

export type SshSource = { kind: 'socket'; path: string } | { kind: 'key'; path: string };

export interface SshSpec {
  readonly id: string;
  readonly sources: readonly SshSource[];
}

const FLAG = '--ssh';
/** BuildKit's sshforward.DefaultID: what `RUN --mount=type=ssh` without an id asks for. */
const DEFAULT_ID = 'default';

export function parseSsh(text: string, env: Env, probe: PathProbe): SshSpec {
  const eq = text.indexOf('=');
  const id = (eq < 0 ? text : text.slice(0, eq)) || DEFAULT_ID;
  let paths = eq < 0 ? [] : text.slice(eq + 1).split(',');
  if (paths.length === 0 || (paths.length === 1 && paths[0] === '')) {
    const agent = env.SSH_AUTH_SOCK ?? '';
    if (agent === '') {
      throw badValue(
        FLAG,
        text,
        `SSH_AUTH_SOCK is not set: start an ssh-agent, or name a socket or key files (--ssh ${id}=$HOME/.ssh/id_ed25519)`,
      );
    }
    paths = [agent];
  }
  const sources = paths.map((path): SshSource => {
    if (path === '') throw badValue(FLAG, text, 'an empty path in the list');
    const kind = probe(path);
    if (kind === 'socket') return { kind: 'socket', path };
    if (kind === 'file') return { kind: 'key', path };
    const what = kind === 'directory' || kind === 'other' ? ', not a socket or a key file' : '';
    throw badValue(FLAG, text, `${path} ${describeKind(kind)}${what}`);
  });
  const sockets = sources.filter((s) => s.kind === 'socket').length;
  if (sockets > 1) throw badValue(FLAG, text, 'only one agent socket per id');
  if (sockets === 1 && sources.length > 1) {
    throw badValue(FLAG, text, 'an agent socket and key files cannot be mixed under one id');
  }
  return { id, sources };
}

/** Every `--ssh` given (empty values skipped, as buildx does); an id given twice is refused. */
export function parseSshSpecs(values: readonly string[], env: Env, probe: PathProbe): SshSpec[] {
  const specs: SshSpec[] = [];
  for (const value of values) {
    if (value === '') continue;
    const spec = parseSsh(value, env, probe);
    if (specs.some((s) => s.id === spec.id)) {
      throw badValue(FLAG, value, `id "${spec.id}" is given twice`);
    }
    specs.push(spec);
  }
  return specs;
}
