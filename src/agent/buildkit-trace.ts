/**
 * BuildKit's progress, as the engine forwards it in `moby.buildkit.trace`
 * aux lines, turned into what a person reads: steps named as BuildKit prints
 * them (`[2/4] RUN make`) starting, completing, cached or failing, and each
 * step's output line by line. Bounded: lines are capped in width, partial
 * lines in size, and each step keeps only a short tail for errors.
 */
import { StringDecoder } from 'node:string_decoder';
import { fromBinary } from '@bufbuild/protobuf';
import {
  StatusResponseSchema,
  type StatusResponse,
  type Vertex,
} from '../gen/moby/buildkit/v1/control_pb.js';
import { BraidError } from '../errors.js';
import { LineTail, capLine } from './line-tail.js';

/** The aux id of a trace line. */
export const BUILDKIT_TRACE_ID = 'moby.buildkit.trace';

export type StepState = 'started' | 'completed' | 'cached' | 'error';

export type ProgressEvent =
  | {
      kind: 'step';
      name: string;
      state: StepState;
      error?: string;
      /** BuildKit's vertex digest and the digests of its inputs. */
      digest: string;
      inputs: readonly string[];
    }
  | { kind: 'log'; step: string; stream: 'stdout' | 'stderr'; text: string };

export interface FailedStep {
  name: string;
  error: string;
  /** The last lines the step printed. */
  logTail: string[];
}

export interface TraceOptions {
  /** Longer log lines are cut (default 4000 characters). */
  maxLineChars?: number;
  /** Lines kept per step for error reports (default 20). */
  tailLines?: number;
}

/** Decodes the base64 `aux` of a trace line into BuildKit's StatusResponse. */
export function decodeTrace(aux: unknown): StatusResponse {
  if (typeof aux !== 'string') {
    throw new BraidError('internal', `${BUILDKIT_TRACE_ID}: aux is ${typeof aux}, not base64 text`);
  }
  try {
    return fromBinary(StatusResponseSchema, Buffer.from(aux, 'base64'));
  } catch (err) {
    throw new BraidError('internal', `${BUILDKIT_TRACE_ID}: undecodable StatusResponse`, {
      cause: err,
    });
  }
}

interface StepRecord {
  name: string;
  startedSent: boolean;
  /** Completed, cached or failed: nothing more is reported. */
  finished: boolean;
  tail: LineTail;
}

interface PartialLine {
  step: StepRecord;
  stream: 'stdout' | 'stderr';
  decoder: StringDecoder;
  text: string;
  /** Characters dropped from `text` beyond the width cap. */
  cut: number;
}

/** Errors of steps BuildKit cancelled because another one failed. */
const CANCELLED = /^(context canceled|canceled)$/i;

/**
 * Folds successive StatusResponses into progress events. BuildKit resends a
 * vertex whole on every change, so each state is reported once.
 */
export class BuildkitTrace {
  private readonly steps = new Map<string, StepRecord>();
  private readonly partial = new Map<string, PartialLine>();
  private readonly maxLineChars: number;
  private readonly tailLines: number;
  private failure: { name: string; error: string; digest: string } | undefined;

  constructor(options: TraceOptions = {}) {
    this.maxLineChars = options.maxLineChars ?? 4000;
    this.tailLines = options.tailLines ?? 20;
  }

  /** The events one StatusResponse adds. */
  update(status: StatusResponse): ProgressEvent[] {
    const events: ProgressEvent[] = [];
    for (const vertex of status.vertexes) this.vertexEvents(vertex, events);
    for (const log of status.logs) {
      const stream = log.stream === 2n ? 'stderr' : 'stdout';
      this.logEvents(log.vertex, stream, log.msg, events);
    }
    for (const warning of status.warnings) {
      const text = Buffer.from(warning.short).toString('utf8').trim();
      if (text !== '')
        this.emitLine(this.step(warning.vertex), 'stderr', `WARNING: ${text}`, 0, events);
    }
    return events;
  }

  /** Lines still waiting for their newline, as events; call once the stream ended. */
  end(): ProgressEvent[] {
    const events: ProgressEvent[] = [];
    for (const [key, line] of this.partial) {
      const text = line.text + line.decoder.end();
      if (text !== '') this.emitLine(line.step, line.stream, text, line.cut, events);
      this.partial.delete(key);
    }
    return events;
  }

  /**
   * The step that failed: the first error that is not a cancellation (BuildKit
   * cancels the steps running beside a failed one), else the first error.
   */
  failedStep(): FailedStep | undefined {
    if (this.failure === undefined) return undefined;
    const step = this.steps.get(this.failure.digest);
    return {
      name: this.failure.name,
      error: this.failure.error,
      logTail: step ? step.tail.lines() : [],
    };
  }

  private step(digest: string): StepRecord {
    let step = this.steps.get(digest);
    if (step === undefined) {
      step = {
        name: digest,
        startedSent: false,
        finished: false,
        // Lines arrive already capped (with a marker); the tail must not cut them again.
        tail: new LineTail(this.tailLines, this.maxLineChars + 64),
      };
      this.steps.set(digest, step);
    }
    return step;
  }

  private vertexEvents(vertex: Vertex, events: ProgressEvent[]): void {
    const step = this.step(vertex.digest);
    if (vertex.name !== '') step.name = vertex.name;
    if (step.finished) return;
    const name = step.name;
    const ids = { digest: vertex.digest, inputs: [...vertex.inputs] };
    if (vertex.error !== '') {
      step.finished = true;
      events.push({ kind: 'step', name, state: 'error', error: vertex.error, ...ids });
      const real = !CANCELLED.test(vertex.error.trim());
      if (this.failure === undefined || (real && CANCELLED.test(this.failure.error.trim()))) {
        this.failure = { name, error: vertex.error, digest: vertex.digest };
      }
      return;
    }
    if (vertex.cached) {
      step.finished = true;
      events.push({ kind: 'step', name, state: 'cached', ...ids });
      return;
    }
    if (vertex.started !== undefined && !step.startedSent) {
      step.startedSent = true;
      events.push({ kind: 'step', name, state: 'started', ...ids });
    }
    if (vertex.completed !== undefined) {
      step.finished = true;
      events.push({ kind: 'step', name, state: 'completed', ...ids });
    }
  }

  private logEvents(
    digest: string,
    stream: 'stdout' | 'stderr',
    msg: Uint8Array,
    events: ProgressEvent[],
  ): void {
    const key = `${digest} ${stream}`;
    let line = this.partial.get(key);
    if (line === undefined) {
      line = {
        step: this.step(digest),
        stream,
        decoder: new StringDecoder('utf8'),
        text: '',
        cut: 0,
      };
      this.partial.set(key, line);
    }
    const pieces = line.decoder.write(Buffer.from(msg)).split('\n');
    const rest = pieces.pop() ?? '';
    for (const piece of pieces) {
      this.emitLine(line.step, stream, line.text + piece, line.cut, events);
      line.text = '';
      line.cut = 0;
    }
    line.text += rest;
    // A carriage return redraws the line (progress bars): keep what a terminal shows.
    const redraw = line.text.lastIndexOf('\r', line.text.length - 2);
    if (redraw !== -1) {
      line.text = line.text.slice(redraw + 1);
      line.cut = 0;
    }
    if (line.text.length > this.maxLineChars) {
      line.cut += line.text.length - this.maxLineChars;
      line.text = line.text.slice(0, this.maxLineChars);
    }
  }

  private emitLine(
    step: StepRecord,
    stream: 'stdout' | 'stderr',
    raw: string,
    cut: number,
    events: ProgressEvent[],
  ): void {
    let text = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const redraw = text.lastIndexOf('\r');
    if (redraw !== -1) text = text.slice(redraw + 1);
    text = capLine(text, this.maxLineChars, cut);
    step.tail.push(text);
    events.push({ kind: 'log', step: step.name, stream, text });
  }
}
