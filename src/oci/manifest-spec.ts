/**
 * manifest-tool's spec file (`image`, `tags`, `manifests[].image/platform`),
 * so its users bring their files to `braid manifest create --from-spec`.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { z } from 'zod';
import { BraidError } from '../errors.js';
import { normalizePlatform, platformFromOci, type Platform } from './platform.js';
import { parseReference, withTag, type ImageReference } from './reference.js';
import type { StitchSource } from './stitch.js';

const requireLazily = createRequire(import.meta.url);
function parseYaml(text: string): unknown {
  return (requireLazily('yaml') as typeof import('yaml')).parse(text);
}

const platformSpec = z
  .object({
    architecture: z.string().min(1),
    os: z.string().min(1),
    variant: z.string().optional(),
    osversion: z.string().optional(),
    osfeatures: z.array(z.string()).optional(),
    features: z.array(z.string()).optional(),
  })
  .strict();

const specSchema = z
  .object({
    image: z.string().min(1),
    tags: z.array(z.string().min(1)).optional(),
    manifests: z
      .array(z.object({ image: z.string().min(1), platform: platformSpec.optional() }).strict())
      .min(1),
  })
  .strict();

export interface ManifestSpec {
  targets: ImageReference[];
  sources: StitchSource[];
}

export class SpecError extends BraidError {
  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super('invalid_argument', `${file}: ${message}`, options);
  }
}

/** Parse a spec's text; `file` names it in errors. */
export function parseManifestSpec(text: string, file: string): ManifestSpec {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new SpecError(file, `not valid YAML: ${(err as Error).message.split('\n')[0]}`, {
      cause: err,
    });
  }
  const parsed = specSchema.safeParse(doc);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : 'spec';
    throw new SpecError(file, `${where}: ${issue?.message ?? 'invalid'}`);
  }
  const spec = parsed.data;
  const at = (where: string, fn: () => ImageReference): ImageReference => {
    try {
      return fn();
    } catch (err) {
      throw new SpecError(file, `${where}: ${(err as Error).message}`, { cause: err });
    }
  };
  const image = at('image', () => parseReference(spec.image));
  const targets = [
    image,
    ...(spec.tags ?? []).map((tag, i) => at(`tags.${i}`, () => withTag(image, tag))),
  ];
  const sources = spec.manifests.map((m, i): StitchSource => {
    const ref = at(`manifests.${i}.image`, () => parseReference(m.image));
    if (!m.platform) return { ref };
    let platform: Platform;
    try {
      platform = normalizePlatform(
        platformFromOci({
          os: m.platform.os,
          architecture: m.platform.architecture,
          variant: m.platform.variant,
          'os.version': m.platform.osversion,
          'os.features': m.platform.osfeatures,
        }),
      );
    } catch (err) {
      throw new SpecError(file, `manifests.${i}.platform: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return { ref, platform };
  });
  return { targets, sources };
}

export function readManifestSpec(file: string): ManifestSpec {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new SpecError(file, `cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {
      cause: err,
    });
  }
  return parseManifestSpec(text, file);
}
