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
import type { LiveBuilds } from './live-builds.js';
import type { JobRecord } from './store.js';
import { TERMINAL_BUILD_STATES } from './transitions.js';

export interface StitchDeps {
  live: LiveBuilds;
  registry: RegistryClient;
  events: BuildEvents;
  lifecycle: JobLifecycle;
  specs: BuildSpecs;
  /** The arch guard, applied to every image before the stitch (undefined: off). */
  verifyImage?: PublishOptions['verifyImage'];
  /** Names the builder in provenance; without it no provenance is written. */
  provenance?: ProvenanceSettings | undefined;
  /** Stitches run at once; the others wait their turn, oldest first. */
  maxConcurrent: number;
  /** Throws when this coordinator may no longer move tags (it lost the leadership). */
  beforeTagMove?: (() => Promise<void>) | undefined;
}

export class StitchStep {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly deps: StitchDeps) {}

  /** Stitches running and waiting for a turn. */
  get load(): { active: number; waiting: number } {
    return { active: this.active, waiting: this.waiting.length };
  }

  /** When every job of the build succeeded: move it to STITCHING and stitch. */
  maybeStitch(buildId: string): void {
    const { live, lifecycle } = this.deps;
    const jobs = live.jobsOf(buildId);
    if (!jobs.every((j) => j.state === JobState.SUCCEEDED)) return;
    const build = live.build(buildId);
    if (!build || build.state === BuildState.STITCHING || TERMINAL_BUILD_STATES.has(build.state))
      return;
    live.atomically(() => {
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

  /**
   * Stitch in the background, once a turn is free: a burst of builds
   * finishing together stitches a few at a time, so the first ones end
   * first. A failure fails the build, and no tag moves.
   */
  start(buildId: string, jobs: JobRecord[]): void {
    // Once the move to STITCHING is stored, on a later turn.
    this.deps.live.afterCommit(() => {
      void this.turn()
        .then(() => this.stitch(buildId, jobs))
        .catch((err: unknown) => {
          this.deps.lifecycle.buildLog(buildId).error({ err: errorLine(err) }, 'stitch failed');
          const what =
            err instanceof NotReproducibleError ? err.message : `stitch: ${errorLine(err)}`;
          this.deps.lifecycle.finishBuild(buildId, BuildState.FAILED, `${what}; no tag was moved`);
        })
        .finally(() => this.release());
    });
  }

  private turn(): Promise<void> {
    if (this.active < this.deps.maxConcurrent) {
      this.active += 1;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** The turn passes to the oldest waiting stitch. */
  private release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active -= 1;
  }

  private async stitch(buildId: string, allJobs: JobRecord[]): Promise<void> {
    const { live, registry, events } = this.deps;
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
    const annotations = live.build(buildId)?.spec.annotations ?? [];
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
    const record = live.build(buildId);
    if (record && this.deps.provenance && provenanceMode(record.spec)) {
      const repo = { domain: first.domain, repository: first.repository };
      const build = { ...record, platforms: valid.platforms, tags: valid.tags };
      const settings = this.deps.provenance;
      // One attestation per platform, pushed at once (each is a few registry round trips).
      const written = await Promise.all(
        jobs.map(async (job) => {
          // The job as stored now: its result's facts are on it.
          const stored = live.job(job.id) ?? job;
          return {
            job,
            stored,
            entry: await writeProvenance(registry, repo, build, stored, settings),
          };
        }),
      );
      for (const { job, stored, entry } of written) {
        live.updateJob(job.id, {
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
    await this.deps.beforeTagMove?.();
    for (const cache of live.build(buildId)?.spec.cacheTo ?? []) {
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
    await this.deps.beforeTagMove?.();
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
