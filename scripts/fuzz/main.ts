// `npm run fuzz -- --seeds N [--diff] [--jobs J] [--seed-start S] [--only models|checkpoints]
//   [--timeout-ms T] [--rss-cap-mb M] [--full-light] [--out file.json]`: the fuzz table.
// `npm run fuzz -- --replay SEED [--only …] [--diff] [--dump mutant.bin]`: one seed, in this
// process, with its mutations and the error's stack.
// `npm run fuzz -- --write-corpus`: lists the node tests the engine loads (test/fuzz/node-cases.json).
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel } from '../../src/graph/load.ts';
import { createNodeGpuContext } from '../../src/node/index.ts';
import {
  checkpointCorpus,
  checkpointMutant,
  listLoadableNodeCases,
  modelCorpus,
  modelMutant,
  type Target,
} from '../../test/fuzz/corpus.ts';
import { runFuzz, targetOf, type SeedResult } from '../../test/fuzz/pool.ts';
import { formatReport } from '../../test/fuzz/report.ts';
import { runSeed } from '../../test/fuzz/target.ts';

const { values } = parseArgs({
  options: {
    seeds: { type: 'string', default: '200' },
    'seed-start': { type: 'string', default: '0' },
    jobs: { type: 'string', default: '2' },
    diff: { type: 'boolean', default: false },
    only: { type: 'string' },
    'timeout-ms': { type: 'string', default: '60000' },
    'rss-cap-mb': { type: 'string', default: '4096' },
    'full-light': { type: 'boolean', default: false },
    out: { type: 'string' },
    replay: { type: 'string' },
    dump: { type: 'string' },
    'write-corpus': { type: 'boolean', default: false },
  },
});

const only = values.only as Target | undefined;
if (only !== undefined && only !== 'models' && only !== 'checkpoints') {
  console.error(`--only ${only}: expected models or checkpoints`);
  process.exit(2);
}
const count = (name: string, text: string): number => {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) {
    console.error(`--${name} ${text}: expected a non-negative integer`);
    process.exit(2);
  }
  return n;
};

if (values['write-corpus']) {
  const cases = listLoadableNodeCases((bytes) => {
    const g = loadModel(bytes);
    return { inputs: g.feedInputs.map((i) => ({ name: i.name, dtype: i.dtype })) };
  });
  const file = path.resolve('test/fuzz/node-cases.json');
  fs.writeFileSync(file, JSON.stringify(cases, null, 1) + '\n');
  console.log(`${cases.length} node tests → ${file}`);
} else if (values.replay !== undefined) {
  const seed = count('replay', values.replay);
  const target = targetOf(seed, only);
  const ctx = {
    models: modelCorpus(),
    checkpoints: checkpointCorpus(),
    diff: values.diff,
    fullLight: values['full-light'],
  };
  if (values.dump) {
    const m = target === 'models' ? modelMutant(seed, ctx.models) : checkpointMutant(seed, ctx.checkpoints);
    fs.writeFileSync(values.dump, m.bytes);
    console.log(`mutant of ${m.base.name} (${m.bytes.length} bytes) → ${values.dump}`);
  }
  const gpu = target === 'models' ? await createNodeGpuContext() : undefined;
  const outcome = await runSeed(seed, target, { ...ctx, gpu, onStage: (s) => console.log(`  stage ${s}`) });
  console.log(JSON.stringify(outcome, null, 2));
  gpu?.dispose();
} else {
  const seeds = count('seeds', values.seeds);
  const report = await runFuzz({
    seeds,
    seedStart: count('seed-start', values['seed-start']),
    jobs: count('jobs', values.jobs),
    diff: values.diff,
    only,
    fullLight: values['full-light'],
    timeoutMs: count('timeout-ms', values['timeout-ms']),
    rssCapBytes: count('rss-cap-mb', values['rss-cap-mb']) * 2 ** 20,
    onOutcome: (r, done) => {
      if (done % 50 === 0 || !['typed', 'accepted'].includes(r.class)) process.stderr.write(`\r${done}/${seeds}  `);
    },
  });
  process.stderr.write('\n');
  console.log(formatReport(report, replayCommand));
  const out =
    values.out ?? path.join('bench', 'results', `fuzz-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(
    out,
    JSON.stringify({ ...report, results: report.results.map(({ outcome: _, ...r }) => r) }, null, 1),
  );
  console.log(`\nJSON: ${out}`);
}

function replayCommand(r: SeedResult): string {
  return `npm run fuzz -- --replay ${r.seed} --only ${r.target}${r.diff ? ' --diff' : ''}`;
}
