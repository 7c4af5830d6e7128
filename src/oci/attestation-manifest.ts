/**
 * The attestation image BuildKit writes beside each platform image
 * (moby/buildkit docs/attestations/attestation-storage.md, exporter
 * containerimage writer): in-toto layers, a config, an OCI manifest, and the
 * descriptor that lists it in the index as `unknown/unknown` with the
 * `vnd.docker.reference.*` annotations. Bytes as BuildKit's Go structs
 * marshal them, so the same statements give the same digests.
 */
import { sha256Digest } from './digest.js';
import { OCI_CONFIG, OCI_MANIFEST, type Descriptor } from './media-types.js';
import { ProvenanceError, goJson, serializeStatement, type InTotoStatement } from './provenance.js';
import { ATTESTATION_DIGEST_KEY, ATTESTATION_TYPE, ATTESTATION_TYPE_KEY } from './stitch.js';

export const IN_TOTO_MEDIA_TYPE = 'application/vnd.in-toto+json';
export const PREDICATE_TYPE_ANNOTATION = 'in-toto.io/predicate-type';
export const OCI_EMPTY_MEDIA_TYPE = 'application/vnd.oci.empty.v1+json';
/** artifactType of BuildKit's OCI-artifact attestation manifests. */
export const ATTESTATION_ARTIFACT_TYPE = 'application/vnd.docker.attestation.manifest.v1+json';

/**
 * `image`: a manifest with an image config (`unknown/unknown`, the layers'
 * diff ids), what every BuildKit release writes by default and every
 * registry and tool reads (BuildKit's `oci-artifact=false`). `artifact`: an
 * OCI 1.1 artifact with `artifactType`, the empty config and a `subject`
 * (BuildKit's `oci-artifact=true`, its default from compatibility version 31).
 */
export type AttestationForm = 'image' | 'artifact';

/** One blob (or the manifest) with the bytes to upload. */
export interface AttestationBlob {
  mediaType: string;
  digest: string;
  size: number;
  bytes: Buffer;
}

export interface AttestationImage {
  /** PUT by digest (media type OCI_MANIFEST) after the blobs. */
  manifest: AttestationBlob;
  config: AttestationBlob;
  /** One in-toto statement each, in the order given. */
  layers: AttestationBlob[];
  /** Every blob to upload before the manifest: the config, then the layers. */
  blobs: AttestationBlob[];
  /** The entry for the index, after the images it describes. */
  descriptor: Descriptor & {
    platform: { architecture: 'unknown'; os: 'unknown' };
    annotations: Record<string, string>;
  };
}

/** The platform image manifest the attestations describe. */
export interface AttestationSubject {
  digest: string;
  size: number;
  mediaType: string;
}

/**
 * The attestation manifest for `subject` holding `statements` (one or more,
 * each an in-toto statement whose subject names `subject.digest`).
 */
export function attestationManifest(
  statements: InTotoStatement | readonly InTotoStatement[],
  subject: AttestationSubject,
  options: { form?: AttestationForm } = {},
): AttestationImage {
  const form = options.form ?? 'image';
  const list: readonly InTotoStatement[] = Array.isArray(statements)
    ? statements
    : [statements as InTotoStatement];
  if (list.length === 0) throw new ProvenanceError('attestation manifest: no statement');
  const [algorithm = '', hex = ''] = subject.digest.split(':');
  const layers = list.map((statement, i): AttestationBlob => {
    if (!statement.subject.some((s) => s.digest[algorithm] === hex)) {
      throw new ProvenanceError(
        `attestation manifest: statement ${i} (${statement.predicateType}) is not about ${subject.digest}`,
      );
    }
    return blob(IN_TOTO_MEDIA_TYPE, serializeStatement(statement));
  });
  const layerDescriptors = layers.map((layer, i) => ({
    mediaType: layer.mediaType,
    digest: layer.digest,
    size: layer.size,
    annotations: { [PREDICATE_TYPE_ANNOTATION]: (list[i] as InTotoStatement).predicateType },
  }));

  let config: AttestationBlob;
  let manifestObject: Record<string, unknown>;
  if (form === 'artifact') {
    config = blob(OCI_EMPTY_MEDIA_TYPE, Buffer.from('{}'));
    manifestObject = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: ATTESTATION_ARTIFACT_TYPE,
      config: {
        mediaType: config.mediaType,
        digest: config.digest,
        size: config.size,
        data: config.bytes.toString('base64'),
      },
      layers: layerDescriptors,
      subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    };
  } else {
    // An in-toto layer is stored uncompressed: its diff id is its digest.
    const imageConfig = {
      architecture: 'unknown',
      os: 'unknown',
      config: {},
      rootfs: { type: 'layers', diff_ids: layers.map((layer) => layer.digest) },
    };
    config = blob(OCI_CONFIG, Buffer.from(goJson(imageConfig)));
    manifestObject = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
      layers: layerDescriptors,
    };
  }
  // BuildKit writes the manifest with json.MarshalIndent(m, "", "  ").
  const manifest = blob(OCI_MANIFEST, Buffer.from(goJson(manifestObject, 2)));
  return {
    manifest,
    config,
    layers,
    blobs: [config, ...layers],
    descriptor: {
      mediaType: OCI_MANIFEST,
      digest: manifest.digest,
      size: manifest.size,
      annotations: {
        [ATTESTATION_DIGEST_KEY]: subject.digest,
        [ATTESTATION_TYPE_KEY]: ATTESTATION_TYPE,
      },
      platform: { architecture: 'unknown', os: 'unknown' },
    },
  };
}

function blob(mediaType: string, bytes: Buffer): AttestationBlob {
  return { mediaType, digest: sha256Digest(bytes), size: bytes.length, bytes };
}
