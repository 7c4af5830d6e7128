/**
 * The queued jobs, indexed for placement: one queue per class of jobs that
 * the scheduler treats alike (platform, emulation policy, role), each in
 * queue order (older builds first; a re-queued job keeps its place). A
 * placement pass looks at the head of each class, never at every queued
 * job, so its cost grows with the jobs it places, not with the queue.
 */
import { JobRole } from '../gen/braid/v1/build_pb.js';
import { formatPlatform, type Platform } from '../oci/platform.js';
import type { EmulationPolicy } from './scheduler.js';

export interface QueuedEntry {
  jobId: string;
  ordinal: number;
}

export interface JobClass {
  key: string;
  platform: Platform;
  policy: EmulationPolicy;
  /** Reproducibility checks: each waits for its image job's agent, so any of them may be next. */
  check: boolean;
  /** Queue order, oldest first. */
  entries: QueuedEntry[];
  /** Its jobs no connected agent can build, since when (ms): they fail after a bound. */
  unplaceableSince: Map<string, number>;
}

export class JobQueue {
  private readonly classes = new Map<string, JobClass>();
  private readonly classOf = new Map<string, JobClass>();

  get size(): number {
    return this.classOf.size;
  }

  has(jobId: string): boolean {
    return this.classOf.has(jobId);
  }

  add(
    jobId: string,
    ordinal: number,
    platform: Platform,
    policy: EmulationPolicy,
    role: JobRole | undefined,
  ): void {
    if (this.classOf.has(jobId)) return;
    const check = role === JobRole.REPRODUCIBILITY_CHECK;
    const key = `${formatPlatform(platform)} ${policy}${check ? ' check' : ''}`;
    let jobClass = this.classes.get(key);
    if (jobClass === undefined) {
      jobClass = { key, platform, policy, check, entries: [], unplaceableSince: new Map() };
      this.classes.set(key, jobClass);
    }
    const { entries } = jobClass;
    const entry = { jobId, ordinal };
    const last = entries[entries.length - 1];
    if (last === undefined || last.ordinal < ordinal) entries.push(entry);
    else entries.splice(positionOf(entries, ordinal), 0, entry);
    this.classOf.set(jobId, jobClass);
  }

  remove(jobId: string, ordinal: number): void {
    const jobClass = this.classOf.get(jobId);
    if (jobClass === undefined) return;
    this.classOf.delete(jobId);
    jobClass.unplaceableSince.delete(jobId);
    const { entries } = jobClass;
    let at = positionOf(entries, ordinal);
    while (at < entries.length && entries[at]?.jobId !== jobId) at++;
    if (at < entries.length) entries.splice(at, 1);
    if (entries.length === 0) this.classes.delete(jobClass.key);
  }

  /** Classes with queued jobs. */
  nonEmpty(): IterableIterator<JobClass> {
    return this.classes.values();
  }

  /** Queued jobs by platform (for the coordinator's metrics). */
  countsByPlatform(): { platform: Platform; count: number }[] {
    const counts = new Map<string, { platform: Platform; count: number }>();
    for (const jobClass of this.classes.values()) {
      const key = formatPlatform(jobClass.platform);
      const entry = counts.get(key) ?? { platform: jobClass.platform, count: 0 };
      entry.count += jobClass.entries.length;
      counts.set(key, entry);
    }
    return [...counts.values()];
  }
}

/** The first position whose ordinal is not below `ordinal`. */
function positionOf(entries: readonly QueuedEntry[], ordinal: number): number {
  let low = 0;
  let high = entries.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if ((entries[mid] as QueuedEntry).ordinal < ordinal) low = mid + 1;
    else high = mid;
  }
  return low;
}
