// graft demo (npm start): the four transfer-learning cases on the shipped source network, each
// against training the same architecture from scratch with the same head, data, epochs and
// optimizer. Similar data = the Fashion-MNIST classes the source never saw; different data = the
// 8×8 handwritten digits of scikit-learn. Prints one table and writes results.json, table.md and
// SVG plots under --out.
import { existsSync, mkdirSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inMemoryDataset, type Dataset, type Sample } from '../../data/datasets.ts';
import { batches } from '../../data/batcher.ts';
import { evalTransform } from '../../data/preprocess.ts';
import { permutation, mixSeed } from '../../data/seed.ts';
import type { FloatImage } from '../../data/tensor-image.ts';
import { fashionMnist, FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT } from '../../data/node/fashion-mnist.ts';
import { readDigits, SKLEARN_DIGITS_PATH } from '../../data/node/digits.ts';
import { ModelError } from '../../graph/errors.ts';
import type { Graph } from '../../graph/ir.ts';
import { readLabels, readPreprocess, type PreprocessSpec } from '../../graph/model-metadata.ts';
import { cutPoints, reinitLayers, transfer, unfreeze } from '../../graph/surgery/index.ts';
import type { GpuContext } from '../../kernels/gpu-context.ts';
import { loadModelFile, writeFileAtomic } from '../../node/files.ts';
import { checkWritableFolder } from '../../node/atomic-write.ts';
import { createNodeGpuContext } from '../../node/index.ts';
import { Trainer, type EpochMetrics } from '../../train/index.ts';
import { flagOptions, parseCommandArgs, UsageError, valueOptions, type CommandSpec } from '../args.ts';
import { barChart, lineChart } from '../plot.ts';

/** Fashion-MNIST classes the source network was not trained on (it saw 0, 2, 3, 5, 8). */
export const FASHION_TARGET_CLASSES: readonly number[] = [1, 4, 6, 7, 9];
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const DEFAULT_SOURCE = join(REPO, 'models-onnx/source/source-net.onnx');
export const SAMPLE_ROOT = join(REPO, 'models-onnx/samples');

type CaseNumber = 1 | 2 | 3 | 4;
type DataName = 'fashion' | 'digits';

/** One case's budget: the same for the fine-tuned run and its scratch twin. */
interface CaseBudget {
  case: CaseNumber;
  data: DataName;
  perClass: number;
  epochs: number;
  batch: number;
  lr: number;
  /** Evaluate every this many epochs (and after the last) when the whole network trains. */
  valEvery: number;
}

// Small sets: 10 images per class; large: 100 per class for Fashion-MNIST, 60 for the digits
// (their 1,797 images also give the held-out part). Sized so that the whole demo (24 runs with
// 3 seeds) stays within 10 minutes on a 2-core machine with no GPU. The head on case 2's early
// features needs a higher learning rate than case 1's; the scratch twin always gets its case's
// optimizer, epochs and batches. (With many more images per class and epochs, training from
// scratch catches up with case 1 on these easy 32×32 images, and the demo would show nothing.)
const BUDGETS: Record<'full' | 'quick', CaseBudget[]> = {
  full: [
    { case: 1, data: 'fashion', perClass: 10, epochs: 10, batch: 10, lr: 3e-3, valEvery: 5 },
    { case: 2, data: 'digits', perClass: 10, epochs: 10, batch: 10, lr: 1e-2, valEvery: 5 },
    { case: 3, data: 'fashion', perClass: 100, epochs: 3, batch: 25, lr: 1e-3, valEvery: 1 },
    { case: 4, data: 'digits', perClass: 60, epochs: 3, batch: 25, lr: 1e-3, valEvery: 1 },
  ],
  quick: [
    { case: 1, data: 'fashion', perClass: 10, epochs: 8, batch: 10, lr: 3e-3, valEvery: 4 },
    { case: 2, data: 'digits', perClass: 10, epochs: 8, batch: 10, lr: 1e-2, valEvery: 4 },
    { case: 3, data: 'fashion', perClass: 40, epochs: 2, batch: 25, lr: 1e-3, valEvery: 2 },
    { case: 4, data: 'digits', perClass: 30, epochs: 2, batch: 25, lr: 1e-3, valEvery: 2 },
  ],
};
/** Held-out images per class: Fashion-MNIST's t10k split; the digits' seeded held-out part. */
const VAL_PER_CLASS: Record<DataName, number> = { fashion: 50, digits: 30 };
const VAL_BATCH = 50;
const VAL_SEED = 0x5eed;

const USAGE = 'graft demo [--seeds N] [--quick] [--cases 1,2,3,4] [--data auto|sample|full] [--model FILE] [--out DIR]';

export const demoCommand: CommandSpec = {
  name: 'demo',
  usage: USAGE,
  summary:
    'transfer cases 1–4 on the shipped source network (similar data: Fashion-MNIST classes it never saw; different data: 8×8 digits) ' +
    'against training from scratch with the same budget; prints a table, writes results.json, table.md and SVG plots to --out (default demo-output/). ' +
    '--data auto uses /usr/share/datasets/fashion-mnist when present, else the sample in models-onnx/samples',
  async run(argv) {
    const config = parseDemoArgs(argv);
    const results = await runDemo(config, (line) => process.stderr.write(`${line}\n`));
    const table = formatTable(results);
    process.stdout.write(`${table}\n`);
    writeOutputs(config.out, results, table);
    process.stdout.write(
      `wrote ${['results.json', 'table.md', 'accuracy.svg', ...results.cases.map((c) => `curves-case-${c.case}.svg`)].map((f) => join(config.out, f)).join(', ')}\n`,
    );
    return 0;
  },
};

export interface DemoConfig {
  seeds: number;
  quick: boolean;
  cases: CaseNumber[];
  data: 'auto' | 'sample' | 'full';
  model: string;
  out: string;
}

export function parseDemoArgs(argv: string[]): DemoConfig {
  const args = parseCommandArgs(argv, {
    options: { ...flagOptions('quick'), ...valueOptions('seeds', 'cases', 'data', 'model', 'out') },
    positional: 0,
    usage: USAGE,
  });
  const o = args.values;
  const seeds = o.seeds === undefined ? 3 : Number(o.seeds);
  if (!Number.isInteger(seeds) || seeds < 1 || seeds > 20)
    throw new UsageError(`--seeds must be an integer 1–20, got '${o.seeds}'`);
  const cases = (o.cases ?? '1,2,3,4').split(',').map((s) => Number(s.trim()));
  if (cases.length === 0 || cases.some((c) => ![1, 2, 3, 4].includes(c)) || new Set(cases).size !== cases.length) {
    throw new UsageError(
      `--cases takes distinct case numbers from 1, 2, 3, 4 separated by commas (e.g. 1,3), got '${o.cases}'`,
    );
  }
  const data = o.data ?? 'auto';
  if (data !== 'auto' && data !== 'sample' && data !== 'full')
    throw new UsageError(`--data must be auto, sample or full, got '${data}'`);
  if (data === 'full' && !existsSync(FASHION_MNIST_ROOT))
    throw new UsageError(
      `--data full: ${FASHION_MNIST_ROOT} not found (apt-get install dataset-fashion-mnist), or use --data sample`,
    );
  const out = o.out ?? 'demo-output';
  checkOutputFolder(out);
  return {
    seeds,
    quick: Boolean(args.values.quick),
    cases: cases as CaseNumber[],
    data,
    model: o.model ?? DEFAULT_SOURCE,
    out,
  };
}

// ─── results ────────────────────────────────────────────────────────────────────────────────

export interface RunResult {
  seed: number;
  /** Top-1 on the held-out images after the last epoch. */
  valAccuracy: number;
  seconds: number;
  featureCache: boolean;
  history: EpochMetrics[];
}

export interface VariantResult {
  trainableParameters: number;
  /** Mean and sample standard deviation (0 for one seed) of valAccuracy over the seeds. */
  mean: number;
  spread: number;
  meanSeconds: number;
  runs: RunResult[];
}

export interface CaseResult {
  case: CaseNumber;
  data: DataName;
  dataSource: string;
  classes: string[];
  perClass: number;
  trainImages: number;
  valImages: number;
  epochs: number;
  batch: number;
  optimizer: { type: 'adam'; lr: number };
  cutPoint: string;
  what: string;
  fineTuned: VariantResult;
  scratch: VariantResult;
}

export interface DemoResults {
  command: string;
  source: { file: string; parameters: number; labels?: string[] };
  machine: { cpus: number; cpuModel: string; memoryGiB: number; adapter: string };
  quick: boolean;
  seeds: number[];
  seconds: number;
  cases: CaseResult[];
}

// ─── the run ────────────────────────────────────────────────────────────────────────────────

export async function runDemo(config: DemoConfig, log: (line: string) => void): Promise<DemoResults> {
  const started = Date.now();
  if (!existsSync(config.model)) {
    throw new ModelError(
      `the demo's source network is missing; it ships in models-onnx/source/ (rebuild it with \`npm run pretrain\`) or pass --model FILE`,
      { file: config.model },
    );
  }
  const source = loadModelFile(config.model);
  const spec = readPreprocess(source);
  if (!spec)
    throw new ModelError(
      `has no preprocessing in its metadata ('onnx_graft.preprocess'); the demo needs to know how its inputs were prepared`,
      { file: config.model },
    );
  const data = loadData(config, spec);
  const plan = BUDGETS[config.quick ? 'quick' : 'full'].filter((b) => config.cases.includes(b.case));
  const seeds = Array.from({ length: config.seeds }, (_, i) => i + 1);
  const gpu = await createNodeGpuContext();
  const total = plan.length * seeds.length * 2;
  let done = 0;
  try {
    const cases: CaseResult[] = [];
    for (const budget of plan) {
      const set = data[budget.data];
      const rewrite = (seed: number) =>
        transfer(source, {
          case: budget.case,
          classes: set.classes.length,
          seed,
          cutAt: budget.case === 2 ? earlyCut(source) : undefined,
          pooling: budget.case === 2 ? 'flatten' : undefined,
        });
      const first = rewrite(1);
      const fine: RunResult[] = [];
      const scratch: RunResult[] = [];
      let scratchTrainable = 0;
      for (const seed of seeds) {
        const train = set.trainSubset(budget.perClass, seed);
        for (const variant of ['fine-tuned', 'scratch'] as const) {
          const { graph, summary } = rewrite(seed);
          if (variant === 'scratch') {
            toScratch(graph, new Set(summary.newWeights), seed);
            scratchTrainable = graph.parameterCount((i) => i.trainable);
          }
          const label = `[${++done}/${total}] case ${budget.case} (${budget.data}, ${budget.perClass}/class) seed ${seed} ${variant}`;
          log(`${label}: training ${train.length} images, ${budget.epochs} epochs…`);
          const run = await trainOnce(
            gpu,
            graph,
            budget,
            train,
            set.val,
            seed,
            variant === 'fine-tuned' && budget.case <= 2,
          );
          log(
            `${label}: validation accuracy ${percent(run.valAccuracy)} in ${run.seconds.toFixed(1)} s${run.featureCache ? ' (frozen body: features cached)' : ''}`,
          );
          (variant === 'fine-tuned' ? fine : scratch).push(run);
        }
      }
      cases.push({
        case: budget.case,
        data: budget.data,
        dataSource: set.source,
        classes: set.classes,
        perClass: budget.perClass,
        trainImages: budget.perClass * set.classes.length,
        valImages: set.val.length,
        epochs: budget.epochs,
        batch: budget.batch,
        optimizer: { type: 'adam', lr: budget.lr },
        cutPoint: first.summary.cutPoint,
        what: describeCase(budget.case, first.summary.cutPoint),
        fineTuned: summarize(first.summary.trainableParameters, fine),
        scratch: summarize(scratchTrainable, scratch),
      });
    }
    return {
      command: `graft demo ${config.quick ? '--quick ' : ''}--seeds ${config.seeds} --cases ${config.cases.join(',')} --data ${config.data}`,
      source: {
        file: shownPath(config.model),
        parameters: source.parameterCount((i) => i.trainable),
        labels: readLabels(source),
      },
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model ?? 'unknown',
        memoryGiB: Math.round(totalmem() / 2 ** 30),
        adapter: describeAdapter(gpu),
      },
      quick: config.quick,
      seeds,
      seconds: (Date.now() - started) / 1000,
      cases,
    };
  } finally {
    gpu.dispose();
  }
}

/** Case 2's cut: the first stage end (ResNet: the stem's max pool), with a flatten head. */
function earlyCut(graph: Graph): string {
  // The end of the first stage: edges and blobs, before the layers that learnt the source's
  // clothing shapes. Its maps are still 8×8 at 32×32 input, so the head flattens them
  // (keeping where the strokes are) instead of averaging them away: later cuts, or global
  // pooling here, fell behind training from scratch in trials.
  const points = cutPoints(graph);
  const pick = points.find((p) => !p.features && p.stageEnd);
  if (!pick) throw new ModelError('no stage end to cut at for case 2', { file: graph.source });
  return pick.tensor;
}

/** The same graph with every weight but the new head re-initialised, and everything trainable. */
function toScratch(graph: Graph, head: Set<string>, seed: number): void {
  reinitLayers(
    graph,
    graph.nodes.filter((n) => n.inputs.some((i) => graph.initializers.has(i) && !head.has(i))),
    seed,
  );
  unfreeze(graph, 'all');
}

async function trainOnce(
  gpu: GpuContext,
  graph: Graph,
  budget: CaseBudget,
  train: Dataset,
  val: Dataset,
  seed: number,
  frozenBody: boolean,
): Promise<RunResult> {
  const started = Date.now();
  const trainer = await Trainer.create(gpu, graph);
  try {
    const valSource = () => batches(val, { batchSize: VAL_BATCH });
    // A frozen body caches the validation features too, so validate every epoch; a network that
    // trains everywhere pays a full forward per validation, so only every valEvery epochs.
    const fitResult = await trainer.fit(
      (epoch) => batches(train, { batchSize: budget.batch, shuffle: true, seed, epoch, dropLast: true }),
      {
        epochs: budget.epochs,
        optimizer: { type: 'adam', lr: budget.lr },
        seed,
        validation: frozenBody ? valSource : undefined,
        callbacks: {
          onEpochEnd: async (m) => {
            if (frozenBody || (m.epoch % budget.valEvery !== 0 && m.epoch !== budget.epochs)) return;
            const v = await trainer.evaluate(valSource);
            Object.assign(m, { valLoss: v.loss, valTop1: v.top1, valTop5: v.top5 });
          },
        },
      },
    );
    const last = fitResult.history[fitResult.history.length - 1];
    if (last?.valTop1 === undefined)
      throw new Error(`case ${budget.case}, seed ${seed}: no validation after the last epoch`);
    return {
      seed,
      valAccuracy: last.valTop1,
      seconds: (Date.now() - started) / 1000,
      featureCache: fitResult.featureCache,
      history: fitResult.history,
    };
  } finally {
    trainer.dispose();
  }
}

function summarize(trainableParameters: number, runs: RunResult[]): VariantResult {
  const acc = runs.map((r) => r.valAccuracy);
  const mean = acc.reduce((a, b) => a + b, 0) / acc.length;
  const spread = acc.length > 1 ? Math.sqrt(acc.reduce((a, b) => a + (b - mean) ** 2, 0) / (acc.length - 1)) : 0;
  return {
    trainableParameters,
    mean,
    spread,
    meanSeconds: runs.reduce((a, r) => a + r.seconds, 0) / runs.length,
    runs,
  };
}

function describeCase(c: CaseNumber, cut: string): string {
  switch (c) {
    case 1:
      return 'classifier cut; body frozen; new dense layer trained';
    case 2:
      return `cut after ${shortName(cut)}; kept layers frozen; new flatten + dense head trained`;
    case 3:
    case 4:
      return 'last layer replaced; all layers trained from the pretrained weights';
  }
}

function shortName(tensor: string): string {
  return tensor.split('/').filter(Boolean)[1] ?? tensor;
}

/** Repository files relative to the repository, anything else absolute. */
function shownPath(path: string): string {
  const rel = relative(REPO, resolve(path));
  return rel.startsWith('..') ? resolve(path) : rel;
}

function describeAdapter(gpu: GpuContext): string {
  const { vendor, architecture, description, device } = gpu.info;
  return [vendor, architecture, description || device].filter(Boolean).join(' ');
}

// ─── data ───────────────────────────────────────────────────────────────────────────────────

interface TargetData {
  classes: string[];
  source: string;
  val: Dataset;
  /** `perClass` training images of each class, chosen by `seed`; never a validation image. */
  trainSubset(perClass: number, seed: number): Dataset;
}

function loadData(config: DemoConfig, spec: PreprocessSpec): Record<DataName, TargetData> {
  const prepare = evalTransform(spec);
  const useFull = config.data === 'full' || (config.data === 'auto' && existsSync(FASHION_MNIST_ROOT));
  const fashionRoot = useFull ? FASHION_MNIST_ROOT : join(SAMPLE_ROOT, 'fashion-mnist');
  const fashionTrain = fashionMnist('train', { root: fashionRoot });
  const fashionTest = fashionMnist('test', { root: fashionRoot });
  const digitsPath = join(SAMPLE_ROOT, 'digits.csv.gz');
  const digits = readDigits(existsSync(digitsPath) ? digitsPath : SKLEARN_DIGITS_PATH);

  const labelMap = new Map(FASHION_TARGET_CLASSES.map((c, k) => [c, k]));
  const fashion = pool(fashionTrain.labels, (l) => labelMap.get(l));
  const fashionVal = take(
    pool(fashionTest.labels, (l) => labelMap.get(l)),
    VAL_PER_CLASS.fashion,
    VAL_SEED,
    'Fashion-MNIST t10k',
  );
  // The digits have one split: a fixed seeded held-out part per class, training drawn from the rest.
  const digitsAll = pool(digits.labels, (l) => l);
  const digitsVal = take(digitsAll, VAL_PER_CLASS.digits, VAL_SEED, 'digits');
  const held = new Set(digitsVal);
  const digitsPool = digitsAll.map((list) => list.filter((i) => !held.has(i)));

  const images = (
    get: (i: number) => FloatImage,
    indices: number[],
    labelOf: (i: number) => number,
    classes: string[],
  ) => inMemoryDataset(indices.map(get), indices.map(labelOf), classes);
  const cached = (d: Dataset) => {
    const memo = new Map<number, FloatImage>();
    return (i: number) => {
      let im = memo.get(i);
      if (!im) memo.set(i, (im = prepare((d.get(i) as Sample).image, () => 0)));
      return im;
    };
  };
  const fashionClasses = FASHION_TARGET_CLASSES.map((c) => FASHION_MNIST_CLASSES[c]);
  const trainImage = cached(fashionTrain);
  const testImage = cached(fashionTest);
  const digitImage = cached(digits);
  const fashionLabel = (d: { labels: Uint8Array }) => (i: number) => labelMap.get(d.labels[i])!;
  return {
    fashion: {
      classes: fashionClasses,
      source: shownPath(fashionRoot),
      val: images(testImage, fashionVal, fashionLabel(fashionTest), fashionClasses),
      trainSubset: (perClass, seed) =>
        images(
          trainImage,
          take(fashion, perClass, seed, 'Fashion-MNIST train'),
          fashionLabel(fashionTrain),
          fashionClasses,
        ),
    },
    digits: {
      classes: [...(digits.classes as readonly string[])],
      source: shownPath(existsSync(digitsPath) ? digitsPath : SKLEARN_DIGITS_PATH),
      val: images(digitImage, digitsVal, (i) => digits.labels[i], [...(digits.classes as readonly string[])]),
      trainSubset: (perClass, seed) =>
        images(
          digitImage,
          take(digitsPool, perClass, seed, 'digits (without the held-out part)'),
          (i) => digits.labels[i],
          [...(digits.classes as readonly string[])],
        ),
    },
  };
}

/** Dataset indices per target class (index = target label); labels mapped to undefined are dropped. */
function pool(labels: Uint8Array, target: (label: number) => number | undefined): number[][] {
  const out: number[][] = [];
  labels.forEach((l, i) => {
    const k = target(l);
    if (k !== undefined) (out[k] ??= []).push(i);
  });
  return out;
}

/** `perClass` indices of every class, by a seeded shuffle of each class's list; class order kept. */
function take(pools: number[][], perClass: number, seed: number, what: string): number[] {
  return pools.flatMap((list, k) => {
    if (list.length < perClass)
      throw new UsageError(`${what}: class ${k} has ${list.length} images, the demo needs ${perClass}`);
    const order = permutation(list.length, mixSeed(seed, k));
    return Array.from(order.subarray(0, perClass), (j) => list[j]);
  });
}

// ─── output ─────────────────────────────────────────────────────────────────────────────────

const percent = (v: number) => `${(100 * v).toFixed(1)}%`;
const pm = (v: VariantResult) => `${(100 * v.mean).toFixed(1)} ± ${(100 * v.spread).toFixed(1)}%`;
const count = (n: number) => n.toLocaleString('en-US');

export function formatTable(r: DemoResults): string {
  const header = [
    'case',
    'data',
    'img/class',
    'cut / frozen / trained',
    'trainable params (fine-tuned / scratch)',
    'epochs',
    'wall s (fine-tuned / scratch)',
    'val acc fine-tuned',
    'val acc scratch',
  ];
  const rows = r.cases.map((c) => [
    String(c.case),
    `${c.data === 'fashion' ? 'similar: Fashion-MNIST' : 'different: digits'} (${c.classes.length} classes)`,
    String(c.perClass),
    c.what,
    `${count(c.fineTuned.trainableParameters)} / ${count(c.scratch.trainableParameters)}`,
    String(c.epochs),
    `${c.fineTuned.meanSeconds.toFixed(1)} / ${c.scratch.meanSeconds.toFixed(1)}`,
    pm(c.fineTuned),
    pm(c.scratch),
  ]);
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [
    line(header),
    line(header.map((_, i) => (i === 0 || i === 2 || i === 4 || i === 5 || i >= 6 ? '---:' : '---'))),
    ...rows.map(line),
    '',
    `Source network ${r.source.file} (${count(r.source.parameters)} parameters); data: ${[...new Set(r.cases.map((c) => c.dataSource))].join(', ')}; ` +
      `validation: ${r.cases.map((c) => `case ${c.case} ${c.valImages} held-out images`).join(', ')}; ` +
      `Adam, the same for scratch; accuracy mean ± standard deviation over seeds ${r.seeds.join(', ')}; wall time per run (mean). ` +
      `Scratch: the same graph with every weight but the new head re-initialised and all of it trained. ` +
      `Machine: ${r.machine.cpus} CPUs (${r.machine.cpuModel}), WebGPU adapter ${r.machine.adapter}; whole demo ${r.seconds.toFixed(0)} s.`,
  ].join('\n');
}

/** The demo makes its output folder; then it must take files (checkWritableFolder's probe). */
function checkOutputFolder(out: string): void {
  try {
    mkdirSync(out, { recursive: true });
  } catch (e) {
    throw new UsageError(
      `--out ${out}: cannot write there (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); pass a writable folder`,
    );
  }
  checkWritableFolder(out, '--out');
}

function writeOutputs(out: string, r: DemoResults, table: string): void {
  const text = (s: string) => new TextEncoder().encode(s);
  writeFileAtomic(join(out, 'results.json'), text(`${JSON.stringify(r, null, 1)}\n`));
  writeFileAtomic(join(out, 'table.md'), text(`${table}\n`));
  writeFileAtomic(
    join(out, 'accuracy.svg'),
    text(
      barChart({
        title: 'Validation accuracy: fine-tuned vs trained from scratch (mean over seeds)',
        groups: r.cases.map(
          (c) => `case ${c.case}: ${c.data === 'fashion' ? 'similar' : 'different'}, ${c.perClass}/class`,
        ),
        series: [
          { name: 'fine-tuned', values: r.cases.map((c) => 100 * c.fineTuned.mean) },
          { name: 'scratch', values: r.cases.map((c) => 100 * c.scratch.mean) },
        ],
        yLabel: 'validation accuracy (%)',
        yRange: [0, 100],
        format: (v) => v.toFixed(1),
      }),
    ),
  );
  for (const c of r.cases) {
    writeFileAtomic(
      join(out, `curves-case-${c.case}.svg`),
      text(
        lineChart({
          title: `Case ${c.case} (${c.data}, ${c.perClass} images/class): accuracy per epoch, mean over seeds`,
          xLabel: 'epoch',
          yLabel: 'accuracy',
          yRange: [0, 1],
          series: [
            { name: 'fine-tuned, validation', points: meanCurve(c.fineTuned.runs, 'valTop1') },
            { name: 'scratch, validation', points: meanCurve(c.scratch.runs, 'valTop1') },
            { name: 'fine-tuned, training', points: meanCurve(c.fineTuned.runs, 'top1'), dashed: true },
            { name: 'scratch, training', points: meanCurve(c.scratch.runs, 'top1'), dashed: true },
          ],
        }),
      ),
    );
  }
}

/** Per epoch where every run has the metric: its mean over the runs. */
function meanCurve(runs: RunResult[], key: 'valTop1' | 'top1'): [number, number][] {
  const points: [number, number][] = [];
  for (const m of runs[0].history) {
    const values = runs.map((r) => r.history.find((h) => h.epoch === m.epoch)?.[key]);
    if (values.every((v): v is number => v !== undefined))
      points.push([m.epoch, values.reduce((a, b) => a + b, 0) / values.length]);
  }
  return points;
}
