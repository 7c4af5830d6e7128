/**
 * The last lines of some output, bounded in count and in width: what an
 * error shows of a build's log.
 */
export class LineTail {
  private readonly kept: string[] = [];

  constructor(
    private readonly maxLines = 40,
    private readonly maxLineChars = 500,
  ) {}

  /** Adds text; it is split into lines and empty lines are dropped. */
  push(text: string): void {
    for (const raw of text.split('\n')) {
      const line = raw.replace(/\r$/, '');
      if (line.trim() === '') continue;
      this.kept.push(capLine(line, this.maxLineChars));
      if (this.kept.length > this.maxLines) this.kept.shift();
    }
  }

  lines(): string[] {
    return [...this.kept];
  }
}

/** `line`, cut to `maxChars` with a marker saying how much was cut. */
export function capLine(line: string, maxChars: number, alreadyCut = 0): string {
  const cut = Math.max(0, line.length - maxChars) + alreadyCut;
  return cut > 0 ? `${line.slice(0, maxChars)} … [${cut} characters cut]` : line;
}
