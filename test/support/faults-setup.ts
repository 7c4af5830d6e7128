// The faults suite: build dist/ once, start an empty ledger, print the table at the end.
import buildOnce from './build-once.js';
import { clearLedger, readLedger } from './fault-ledger.js';

export async function setup(): Promise<void> {
  buildOnce();
  await clearLedger();
}

export async function teardown(): Promise<void> {
  const rows = await readLedger();
  const headers = [
    'fault',
    'attempted',
    'succeeded',
    'failed cleanly',
    'tags moved to incomplete indexes',
    'finished jobs rebuilt after restart',
  ];
  const cells = rows.map((r) =>
    [
      r.fault,
      r.attempted,
      r.succeeded,
      r.failedCleanly,
      r.incompleteTagMoves,
      r.rebuiltAfterRestart,
    ].map(String),
  );
  const total = [
    'total',
    ...[1, 2, 3, 4, 5].map((i) => String(cells.reduce((sum, c) => sum + Number(c[i]), 0))),
  ];
  const all = [headers, ...cells, total];
  const widths = headers.map((_, i) => Math.max(...all.map((row) => (row[i] ?? '').length)));
  const line = (row: string[]) =>
    row.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  process.stdout.write(`\nfaults suite\n${all.map(line).join('\n')}\n`);
}
