/**
 * What a terminal shows after a stream of progress output: enough of a VT100
 * for braid's live view (cursor up, carriage return, clear line, clear below),
 * so tests assert the screen a person reads rather than escape sequences.
 */
// eslint-disable-next-line no-control-regex
const TOKENS = /\x1b\[\d*[AJK]|\r|\n|[^\x1b\r\n]+/g;

export function screenOf(text: string): string[] {
  const rows: string[] = [''];
  let row = 0;
  for (const token of text.match(TOKENS) ?? []) {
    if (token === '\n') {
      row++;
      rows[row] ??= '';
    } else if (token === '\r') {
      // Every line braid draws starts at column 0: columns need no tracking.
    } else if (token.endsWith('A')) {
      row = Math.max(0, row - Number(token.slice(2, -1) || 1));
    } else if (token.endsWith('K')) {
      rows[row] = '';
    } else if (token.endsWith('J')) {
      rows.length = row + 1;
      rows[row] = '';
    } else {
      rows[row] = (rows[row] ?? '') + token;
    }
  }
  // The cursor's own empty row after the last newline is not a line of text.
  if (rows.at(-1) === '') rows.pop();
  return rows;
}
