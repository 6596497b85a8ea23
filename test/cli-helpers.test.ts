// The CLI's pieces without a GPU: argument parsing, the progress bar (redrawn in place on a
// terminal, one line per epoch elsewhere), the stratified validation split, and choosing the
// preprocessing.
import { describe, expect, it } from 'vitest';
import { parseCommandArgs, UsageError } from '../src/cli/args.ts';
import { stratifiedSplit } from '../src/cli/commands/train.ts';
import { choosePreprocess } from '../src/cli/common.ts';
import { Progress } from '../src/cli/progress.ts';
import { Graph } from '../src/graph/ir.ts';
import { preprocessPreset, writePreprocess } from '../src/graph/model-metadata.ts';
import { rankClasses, softmaxRows, type EpochMetrics, type StepInfo } from '../src/train/trainer.ts';
import { mulberry32 } from './helpers/random.ts';

const step = (k: number, total: number): StepInfo => ({
  epoch: 0,
  step: k,
  stepInEpoch: k,
  stepsInEpoch: total,
  loss: 1 / k,
  epochLoss: 2 / k,
  epochTop1: k / total,
  lr: 0.01,
  imagesPerSecond: 10 * k,
  epochSeconds: 3 * k,
  stepSeconds: 3,
  dataWaitSeconds: 0,
});
const metrics: EpochMetrics = {
  epoch: 1,
  loss: 0.5,
  top1: 0.75,
  top5: 1,
  samples: 40,
  steps: 4,
  lr: 0.01,
  seconds: 5,
  trainSeconds: 4,
  valSeconds: 1,
  dataWaitSeconds: 0,
  valLoss: 0.6,
  valTop1: 0.5,
  valTop5: 1,
};

describe('parseCommandArgs', () => {
  const spec = {
    options: { out: { type: 'string' }, json: { type: 'boolean' }, seed: { type: 'string' } },
    positional: [1, 2] as [number, number],
    usage: 'graft x <model> [other] [--out F] [--json] [--seed N]',
  } as const;
  const usageError = (argv: string[]): UsageError => {
    try {
      parseCommandArgs(argv, spec);
    } catch (e) {
      expect(e).toBeInstanceOf(UsageError);
      return e as UsageError;
    }
    throw new Error(`${argv.join(' ')} was accepted`);
  };

  it('gives typed values, in either spelling, and the positionals in order', () => {
    const a = parseCommandArgs(['m.onnx', '--out', 'o.onnx', '--json', 'b', '--seed=-3'], spec);
    expect(a).toEqual({ values: { out: 'o.onnx', json: true, seed: '-3' }, positional: ['m.onnx', 'b'] });
    expect(parseCommandArgs(['m.onnx', '--seed', '-3', '--out=x=y'], spec).values).toEqual({ seed: '-3', out: 'x=y' });
    // After --, everything is positional; absent options stay undefined (commands own the defaults).
    expect(parseCommandArgs(['--', '--json'], spec)).toEqual({ values: {}, positional: ['--json'] });
    // The last of a repeated option wins, as before.
    expect(parseCommandArgs(['m', '--out', 'a', '--out', 'b'], spec).values.out).toBe('b');
  });

  it('refuses with one line naming the argument, then the usage line', () => {
    const cases: [string[], string][] = [
      [['m', '--bogus'], 'unknown option --bogus; accepted: --out VALUE, --json, --seed VALUE (and --help)'],
      [['m', '--out'], '--out needs a value'],
      [['m', '--json=no'], "--json is a flag and takes no value, got '--json=no'"],
      [
        ['m', '--out', '--json'],
        "--out needs a value, got the option-like '--json'; a value starting with '-' is written --out=--json",
      ],
      [[], 'expected 1–2 argument(s), got 0'],
      [['a', 'b', 'c'], "expected 1–2 argument(s), got 3 ('c' too many)"],
    ];
    for (const [argv, line] of cases) {
      const e = usageError(argv);
      expect(e.message.split('\n'), argv.join(' ')).toEqual([line, `usage: ${spec.usage}`]);
    }
  });
});

describe('progress', () => {
  it('on a terminal: a bar redrawn in place with step, loss, accuracy, images/s and time left; then the epoch line', async () => {
    let text = '';
    const p = new Progress({ write: (t: string) => (text += t), isTTY: true, columns: 200 }, 3);
    p.step(step(1, 4));
    await new Promise((r) => setTimeout(r, 120));
    p.step(step(2, 4));
    const draws = text.split('\r').filter(Boolean);
    expect(draws).toHaveLength(2);
    expect(draws[1]).toMatch(/^epoch 1\/3 \[#{10}\.{10}\] 2\/4 loss 1\.0000 acc 50\.0% 20\.0 img\/s 6 s left/); // 2 steps left × 3 s
    expect(text).not.toContain('\n');
    p.epoch(metrics);
    expect(
      text.endsWith(
        '\r\x1b[2Kepoch 1/3  loss 0.5000 acc 75.0%  val loss 0.6000 acc 50.0%  10.0 img/s  4.0 s training + 1.0 s validation\n',
      ),
    ).toBe(true);
  });

  it('elsewhere: nothing per step, one line per epoch', () => {
    let text = '';
    const p = new Progress({ write: (t: string) => (text += t) }, 3);
    for (let k = 1; k <= 4; k++) p.step(step(k, 4));
    expect(text).toBe('');
    p.epoch(metrics);
    expect(text.split('\n')).toEqual([expect.stringMatching(/^epoch 1\/3 {2}loss 0\.5000/), '']);
  });
});

describe('stratified split', () => {
  it('per class a seeded share for validation, disjoint, covering every index; another seed, another split', () => {
    const rng = mulberry32(3);
    const labels = Uint32Array.from({ length: 97 }, () => Math.floor(rng() * 4));
    const a = stratifiedSplit(labels, 4, 0.2, 1);
    const b = stratifiedSplit(labels, 4, 0.2, 2);
    expect([...a.trainIndices, ...a.valIndices].sort((x, y) => x - y)).toEqual([...labels.keys()]);
    for (let c = 0; c < 4; c++) {
      const n = labels.filter((l) => l === c).length;
      expect([...a.valIndices].filter((i) => labels[i] === c)).toHaveLength(Math.max(1, Math.round(0.2 * n)));
    }
    expect([...a.valIndices]).not.toEqual([...b.valIndices]);
    expect(stratifiedSplit(labels, 4, 0.2, 1)).toEqual(a);
    // A class of one image stays in training.
    expect(stratifiedSplit(Uint32Array.of(0, 1, 1, 1), 2, 0.5, 0).valIndices.every((i) => i !== 0)).toBe(true);
  });
});

describe('preprocessing choice', () => {
  it("flag, else the model's metadata (scaled to the input size), else torchvision; says which", () => {
    const g = new Graph();
    expect(choosePreprocess(g, 'm.onnx', undefined, 224)).toEqual({
      spec: preprocessPreset('torchvision', 224),
      why: 'the default (the model has none in its metadata)',
    });
    expect(() => choosePreprocess(g, 'm.onnx', 'model', 224)).toThrow(
      /--preprocess model: m\.onnx has no preprocessing in its metadata/,
    );
    writePreprocess(g, preprocessPreset('caffe', 224));
    const stored = choosePreprocess(g, 'm.onnx', undefined, 112);
    expect(stored.why).toBe("the model's metadata");
    expect(stored.spec).toEqual({ ...preprocessPreset('caffe', 224), crop: 112, resize: 128 });
    expect(choosePreprocess(g, 'm.onnx', 'inception', 299).spec).toEqual(preprocessPreset('inception', 299));
  });
});

describe('softmax rows and ranking (what predict and eval report)', () => {
  it('match the textbook formula; stay finite for huge logits; rank by score, ties by index', () => {
    const rng = mulberry32(5);
    const logits = Float32Array.from({ length: 4 * 7 }, () => (rng() - 0.5) * 20);
    const { probabilities, logSumExp } = softmaxRows(logits, 7);
    for (let r = 0; r < 4; r++) {
      const row = Array.from(logits.subarray(r * 7, (r + 1) * 7));
      const z = row.reduce((a, v) => a + Math.exp(v), 0); // no max subtraction: fine at these sizes
      row.forEach((v, c) => expect(probabilities[r * 7 + c]).toBeCloseTo(Math.exp(v) / z, 12));
      expect(logSumExp[r]).toBeCloseTo(Math.log(z), 10);
    }
    const huge = softmaxRows(Float32Array.of(1000, 999, -1000), 3);
    expect(huge.probabilities[0]).toBeCloseTo(1 / (1 + Math.exp(-1)), 12);
    expect(huge.logSumExp[0]).toBeCloseTo(1000 + Math.log(1 + Math.exp(-1)), 9);
    expect(rankClasses([0.1, 0.5, 0.1, 0.3])).toEqual([1, 3, 0, 2]);
  });
});

describe('constantWeights (graft train warns on placeholder weights)', () => {
  it("flags the light zoo model's repeated values, not the pretrained source network", async () => {
    const { constantWeights } = await import('../src/cli/commands/train.ts');
    const { loadModelFile } = await import('../src/node/files.ts');
    const light = loadModelFile('models-onnx/light/light_squeezenet.onnx');
    // Counted here independently: trainable float tensors of ≥ 64 values, and those whose values are all equal.
    const tensors = [...light.initializers.values()].filter(
      (i) => i.trainable && i.value.data instanceof Float32Array && i.value.data.length >= 64,
    );
    const repeated = tensors.filter((i) => new Set(i.value.data as Float32Array).size === 1);
    expect(repeated.length).toBeGreaterThan(tensors.length / 2);
    expect(constantWeights(light)).toBe(
      `${repeated.length} of its ${tensors.length} weight tensors hold one value repeated`,
    );
    expect(constantWeights(loadModelFile('models-onnx/source/source-net.onnx'))).toBeUndefined();
  });
});
