// Names what failed in one run of the suite, with the first lines of each
// error, so that the end of a long CI log says it: each failed test (from
// vitest's JSON report), and each suite whose hook failed and each error
// outside any test (from vitest's own console report, which alone has them).
// Usage: node scripts/report-failures.mjs JSON_REPORT CONSOLE_LOG VERSION
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { stripVTControlCharacters } from 'node:util';

const [reportPath, logPath, version = process.version] = process.argv.slice(2);
const linesPerError = 6;
const noise = /node_modules\/|node:internal\/|\(<anonymous>\)$/;
const indent = (lines) => lines.map((line) => `      ${line.slice(0, 300)}`).join('\n');
const nonEmpty = (text) =>
  stripVTControlCharacters(String(text ?? ''))
    .split('\n')
    .filter((line) => line.trim() !== '');

let report = {};
try {
  report = JSON.parse(readFileSync(reportPath, 'utf8'));
} catch {
  // No JSON report (vitest stopped before writing it): the console log below still tells.
}
for (const file of report.testResults ?? []) {
  const name = relative(process.cwd(), file.name);
  for (const test of (file.assertionResults ?? []).filter((t) => t.status === 'failed')) {
    console.log(`  [Node.js ${version}] ${name} > ${test.fullName}`);
    // The test's own frames, not the runner's.
    const lines = nonEmpty((test.failureMessages ?? []).join('\n')).filter((l) => !noise.test(l));
    console.log(indent(lines.slice(0, linesPerError)));
  }
}

// vitest's console report lists failed suites (a hook that threw, a file
// that did not load) and unhandled errors in sections of their own.
let log = [];
try {
  log = nonEmpty(readFileSync(logPath, 'utf8'));
} catch {
  // No console log: the failed tests above are all there is to say.
}
/** The lines of a section from `start` up to its next heading, entry or ruler. */
const entryAt = (start) => {
  const lines = [];
  for (let j = start; j < log.length && lines.length < linesPerError; j++) {
    const line = log[j].trim();
    if (/^⎯/.test(line) || line.startsWith('FAIL ') || /^Test Files /.test(line)) break;
    lines.push(log[j]);
  }
  return lines;
};
let section = null;
for (let i = 0; i < log.length; i++) {
  const line = log[i].trim();
  const heading = /^⎯+ (Failed Suites|Failed Tests|Unhandled Errors?)( \d+)? ⎯+$/.exec(line);
  const subheading = /^⎯+ ([A-Z][A-Za-z ]+) ⎯+$/.exec(line);
  if (heading) {
    section = heading[1];
  } else if (/^Test Files /.test(line)) {
    section = null;
  } else if (section === 'Failed Suites' && line.startsWith('FAIL ')) {
    console.log(`  [Node.js ${version}] ${line.slice(5).trim()} (the suite failed: its tests did not run)`);
    console.log(indent(entryAt(i + 1)));
  } else if (section?.startsWith('Unhandled') && subheading) {
    // An error outside any test (an uncaught exception, an unhandled rejection): vitest names the file after it.
    const origin = log.slice(i + 1).find((l) => /^This error originated in/.test(l.trim())) ?? '';
    const file = /"([^"]+)"/.exec(origin)?.[1] ?? 'a test file';
    console.log(`  [Node.js ${version}] ${file}: ${subheading[1].toLowerCase()} outside any test`);
    console.log(indent(entryAt(i + 1)));
  }
}
