/**
 * Placement latency of bench:scale, from the generator's clocks: how long
 * after a job could have been placed (it was queued and an agent that can
 * build it had a free slot) the AssignJob reached that agent.
 *
 * Per platform (the simulated agents build only their native platform, so
 * each platform is its own pool), with S the job-queued times (the build's
 * createdAt, the coordinator's clock, 1 ms resolution), F the times slots
 * became free (capacity slots at each agent's welcome, one at each result
 * handed to the stream) and A the times AssignJobs arrived, each sorted:
 * the k-th assignment cannot come before the k-th job was queued nor before
 * the k-th slot was free, and an ideal scheduler makes it at
 * max(S[k], F[k]). Latency k = A[k] - max(S[k], F[k]). This needs no
 * pairing of a job with its slot, so it is fair to any placement order, and
 * a slot left idle while a job waits shows up as latency.
 */

export interface PlatformTimes {
  queued: number[];
  slotsFree: number[];
  assigned: number[];
}

export interface PlacementResult {
  /** One value per assignment, ms. */
  latenciesMs: number[];
  /** Assignments whose bound was the job's queueing (a slot was already free). */
  queueBound: number;
  /** Assignments whose bound was a slot freeing up (the job was waiting). */
  slotBound: number;
  /** Assignments with no queued job or free slot before them: the model was broken. */
  unexplained: number;
}

const ascending = (a: number, b: number) => a - b;

export function placementLatencies(platforms: Iterable<PlatformTimes>): PlacementResult {
  const result: PlacementResult = { latenciesMs: [], queueBound: 0, slotBound: 0, unexplained: 0 };
  for (const times of platforms) {
    const queued = [...times.queued].sort(ascending);
    const free = [...times.slotsFree].sort(ascending);
    const assigned = [...times.assigned].sort(ascending);
    for (const [k, at] of assigned.entries()) {
      const q = queued[k];
      const f = free[k];
      if (q === undefined || f === undefined) {
        result.unexplained++;
        continue;
      }
      if (q >= f) result.queueBound++;
      else result.slotBound++;
      // createdAt has 1 ms resolution: an assignment within that ms reads as 0, not negative.
      result.latenciesMs.push(Math.max(0, at - Math.max(q, f)));
    }
  }
  return result;
}

/** The p-quantile (0..1) of values by nearest rank; NaN when empty. */
export function quantile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort(ascending);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[rank] as number;
}

export interface Summary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

export function summarize(values: readonly number[]): Summary {
  return {
    count: values.length,
    p50: quantile(values, 0.5),
    p99: quantile(values, 0.99),
    max: values.length ? Math.max(...values) : NaN,
  };
}
