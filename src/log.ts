/**
 * braid's logger: pino, one JSON event per line on stderr; pretty lines only
 * when stderr is a terminal. Lines about build work name the build, platform
 * and agent as fields (docs/observability.md lists them).
 */
import type { Logger, LevelWithSilent } from 'pino';
import { createRequire } from 'node:module';

export type { Logger };

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFormat = 'auto' | 'json' | 'pretty';

export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  /** Component name, e.g. "coordinator" or "agent". */
  component: string;
  /** Destination; stderr when omitted. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
}

export function createLogger(options: LoggerOptions): Logger {
  const stream = options.stream ?? process.stderr;
  const usePretty =
    options.format === 'pretty' || (options.format === 'auto' && stream.isTTY === true);
  const base = { component: options.component };
  const level: LevelWithSilent = options.level;
  // pino loads with the first logger: client commands that never log (and
  // import LOG_LEVELS only to check a flag) do not pay its ~20 ms at start.
  const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino');
  if (usePretty) {
    // pino-pretty loads only for a terminal.
    const pretty = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');
    return pino(
      { level, base },
      pretty({ destination: stream, colorize: stream.isTTY === true, sync: true }),
    );
  }
  return pino({ level, base, timestamp: pino.stdTimeFunctions.isoTime }, stream);
}
