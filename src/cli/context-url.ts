/**
 * Remote build contexts — a git repository or a tarball URL, which `docker
 * build` fetches — are refused: the coordinator and agents fetch nothing
 * from the internet, and the CLI does not either. The rules that tell a URL
 * from a path are docker's (`urlutil.IsGitURL`, `IsURL`), and as in docker
 * they apply only to a path that does not exist.
 */
import { BraidError, UsageError } from '../errors.js';

/** `http(s)://...git` or `...git#ref:dir`: docker's git URL over HTTP. */
const GIT_OVER_HTTP = /^https?:\/\/.*\.git(?:#.+)?$/i;
const GIT_PREFIXES = ['git://', 'git@', 'ssh://', 'github.com/'];
const URL_PREFIXES = ['http://', 'https://'];

export type RemoteContextKind = 'git' | 'url';

/** What kind of remote context `given` names, if any. */
export function remoteContextKind(given: string): RemoteContextKind | undefined {
  const lower = given.toLowerCase();
  if (GIT_OVER_HTTP.test(given) || GIT_PREFIXES.some((p) => lower.startsWith(p))) return 'git';
  if (URL_PREFIXES.some((p) => lower.startsWith(p))) return 'url';
  return undefined;
}

/** The one-line refusal of a remote context (exit 2: nothing was sent). */
export function remoteContextRefusal(given: string, kind: RemoteContextKind): BraidError {
  const message =
    kind === 'git'
      ? `braid build does not support git contexts (${given}): clone it and pass the directory`
      : `braid build does not support URL contexts (${given}): download it and pass it on stdin (braid build - < FILE)`;
  return new UsageError(message);
}
