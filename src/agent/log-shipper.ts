/**
 * A job's log lines on their way to the coordinator: batched into bounded
 * chunks with sequence numbers; when the stream backs up, lines beyond the
 * buffer limit are dropped and the next chunk says how many.
 */
import { LogSource } from '../gen/braid/v1/build_pb.js';

export interface LogChunk {
  jobId: string;
  firstSequence: bigint;
  lines: string[];
  source: LogSource;
  dropped: number;
}

export interface LogShipperOptions {
  jobId: string;
  send: (chunk: LogChunk) => Promise<void>;
  /** Lines per chunk. */
  maxLinesPerChunk?: number;
  /** Lines held while a send is in flight; more are dropped and counted. */
  maxBufferedLines?: number;
  /** A partial chunk waits at most this long. */
  flushIntervalMs?: number;
}

export class LogShipper {
  private buffer: { line: string; source: LogSource }[] = [];
  private nextSequence = 1n;
  private dropped = 0;
  private sending: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly maxLines: number;
  private readonly maxBuffered: number;
  private readonly intervalMs: number;

  constructor(private readonly options: LogShipperOptions) {
    this.maxLines = options.maxLinesPerChunk ?? 200;
    this.maxBuffered = options.maxBufferedLines ?? 5000;
    this.intervalMs = options.flushIntervalMs ?? 200;
  }

  add(line: string, source: LogSource = LogSource.BUILD): void {
    if (this.buffer.length >= this.maxBuffered) {
      this.dropped++;
      return;
    }
    this.buffer.push({ line, source });
    if (this.buffer.length >= this.maxLines) void this.flush();
    else this.timer ??= setTimeout(() => void this.flush(), this.intervalMs);
  }

  /** Send everything buffered (waits for the sends). */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.sending) await this.sending;
    while (this.buffer.length > 0) {
      const source = this.buffer[0]?.source ?? LogSource.BUILD;
      // One source per chunk: take the run of lines that share it.
      let count = 0;
      while (
        count < this.buffer.length &&
        count < this.maxLines &&
        this.buffer[count]?.source === source
      )
        count++;
      const lines = this.buffer.splice(0, count).map((l) => l.line);
      const chunk: LogChunk = {
        jobId: this.options.jobId,
        firstSequence: this.nextSequence,
        lines,
        source,
        dropped: this.dropped,
      };
      this.nextSequence += BigInt(lines.length);
      this.dropped = 0;
      this.sending = this.options.send(chunk);
      try {
        await this.sending;
      } finally {
        this.sending = undefined;
      }
    }
  }
}
