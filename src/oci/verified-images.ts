/**
 * Images the arch guard has passed, remembered on disk by manifest digest
 * and platform. A manifest digest pins its config and every layer, so a pass
 * stays true: stitching the same children again (re-tagging a release,
 * retrying a push) needs no layer read. Only passes are kept; a mismatch is
 * checked afresh every time. The guard's scan budget and a version of its
 * rules are part of the key, so a stricter guard does not trust a laxer one.
 */
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isValidDigest } from './digest.js';

/** Bump when the guard's rules change what passes. */
const GUARD_RULES_VERSION = 1;

export interface VerifiedImages {
  has(digest: string, platform: string, budgetBytes: number): Promise<boolean>;
  add(digest: string, platform: string, budgetBytes: number): Promise<void>;
}

/** A cache in `dir`: one empty file per passed image; unreadable means "not passed". */
export function verifiedImagesIn(dir: string): VerifiedImages {
  const pathOf = (digest: string, platform: string, budgetBytes: number): string | undefined => {
    if (!isValidDigest(digest)) return undefined;
    const bucket = `v${GUARD_RULES_VERSION}-${budgetBytes}-${platform.replace(/[^A-Za-z0-9.-]/g, '_')}`;
    return join(dir, bucket, digest.replace(':', '-'));
  };
  return {
    async has(digest, platform, budgetBytes) {
      const path = pathOf(digest, platform, budgetBytes);
      if (!path) return false;
      return stat(path).then(
        (found) => found.isFile(),
        () => false,
      );
    },
    async add(digest, platform, budgetBytes) {
      const path = pathOf(digest, platform, budgetBytes);
      if (!path) return;
      // A cache that cannot be written only costs a re-check next time.
      await mkdir(join(path, '..'), { recursive: true, mode: 0o700 })
        .then(() => writeFile(path, ''))
        .catch(() => undefined);
    },
  };
}

/**
 * The same record in memory, for a long-running process (the coordinator):
 * at most `maxEntries` passes, the oldest forgotten first.
 */
export function verifiedImagesInMemory(maxEntries = 50_000): VerifiedImages {
  const passed = new Set<string>();
  const keyOf = (digest: string, platform: string, budgetBytes: number) =>
    `v${GUARD_RULES_VERSION}\0${budgetBytes}\0${platform}\0${digest}`;
  return {
    has: async (digest, platform, budgetBytes) => passed.has(keyOf(digest, platform, budgetBytes)),
    async add(digest, platform, budgetBytes) {
      if (!isValidDigest(digest)) return;
      const key = keyOf(digest, platform, budgetBytes);
      passed.delete(key);
      passed.add(key);
      if (passed.size > maxEntries) passed.delete(passed.values().next().value as string);
    },
  };
}
