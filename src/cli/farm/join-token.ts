/**
 * Which join token a farm host's agent gets: the one given (--join-token),
 * else the one it already has while the coordinator still honours it (so a
 * second `add` changes nothing), else a new one named `farm-NAME` made in
 * the coordinator's data dir as `braid tokens create` does. Without a data
 * dir to make one in, the agent joins without a token (enough for a
 * coordinator on loopback that does not require one).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BraidError } from '../../errors.js';
import type { FarmHost } from './farm-record.js';

export type JoinTokenRecord = NonNullable<FarmHost['joinToken']>;

export interface JoinTokenChoice {
  token: string | undefined;
  record: JoinTokenRecord | undefined;
  /** What was done, for the user: `created join token "farm-x"`. */
  note: string | undefined;
}

export interface JoinTokenRequest {
  agentName: string;
  explicit: string | undefined;
  /** BRAID_JOIN_TOKEN in the host's env file, when there is one. */
  installed: string | undefined;
  /** What the farm record says braid did last time. */
  previous: JoinTokenRecord | undefined;
  /** The coordinator's data dir (braid.db). */
  dataDir: string;
}

export function joinTokenName(agentName: string): string {
  return `farm-${agentName}`.slice(0, 63);
}

export async function chooseJoinToken(request: JoinTokenRequest): Promise<JoinTokenChoice> {
  const { explicit, installed, previous, dataDir } = request;
  const file = join(dataDir, 'braid.db');
  const haveStore = existsSync(file);
  if (explicit !== undefined) {
    const kept = previous && !previous.createdByBraid ? previous : undefined;
    return { token: explicit, record: kept, note: undefined };
  }
  if (!haveStore) {
    return {
      token: installed,
      record: installed !== undefined ? previous : undefined,
      note:
        installed !== undefined
          ? undefined
          : `no join token: ${file} does not exist (pass --data-dir DIR of the coordinator, or --join-token); the agent joins without one`,
    };
  }
  // better-sqlite3 loads only here: ls and remove without a token need none of it.
  const { TokenStore } = await import('../../coordinator/token-store.js');
  const store = new TokenStore(file);
  try {
    if (installed !== undefined) {
      const found = store.lookup(installed);
      if (found && !found.revokedAt && found.kind === 'join') {
        const ours = previous?.id === found.id && previous.createdByBraid;
        return {
          token: installed,
          record: { id: found.id, name: found.name, dataDir, createdByBraid: ours },
          note: undefined,
        };
      }
    }
    const name = joinTokenName(request.agentName);
    const taken = store.find(name);
    if (taken && !taken.revokedAt) {
      if (previous?.id === taken.id && previous.createdByBraid) {
        const { record, token } = store.rotate(taken.id);
        return {
          token,
          record: { id: record.id, name: record.name, dataDir, createdByBraid: true },
          note: `rotated join token "${record.name}" (${record.id})`,
        };
      }
      throw new BraidError(
        'already_exists',
        `join token "${name}" (${taken.id}) exists and was not made for this host: revoke it (braid tokens revoke ${name}) or pass --join-token`,
      );
    }
    const { record, token } = store.create('join', name);
    return {
      token,
      record: { id: record.id, name: record.name, dataDir, createdByBraid: true },
      note: `created join token "${record.name}" (${record.id}) in ${dataDir}`,
    };
  } finally {
    store.close();
  }
}

/** Revokes the token braid made for a host; idempotent. */
export async function revokeJoinToken(record: JoinTokenRecord): Promise<string | undefined> {
  if (!record.createdByBraid) return undefined;
  const file = join(record.dataDir, 'braid.db');
  if (!existsSync(file)) {
    throw new BraidError(
      'failed_precondition',
      `cannot revoke join token "${record.name}" (${record.id}): ${file} does not exist (pass the coordinator's --data-dir)`,
    );
  }
  const { TokenStore } = await import('../../coordinator/token-store.js');
  const store = new TokenStore(file);
  try {
    const { already } = store.revoke(record.id);
    return already ? undefined : `revoked join token "${record.name}" (${record.id})`;
  } finally {
    store.close();
  }
}
