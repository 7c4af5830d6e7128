import { registrySettings } from '../../config/settings.js';
import { UsageError } from '../../errors.js';
import { createLogger } from '../../log.js';
import { archGuardVerifier } from '../../oci/image-verifier.js';
import { verifiedImagesIn } from '../../oci/verified-images.js';
import { readManifestSpec } from '../../oci/manifest-spec.js';
import { isIndexMediaType, type ImageIndex, type ImageManifest } from '../../oci/media-types.js';
import { formatPlatform, platformFromOci } from '../../oci/platform.js';
import {
  familiarReference,
  formatReference,
  parseReference,
  type ImageReference,
} from '../../oci/reference.js';
import {
  ATTESTATION_DIGEST_KEY,
  ATTESTATION_TYPE,
  ATTESTATION_TYPE_KEY,
  buildIndex,
  publishIndex,
  resolveSources,
  StitchError,
  type IndexFormat,
  type StitchSource,
} from '../../oci/stitch.js';
import { compile } from '../compile.js';
import { fromUser } from '../user-input.js';
import { parseKeyValues } from '../key-values.js';
import { registryClientFor as registryClient } from '../../oci/registry-factory.js';
import { renderTable } from '../table.js';

/** A platform as the registry's document wrote it (inspect shows, it does not normalise). */
function writtenPlatform(p: {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
}): string {
  const text = [p.os, p.architecture, p.variant].filter(Boolean).join('/');
  return p['os.version'] ? `${text} (${p['os.version']})` : text;
}

function platformToWritten(config: Parameters<typeof platformFromOci>[0]) {
  const p = platformFromOci(config);
  return {
    os: config.os ?? p.os,
    architecture: config.architecture ?? p.architecture,
    variant: config.variant,
    'os.version': config['os.version'],
  };
}

function shortDigest(digest: string): string {
  return digest.length > 19 ? `${digest.slice(0, 19)}…` : digest;
}

export async function runManifestCreate(
  sourceArgs: string[],
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { tag, fromSpec, attestations, format, annotation, dryRun, archCheck, ...rest } = flags;
  const config = compile(registrySettings(env), rest, env);
  const log = createLogger({
    level: config.logLevel,
    format: config.logFormat,
    component: 'manifest',
  });
  // Everything the user typed is parsed before the first request: bad input moves nothing.
  let targets: ImageReference[] = ((tag as string[] | undefined) ?? []).map((t) =>
    fromUser(() => parseReference(t)),
  );
  let sources: StitchSource[] = sourceArgs.map((s) => ({ ref: fromUser(() => parseReference(s)) }));
  if (typeof fromSpec === 'string') {
    if (sources.length) throw new UsageError('--from-spec and source arguments cannot be combined');
    const spec = readManifestSpec(fromSpec);
    sources = spec.sources;
    targets = [...spec.targets, ...targets];
  }
  if (sources.length === 0) throw new UsageError('no source image given');
  if (targets.length === 0) throw new UsageError('no target given: use -t REGISTRY/REPO:TAG');
  for (const target of targets) {
    if (target.digest)
      throw new UsageError(`target "${formatReference(target)}" must be a tag, not a digest`);
  }
  const annotations = parseKeyValues((annotation as string[] | undefined) ?? [], {
    flag: '--annotation',
  });
  const client = registryClient(config, env);
  // Made before the sources are fetched, so that the guard loads meanwhile.
  const verifyImage =
    archCheck === false || dryRun
      ? undefined
      : archGuardVerifier(client, {
          budgetBytes: config.archCheckBudgetBytes,
          log,
          verified: config.archCheckCacheDir
            ? verifiedImagesIn(config.archCheckCacheDir)
            : undefined,
        });
  const plan = await stitchAsAsked(async () =>
    buildIndex(await resolveSources(client, sources), {
      attestations: attestations !== false,
      format: format as IndexFormat,
      annotations,
    }),
  );
  if (dryRun) {
    process.stdout.write(`${plan.bytes.toString('utf8')}\n`);
    return;
  }
  await publishIndex(client, plan, targets, {
    verifyImage,
    onEvent: (event) => log.info({ detail: event.detail }, event.kind),
  });
  const rows = plan.entries.map((e) => [
    e.platform
      ? formatPlatform(e.platform)
      : `attestation → ${shortDigest(e.attestationFor ?? '')}`,
    e.descriptor.digest,
    String(e.descriptor.size),
    familiarReference(e.source),
  ]);
  process.stdout.write(
    `${renderTable(['PLATFORM', 'DIGEST', 'SIZE', 'SOURCE'], rows)}index ${plan.digest} (${plan.mediaType})\n` +
      targets.map((t) => `pushed ${formatReference(t)}@${plan.digest}\n`).join(''),
  );
}

/**
 * The index the user's sources and flags make. What cannot be stitched as
 * asked (two images of one platform, --format docker over OCI manifests, a
 * platform given for an index, a source that is no image) is refused as
 * invalid_argument before anything is pushed: bad usage, exit 2.
 */
async function stitchAsAsked<T>(plan: () => Promise<T>): Promise<T> {
  try {
    return await plan();
  } catch (err) {
    if (err instanceof StitchError && err.code === 'invalid_argument') {
      throw new UsageError(err.message, { cause: err });
    }
    throw err;
  }
}

export async function runManifestInspect(
  refText: string,
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): Promise<void> {
  const { raw, ...rest } = flags;
  const config = compile(registrySettings(env), rest, env);
  const ref = fromUser(() => parseReference(refText));
  const client = registryClient(config, env);
  const repo = { domain: ref.domain, repository: ref.repository };
  const fetched = await client.getManifest(repo, ref.digest ?? ref.tag ?? 'latest');
  if (raw) {
    process.stdout.write(fetched.bytes);
    return;
  }
  const header = `${formatReference(ref)}\ndigest     ${fetched.digest}\nmedia type ${fetched.mediaType}\nsize       ${fetched.bytes.length}\n`;
  if (isIndexMediaType(fetched.mediaType)) {
    const index = JSON.parse(fetched.bytes.toString('utf8')) as ImageIndex;
    const rows = (index.manifests ?? []).map((m) => {
      const attestation = m.annotations?.[ATTESTATION_TYPE_KEY] === ATTESTATION_TYPE;
      return [
        attestation ? 'attestation' : m.platform ? writtenPlatform(m.platform) : '-',
        m.digest,
        String(m.size),
        m.mediaType,
        attestation ? (m.annotations?.[ATTESTATION_DIGEST_KEY] ?? '') : '',
      ];
    });
    process.stdout.write(
      `${header}\n${renderTable(['PLATFORM', 'DIGEST', 'SIZE', 'MEDIA TYPE', 'ATTESTS'], rows)}`,
    );
    return;
  }
  const manifest = JSON.parse(fetched.bytes.toString('utf8')) as ImageManifest;
  const config_ = JSON.parse(
    (await client.getBlobBytes(repo, manifest.config.digest)).toString('utf8'),
  ) as Parameters<typeof platformFromOci>[0];
  const layers = manifest.layers ?? [];
  const total = layers.reduce((sum, l) => sum + l.size, 0);
  process.stdout.write(
    `${header}platform   ${writtenPlatform(platformToWritten(config_))}\nlayers     ${layers.length} (${total} bytes)\n`,
  );
}
