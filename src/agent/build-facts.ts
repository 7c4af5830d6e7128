/**
 * What a job's provenance says of how its platform was built, as the agent
 * sees it: the base images BuildKit resolved (its `FROM ref@digest` steps),
 * and, for `--provenance mode=max`, every step with its timing and cache hit.
 * Bounded: at most MAX_STEPS steps and MAX_BASE_IMAGES images.
 */
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import type { BuildFactsSchema, BuildStepSchema } from '../gen/braid/v1/agent_pb.js';
import type { ProgressEvent } from './buildkit-trace.js';

type StepInit = MessageInitShape<typeof BuildStepSchema>;
export type BuildFactsInit = MessageInitShape<typeof BuildFactsSchema>;

export const MAX_STEPS = 2000;
const MAX_BASE_IMAGES = 64;
/** BuildKit names a resolved base `[stage 1/4] FROM ref@sha256:...`. */
const FROM_STEP = /^\[[^\]]*\] FROM (\S+?)@(sha256:[a-f0-9]{64})(?:\s|$)/;

export class BuildFactsRecorder {
  private readonly baseImages = new Map<string, { ref: string; digest: string }>();
  private readonly steps = new Map<string, StepInit>();

  constructor(
    private readonly withSteps: boolean,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  /** Takes every progress event of the build. */
  record(event: ProgressEvent): void {
    if (event.kind !== 'step') return;
    const from = FROM_STEP.exec(event.name);
    if (from && this.baseImages.size < MAX_BASE_IMAGES) {
      const [, ref = '', digest = ''] = from;
      this.baseImages.set(`${ref}@${digest}`, { ref, digest });
    }
    if (!this.withSteps) return;
    let step = this.steps.get(event.digest);
    if (!step) {
      if (this.steps.size >= MAX_STEPS) return;
      step = { digest: event.digest, name: event.name, inputs: [...event.inputs] };
      this.steps.set(event.digest, step);
    }
    const now = timestampFromDate(this.clock());
    if (event.state === 'started') step.startedAt = now;
    if (event.state === 'cached') step.cached = true;
    if (event.state === 'completed' || event.state === 'cached' || event.state === 'error')
      step.finishedAt = now;
    if (event.state === 'error') step.error = event.error ?? '';
  }

  /** The facts so far; the caller adds the engine's and the job's own. */
  facts(): Pick<BuildFactsInit, 'baseImages' | 'steps'> {
    return { baseImages: [...this.baseImages.values()], steps: [...this.steps.values()] };
  }
}
