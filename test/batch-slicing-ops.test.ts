// Every op the runtime runs, sliced against unsliced: one small per-image graph chains all of
// them (the coverage is read from the registry, so an op added without a place here fails the
// test), run at a batch of 7 under a forced binding limit that admits fewer images, for
// inference and for one training step through every gradient rule. The sliced results must be
// the unsliced ones: each forward kernel and each backward kernel computes its slice of the
// batch and nothing of the others.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { Graph } from '../src/graph/ir.ts';
import { prepareGraph } from '../src/graph/load.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { DIFFERENTIABLE_OPS, RUNTIME_SUPPORTED_OPS } from '../src/ops/registry.ts';
import { ConstantStore } from '../src/runtime/plan.ts';
import { Session } from '../src/runtime/session.ts';
import { createOptimizer } from '../src/train/optimizers.ts';
import { TrainingPlan } from '../src/train/training-plan.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { relL2 } from './helpers/reference-ops.ts';

const BATCH = 7;
const IMAGE = [3, 10, 10];
const CLASSES = 5;

/** A float constant (not trainable) with seeded values in [lo, hi). */
function floats(g: Graph, name: string, dims: number[], seed: number, lo: number, hi: number): string {
  const unit = randomFloat32Array(
    dims.reduce((a, b) => a * b, 1),
    seed,
  ).map((v) => lo + ((v + 1) / 2) * (hi - lo));
  g.setInitializer(name, { dtype: 'float32', dims, data: unit }, false);
  return name;
}

/**
 * x [batch,3,10,10] through every runtime op, each image apart from the others: conv, frozen
 * batch norm, LRN, activations, pools, elementwise, pad, concat, transposes, reductions, shape
 * views, matmul, softmax over features, dropout (a mask in training), gemm → [batch, 5].
 */
function everyOpGraph(batch: number): Graph {
  const g = new Graph();
  g.inputs = [{ name: 'x', dtype: 'float32', shape: [batch, ...IMAGE] }];
  g.values.set('x', { ...g.inputs[0] });
  const b = new GraphBuilder(g, 7);
  const conv = b.op('Conv', ['x', b.weight('w_conv', [8, 3, 3, 3], 'he'), b.weight('b_conv', [8], 'glorot')], {
    kernel_shape: [3, 3],
    pads: [1, 1, 1, 1],
  });
  // Running statistics and a frozen scale and bias: per image (training-mode statistics mix the batch).
  const bn = b.op('BatchNormalization', [
    conv,
    floats(g, 'bn_scale', [8], 11, 0.5, 1.5),
    floats(g, 'bn_bias', [8], 12, -0.2, 0.2),
    floats(g, 'bn_mean', [8], 13, -0.1, 0.1),
    floats(g, 'bn_var', [8], 14, 0.8, 1.2),
  ]);
  const lrn = b.op('LRN', [bn], { size: 3, alpha: 0.001, beta: 0.75, bias: 1 });
  const leaky = b.op('LeakyRelu', [lrn], { alpha: 0.1 });
  const pooled = b.op('MaxPool', [leaky], { kernel_shape: [2, 2], strides: [2, 2] }); // [b,8,5,5]
  const clipped = b.op('Clip', [pooled, floats(g, 'clip_lo', [], 15, -1, -0.5), floats(g, 'clip_hi', [], 16, 0.5, 1)]);
  const sig = b.op('Sigmoid', [clipped]);
  const tanh = b.op('Tanh', [clipped]);
  const relu = b.op('Relu', [clipped]);
  const scaled = b.op('Mul', [b.op('Sub', [b.op('Add', [sig, tanh]), relu]), b.weight('w_scale', [8, 1, 1], 'glorot')]);
  const divided = b.op('Div', [scaled, floats(g, 'divisor', [1, 5, 5], 17, 1, 2)]);
  const summed = b.op('Sum', [divided, sig, tanh]);
  const averaged = b.op('AveragePool', [summed], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }); // [b,8,5,5]
  const padded = b.op('Pad', [averaged, b.int64('pads', [0, 0, 1, 1, 0, 0, 1, 1])]); // [b,8,7,7]
  const joined = b.op('Concat', [padded, b.op('Mul', [padded, padded])], { axis: 1 }); // [b,16,7,7]
  const nhwc = b.op('Transpose', [joined], { perm: [0, 2, 3, 1] });
  const nchw = b.op('Transpose', [b.op('Relu', [nhwc])], { perm: [0, 3, 1, 2] });
  const pooledAll = b.op('Add', [
    b.op('Add', [b.op('GlobalMaxPool', [nchw]), b.op('GlobalAveragePool', [nchw])]),
    b.op('ReduceMean', [nchw], { axes: [2, 3], keepdims: 1 }),
  ]); // [b,16,1,1]
  const flat = b.op('Flatten', [pooledAll], { axis: 1 }); // [b,16]
  const squeezed = b.op('Squeeze', [b.op('Unsqueeze', [flat, b.int64('axes1', [1])]), b.int64('axes2', [1])]);
  const reshaped = b.op('Reshape', [squeezed, b.int64('shape', [0, -1])]);
  const features = b.op('MatMul', [reshaped, b.weight('w_matmul', [16, 12], 'glorot')]);
  const soft = b.op('Softmax', [features], { axis: 1 });
  const dropped = b.op('Dropout', [soft, floats(g, 'dropout_ratio', [], 18, 0.3, 0.3)]);
  const kept = b.op('Identity', [dropped]);
  const logits = b.op(
    'Gemm',
    [kept, b.weight('w_fc', [CLASSES, 12], 'glorot'), b.weight('b_fc', [CLASSES], 'glorot')],
    { transB: 1 },
  );
  g.outputs = [{ name: logits, dtype: 'float32' }];
  return g;
}

/**
 * Under this limit the batch is sliced: above one image's largest value or packed buffer (the
 * conv's im2col in training, 10.8 kB), below three images of the conv's output (3.2 kB each).
 */
const LIMIT = 12_000;

describe('every runtime op, sliced against unsliced', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('the test graph holds every op the runtime runs, and each has a gradient rule it trains through', () => {
    const ops = new Set(everyOpGraph(BATCH).nodes.map((n) => n.opType));
    expect(RUNTIME_SUPPORTED_OPS.filter((op) => !ops.has(op))).toEqual([]);
    expect(DIFFERENTIABLE_OPS.filter((op) => !ops.has(op))).toEqual([]);
  });

  it('inference at batch 7: sliced as unsliced, image by image', async () => {
    const graph = everyOpGraph(BATCH);
    const x = randomFloat32Array(BATCH * IMAGE[0] * IMAGE[1] * IMAGE[2], 21);
    const run = async (maxBindingBytes?: number) => {
      const session = await Session.create(graph, { gpu, maxBindingBytes });
      try {
        const out = await session.run({ x: { dims: [BATCH, ...IMAGE], data: x } });
        return { out: out[graph.outputs[0].name], slicing: session.batchSlicing };
      } finally {
        session.dispose();
      }
    };
    const whole = await run();
    const sliced = await run(LIMIT);
    expect(whole.slicing).toBeUndefined();
    expect(sliced.slicing?.count).toBeGreaterThanOrEqual(3);
    expect(sliced.out.dims).toEqual([BATCH, CLASSES]);
    for (let i = 0; i < BATCH; i++) {
      const row = (d: Float32Array) => d.subarray(i * CLASSES, (i + 1) * CLASSES);
      expect(relL2(row(sliced.out.data), row(whole.out.data)), `image ${i}`).toBeLessThan(1e-6);
    }
  });

  it('one training step at batch 7 (dropout drawing its mask): loss, every gradient and every updated weight as unsliced', async () => {
    const graph = prepareGraph(everyOpGraph(BATCH));
    const x = randomFloat32Array(BATCH * IMAGE[0] * IMAGE[1] * IMAGE[2], 22);
    const labels = Uint32Array.from([3, 1, 4, 0, 2, 2, 1]);
    const step = async (maxBindingBytes?: number) => {
      const constants = new ConstantStore(gpu);
      const plan = await TrainingPlan.create(gpu, graph, { constants, maxBindingBytes });
      const optimizer = await createOptimizer(gpu, { type: 'sgd', lr: 0.05, momentum: 0.9 });
      try {
        const stats = await plan.step(new Map([['x', x]]), labels, optimizer);
        return {
          stats,
          grads: await plan.readGradients(),
          weights: await plan.readParameters(),
          slices: plan.slicing?.count,
        };
      } finally {
        optimizer.dispose();
        plan.dispose();
        constants.dispose();
      }
    };
    const whole = await step();
    const sliced = await step(LIMIT);
    expect(whole.slices).toBeUndefined();
    expect(sliced.slices).toBeGreaterThanOrEqual(3);
    expect(Math.abs(sliced.stats.loss - whole.stats.loss)).toBeLessThanOrEqual(1e-6 * Math.max(1, whole.stats.loss));
    expect([...sliced.grads.keys()].sort()).toEqual(['b_conv', 'b_fc', 'w_conv', 'w_fc', 'w_matmul', 'w_scale']);
    for (const [name, want] of whole.grads) {
      expect(relL2(sliced.grads.get(name)!, want), `gradient of ${name}`).toBeLessThan(1e-5);
      expect(relL2(sliced.weights.get(name)!, whole.weights.get(name)!), `updated ${name}`).toBeLessThan(1e-5);
    }
  });
});
