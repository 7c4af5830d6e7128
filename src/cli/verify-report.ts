/**
 * `braid verify`'s verdict and output: which checks failed under the
 * user's requirements (one line each, naming the check and the platform),
 * the table, and the JSON document.
 */
import type {
  BuildOutcome,
  ImageVerification,
  PlatformVerification,
} from '../oci/index-verifier.js';
import type { ResourceDescriptor } from '../oci/provenance.js';
import { renderTable } from './table.js';

export interface VerifyRequirements {
  /** Every platform's provenance must say it was built natively. */
  requireNative: boolean;
  /** Every platform must carry a provenance attestation about its digest. */
  requireProvenance: boolean;
}

export type VerifyCheck = 'arch' | 'provenance' | 'native' | 'attestation' | 'index';

export interface VerifyFailure {
  check: VerifyCheck;
  /** The platform, or `index` for a fault of the index as a whole. */
  platform: string;
  message: string;
}

/** The checks that failed, in platform order: arch, provenance, native; then the index's own (no image, attestations for no image). */
export function verifyFailures(
  verification: ImageVerification,
  requirements: VerifyRequirements,
): VerifyFailure[] {
  const failures: VerifyFailure[] = [];
  for (const p of verification.platforms) {
    const fail = (check: VerifyCheck, message: string) =>
      failures.push({ check, platform: p.platform, message });
    if (p.arch.state === 'failed') fail('arch', p.arch.detail);
    if (p.provenance.state === 'invalid') fail('provenance', p.provenance.detail);
    else if (p.provenance.state === 'absent' && requirements.requireProvenance) {
      fail('provenance', `none (${p.provenance.detail}), and --require-provenance is set`);
    }
    if (requirements.requireNative && p.build.state !== 'native') {
      fail('native', `${notNative(p)}, and --require-native is set`);
    }
  }
  if (verification.platforms.length === 0) {
    failures.push({
      check: 'index',
      platform: 'index',
      message: `${verification.reference} lists no platform image: nothing to verify`,
    });
  }
  for (const orphan of verification.orphans) {
    failures.push({
      check: 'attestation',
      platform: 'index',
      message:
        orphan.refersTo === undefined
          ? `attestation manifest ${orphan.attestation} names no image (no vnd.docker.reference.digest)`
          : `attestation manifest ${orphan.attestation} is for ${orphan.refersTo}, which is no image in the index`,
    });
  }
  return failures;
}

/** One line for stderr: the check, the platform, what is wrong. */
export function failureLine(failure: VerifyFailure): string {
  return `verify: ${failure.check} check failed for ${failure.platform}: ${failure.message}`;
}

function notNative(p: PlatformVerification): string {
  const { build, provenance } = p;
  if (build.state === 'emulated') {
    const reading = provenance.state === 'present' ? provenance.reading : undefined;
    const where = reading?.agent ? ` on agent ${reading.agent.name} (${reading.agent.host})` : '';
    return `built under emulation${build.qemu ? ` (${qemuText(build.qemu)})` : ''}${where}`;
  }
  if (provenance.state !== 'present') return 'no provenance says how it was built';
  const builder = build.builderPlatform ? ` (builder platform ${build.builderPlatform})` : '';
  return `its provenance does not say whether it was built natively${builder}`;
}

/** `qemu-s390x 7.2.22`: the version's first word (Debian's adds `(Debian 1:7.2+dfsg-7…)`; JSON keeps it). */
function qemuText(qemu: { handler: string; version?: string }): string {
  const version = qemu.version?.trim().split(/\s+/)[0];
  return version ? `${qemu.handler} ${version}` : qemu.handler;
}

export function modeText(build: BuildOutcome): string {
  switch (build.state) {
    case 'native':
      return build.source === 'provenance' ? 'native' : `native (builder ${build.builderPlatform})`;
    case 'emulated':
      return build.qemu ? `emulated (${qemuText(build.qemu)})` : 'emulated';
    case 'absent':
      return build.builderPlatform ? `absent (builder ${build.builderPlatform})` : 'absent';
  }
}

function archText(p: PlatformVerification): string {
  switch (p.arch.state) {
    case 'passed':
      return p.arch.remembered ? 'ok (passed before)' : `ok (${p.arch.checked} ELF)`;
    case 'skipped':
      return 'unchecked';
    case 'failed':
      return 'FAILED';
  }
}

function provenanceText(p: PlatformVerification): string {
  if (p.provenance.state === 'absent') return 'absent';
  if (p.provenance.state === 'invalid') return 'INVALID';
  const { producer, slsaVersion } = p.provenance.reading;
  return `${producer} SLSA ${slsaVersion}`;
}

function agentText(p: PlatformVerification): string {
  if (p.provenance.state !== 'present') return 'absent';
  const agent = p.provenance.reading.agent;
  return agent ? `${agent.name} (${agent.host})` : 'absent';
}

/**
 * A base image as a reader names it: `name:tag@sha256:<12 hex>` from its
 * package URL (`pkg:docker/name@tag?digest=…&platform=…`) and digest.
 */
export function baseImageText(image: ResourceDescriptor): string {
  const uri = image.uri ?? '';
  const sha = image.digest?.sha256;
  const short = sha !== undefined ? `@sha256:${sha.slice(0, 12)}` : '';
  const match = /^pkg:(?:docker|oci)\/([^@?]+)(?:@([^?]+))?/.exec(uri);
  if (!match) return `${uri}${short}`;
  const decode = (text: string) => {
    try {
      return decodeURIComponent(text.replace(/\+/g, ' '));
    } catch {
      return text;
    }
  };
  const name = decode(match[1] ?? '');
  const version = match[2] !== undefined ? decode(match[2]) : undefined;
  return `${name}${version !== undefined && !version.includes(':') ? `:${version}` : ''}${short}`;
}

function baseImagesText(p: PlatformVerification): string {
  if (p.provenance.state !== 'present') return 'absent';
  const images = p.provenance.reading.baseImages;
  return images.length > 0 ? images.map(baseImageText).join(', ') : 'absent';
}

/** The table, then the index's digest and each failed check's line. */
export function renderVerification(
  verification: ImageVerification,
  failures: readonly VerifyFailure[],
): string {
  const rows = verification.platforms.map((p) => [
    p.platform,
    p.digest,
    archText(p),
    provenanceText(p),
    agentText(p),
    modeText(p.build),
    baseImagesText(p),
  ]);
  const table = renderTable(
    ['PLATFORM', 'DIGEST', 'ARCH', 'PROVENANCE', 'AGENT (HOST)', 'MODE', 'BASE IMAGES'],
    rows,
  );
  const what =
    verification.kind === 'index'
      ? `index ${verification.digest} (${verification.mediaType})`
      : `image ${verification.digest} (${verification.mediaType}): a single-platform manifest, verified as one platform; its attestations, if any, are in the index that lists it`;
  const notes = verification.platforms.flatMap((p) => {
    const lines: string[] = [];
    if (p.arch.state === 'skipped') lines.push(`${p.platform}: arch not checked: ${p.arch.detail}`);
    if (p.provenance.state === 'present' && p.provenance.reading.absent.length > 0) {
      lines.push(
        `${p.platform}: provenance ${p.provenance.attestation} lacks ${p.provenance.reading.absent.join(', ')}`,
      );
    }
    return lines;
  });
  const verdict =
    failures.length === 0
      ? 'verified'
      : `${failures.length} check${failures.length === 1 ? '' : 's'} failed`;
  return `${table}${what}\n${notes.map((n) => `${n}\n`).join('')}${verdict}\n`;
}

/** The JSON document: every platform with what was found, nulls where nothing was. */
export function verificationJson(
  verification: ImageVerification,
  failures: readonly VerifyFailure[],
): Record<string, unknown> {
  return {
    reference: verification.reference,
    digest: verification.digest,
    mediaType: verification.mediaType,
    kind: verification.kind,
    ok: failures.length === 0,
    platforms: verification.platforms.map((p) => ({
      platform: p.platform,
      digest: p.digest,
      mediaType: p.mediaType,
      arch: p.arch,
      provenance: provenanceJson(p),
      mode: p.build.state,
      qemu: p.build.state === 'emulated' ? (p.build.qemu ?? null) : null,
      modeSource:
        p.build.state === 'native'
          ? p.build.source
          : p.build.state === 'emulated'
            ? 'provenance'
            : null,
    })),
    orphanAttestations: verification.orphans.map((o) => ({
      attestation: o.attestation,
      refersTo: o.refersTo ?? null,
    })),
    failures,
  };
}

function provenanceJson(p: PlatformVerification): Record<string, unknown> {
  const { provenance } = p;
  if (provenance.state === 'absent') return { state: 'absent', detail: provenance.detail };
  if (provenance.state === 'invalid') {
    return { state: 'invalid', attestation: provenance.attestation, detail: provenance.detail };
  }
  const r = provenance.reading;
  return {
    state: 'present',
    attestation: provenance.attestation,
    statement: provenance.statement,
    producer: r.producer,
    slsaVersion: r.slsaVersion,
    predicateType: r.predicateType,
    buildType: r.buildType,
    builderId: r.builderId ?? null,
    invocationId: r.invocationId ?? null,
    startedOn: r.startedOn ?? null,
    finishedOn: r.finishedOn ?? null,
    builderPlatform: r.builderPlatform ?? null,
    agent: r.agent ?? null,
    engine: r.engine ?? null,
    emulated: r.emulated ?? null,
    qemu: r.qemu ?? null,
    attempt: r.attempt ?? null,
    braidVersion: r.braidVersion ?? null,
    coordinator: r.coordinator ?? null,
    configSource: r.configSource ?? null,
    baseImages: r.baseImages,
    absent: r.absent,
  };
}
