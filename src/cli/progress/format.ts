/** Durations, ages and terminal-safe text for progress output and tables. */

/** `850ms`, `12.3s`, `2m05s`, `1h02m`. */
export function formatDuration(ms: number): string {
  const value = Math.max(0, ms);
  if (value < 1000) return `${Math.round(value)}ms`;
  if (value < 60_000) return `${(Math.floor(value / 100) / 10).toFixed(1)}s`;
  const totalSeconds = Math.floor(value / 1000);
  if (totalSeconds < 3600) {
    return `${Math.floor(totalSeconds / 60)}m${String(totalSeconds % 60).padStart(2, '0')}s`;
  }
  const totalMinutes = Math.floor(totalSeconds / 60);
  return `${Math.floor(totalMinutes / 60)}h${String(totalMinutes % 60).padStart(2, '0')}m`;
}

/** Coarse age for tables (`12s`, `5m`, `3h`, `2d`): the coordinator's own words for it. */
export { formatAge } from '../../text.js';

// CSI and OSC escape sequences, then any other C0 control but tab.
// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]/g;
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\x00-\x08\x0b-\x1f\x7f]/g;

/**
 * Splits remote text into printable lines: no escape sequences (a build log
 * must not move our cursor), and of a `\r`-redrawn line only what shows last.
 */
export function printableLines(text: string): string[] {
  const lines = text.replace(/\r\n/g, '\n').replace(/\n$/, '').split('\n');
  return lines.map((line) => {
    const shown = line.split('\r').filter((part) => part !== '');
    return (shown[shown.length - 1] ?? '').replace(ESCAPES, '').replace(CONTROLS, '');
  });
}

/** Cuts a line to `width` characters, marking the cut. */
export function truncate(line: string, width: number): string {
  if (width <= 0 || line.length <= width) return line;
  if (width === 1) return line.slice(0, 1);
  return `${line.slice(0, width - 1)}…`;
}
