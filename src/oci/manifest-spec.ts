/**
 * manifest-tool's spec file (`image`, `tags`, `manifests[].image/platform`),
 * so its users bring their files to `braid manifest create --from-spec`.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { UsageError } from '../errors.js';
import { array, Invalid, object, optional, string, type Infer } from '../schema.js';
import { normalizePlatform, platformFromOci, type Platform } from './platform.js';
import { parseReference, withTag, type ImageReference } from './reference.js';
import type { StitchSource } from './stitch.js';

const requireLazily = createRequire(import.meta.url);
function parseYaml(text: string): unknown {
  return (requireLazily('yaml') as typeof import('yaml')).parse(text);
}

const platformSpec = object(
  {
    architecture: string({ min: 1 }),
    os: string({ min: 1 }),
    variant: optional(string()),
    osversion: optional(string()),
    osfeatures: optional(array(string())),
    features: optional(array(string())),
  },
  { strict: true },
);

const specSchema = object(
  {
    image: string({ min: 1 }),
    tags: optional(array(string({ min: 1 }))),
    manifests: array(
      object({ image: string({ min: 1 }), platform: optional(platformSpec) }, { strict: true }),
      { min: 1 },
    ),
  },
  { strict: true },
);

export interface ManifestSpec {
  targets: ImageReference[];
  sources: StitchSource[];
}

/** The spec file the user named cannot be used: bad usage (exit 2), naming the file. */
export class SpecError extends UsageError {
  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super(`${file}: ${message}`, options);
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
  let spec: Infer<typeof specSchema>;
  try {
    spec = specSchema(doc);
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    throw new SpecError(file, err.describe('spec'));
  }
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
