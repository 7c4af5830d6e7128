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

export function archGuardVerifier(client: RegistryClient, options: VerifierOptions) {
  // The guard (and zlib) load while the caller fetches its sources, and are
  // waited for only when an image has to be read: a run whose images all
  // passed before never waits for them.
  const guard = import('./arch-guard.js');
  guard.catch(() => undefined);
  return async (
    entry: IndexEntry & { platform: NonNullable<IndexEntry['platform']> },
    repo: Repository,
  ): Promise<void> => {
    const platformText = formatPlatform(entry.platform);
    const { digest } = entry.descriptor;
    if (await options.verified?.has(digest, platformText, options.budgetBytes)) {
      options.log?.info({ platform: platformText, digest }, 'arch check passed earlier');
      return;
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
  };
}
