/**
 * The error of every engine call: what braid asked the engine to do, what the
 * engine answered, and for a failed build the step, its exit code and the
 * last lines it printed.
 */
import { BraidError, type ErrorCode } from '../errors.js';

export interface EngineErrorDetails {
  /** What braid was doing, with its subject: `build linux/s390x`, `export image sha256:…`. */
  operation: string;
  /** The engine's own message, e.g. `executor failed running [/bin/sh -c exit 3]: exit code: 3`. */
  detail: string;
  /** The engine the call went to, as configured (`unix:///var/run/docker.sock`). */
  engine?: string;
  /** The build step that failed, as BuildKit names it (`[2/4] RUN make`). */
  step?: string;
  /** Exit code of the step's process, when the engine reported one. */
  exitCode?: number;
  /** The last log lines before the failure (of the failed step when known). */
  logTail?: readonly string[];
  /** The HTTP status of the engine's answer, when it refused the request. */
  status?: number;
}

export class EngineError extends BraidError {
  readonly operation: string;
  readonly detail: string;
  readonly engine: string | undefined;
  readonly step: string | undefined;
  readonly exitCode: number | undefined;
  readonly logTail: readonly string[];
  readonly status: number | undefined;

  constructor(code: ErrorCode, details: EngineErrorDetails, options?: { cause?: unknown }) {
    const where = details.step !== undefined ? ` at ${details.step}` : '';
    super(code, `${details.operation} failed${where}: ${details.detail}`, options);
    this.operation = details.operation;
    this.detail = details.detail;
    this.engine = details.engine;
    this.step = details.step;
    this.exitCode = details.exitCode ?? exitCodeOf(details.detail);
    this.logTail = Object.freeze([...(details.logTail ?? [])]);
    this.status = details.status;
  }
}

/**
 * The exit code in an engine's message: BuildKit says `…: exit code: 3`
 * (`executor failed running [...]` before BuildKit 0.11, `process "..." did
 * not complete successfully` after).
 */
export function exitCodeOf(message: string): number | undefined {
  const match = /exit code: (\d+)/.exec(message);
  return match ? Number(match[1]) : undefined;
}
