/**
 * `--progress json`: one JSON object per event, one per line, for machines.
 * Every object has `sequence` (a decimal string: it is a uint64), `time`
 * (ISO 8601 or null) and `type`; the rest depends on `type`:
 *
 *   {"sequence":"1","time":"…","type":"build-state","state":"queued","message":"","index":null}
 *   {"sequence":"2","time":"…","type":"decision","platform":"linux/s390x","agent":"a1",
 *    "emulated":true,"reason":"no native host connected; emulating via qemu-s390x"}
 *   {"sequence":"3","time":"…","type":"job-state","platform":"linux/s390x","jobId":"j2",
 *    "state":"running","agent":"a1","emulated":true,"attempt":1,"message":"",
 *    "durationMs":null,"image":null}
 *   {"sequence":"4","time":"…","type":"log","platform":"linux/s390x","jobId":"j2",
 *    "source":"build","text":"#5 [2/4] RUN make","droppedBefore":0}
 *   {"sequence":"9","time":"…","type":"build-state","state":"succeeded","message":"",
 *    "index":{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:…","size":856}}
 *
 * States are `queued|assigned|running|succeeded|failed|cancelled` for jobs and
 * `queued|running|stitching|succeeded|failed|cancelled|timed-out` for builds;
 * log sources `build|agent|coordinator`. A build-wide log line has platform
 * null; a job's `image` is set once it succeeded. Fields are only ever added.
 */
import type { BuildEvent } from '../../gen/braid/v1/build_pb.js';
import { descriptorJson, isoTime, type DescriptorJson } from './build-view.js';
import { buildStateName, jobStateName, logSourceName, platformName } from './names.js';
import type { ProgressOutput, ProgressRenderer } from './renderer.js';
import { BuildTracker } from './tracker.js';

interface JsonEventBase {
  sequence: string;
  time: string | null;
}

export type JsonEvent = JsonEventBase &
  (
    | { type: 'build-state'; state: string; message: string; index: DescriptorJson | null }
    | {
        type: 'job-state';
        platform: string;
        jobId: string;
        state: string;
        agent: string;
        emulated: boolean;
        attempt: number;
        message: string;
        durationMs: number | null;
        image: DescriptorJson | null;
      }
    | {
        type: 'log';
        platform: string | null;
        jobId: string;
        source: string;
        text: string;
        droppedBefore: number;
      }
    | { type: 'decision'; platform: string; agent: string; emulated: boolean; reason: string }
  );

/** One event as its JSON line's object; `tracker` supplies the platform of a log line sent by job id only. */
export function eventJson(event: BuildEvent, tracker?: BuildTracker): JsonEvent | undefined {
  const base = { sequence: event.sequence.toString(), time: isoTime(event.time) };
  const body = event.body;
  switch (body.case) {
    case 'buildState':
      return {
        ...base,
        type: 'build-state',
        state: buildStateName(body.value.state),
        message: body.value.message,
        index: descriptorJson(body.value.index),
      };
    case 'jobState':
      return {
        ...base,
        type: 'job-state',
        platform:
          platformName(body.value.platform) || tracker?.platformOfJob(body.value.jobId) || '',
        jobId: body.value.jobId,
        state: jobStateName(body.value.state),
        agent: body.value.agent,
        emulated: body.value.emulated,
        attempt: body.value.attempt,
        message: body.value.message,
        durationMs: body.value.durationMs > 0n ? Number(body.value.durationMs) : null,
        image: descriptorJson(body.value.image),
      };
    case 'log':
      return {
        ...base,
        type: 'log',
        platform:
          platformName(body.value.platform) || tracker?.platformOfJob(body.value.jobId) || null,
        jobId: body.value.jobId,
        source: logSourceName(body.value.source),
        text: body.value.text,
        droppedBefore: body.value.droppedBefore,
      };
    case 'decision':
      return {
        ...base,
        type: 'decision',
        platform: platformName(body.value.platform),
        agent: body.value.agent,
        emulated: body.value.emulated,
        reason: body.value.reason,
      };
    default:
      return undefined;
  }
}

export class JsonRenderer implements ProgressRenderer {
  readonly tracker: BuildTracker;
  private readonly out: ProgressOutput;

  constructor(options: { out: ProgressOutput; tracker?: BuildTracker }) {
    this.out = options.out;
    this.tracker = options.tracker ?? new BuildTracker();
  }

  event(event: BuildEvent): void {
    if (!this.tracker.apply(event)) return;
    const json = eventJson(event, this.tracker);
    if (json) this.out.write(`${JSON.stringify(json)}\n`);
  }

  finish(): void {}

  // Words for people would break a stream of JSON lines.
  prompt(): void {}

  say(): void {}
}
