// Prints each failed test (or test file that failed to run) from a vitest
// JSON report, with the first lines of its error, so that the end of a long
// CI log names them. Usage: node scripts/report-failures.mjs REPORT VERSION
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { stripVTControlCharacters } from 'node:util';

const [reportPath, version = process.version] = process.argv.slice(2);
const report = JSON.parse(readFileSync(reportPath, 'utf8'));
const linesPerError = 6;

function firstLines(message) {
  return stripVTControlCharacters(String(message ?? ''))
    .split('\n')
    .filter((line) => line.trim() !== '')
    .slice(0, linesPerError)
    .map((line) => `      ${line.slice(0, 300)}`)
    .join('\n');
}

for (const file of report.testResults ?? []) {
  const name = relative(process.cwd(), file.name);
  const failed = (file.assertionResults ?? []).filter((t) => t.status === 'failed');
  for (const test of failed) {
    console.log(`  [Node.js ${version}] ${name} > ${test.fullName}`);
    console.log(firstLines((test.failureMessages ?? []).join('\n')));
  }
  if (failed.length === 0 && file.status === 'failed') {
    console.log(`  [Node.js ${version}] ${name} (the file failed outside its tests)`);
    console.log(firstLines(file.message));
  }
}
