// Training plans of smaller batches on the activation buffers of the largest: a TrainingPlan
// created with shareMemoryWith binds them (and the parameter snapshot), and its steps give the
// same losses, gradients and weights as a plan with buffers of its own, interleaved with the
// larger plan's steps; the trainer's smaller last batch of an epoch holds no buffers of its own.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { Graph } from '../src/graph/ir.ts';
import { setBatchSize } from '../src/graph/surgery/batch.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { ConstantStore } from '../src/runtime/plan.ts';
import { createOptimizer } from '../src/train/optimizers.ts';
import { Trainer, type TrainBatch } from '../src/train/trainer.ts';
import { TrainingPlan } from '../src/train/training-plan.ts';
import { mulberry32, randomFloat32Array } from './helpers/random.ts';

const CLASSES = 4;

/** x [N,2,6,6] → conv3×3 p1 (6) → relu → maxpool 2 → flatten → gemm (4); batch symbolic. */
function tinyCnn(): Graph {
  const g = new Graph();
  g.opsetImports = [{ domain: '', version: 17 }];
  g.inputs = [{ name: 'x', dtype: 'float32', shape: ['N', 2, 6, 6] }];
  g.values.set('x', { ...g.inputs[0] });
  const b = new GraphBuilder(g, 17);
  const conv = b.op('Conv', ['x', b.weight('w', [6, 2, 3, 3], 'he'), b.weight('b', [6], 'glorot')], {
    kernel_shape: [3, 3],
    pads: [1, 1, 1, 1],
  });
  const pooled = b.op('MaxPool', [b.op('Relu', [conv])], { kernel_shape: [2, 2], strides: [2, 2] });
  const flat = b.op('Flatten', [pooled], { axis: 1 });
  const logits = b.op('Gemm', [flat, b.weight('fc', [CLASSES, 54], 'glorot'), b.weight('fcb', [CLASSES], 'glorot')], {
    transB: 1,
  });
  g.outputs = [{ name: logits, dtype: 'float32' }];
  return g;
}

function examples(count: number, seed: number): { images: Float32Array; labels: Uint32Array } {
  const rng = mulberry32(seed);
  return {
    images: randomFloat32Array(count * 72, seed),
    labels: Uint32Array.from({ length: count }, () => Math.floor(rng() * CLASSES)),
  };
}

describe('training plans of smaller batches on the largest plan’s activation buffers', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('a batch-3 plan on the batch-8 plan’s buffers steps like one with its own, interleaved with batch-8 steps', async () => {
    const graph = tinyCnn();
    /** Steps at 8, 3, 8 with SGD momentum; each step's loss, gradients and the final weights. */
    const train = async (share: boolean) => {
      const constants = new ConstantStore(gpu);
      const optimizer = await createOptimizer(gpu, { type: 'sgd', lr: 0.05, momentum: 0.9 });
      const large = await TrainingPlan.create(gpu, setBatchSize(graph, 8), { constants });
      const small = await TrainingPlan.create(gpu, setBatchSize(graph, 3), {
        constants,
        shareMemoryWith: share ? large : undefined,
      });
      try {
        const steps = [];
        for (const [plan, seed] of [
          [large, 1],
          [small, 2],
          [large, 3],
        ] as const) {
          const { images, labels } = examples(plan.batch, seed);
          const stats = await plan.step(new Map([['x', images]]), labels, optimizer);
          steps.push({ loss: stats.loss, grads: await plan.readGradients() });
        }
        return {
          steps,
          weights: await large.readParameters(),
          smallHost: small.memoryHost,
          large,
          bytes: [large.stats.activationBytes, small.stats.activationBytes],
        };
      } finally {
        small.dispose();
        large.dispose();
        optimizer.dispose();
        constants.dispose();
      }
    };
    const own = await train(false);
    const shared = await train(true);
    expect(own.smallHost).toBeUndefined();
    expect(shared.smallHost).toBe(shared.large);
    // The batch-3 plan reports the buffers it binds: the batch-8 plan's.
    expect(shared.bytes[1]).toBe(shared.bytes[0]);
    expect(own.bytes[1]).toBeLessThan(own.bytes[0]);
    for (const [k, step] of shared.steps.entries()) {
      expect(step.loss, `step ${k}`).toBe(own.steps[k].loss);
      for (const [name, grad] of step.grads) expect(grad, `step ${k}, '${name}'`).toEqual(own.steps[k].grads.get(name));
    }
    for (const [name, w] of shared.weights) expect(w, name).toEqual(own.weights.get(name));
  });

  it('the trainer’s smaller last batch of an epoch runs on the full batch’s buffers', async () => {
    const data = examples(20, 9);
    const batches = (size: number, count: number) => (): TrainBatch[] =>
      Array.from({ length: Math.ceil(count / size) }, (_, k) => {
        const start = k * size;
        const n = Math.min(size, count - start);
        return {
          images: data.images.slice(start * 72, (start + n) * 72),
          labels: data.labels.slice(start, start + n),
          size: n,
        };
      });
    const held = async (source: () => TrainBatch[]) => {
      const trainer = await Trainer.create(gpu, tinyCnn());
      try {
        const { history } = await trainer.fit(source, { epochs: 2, optimizer: { type: 'sgd', lr: 0.05 } });
        expect(history.every((h) => Number.isFinite(h.loss))).toBe(true);
        return trainer.activationBytesHeld;
      } finally {
        trainer.dispose();
      }
    };
    // 8, 8, 4 against 8, 8: the batch-4 plan adds nothing.
    const withPartial = await held(batches(8, 20));
    const fullOnly = await held(batches(8, 16));
    expect(fullOnly).toBeGreaterThan(0);
    expect(withPartial).toBe(fullOnly);
  });
});
