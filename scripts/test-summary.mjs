// Print the suite's closing line, "N passed, N failed", from vitest's JSON
// report plus the static checks run before it. Exit 1 when the report is
// missing or ran no test: an empty run is not a green run.
import { readFileSync } from 'node:fs';

const [file, checksPassed = '0', checksFailed = '0'] = process.argv.slice(2);
let report;
try {
  report = JSON.parse(readFileSync(file, 'utf8'));
} catch (err) {
  console.log(`no vitest report at ${file}: ${err.message}`);
  console.log(`${checksPassed} passed, ${Number(checksFailed) + 1} failed`);
  process.exit(1);
}
const passed = report.numPassedTests + Number(checksPassed);
const failed = report.numFailedTests + Number(checksFailed);
const skipped = report.numPendingTests + report.numTodoTests;
console.log(
  `tests: ${report.numPassedTests} passed, ${report.numFailedTests} failed, ${skipped} skipped in ${report.numTotalTestSuites} suites; checks: ${checksPassed} passed, ${checksFailed} failed`,
);
if (report.numTotalTests === 0) {
  console.log('vitest ran no test');
  console.log(`${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed === 0 && report.success !== false ? 0 : 1);
