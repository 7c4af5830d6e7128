/**
 * The arch guard applied to an image in a registry: read its manifest and
 * config, stream its layers, and refuse it when its binaries are not of the
 * platform the index will claim for it.
 */
import type { Logger } from '../log.js';
import type { ArchCheckInput } from './arch-guard.js';
import type { ImageManifest } from './media-types.js';
import { formatPlatform } from './platform.js';
import type { RegistryClient, Repository } from './registry.js';
import type { IndexEntry } from './stitch.js';
import type { VerifiedImages } from './verified-images.js';

export interface VerifierOptions {
  /** Uncompressed layer bytes the scan may read per image. */
  budgetBytes: number;
  log?: Logger;
  /** Passes remembered from earlier checks; an image found here is not read again. */
  verified?: VerifiedImages;
}

/** What the guard said of a passed image (a mismatch throws ArchMismatchError). */
export interface ArchVerdict {
  /** Passed in an earlier check and remembered: nothing was read this time. */
  remembered: boolean;
  /** ELF files examined, all of the expected architecture. */
  checked: number;
  /** Why something was not checked, one line each. */
  skipped: string[];
}

/** The guard as stitches use it: resolves when the image passes, throws to refuse it. */
export function archGuardVerifier(client: RegistryClient, options: VerifierOptions) {
  const check = archGuardCheck(client, options);
  return async (
    entry: IndexEntry & { platform: NonNullable<IndexEntry['platform']> },
    repo: Repository,
  ): Promise<void> => {
    await check(entry, repo);
  };
}

/** The guard with its verdict: what it checked, or that the image passed before. */
export function archGuardCheck(client: RegistryClient, options: VerifierOptions) {
  // The guard (and zlib) load while the caller fetches its sources, and are
  // waited for only when an image has to be read: a run whose images all
  // passed before never waits for them.
  const guard = import('./arch-guard.js');
  guard.catch(() => undefined);
  return async (
    entry: Pick<IndexEntry, 'descriptor'> & { platform: NonNullable<IndexEntry['platform']> },
    repo: Repository,
  ): Promise<ArchVerdict> => {
    const platformText = formatPlatform(entry.platform);
    const { digest } = entry.descriptor;
    if (await options.verified?.has(digest, platformText, options.budgetBytes)) {
      options.log?.info({ platform: platformText, digest }, 'arch check passed earlier');
      return { remembered: true, checked: 0, skipped: [] };
    }
    const { checkImageArchitecture } = await guard;
    const fetched = await client.getManifest(repo, entry.descriptor.digest);
    const manifest = JSON.parse(fetched.bytes.toString('utf8')) as ImageManifest;
    const config = JSON.parse(
      (await client.getBlobBytes(repo, manifest.config.digest)).toString('utf8'),
    ) as ArchCheckInput['config'];
    const result = await checkImageArchitecture({
      platform: entry.platform,
      platformText,
      config,
      layers: (manifest.layers ?? []).map((l) => ({
        digest: l.digest,
        mediaType: l.mediaType,
        size: l.size,
      })),
      openLayer: (digest) => {
        const size = manifest.layers.find((l) => l.digest === digest)?.size;
        return client.getBlob(repo, digest, size);
      },
      budgetBytes: options.budgetBytes,
    });
    options.log?.info(
      {
        platform: platformText,
        digest: entry.descriptor.digest,
        entrypoint: result.entrypoint?.resolved,
        checked: result.checked.length,
        skipped: result.skipped,
      },
      'arch check passed',
    );
    await options.verified?.add(digest, platformText, options.budgetBytes);
    return { remembered: false, checked: result.checked.length, skipped: result.skipped };
  };
}
