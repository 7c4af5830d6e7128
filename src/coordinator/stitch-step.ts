/**
 * The stitch: once every job of a build succeeded, compare the
 * reproducibility checks' images, write provenance, push the index under
 * the cache-to refs and then under every tag — only now is any tag moved.
 */
import { create } from '@bufbuild/protobuf';
import { AnnotationLevel, BuildState, CacheType } from '../gen/braid/v1/build_pb.js';
import {
  ImageDescriptorSchema,
  JobState,
  type ImageDescriptor,
} from '../gen/braid/v1/common_pb.js';
import { BraidError, errorLine } from '../errors.js';
import { formatReference, parseReference, withTag, type ImageReference } from '../oci/reference.js';
import type { RegistryClient } from '../oci/registry.js';
import { buildIndex, publishIndex, resolveSources, type PublishOptions } from '../oci/stitch.js';
import { annotationsAt } from './build-annotations.js';
import type { BuildEvents } from './build-events.js';
import type { BuildSpecs } from './build-specs.js';
import type { JobLifecycle } from './job-lifecycle.js';
import {
  provenanceLine,
  provenanceMode,
  writeProvenance,
  type ProvenanceSettings,
} from './provenance-writer.js';
import { compareBuilds, isCheckJob, NotReproducibleError } from './reproducibility-check.js';
import type { BuildStore, JobRecord } from './store.js';
import { TERMINAL_BUILD_STATES } from './transitions.js';

export interface StitchDeps {
  store: BuildStore;
  registry: RegistryClient;
  events: BuildEvents;
  lifecycle: JobLifecycle;
  specs: BuildSpecs;
  /** The arch guard, applied to every image before the stitch (undefined: off). */
  verifyImage?: PublishOptions['verifyImage'];
  /** Names the builder in provenance; without it no provenance is written. */
  provenance?: ProvenanceSettings | undefined;
}

export class StitchStep {
  constructor(private readonly deps: StitchDeps) {}

  /** When every job of the build succeeded: move it to STITCHING and stitch. */
  maybeStitch(buildId: string): void {
    const { store, lifecycle } = this.deps;
    const jobs = store.jobsOf(buildId);
    if (!jobs.every((j) => j.state === JobState.SUCCEEDED)) return;
    const build = store.getBuildRecord(buildId);
    if (!build || build.state === BuildState.STITCHING || TERMINAL_BUILD_STATES.has(build.state))
      return;
    store.atomically(() => {
      if (build.state === BuildState.QUEUED)
        lifecycle.moveBuild(build, BuildState.RUNNING, 'building');
      lifecycle.moveBuild(
        { ...build, state: BuildState.RUNNING },
        BuildState.STITCHING,
        'every platform pushed; verifying and stitching the index',
      );
    });
    this.start(buildId, jobs);
  }

  /** Stitch in the background; a failure fails the build, and no tag moves. */
  start(buildId: string, jobs: JobRecord[]): void {
    // On a later turn: the move to STITCHING commits before the stitch reads or writes.
    void Promise.resolve()
      .then(() => this.stitch(buildId, jobs))
      .catch((err: unknown) => {
        this.deps.lifecycle.buildLog(buildId).error({ err: errorLine(err) }, 'stitch failed');
        const what =
          err instanceof NotReproducibleError ? err.message : `stitch: ${errorLine(err)}`;
        this.deps.lifecycle.finishBuild(buildId, BuildState.FAILED, `${what}; no tag was moved`);
      });
  }

  private async stitch(buildId: string, allJobs: JobRecord[]): Promise<void> {
    const { store, registry, events } = this.deps;
    const log = (line: string) => events.log(buildId, line);
    const valid = this.deps.specs.of(buildId);
    const first = valid.tags[0] as ImageReference;
    // --check-reproducible: each platform's two images must be one before anything is pushed.
    const jobs = allJobs.filter((j) => !isCheckJob(j));
    if (jobs.length < allJobs.length)
      await compareBuilds(
        registry,
        { domain: first.domain, repository: first.repository },
        allJobs,
        log,
      );
    const sources = jobs.map((j) => ({
      ref: { domain: first.domain, repository: first.repository, digest: j.image?.digest ?? '' },
      platform: j.platform,
    }));
    const annotations = store.getBuildRecord(buildId)?.spec.annotations ?? [];
    const entries = (await resolveSources(registry, sources)).map((entry) => {
      if (!entry.platform) return entry;
      const added = annotationsAt(annotations, AnnotationLevel.MANIFEST_DESCRIPTOR, entry.platform);
      return Object.keys(added).length === 0
        ? entry
        : {
            ...entry,
            descriptor: {
              ...entry.descriptor,
              annotations: { ...entry.descriptor.annotations, ...added },
            },
          };
    });
    const record = store.getBuildRecord(buildId);
    if (record && this.deps.provenance && provenanceMode(record.spec)) {
      const repo = { domain: first.domain, repository: first.repository };
      const build = { ...record, platforms: valid.platforms, tags: valid.tags };
      const settings = this.deps.provenance;
      // One attestation per platform, pushed at once (each is a few registry round trips).
      const written = await Promise.all(
        jobs.map(async (job) => {
          // The job as stored now: its result's facts are on it.
          const stored = store.getJob(job.id) ?? job;
          return {
            job,
            stored,
            entry: await writeProvenance(registry, repo, build, stored, settings),
          };
        }),
      );
      for (const { job, stored, entry } of written) {
        store.updateJob(job.id, {
          attestation: create(ImageDescriptorSchema, {
            digest: entry.descriptor.digest,
            sizeBytes: BigInt(entry.descriptor.size),
            mediaType: entry.descriptor.mediaType,
          }),
        });
        log(provenanceLine(stored, entry));
        entries.push(entry);
      }
    }
    const plan = buildIndex(entries, {
      attestations: true,
      format: 'auto',
      annotations: annotationsAt(annotations, AnnotationLevel.INDEX),
    });
    // The arch guard runs before the first push (it remembers its passes).
    const publish: PublishOptions = {
      verifyImage: this.deps.verifyImage,
      onEvent: (e) => log(`${e.kind} ${e.detail}`),
    };
    // --cache-to type=registry: the same index, whose images carry inline
    // cache, under the cache ref — before the tags, so a refused cache push
    // moves no tag (unless ignore-error).
    for (const cache of store.getBuildRecord(buildId)?.spec.cacheTo ?? []) {
      if (cache.type !== CacheType.REGISTRY) continue;
      try {
        await publishIndex(registry, plan, [parseReference(cache.ref)], publish);
      } catch (err) {
        if (!cache.ignoreError)
          throw new BraidError('failed_precondition', `cache-to ${cache.ref}: ${errorLine(err)}`, {
            cause: err,
          });
        log(`cache-to ${cache.ref} failed (ignore-error): ${errorLine(err)}`);
      }
    }
    await publishIndex(registry, plan, valid.tags, publish);
    const index: ImageDescriptor = create(ImageDescriptorSchema, {
      digest: plan.digest,
      sizeBytes: BigInt(plan.bytes.length),
      mediaType: plan.mediaType,
    });
    this.deps.lifecycle.finishBuild(
      buildId,
      BuildState.SUCCEEDED,
      `pushed ${plan.digest} to ${valid.tags.map((t) => formatReference(withTag(t, t.tag ?? 'latest'))).join(', ')}`,
      index,
    );
  }
}
