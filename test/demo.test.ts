// `graft demo`, reduced: transfer case 1 (similar data, small labelled set) against training from
// scratch, 3 seeds, few epochs, on the SHIPPED source network and data sample. Case 1 must beat
// scratch by at least 10 points of mean validation accuracy. The table, results.json and plots
// come from that real run; parameter counts and the mean ± spread are recomputed here from the
// model file and the per-run figures. Bad arguments fail before any training.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { fashionMnist, FASHION_MNIST_ROOT } from '../src/data/node/index.ts';
import {
  DEFAULT_SOURCE,
  demoCommand,
  FASHION_TARGET_CLASSES,
  parseDemoArgs,
  runDemo,
  type DemoResults,
} from '../src/cli/commands/demo.ts';
import { UsageError } from '../src/cli/args.ts';
import type { Graph } from '../src/graph/ir.ts';
import { isFloatType, sizeOf } from '../src/graph/tensor.ts';
import { loadModelFile } from '../src/node/files.ts';

const out = mkdtempSync(join(tmpdir(), 'demo-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

/** Trainable float parameters counted by walking the graph: BatchNormalization's running mean and variance never train. */
function trainableCount(g: Graph): number {
  const stats = new Set(
    g.nodes.filter((n) => n.opType === 'BatchNormalization').flatMap((n) => [n.inputs[3], n.inputs[4]]),
  );
  let total = 0;
  for (const [name, init] of g.initializers)
    if (isFloatType(init.value.dtype) && !stats.has(name)) total += sizeOf(init.value.dims);
  return total;
}

describe('graft demo --quick --cases 1 (shipped source network and sample)', () => {
  let results: DemoResults;
  let printed = '';

  beforeAll(async () => {
    if (!existsSync(DEFAULT_SOURCE))
      throw new Error(
        `${DEFAULT_SOURCE} is missing: the demo's source network ships in the repository (npm run pretrain rebuilds it)`,
      );
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
      printed += String(chunk);
      return true;
    });
    try {
      expect(await demoCommand.run(['--quick', '--cases', '1', '--seeds', '3', '--data', 'sample', '--out', out])).toBe(
        0,
      );
    } finally {
      write.mockRestore();
    }
    results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as DemoResults;
  });

  it('case 1 beats training from scratch by at least 10 points of validation accuracy (mean of 3 seeds)', () => {
    const [c] = results.cases;
    const mean = (runs: { valAccuracy: number }[]) => runs.reduce((a, r) => a + r.valAccuracy, 0) / runs.length;
    const fine = mean(c.fineTuned.runs);
    const scratch = mean(c.scratch.runs);
    expect(fine - scratch).toBeGreaterThanOrEqual(0.1);
  });

  it('results.json describes the run: seeds, data, counts recomputed from the model file', () => {
    expect(results.seeds).toEqual([1, 2, 3]);
    expect(results.quick).toBe(true);
    expect(results.cases).toHaveLength(1);
    const [c] = results.cases;
    expect(c.case).toBe(1);
    expect(c.data).toBe('fashion');
    expect(c.dataSource).toBe('models-onnx/samples/fashion-mnist');
    expect(c.classes).toEqual(['Trouser', 'Coat', 'Shirt', 'Sneaker', 'Ankle boot']);
    expect(c.trainImages).toBe(c.perClass * 5);
    expect(c.valImages).toBeGreaterThanOrEqual(100);
    // Case 1: one new dense layer on the features (in × 5 + 5); scratch: every weight of the
    // source but its old classifier, plus that same new layer.
    const source = loadModelFile(DEFAULT_SOURCE);
    const classifier = [...source.nodes].reverse().find((n) => n.opType === 'Gemm')!;
    const w = source.initializers.get(classifier.inputs[1])!.value.dims;
    const transB = classifier.attributes.transB?.type === 'int' && classifier.attributes.transB.value === 1;
    const inFeatures = transB ? w[1] : w[0];
    const oldHead = sizeOf(w) + sizeOf(source.initializers.get(classifier.inputs[2])!.value.dims);
    const newHead = inFeatures * 5 + 5;
    expect(c.fineTuned.trainableParameters).toBe(newHead);
    expect(c.scratch.trainableParameters).toBe(trainableCount(source) - oldHead + newHead);
    for (const variant of [c.fineTuned, c.scratch]) {
      expect(variant.runs.map((r) => r.seed)).toEqual([1, 2, 3]);
      for (const run of variant.runs) {
        expect(run.history.map((h) => h.epoch)).toEqual(Array.from({ length: c.epochs }, (_, i) => i + 1));
        expect(run.valAccuracy).toBe(run.history[c.epochs - 1].valTop1);
        expect(run.valAccuracy).toBeGreaterThan(0);
        expect(run.valAccuracy).toBeLessThanOrEqual(1);
        expect(run.seconds).toBeGreaterThan(0);
      }
      const acc = variant.runs.map((r) => r.valAccuracy);
      const m = acc.reduce((a, b) => a + b, 0) / 3;
      expect(variant.mean).toBeCloseTo(m, 12);
      expect(variant.spread).toBeCloseTo(Math.sqrt(acc.reduce((a, b) => a + (b - m) ** 2, 0) / 2), 12);
    }
    expect(c.fineTuned.runs.every((r) => r.featureCache)).toBe(true);
    expect(c.scratch.runs.some((r) => r.featureCache)).toBe(false);
  });

  it('prints one table whose row carries the figures of results.json, and writes table.md and the plots', () => {
    const [c] = results.cases;
    const rows = printed.split('\n').filter((l) => l.startsWith('| '));
    expect(rows).toHaveLength(3); // header, rule, case 1
    const cells = rows[2]
      .split('|')
      .slice(1, -1)
      .map((s) => s.trim());
    const pm = (v: { mean: number; spread: number }) =>
      `${(100 * v.mean).toFixed(1)} ± ${(100 * v.spread).toFixed(1)}%`;
    expect(cells[0]).toBe('1');
    expect(cells[2]).toBe(String(c.perClass));
    expect(cells[4]).toBe(
      `${c.fineTuned.trainableParameters.toLocaleString('en-US')} / ${c.scratch.trainableParameters.toLocaleString('en-US')}`,
    );
    expect(cells[5]).toBe(String(c.epochs));
    expect(cells[7]).toBe(pm(c.fineTuned));
    expect(cells[8]).toBe(pm(c.scratch));
    expect(readFileSync(join(out, 'table.md'), 'utf8')).toContain(rows[2]);
    const bars = readFileSync(join(out, 'accuracy.svg'), 'utf8');
    expect(bars).toMatch(/^<\?xml[^]*<svg[^]*<\/svg>\s*$/);
    expect(bars).toContain('fine-tuned');
    expect(bars).toContain('scratch');
    const curves = readFileSync(join(out, 'curves-case-1.svg'), 'utf8');
    expect(curves).toContain('<svg');
    expect(curves).toContain('scratch, validation');
  });
});

describe('the shipped data sample (models-onnx/samples)', () => {
  it('holds 300 / 100 images per target class, each one byte for byte an image of the full split with the same label', () => {
    if (!existsSync(FASHION_MNIST_ROOT))
      throw new Error(
        `${FASHION_MNIST_ROOT} is missing: apt-get install dataset-fashion-mnist (the sample is checked against it)`,
      );
    for (const [split, per] of [
      ['train', 300],
      ['test', 100],
    ] as const) {
      const sample = fashionMnist(split, { root: 'models-onnx/samples/fashion-mnist' });
      const full = fashionMnist(split);
      const counts = new Map<number, number>();
      sample.labels.forEach((l) => counts.set(l, (counts.get(l) ?? 0) + 1));
      expect([...counts].sort((a, b) => a[0] - b[0])).toEqual(FASHION_TARGET_CLASSES.map((c) => [c, per]));
      const byPixels = new Map<string, number[]>();
      for (let i = 0; i < full.length; i++) {
        const key = Buffer.from(full.pixels.subarray(i * 784, (i + 1) * 784)).toString('base64');
        byPixels.set(key, [...(byPixels.get(key) ?? []), full.labels[i]]);
      }
      for (let i = 0; i < sample.length; i++) {
        const labels = byPixels.get(Buffer.from(sample.pixels.subarray(i * 784, (i + 1) * 784)).toString('base64'));
        expect(labels, `${split} sample image ${i}`).toContain(sample.labels[i]);
      }
    }
  });

  it('scripts/make-samples.ts rebuilds it byte for byte', () => {
    const again = join(out, 'samples');
    execFileSync('npx', ['tsx', 'scripts/make-samples.ts', '--out', again], { encoding: 'utf8' });
    for (const f of [
      'digits.csv.gz',
      ...['train', 't10k'].flatMap((p) => [
        `fashion-mnist/${p}-images-idx3-ubyte.gz`,
        `fashion-mnist/${p}-labels-idx1-ubyte.gz`,
      ]),
    ]) {
      expect(Buffer.compare(readFileSync(join(again, f)), readFileSync(join('models-onnx/samples', f))), f).toBe(0);
    }
  });
});

describe('graft demo: bad arguments fail before any training', () => {
  it.each([
    [['--cases', '5'], /--cases takes distinct case numbers from 1, 2, 3, 4/],
    [['--cases', '1,1'], /--cases takes distinct/],
    [['--seeds', '0'], /--seeds must be an integer 1–20, got '0'/],
    [['--data', 'imagenet'], /--data must be auto, sample or full, got 'imagenet'/],
    [['--bogus'], /unknown option --bogus/],
  ])('%j', (argv, message) => {
    expect(() => parseDemoArgs([...argv, '--out', out])).toThrow(UsageError);
    expect(() => parseDemoArgs([...argv, '--out', out])).toThrow(message);
  });

  it('refuses an --out that cannot be written, naming it', () => {
    const file = join(out, 'a-file');
    writeFileSync(file, 'x');
    expect(() => parseDemoArgs(['--out', join(file, 'sub')])).toThrow(/--out .*a-file\/sub: cannot write there/);
  });

  it('names a missing source network', async () => {
    const config = parseDemoArgs(['--model', join(out, 'none.onnx'), '--out', out]);
    await expect(runDemo(config, () => {})).rejects.toThrow(
      /none\.onnx.*source network is missing|source network is missing.*none\.onnx/,
    );
  });

  it('--help prints the usage through the graft command', () => {
    const text = execFileSync('npx', ['tsx', 'src/cli/main.ts', 'demo', '--help'], { encoding: 'utf8' });
    expect(text).toMatch(/^usage: graft demo \[--seeds N\] \[--quick\]/);
  });
});
