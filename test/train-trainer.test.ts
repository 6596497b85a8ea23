// The trainer end to end on a small CNN built with GraphBuilder: it learns (one fixed batch, loss
// down ≥ 90% in 50 steps), frozen weights stay bit-identical while the head trains on cached
// features (and the cached run matches the uncached one), checkpoints resume to the same
// weights, a NaN stops training naming its source with the last checkpoint intact, early
// stopping, and the exported model gives onnxruntime-node the engine's predictions.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { decodeModel } from '../src/graph/codec.ts';
import { Graph } from '../src/graph/ir.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import type { Checkpoint } from '../src/train/checkpoint.ts';
import { readLabels, writeLabels } from '../src/graph/model-metadata.ts';
import {
  BatchSourceError,
  fit,
  Trainer,
  TrainingDivergedError,
  type BatchRequest,
  type BatchSource,
  type StepInfo,
  type TrainBatch,
} from '../src/train/trainer.ts';
import { mulberry32, randomFloat32Array } from './helpers/random.ts';
import { onnxBytesForOrt, runOrt } from './helpers/reference-models.ts';
import { relL2 } from './helpers/reference-ops.ts';

const CLASSES = 5;
const BODY = ['w1', 'b1', 'w2', 'b2'];

/** x [N,3,10,10] → conv3×3 p1 (8) → relu → conv3×3 s2 p1 (8) → relu → (+ conv1×1) → relu → GAP → flatten → gemm (5) → softmax; batch symbolic. */
function smallCnn(seed = 3): Graph {
  const g = new Graph();
  g.opsetImports = [{ domain: '', version: 17 }];
  g.inputs = [{ name: 'x', dtype: 'float32', shape: ['N', 3, 10, 10] }];
  g.values.set('x', { ...g.inputs[0] });
  const b = new GraphBuilder(g, seed);
  const c1 = b.op(
    'Conv',
    ['x', b.weight('w1', [8, 3, 3, 3], 'he'), b.weight('b1', [8], 'glorot')],
    { kernel_shape: [3, 3], pads: [1, 1, 1, 1] },
    'conv1',
  );
  const r1 = b.op('Relu', [c1], {}, 'relu1');
  const c2 = b.op(
    'Conv',
    [r1, b.weight('w2', [8, 8, 3, 3], 'he'), b.weight('b2', [8], 'glorot')],
    { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [2, 2] },
    'conv2',
  );
  const r2 = b.op('Relu', [c2], {}, 'relu2');
  const c3 = b.op('Conv', [r2, b.weight('w3', [8, 8, 1, 1], 'he')], { kernel_shape: [1, 1] }, 'conv3');
  const r3 = b.op('Relu', [b.op('Add', [r2, c3], {}, 'residual')], {}, 'relu3');
  const f = b.op('Flatten', [b.op('GlobalAveragePool', [r3], {}, 'gap')], { axis: 1 }, 'flatten');
  const logits = b.op(
    'Gemm',
    [f, b.weight('fc', [CLASSES, 8], 'glorot'), b.weight('fcb', [CLASSES], 'glorot')],
    { transB: 1 },
    'fc',
  );
  g.outputs = [
    { name: b.node('Softmax', [logits], { axis: 1 }, { name: 'softmax', outputs: ['prob'] })[0], dtype: 'float32' },
  ];
  return g;
}

/** `count` seeded examples; images depend on the label so there is something to learn. */
function dataset(count: number, seed: number): { images: Float32Array; labels: Uint32Array } {
  const rng = mulberry32(seed);
  const labels = Uint32Array.from({ length: count }, () => Math.floor(rng() * CLASSES));
  const images = randomFloat32Array(count * 300, seed + 1, 0.5);
  for (let n = 0; n < count; n++)
    for (let i = 0; i < 100; i++) images[n * 300 + (labels[n] % 3) * 100 + i] += (labels[n] + 1) * 0.3;
  return { images, labels };
}

function batchesOf(
  data: { images: Float32Array; labels: Uint32Array },
  batchSize: number,
  poison?: { epoch: number; batch: number },
) {
  return (epoch: number): TrainBatch[] => {
    const out: TrainBatch[] = [];
    const count = data.labels.length;
    for (let start = 0, k = 0; start < count; start += batchSize, k++) {
      const size = Math.min(batchSize, count - start);
      const images = data.images.slice(start * 300, (start + size) * 300);
      if (poison && poison.epoch === epoch && poison.batch === k) images.fill(1e38, 0, 300);
      out.push({
        images,
        labels: data.labels.slice(start, start + size),
        size,
        indices: Uint32Array.from({ length: size }, (_, i) => start + i),
      });
    }
    return out;
  };
}

describe('trainer', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('learns one fixed batch: loss down ≥ 90% within 50 steps', async () => {
    const data = dataset(8, 1);
    const { history, trainer, featureCache } = await fit(gpu, smallCnn(), batchesOf(data, 8), {
      epochs: 50,
      optimizer: { type: 'adam', lr: 0.02 },
    });
    expect(featureCache).toBe(false);
    const first = history[0].loss;
    const last = history[history.length - 1].loss;
    expect(last).toBeLessThan(0.1 * first);
    expect(history[history.length - 1].top1).toBe(1);
    trainer.dispose();
  });

  it('case 1 (frozen body): frozen weights bit-identical, head on cached features, same result as uncached', async () => {
    const graph = smallCnn();
    for (const name of BODY) graph.initializers.get(name)!.trainable = false;
    const data = dataset(20, 5);
    const logs: string[] = [];
    const cached = await fit(gpu, graph, batchesOf(data, 8), {
      epochs: 3,
      optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9 },
      callbacks: { onLog: (m) => logs.push(m) },
    });
    expect(cached.featureCache).toBe(true);
    expect(logs.some((m) => m.includes('feature caching'))).toBe(true);
    const trained = await cached.trainer.exportGraph();
    for (const name of BODY) {
      expect(
        Buffer.from((trained.initializers.get(name)!.value.data as Float32Array).buffer).equals(
          Buffer.from((graph.initializers.get(name)!.value.data as Float32Array).buffer),
        ),
      ).toBe(true);
      expect(trained.initializers.get(name)!.trainable).toBe(false);
    }
    expect(
      relL2(
        trained.initializers.get('fc')!.value.data as Float32Array,
        graph.initializers.get('fc')!.value.data as Float32Array,
      ),
    ).toBeGreaterThan(1e-3);

    const uncached = await fit(gpu, graph, batchesOf(data, 8), {
      epochs: 3,
      optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9 },
      featureCache: false,
    });
    expect(uncached.featureCache).toBe(false);
    const other = await uncached.trainer.exportGraph();
    for (const name of ['w3', 'fc', 'fcb']) {
      expect(
        relL2(
          trained.initializers.get(name)!.value.data as Float32Array,
          other.initializers.get(name)!.value.data as Float32Array,
        ),
      ).toBeLessThan(1e-4);
    }
    cached.history.forEach((h, i) => expect(Math.abs(h.loss - uncached.history[i].loss)).toBeLessThan(1e-4));
    cached.trainer.dispose();
    uncached.trainer.dispose();
  });

  it('exports a model that onnxruntime-node runs to the engine’s predictions', async () => {
    const data = dataset(12, 9);
    const { trainer } = await fit(gpu, smallCnn(), batchesOf(data, 6), {
      epochs: 2,
      optimizer: { type: 'adam', lr: 0.01 },
    });
    const bytes = await trainer.exportModel();
    const exported = decodeModel(bytes);
    expect(exported.initializers.get('w1')!.trainable).toBe(true);
    const x = data.images.slice(0, 6 * 300);
    const logits = await trainer.predict(x, 6);
    const ort = await runOrt(onnxBytesForOrt(exported), { x: { dims: [6, 3, 10, 10], data: x } });
    const prob = new Float32Array(logits.length);
    for (let n = 0; n < 6; n++) {
      const row = logits.subarray(n * CLASSES, (n + 1) * CLASSES);
      const m = Math.max(...row);
      const s = row.reduce((a, v) => a + Math.exp(v - m), 0);
      for (let j = 0; j < CLASSES; j++) prob[n * CLASSES + j] = Math.exp(row[j] - m) / s;
    }
    expect(relL2(prob, ort.prob.data)).toBeLessThan(1e-5);
    trainer.dispose();
  });

  it('checkpoints through the injected save and resumes to the same weights; evaluate agrees with training metrics shape', async () => {
    const data = dataset(16, 11);
    const saved: Checkpoint[] = [];
    const options = {
      optimizer: { type: 'adam' as const, lr: 0.01 },
      schedule: { type: 'cosine' as const, lr: 0.01, totalSteps: 8 },
    };
    const straight = await fit(gpu, smallCnn(), batchesOf(data, 8), {
      ...options,
      epochs: 4,
      checkpoint: { save: (ck) => void saved.push(ck) },
    });
    expect(saved.map((c) => [c.epoch, c.step])).toEqual([
      [1, 2],
      [2, 4],
      [3, 6],
      [4, 8],
    ]);
    const resumed = await fit(gpu, smallCnn(), batchesOf(data, 8), {
      ...options,
      epochs: 4,
      checkpoint: { save: () => undefined, resume: saved[1] },
    });
    expect(resumed.history.map((h) => h.epoch)).toEqual([3, 4]);
    expect(resumed.steps).toBe(8);
    // A checkpoint object built in code gets the file reader's checks on step and epoch.
    for (const [bad, message] of [
      [{ ...saved[1], step: -5 }, /resume: step is -5; a non-negative safe integer is needed/],
      [{ ...saved[1], epoch: 1e300 }, /resume: epoch is 1e\+300; a non-negative safe integer is needed/],
    ] as const) {
      await expect(
        fit(gpu, smallCnn(), batchesOf(data, 8), {
          ...options,
          epochs: 4,
          checkpoint: { save: () => undefined, resume: bad },
        }),
      ).rejects.toThrow(message);
    }
    const a = await straight.trainer.exportGraph();
    const b = await resumed.trainer.exportGraph();
    // Bit-identical: weights, optimizer moments and step restored exactly.
    for (const [name, init] of a.initializers) {
      if (init.value.dtype !== 'float32') continue;
      expect(
        Buffer.from((init.value.data as Float32Array).buffer).equals(
          Buffer.from((b.initializers.get(name)!.value.data as Float32Array).buffer),
        ),
        name,
      ).toBe(true);
    }
    const evaluation = await straight.trainer.evaluate(batchesOf(data, 8));
    expect(evaluation.samples).toBe(16);
    expect(evaluation.loss).toBeGreaterThan(0);
    straight.trainer.dispose();
    resumed.trainer.dispose();
  });

  it('a NaN stops training naming its source; the last saved checkpoint is intact', async () => {
    const data = dataset(16, 13);
    const saved: Checkpoint[] = [];
    const trainer = await Trainer.create(gpu, smallCnn());
    let error: unknown;
    try {
      await trainer.fit(batchesOf(data, 8, { epoch: 1, batch: 1 }), {
        epochs: 3,
        optimizer: { type: 'sgd', lr: 0.05 },
        checkpoint: { save: (ck) => void saved.push(ck) },
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(TrainingDivergedError);
    expect((error as Error).message).toMatch(/epoch 2, step 4/);
    expect((error as Error).message).toMatch(
      /the first op with a non-finite output .* is node '\w+' \((Conv|Gemm|Add|GlobalAveragePool)\)/,
    );
    expect(saved).toHaveLength(1);
    for (const w of saved[0].weights.values()) expect(w.data.every(Number.isFinite)).toBe(true);
    trainer.dispose();
  });

  it('a non-finite weight is found by the check pass: the first op with a non-finite output is named', async () => {
    const data = dataset(8, 17);
    const graph = smallCnn();
    const fc = graph.initializers.get('fc')!;
    const poisoned = Float32Array.from(fc.value.data as Float32Array);
    poisoned[3] = Infinity;
    fc.value = { ...fc.value, data: poisoned };
    const trainer = await Trainer.create(gpu, graph);
    const failure = await trainer.fit(batchesOf(data, 8), { epochs: 2, optimizer: { type: 'sgd', lr: 0.1 } }).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(failure?.message).toMatch(
      /epoch 1, step 1.*not finite.*node 'fc_1' \(Gemm\), whose weights 'fc' hold NaN\/Inf/s,
    );
    expect((failure as TrainingDivergedError).firstBadNode).toBe('fc_1 (Gemm)');
    trainer.dispose();
  });

  it('early stopping when the loss stops improving', async () => {
    const data = dataset(8, 19);
    const { history, stoppedEarly, trainer } = await fit(gpu, smallCnn(), batchesOf(data, 8), {
      epochs: 10,
      optimizer: { type: 'sgd', lr: 0 },
      earlyStopping: { patience: 2 },
      validation: batchesOf(data, 8),
    });
    expect(stoppedEarly).toBe(true);
    expect(history).toHaveLength(3);
    expect(history[0].valLoss).toBeCloseTo(history[0].loss, 4);
    trainer.dispose();
  });
});

/** smallCnn with a BatchNormalization after conv1 (running statistics m, v). */
function bnCnn(seed = 3): Graph {
  const g = smallCnn(seed);
  const conv1 = g.nodes.find((n) => n.name === 'conv1')!;
  const out = conv1.outputs[0];
  const b = new GraphBuilder(g, seed + 1);
  g.setInitializer('bs', { dtype: 'float32', dims: [8], data: new Float32Array(8).fill(1) });
  g.setInitializer('bt', { dtype: 'float32', dims: [8], data: new Float32Array(8) });
  g.setInitializer('bm', { dtype: 'float32', dims: [8], data: new Float32Array(8) });
  g.setInitializer('bv', { dtype: 'float32', dims: [8], data: new Float32Array(8).fill(1) });
  const bnOut = b.node(
    'BatchNormalization',
    [out, 'bs', 'bt', 'bm', 'bv'],
    {},
    { name: 'bn1', outputs: ['bn1_out'] },
  )[0];
  for (const n of g.nodes) if (n.name !== 'bn1') n.inputs = n.inputs.map((i) => (i === out ? bnOut : i));
  const bn = g.nodes.pop()!;
  g.nodes.splice(g.nodes.indexOf(conv1) + 1, 0, bn);
  return g;
}

describe('trainer: freezing, bad input, checkpoints', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('every weight tensor changes when all train (BN in training mode); frozen weights and frozen BN statistics stay bit-identical', async () => {
    const data = dataset(8, 21);
    const all = await fit(gpu, bnCnn(), batchesOf(data, 8), { epochs: 3, optimizer: { type: 'adam', lr: 0.01 } });
    const trained = await all.trainer.exportGraph();
    const original = bnCnn();
    for (const [name, init] of original.initializers) {
      if (init.value.dtype !== 'float32') continue;
      expect(
        Buffer.from((trained.initializers.get(name)!.value.data as Float32Array).buffer).equals(
          Buffer.from((init.value.data as Float32Array).buffer),
        ),
        `${name} changed`,
      ).toBe(false);
    }
    all.trainer.dispose();

    const graph = bnCnn();
    for (const name of [...BODY, 'bs', 'bt']) graph.initializers.get(name)!.trainable = false;
    const frozen = await fit(gpu, graph, batchesOf(data, 8), {
      epochs: 3,
      optimizer: { type: 'sgd', lr: 0.1 },
      featureCache: false,
    });
    const after = await frozen.trainer.exportGraph();
    for (const name of [...BODY, 'bs', 'bt', 'bm', 'bv']) {
      expect(
        Buffer.from((after.initializers.get(name)!.value.data as Float32Array).buffer).equals(
          Buffer.from((graph.initializers.get(name)!.value.data as Float32Array).buffer),
        ),
        name,
      ).toBe(true);
    }
    expect(
      relL2(
        after.initializers.get('fc')!.value.data as Float32Array,
        graph.initializers.get('fc')!.value.data as Float32Array,
      ),
    ).toBeGreaterThan(1e-4);
    frozen.trainer.dispose();
  });

  it('resume with BN in training mode (running statistics restored): bit-identical to the uninterrupted run', async () => {
    const data = dataset(16, 23);
    const saved: Checkpoint[] = [];
    const options = { optimizer: { type: 'adam' as const, lr: 0.01 }, seed: 9 };
    const straight = await fit(gpu, bnCnn(), batchesOf(data, 8), {
      ...options,
      epochs: 4,
      checkpoint: { save: (ck) => void saved.push(ck) },
    });
    const resumed = await fit(gpu, bnCnn(), batchesOf(data, 8), {
      ...options,
      epochs: 4,
      checkpoint: { save: () => undefined, resume: saved[1] },
    });
    const a = await straight.trainer.exportGraph();
    const b = await resumed.trainer.exportGraph();
    for (const [name, init] of a.initializers) {
      if (init.value.dtype !== 'float32') continue;
      expect(
        Buffer.from((init.value.data as Float32Array).buffer).equals(
          Buffer.from((b.initializers.get(name)!.value.data as Float32Array).buffer),
        ),
        name,
      ).toBe(true);
    }
    straight.trainer.dispose();
    resumed.trainer.dispose();
  });

  it('refuses bad input naming where: labels out of range, images of different sizes, foreign or truncated checkpoints', async () => {
    const data = dataset(16, 25);
    const trainer = await Trainer.create(gpu, smallCnn());
    const bad = (epoch: number) =>
      batchesOf(
        data,
        8,
      )(epoch).map((b, k) => (k === 1 ? { ...b, labels: Uint32Array.from(b.labels, (l, i) => (i === 2 ? 7 : l)) } : b));
    await expect(trainer.fit(bad, { epochs: 1, optimizer: { type: 'sgd', lr: 0.1 } })).rejects.toThrow(
      /epoch 1, batch 2, step 2: label 7 of sample 2 .* outside \[0, 5\)/,
    );
    const mixed = (): TrainBatch[] => [
      { images: new Float32Array(300 + 3 * 12 * 12), labels: Uint32Array.of(0, 1), size: 2 },
    ];
    await expect(trainer.fit(mixed, { epochs: 1, optimizer: { type: 'sgd', lr: 0.1 } })).rejects.toThrow(
      /epoch 1, batch 1.*the images are not all 3×10×10/,
    );
    const saved: Checkpoint[] = [];
    const other = await fit(gpu, bnCnn(), batchesOf(data, 8), {
      epochs: 1,
      optimizer: { type: 'sgd', lr: 0.1 },
      checkpoint: { save: (ck) => void saved.push(ck) },
    });
    await expect(
      trainer.fit(batchesOf(data, 8), {
        epochs: 2,
        optimizer: { type: 'sgd', lr: 0.1 },
        checkpoint: { save: () => undefined, resume: saved[0] },
      }),
    ).rejects.toThrow(/different architecture/);
    const own: Checkpoint[] = [];
    const mine = await fit(gpu, smallCnn(), batchesOf(data, 8), {
      epochs: 1,
      optimizer: { type: 'sgd', lr: 0.1 },
      checkpoint: { save: (ck) => void own.push(ck) },
    });
    const truncated: Checkpoint = {
      ...own[0],
      weights: new Map(
        [...own[0].weights].map(([k, w]) => [k, k === 'w2' ? { dims: w.dims, data: w.data.slice(0, 10) } : w]),
      ),
    };
    await expect(
      trainer.fit(batchesOf(data, 8), {
        epochs: 2,
        optimizer: { type: 'sgd', lr: 0.1 },
        checkpoint: { save: () => undefined, resume: truncated },
      }),
    ).rejects.toThrow(/'w2' holds 10 floats/);
    other.trainer.dispose();
    mine.trainer.dispose();
    trainer.dispose();
  });
});

describe('trainer on a light zoo model', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('transfer case 1 on light ResNet-50 at 32×32: features cached, body frozen bit-identical, head learns', async () => {
    const { transfer } = await import('../src/graph/surgery/index.ts');
    const { randomizedLightModel } = await import('./helpers/reference-models.ts');
    const base = randomizedLightModel('resnet50', 5);
    const { graph } = transfer(base, { case: 1, classes: 3, seed: 4 });
    const input = graph.feedInputs[0];
    input.shape = ['N', 3, 32, 32];
    graph.values.set(input.name, { ...graph.values.get(input.name), name: input.name, shape: [...input.shape] });
    const rng = mulberry32(8);
    const labels = Uint32Array.from({ length: 12 }, () => Math.floor(rng() * 3));
    const images = randomFloat32Array(12 * 3 * 32 * 32, 9);
    for (let n = 0; n < 12; n++) for (let i = 0; i < 1024; i++) images[n * 3072 + labels[n] * 1024 + i] += 1.5;
    const source = (): TrainBatch[] =>
      [0, 6].map((s) => ({
        images: images.slice(s * 3072, (s + 6) * 3072),
        labels: labels.slice(s, s + 6),
        size: 6,
        indices: Uint32Array.from({ length: 6 }, (_, i) => s + i),
      }));
    const started = Date.now();
    const result = await fit(gpu, graph, source, { epochs: 15, optimizer: { type: 'adam', lr: 0.01 } });
    const seconds = (Date.now() - started) / 1000;
    console.log(
      `light ResNet-50 case 1, 15 epochs × 2 batches of 6 at 32×32: ${seconds.toFixed(1)} s, loss ${result.history[0].loss.toFixed(3)} → ${result.history.at(-1)!.loss.toFixed(3)}`,
    );
    expect(result.featureCache).toBe(true);
    expect(result.history.at(-1)!.loss).toBeLessThan(0.5 * result.history[0].loss);
    const trained = await result.trainer.exportGraph();
    let frozen = 0;
    for (const [name, init] of graph.initializers) {
      if (init.trainable || init.value.dtype !== 'float32') continue;
      frozen++;
      expect(
        Buffer.from((trained.initializers.get(name)!.value.data as Float32Array).buffer).equals(
          Buffer.from((init.value.data as Float32Array).buffer),
        ),
        name,
      ).toBe(true);
    }
    expect(frozen).toBeGreaterThan(100);
    result.trainer.dispose();
  }, 300_000);
});

describe('trainer: what a user expects (progress, stop and resume, cached validation, classify, export, misuse)', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('reports progress per step; an abort stops after the step, checkpoints mid-epoch, and resuming gives the uninterrupted weights', async () => {
    const data = dataset(16, 31);
    const options = { optimizer: { type: 'sgd' as const, lr: 0.05, momentum: 0.9 }, seed: 4 };
    const steps: StepInfo[] = [];
    const straight = await fit(gpu, smallCnn(), batchesOf(data, 6), {
      ...options,
      epochs: 3,
      callbacks: { onStep: (s) => void steps.push(s) },
    });
    expect(steps.map((s) => [s.epoch, s.stepInEpoch, s.stepsInEpoch, s.step])).toEqual(
      [0, 1, 2].flatMap((e) => [1, 2, 3].map((k) => [e, k, 3, e * 3 + k])),
    );
    // The running epoch loss is the sample-weighted mean of the step losses so far (sizes 6, 6, 4).
    const sizes = [6, 6, 4];
    for (let e = 0; e < 3; e++) {
      let sum = 0;
      let count = 0;
      for (let k = 0; k < 3; k++) {
        const s = steps[e * 3 + k];
        sum += s.loss * sizes[k];
        count += sizes[k];
        expect(s.epochLoss).toBeCloseTo(sum / count, 5);
        expect(s.imagesPerSecond).toBeGreaterThan(0);
      }
      expect(straight.history[e].loss).toBeCloseTo(sum / count, 5);
      expect(straight.history[e].seconds).toBeCloseTo(
        straight.history[e].trainSeconds + straight.history[e].valSeconds,
        6,
      );
    }

    const controller = new AbortController();
    const saved: Checkpoint[] = [];
    const first = await fit(gpu, smallCnn(), batchesOf(data, 6), {
      ...options,
      epochs: 3,
      signal: controller.signal,
      callbacks: {
        onStep: (s) => {
          if (s.step === 5) controller.abort();
        },
      },
      checkpoint: { save: (ck) => void saved.push(ck) },
    });
    expect(first.interrupted).toBe(true);
    expect(first.steps).toBe(5);
    expect(first.history.map((h) => h.epoch)).toEqual([1]);
    expect(saved.map((c) => [c.epoch, c.step])).toEqual([
      [1, 3],
      [1, 5],
    ]);
    const resumed = await fit(gpu, smallCnn(), batchesOf(data, 6), {
      ...options,
      epochs: 3,
      checkpoint: { save: (ck) => void saved.push(ck), resume: saved[1] },
    });
    expect(resumed.interrupted).toBe(false);
    expect(resumed.history.map((h) => h.epoch)).toEqual([2, 3]);
    // The resumed epoch 2 continues the interrupted one's running sums: same mean loss as the straight run.
    expect(resumed.history[0].loss).toBeCloseTo(straight.history[1].loss, 5);
    expect((saved.at(-1)!.extra!.history as unknown[]).length).toBe(3);
    const a = await straight.trainer.exportGraph();
    const b = await resumed.trainer.exportGraph();
    for (const [name, init] of a.initializers) {
      if (init.value.dtype !== 'float32') continue;
      expect(
        Buffer.from((init.value.data as Float32Array).buffer).equals(
          Buffer.from((b.initializers.get(name)!.value.data as Float32Array).buffer),
        ),
        name,
      ).toBe(true);
    }
    for (const r of [straight, first, resumed]) r.trainer.dispose();
  });

  it('times each step: the wait for the batch source is measured (a slow source shows it), within the step, summed per epoch', async () => {
    const data = dataset(12, 37);
    const delayMs = 40;
    const ready = batchesOf(data, 4);
    // A source that takes delayMs to produce each batch, as a loader the GPU outpaces would.
    async function* slow(epoch: number): AsyncGenerator<TrainBatch> {
      for (const b of ready(epoch)) {
        await new Promise((r) => setTimeout(r, delayMs));
        yield b;
      }
    }
    for (const [source, waits] of [
      [slow, true],
      [ready, false],
    ] as const) {
      const steps: StepInfo[] = [];
      const { history, trainer } = await fit(gpu, smallCnn(), source, {
        epochs: 2,
        optimizer: { type: 'sgd', lr: 0.05 },
        callbacks: { onStep: (s) => void steps.push(s) },
      });
      trainer.dispose();
      expect(steps).toHaveLength(6);
      for (const s of steps) {
        expect(s.dataWaitSeconds).toBeGreaterThanOrEqual(0);
        expect(s.stepSeconds).toBeGreaterThan(s.dataWaitSeconds); // the update itself takes time too
        // setTimeout may fire up to a ms early; an in-memory array is ready at once.
        if (waits) expect(s.dataWaitSeconds).toBeGreaterThan((delayMs - 2) / 1000);
        else expect(s.dataWaitSeconds).toBeLessThan(s.stepSeconds / 2);
      }
      for (const m of history) {
        const mine = steps.filter((s) => s.epoch === m.epoch - 1);
        expect(m.dataWaitSeconds).toBeCloseTo(
          mine.reduce((a, s) => a + s.dataWaitSeconds, 0),
          9,
        );
        expect(m.trainSeconds).toBeCloseTo(
          mine.reduce((a, s) => a + s.stepSeconds, 0),
          9,
        );
        expect(m.dataWaitSeconds).toBeLessThanOrEqual(m.trainSeconds);
        expect(mine.at(-1)!.epochSeconds).toBeCloseTo(m.trainSeconds, 9);
      }
    }
  });

  it('asks for the next epoch two steps before the end (stepsPerEpoch known): no wait at epoch starts; dropped when fit stops', async () => {
    const data = dataset(12, 41);
    const delayMs = 40;
    const ready = batchesOf(data, 4);
    const asked: number[] = [];
    const closed: number[] = [];
    // Produces a batch only when pulled, after delayMs: like a loader that starts an epoch when asked.
    const slow = (epoch: number): AsyncIterable<TrainBatch> => {
      asked.push(epoch);
      return (async function* () {
        try {
          for (const b of ready(epoch)) {
            await new Promise((r) => setTimeout(r, delayMs));
            yield b;
          }
        } finally {
          closed.push(epoch);
        }
      })();
    };
    for (const stepsPerEpoch of [3, undefined]) {
      asked.length = 0;
      const steps: StepInfo[] = [];
      const { trainer } = await fit(gpu, smallCnn(), slow, {
        epochs: 3,
        stepsPerEpoch,
        optimizer: { type: 'sgd', lr: 0.05 },
        callbacks: { onStep: (s) => void steps.push(s) },
      });
      trainer.dispose();
      expect(asked).toEqual([0, 1, 2]); // each epoch asked for once, in order
      for (const s of steps) {
        const early = stepsPerEpoch !== undefined && s.epoch > 0 && s.stepInEpoch === 1;
        if (early) expect(s.dataWaitSeconds).toBeLessThan(delayMs / 2 / 1000);
        else expect(s.dataWaitSeconds).toBeGreaterThan((delayMs - 2) / 1000);
      }
    }
    // Aborted in epoch 1's last step: epoch 2 was already asked for (at its second batch); fit closes it.
    closed.length = 0;
    asked.length = 0;
    const controller = new AbortController();
    const { trainer, interrupted } = await fit(gpu, smallCnn(), slow, {
      epochs: 3,
      stepsPerEpoch: 3,
      optimizer: { type: 'sgd', lr: 0.05 },
      signal: controller.signal,
      callbacks: {
        onStep: (s) => {
          if (s.stepInEpoch === 3) controller.abort();
        },
      },
    });
    trainer.dispose();
    expect(interrupted).toBe(true);
    await new Promise((r) => setTimeout(r, 3 * delayMs));
    expect(asked).toEqual([0, 1]);
    expect(closed.sort()).toEqual([0, 1]); // 1: never trained on, yet closed (a loader cancels its work)
  });

  it('frozen body: validation runs on its own feature cache (indices shared with training, images not) and matches a full evaluation', async () => {
    const graph = smallCnn();
    for (const name of BODY) graph.initializers.get(name)!.trainable = false;
    const train = dataset(12, 41);
    const val = dataset(10, 43); // the same dataset indices 0…9 as training, other images
    const logs: string[] = [];
    const result = await fit(gpu, graph, batchesOf(train, 6), {
      epochs: 2,
      optimizer: { type: 'sgd', lr: 0.1 },
      validation: batchesOf(val, 5),
      callbacks: { onLog: (m) => logs.push(m) },
    });
    expect(result.featureCache).toBe(true);
    const last = result.history.at(-1)!;
    const full = await result.trainer.evaluate(batchesOf(val, 5)); // the whole model, no cache
    expect(last.valLoss).toBeCloseTo(full.loss, 4);
    expect(last.valTop1).toBeCloseTo(full.top1, 6);
    const onTrain = await result.trainer.evaluate(batchesOf(train, 6));
    expect(Math.abs(onTrain.loss - full.loss)).toBeGreaterThan(1e-3); // what mixing the caches would have given differs
    expect(last.seconds).toBeCloseTo(last.trainSeconds + last.valSeconds, 6);
    expect(last.valSeconds).toBeGreaterThan(0);
    expect(logs.some((l) => /s training, .* s validation/.test(l))).toBe(true);
    result.trainer.dispose();
  });

  it('frozen body: once every example is cached the trainer asks for labels only; honouring it changes nothing, a source that changes its examples is refused', async () => {
    const frozen = () => {
      const graph = smallCnn();
      for (const name of BODY) graph.initializers.get(name)!.trainable = false;
      return graph;
    };
    const train = dataset(12, 51);
    const val = dataset(10, 53);
    const full = batchesOf(train, 5);
    const fullVal = batchesOf(val, 5);
    // A source that honours the request: empty images, the same labels and indices.
    const requests: [string, number, boolean | undefined][] = [];
    const honouring =
      (what: string, all: (epoch: number) => TrainBatch[]) => (epoch: number, request?: BatchRequest) => {
        requests.push([what, epoch, request?.pixels]);
        return all(epoch).map((b) => (request?.pixels === false ? { ...b, images: new Float32Array(0) } : b));
      };
    const options = { epochs: 4, stepsPerEpoch: 3, optimizer: { type: 'sgd' as const, lr: 0.1 } };
    const reference = await fit(gpu, frozen(), full, { ...options, validation: fullVal });
    const labelsOnly = await fit(gpu, frozen(), honouring('train', full), {
      ...options,
      validation: honouring('val', fullVal),
    });
    expect(labelsOnly.featureCache).toBe(true);
    // Epoch 0 (and its validation pass) needs pixels; the next epoch is asked for during epoch 0, already without.
    expect(requests.filter(([w]) => w === 'train')).toEqual([
      ['train', 0, true],
      ['train', 1, false],
      ['train', 2, false],
      ['train', 3, false],
    ]);
    expect(requests.filter(([w]) => w === 'val')).toEqual([
      ['val', 0, true],
      ['val', 0, false],
      ['val', 0, false],
      ['val', 0, false],
    ]);
    expect(labelsOnly.history.map((m) => [m.loss, m.valLoss])).toEqual(
      reference.history.map((m) => [m.loss, m.valLoss]),
    );
    const weights = async (t: Trainer) =>
      [...(await t.exportGraph()).initializers.values()].map((i) => [...(i.value.data as Float32Array)]);
    expect(await weights(labelsOnly.trainer)).toEqual(await weights(reference.trainer));
    reference.trainer.dispose();
    labelsOnly.trainer.dispose();
    // Honouring the request but bringing examples never seen: a clear error, not a wrong feed.
    const shifting = (epoch: number, request?: BatchRequest) =>
      full(epoch).map((b) =>
        request?.pixels === false ? { ...b, images: new Float32Array(0), indices: b.indices!.map((i) => i + 100) } : b,
      );
    await expect(fit(gpu, frozen(), shifting, options)).rejects.toThrow(
      /example 100 was never seen: a source that honours \{ pixels: false \} must visit the same examples every epoch/,
    );
    // Without a frozen body nothing is cached: an empty batch is refused naming the step.
    const empty = () => full(0).map((b) => ({ ...b, images: new Float32Array(0) }));
    await expect(fit(gpu, smallCnn(), empty, { epochs: 1, optimizer: { type: 'sgd', lr: 0.1 } })).rejects.toThrow(
      /images hold 0 floats/,
    );
  });

  it('classify: softmax of the logits once (the graph ends in Softmax), top-k by probability, labels from metadata, any image count', async () => {
    const graph = smallCnn(7);
    const names = ['ant', 'bee', 'cat', 'dog', 'eel'];
    writeLabels(graph, names);
    const trainer = await Trainer.create(gpu, graph);
    const data = dataset(11, 51);
    const result = await trainer.classify(data.images, { topK: 3, batchSize: 4 });
    expect(result).toHaveLength(11);
    // Reference: onnxruntime's output of the same model (its last op is the Softmax).
    const ort = await runOrt(onnxBytesForOrt(graph), { x: { dims: [11, 3, 10, 10], data: data.images } });
    for (let n = 0; n < 11; n++) {
      const want = ort.prob.data.subarray(n * CLASSES, (n + 1) * CLASSES);
      expect(relL2(result[n].probabilities, want)).toBeLessThan(1e-5);
      const order = [...want.keys()].sort((a, b) => want[b] - want[a]).slice(0, 3);
      expect(result[n].top.map((t) => t.index)).toEqual(order);
      expect(result[n].top.map((t) => t.label)).toEqual(order.map((i) => names[i]));
      result[n].top.forEach((t, i) => expect(t.probability).toBeCloseTo(want[order[i]], 6));
    }
    const one = await trainer.classify({ images: data.images.slice(300, 600), size: 1 }, { topK: 10 });
    expect(one[0].top).toHaveLength(CLASSES);
    expect(relL2(one[0].probabilities, result[1].probabilities)).toBeLessThan(1e-6);
    await expect(trainer.classify(data.images.slice(0, 299))).rejects.toThrow(
      /299 floats are not a whole number of images of 300 floats \(3×10×10\)/,
    );
    trainer.dispose();
  });

  it('exportModel: a model trained from a fixed batch of 1 runs in onnxruntime at batch 1 and 8, labels kept', async () => {
    const graph = smallCnn(9);
    graph.inputs[0].shape = [1, 3, 10, 10];
    graph.values.set('x', { ...graph.inputs[0] });
    writeLabels(graph, ['a', 'b', 'c', 'd', 'e']);
    const data = dataset(8, 61);
    const { trainer } = await fit(gpu, graph, batchesOf(data, 4), { epochs: 1, optimizer: { type: 'adam', lr: 0.01 } });
    const bytes = await trainer.exportModel();
    const exported = decodeModel(bytes);
    expect(typeof exported.feedInputs[0].shape![0]).toBe('string');
    expect(readLabels(exported)).toEqual(['a', 'b', 'c', 'd', 'e']);
    const engine = await trainer.classify(data.images, { batchSize: 4 });
    for (const batch of [1, 8]) {
      const ort = await runOrt(bytes, { x: { dims: [batch, 3, 10, 10], data: data.images.slice(0, batch * 300) } });
      expect(ort.prob.dims).toEqual([batch, CLASSES]);
      for (let n = 0; n < batch; n++)
        expect(relL2(engine[n].probabilities, ort.prob.data.subarray(n * CLASSES, (n + 1) * CLASSES))).toBeLessThan(
          1e-5,
        );
    }
    trainer.dispose();
  });

  it('fit(batches(...)) instead of fit((epoch) => batches(...)) says what to pass', async () => {
    const trainer = await Trainer.create(gpu, smallCnn());
    const data = dataset(8, 71);
    async function* oneEpoch() {
      yield* batchesOf(data, 4)(0);
    }
    const misuse = [oneEpoch(), batchesOf(data, 4)(0)] as unknown as BatchSource[];
    for (const m of misuse) {
      const e = await trainer.fit(m, { epochs: 1, optimizer: { type: 'sgd', lr: 0.1 } }).then(
        () => undefined,
        (x: Error) => x,
      );
      expect(e).toBeInstanceOf(BatchSourceError);
      expect(e!.message).toMatch(
        /fit: the first argument must be a BatchSource, a function \(epoch\) => batches, but got one epoch's batches.*fit\(\(epoch\) => batches\(dataset, \{ batchSize: 8, shuffle: true, epoch \}\), options\)/,
      );
    }
    await expect(
      trainer.fit((() => 3) as unknown as BatchSource, { epochs: 1, optimizer: { type: 'sgd', lr: 0.1 } }),
    ).rejects.toThrow(/the batch source returned number, not an iterable/);
    await expect(trainer.evaluate(batchesOf(data, 4)(0) as unknown as BatchSource)).rejects.toThrow(BatchSourceError);
    trainer.dispose();
  });
});
