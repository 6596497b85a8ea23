// npm run bench -- <suite>: runs one benchmark suite (a table printed, JSON under bench/results/).
export {};
const SUITES: Record<string, string> = {
  first: './first-result.ts',
  inference: './inference.ts',
  main: './main-job.ts',
  train: './train.ts',
  'training-memory': './training-memory.ts',
  browser: './browser.ts',
  slices: './slices.ts',
};

const suite = process.argv[2];
if (!suite || !(suite in SUITES)) {
  process.stderr.write(`usage: npm run bench -- <${Object.keys(SUITES).join('|')}>\n`);
  process.exit(2);
}
await import(SUITES[suite]);
