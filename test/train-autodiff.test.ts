// Autodiff end to end on the GPU: a small CNN (conv-relu, strided conv-relu, a residual Add over
// a 1×1 conv, GlobalAveragePool, Flatten, dense head, Softmax) — every parameter tensor's
// gradient against central finite differences of a float64 forward of the same network and loss
// on sampled coordinates; a frozen prefix runs forward only; ops without a rule are refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { ModelError } from '../src/graph/errors.ts';
import { Graph } from '../src/graph/ir.ts';
import { prepareGraph } from '../src/graph/load.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { ConstantStore } from '../src/runtime/plan.ts';
import { partitionGraph } from '../src/train/autodiff.ts';
import { TrainingPlan } from '../src/train/training-plan.ts';
import { mulberry32, randomFloat32Array } from './helpers/random.ts';
import { batchNormRef, convRef, gemmRef, globalPoolRef, poolRef, relL2 } from './helpers/reference-ops.ts';

const BATCH = 3;
const CLASSES = 5;

/** x [B,3,9,9] → conv3×3 p1 (4) → relu → conv3×3 s2 p1 (6) → relu → (+ conv1×1 (6)) → relu → GAP → flatten → gemm (5) → softmax */
function smallCnn(seed = 7): Graph {
  const g = new Graph();
  g.opsetImports = [{ domain: '', version: 17 }];
  g.inputs = [{ name: 'x', dtype: 'float32', shape: [BATCH, 3, 9, 9] }];
  g.values.set('x', { ...g.inputs[0] });
  const b = new GraphBuilder(g, seed);
  const w1 = b.weight('w1', [4, 3, 3, 3], 'he');
  const b1 = b.weight('b1', [4], 'glorot');
  const c1 = b.op('Conv', ['x', w1, b1], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'conv1');
  const r1 = b.op('Relu', [c1], {}, 'relu1');
  const w2 = b.weight('w2', [6, 4, 3, 3], 'he');
  const b2 = b.weight('b2', [6], 'glorot');
  const c2 = b.op('Conv', [r1, w2, b2], { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [2, 2] }, 'conv2');
  const r2 = b.op('Relu', [c2], {}, 'relu2');
  const w3 = b.weight('w3', [6, 6, 1, 1], 'he');
  const c3 = b.op('Conv', [r2, w3], { kernel_shape: [1, 1] }, 'conv3');
  const sum = b.op('Add', [r2, c3], {}, 'residual');
  const r3 = b.op('Relu', [sum], {}, 'relu3');
  const p = b.op('GlobalAveragePool', [r3], {}, 'gap');
  const f = b.op('Flatten', [p], { axis: 1 }, 'flatten');
  const fc = b.weight('fc', [CLASSES, 6], 'glorot');
  const fcb = b.weight('fcb', [CLASSES], 'glorot');
  const logits = b.op('Gemm', [f, fc, fcb], { transB: 1 }, 'fc');
  const prob = b.node('Softmax', [logits], { axis: 1 }, { name: 'softmax', outputs: ['prob'] })[0];
  g.outputs = [{ name: prob, dtype: 'float32' }];
  // Biases away from zero so few pre-activations sit near a Relu kink.
  for (const [name, init] of g.initializers) {
    if (name.startsWith('b') || name === 'fcb') init.value = { ...init.value, data: Float32Array.from(init.value.data as Float32Array, (v) => v + 0.1) };
  }
  return prepareGraph(g);
}

/** Float64 forward and mean cross-entropy of smallCnn with the weights in `w`. */
function referenceLoss(w: Map<string, ArrayLike<number>>, x: Float32Array, labels: Uint32Array): number {
  const relu = (a: Float64Array) => a.map((v) => Math.max(v, 0));
  const c1 = convRef(x, [BATCH, 3, 9, 9], w.get('w1')!, [4, 3, 3, 3], w.get('b1')!, { pads: [1, 1, 1, 1] });
  const r1 = relu(c1.data);
  const c2 = convRef(r1, c1.dims, w.get('w2')!, [6, 4, 3, 3], w.get('b2')!, { pads: [1, 1, 1, 1], strides: [2, 2] });
  const r2 = relu(c2.data);
  const c3 = convRef(r2, c2.dims, w.get('w3')!, [6, 6, 1, 1], undefined);
  const r3 = relu(r2.map((v, i) => v + c3.data[i]));
  const pooled = globalPoolRef('avg', r3, c2.dims);
  const z = gemmRef(pooled.data, w.get('fc')!, { M: BATCH, N: CLASSES, K: 6, transB: true, c: { data: w.get('fcb')!, dims: [CLASSES] } });
  let loss = 0;
  for (let n = 0; n < BATCH; n++) {
    const row = Array.from(z.subarray(n * CLASSES, (n + 1) * CLASSES));
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
    loss += lse - row[labels[n]];
  }
  return loss / BATCH;
}

describe('autodiff', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('every parameter gradient of a small residual CNN matches float64 finite differences', async () => {
    const graph = smallCnn();
    const constants = new ConstantStore(gpu);
    const plan = await TrainingPlan.create(gpu, graph, { constants });
    expect(plan.parameters.map((p) => p.name).sort()).toEqual(['b1', 'b2', 'fc', 'fcb', 'w1', 'w2', 'w3']);
    const x = randomFloat32Array(BATCH * 3 * 81, 3);
    const labels = Uint32Array.from([1, 4, 2]);
    const stats = await plan.step(new Map([['x', x]]), labels, undefined);
    const weights = new Map<string, Float64Array>([...graph.initializers].map(([k, v]) => [k, Float64Array.from(v.value.data as Float32Array)]));
    expect(Math.abs(stats.loss - referenceLoss(weights, x, labels))).toBeLessThan(1e-5);

    const grads = await plan.readGradients();
    const rng = mulberry32(99);
    const h = 1e-5;
    for (const p of plan.parameters) {
      const w = weights.get(p.name)!;
      const coords = p.size <= 12 ? [...Array(p.size).keys()] : Array.from({ length: 12 }, () => Math.floor(rng() * p.size));
      const got: number[] = [];
      const want: number[] = [];
      for (const i of coords) {
        const keep = w[i];
        w[i] = keep + h;
        const up = referenceLoss(weights, x, labels);
        w[i] = keep - h;
        const down = referenceLoss(weights, x, labels);
        w[i] = keep;
        want.push((up - down) / (2 * h));
        got.push(grads.get(p.name)![i]);
      }
      expect(relL2(got, want), `gradient of ${p.name}`).toBeLessThan(1e-3);
    }
    plan.dispose();
    constants.dispose();
  });

  it('a frozen prefix runs forward only (fused), and no gradient is computed for it', async () => {
    const graph = smallCnn();
    for (const name of ['w1', 'b1', 'w2', 'b2']) graph.initializers.get(name)!.trainable = false;
    const part = partitionGraph(graph);
    expect(part.frozen.map((n) => n.name)).toEqual(['conv1', 'relu1', 'conv2', 'relu2']);
    expect(part.boundary).toEqual(['relu2_output']);
    expect(part.trainableReadsInput).toBe(false);
    const constants = new ConstantStore(gpu);
    const plan = await TrainingPlan.create(gpu, graph, { constants });
    expect(plan.parameters.map((p) => p.name).sort()).toEqual(['fc', 'fcb', 'w3']);
    const lowered = plan.lowered;
    const backward = lowered.steps.slice(lowered.forwardSteps);
    expect(backward.some((s) => ['conv1', 'relu1', 'conv2', 'relu2'].includes(s.node.name))).toBe(false);
    // conv1 + relu1 fused into one step, conv2 + relu2 too (the inference lowering).
    expect(lowered.steps.slice(0, lowered.forwardSteps).filter((s) => s.node.name.startsWith('conv1') || s.node.name === 'relu1').length).toBe(1);
    const x = randomFloat32Array(BATCH * 3 * 81, 5);
    const labels = Uint32Array.from([0, 3, 2]);
    await plan.step(new Map([['x', x]]), labels, undefined);
    const grads = await plan.readGradients();
    const weights = new Map<string, Float64Array>([...graph.initializers].map(([k, v]) => [k, Float64Array.from(v.value.data as Float32Array)]));
    const w3 = weights.get('w3')!;
    const want: number[] = [];
    for (let i = 0; i < w3.length; i++) {
      const keep = w3[i];
      w3[i] = keep + 1e-5;
      const up = referenceLoss(weights, x, labels);
      w3[i] = keep - 1e-5;
      const down = referenceLoss(weights, x, labels);
      w3[i] = keep;
      want.push((up - down) / 2e-5);
    }
    expect(relL2(grads.get('w3')!, want)).toBeLessThan(1e-3);
    plan.dispose();
    constants.dispose();
  });

  it('through a frozen BatchNormalization, MaxPool and AveragePool (rules over the shared backward builders)', async () => {
    // x [2,3,8,8] → conv3×3 p1 (4) → BN (frozen) → relu → maxpool 3×3 s2 p1 → conv3×3 p1 (4) → avgpool 2×2 s2 → GAP → flatten → gemm (3)
    const g = new Graph();
    g.opsetImports = [{ domain: '', version: 17 }];
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [2, 3, 8, 8] }];
    g.values.set('x', { ...g.inputs[0] });
    const b = new GraphBuilder(g, 21);
    const c1 = b.op('Conv', ['x', b.weight('w1', [4, 3, 3, 3], 'he'), b.weight('b1', [4], 'glorot')], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'conv1');
    const bnParams = ['scale', 'shift', 'mean', 'var'].map((n, i) => b.weight(n, [4], 'glorot', false));
    const bn = b.op('BatchNormalization', [c1, ...bnParams], { epsilon: 1e-3 }, 'bn');
    const r = b.op('Relu', [bn], {}, 'relu');
    const mp = b.op('MaxPool', [r], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, 'maxpool');
    const c2 = b.op('Conv', [mp, b.weight('w2', [4, 4, 3, 3], 'he')], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, 'conv2');
    const ap = b.op('AveragePool', [c2], { kernel_shape: [2, 2], strides: [2, 2] }, 'avgpool');
    const f = b.op('Flatten', [b.op('GlobalAveragePool', [ap], {}, 'gap')], { axis: 1 }, 'flatten');
    const logits = b.op('Gemm', [f, b.weight('fc', [3, 4], 'glorot')], { transB: 1 }, 'fc');
    g.outputs = [{ name: logits, dtype: 'float32' }];
    const data = (n: string) => g.initializers.get(n)!.value.data as Float32Array;
    const v = data('var');
    v.set(v.map((x) => Math.abs(x) + 0.5));
    const graph = prepareGraph(g);
    const constants = new ConstantStore(gpu);
    const plan = await TrainingPlan.create(gpu, graph, { constants });
    expect(plan.parameters.map((p) => p.name).sort()).toEqual(['b1', 'fc', 'w1', 'w2']);
    const x = randomFloat32Array(2 * 3 * 64, 22);
    const labels = Uint32Array.from([2, 0]);
    const weights = new Map<string, Float64Array>([...graph.initializers].map(([k, t]) => [k, Float64Array.from(t.value.data as Float32Array)]));
    const lossOf = () => {
      const W = (n: string) => weights.get(n)!;
      const c1r = convRef(x, [2, 3, 8, 8], W('w1'), [4, 3, 3, 3], W('b1'), { pads: [1, 1, 1, 1] });
      const bnr = batchNormRef(c1r.data, c1r.dims, W('scale'), W('shift'), W('mean'), W('var'), 1e-3).map((t) => Math.max(t, 0));
      const mpr = poolRef('max', bnr, c1r.dims, { kernel: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] });
      const c2r = convRef(mpr.data, mpr.dims, W('w2'), [4, 4, 3, 3], undefined, { pads: [1, 1, 1, 1] });
      const apr = poolRef('avg', c2r.data, c2r.dims, { kernel: [2, 2], strides: [2, 2] });
      const pooled = globalPoolRef('avg', apr.data, apr.dims);
      const z = gemmRef(pooled.data, W('fc'), { M: 2, N: 3, K: 4, transB: true });
      let loss = 0;
      for (let n = 0; n < 2; n++) {
        const row = Array.from(z.subarray(n * 3, n * 3 + 3));
        const m = Math.max(...row);
        loss += m + Math.log(row.reduce((acc, t) => acc + Math.exp(t - m), 0)) - row[labels[n]];
      }
      return loss / 2;
    };
    const stats = await plan.step(new Map([['x', x]]), labels, undefined);
    expect(Math.abs(stats.loss - lossOf())).toBeLessThan(1e-5);
    const grads = await plan.readGradients();
    const rng = mulberry32(5);
    for (const p of plan.parameters) {
      const w = weights.get(p.name)!;
      const coords = p.size <= 12 ? [...Array(p.size).keys()] : Array.from({ length: 12 }, () => Math.floor(rng() * p.size));
      const got: number[] = [];
      const want: number[] = [];
      for (const i of coords) {
        const keep = w[i];
        w[i] = keep + 1e-5;
        const up = lossOf();
        w[i] = keep - 1e-5;
        const down = lossOf();
        w[i] = keep;
        want.push((up - down) / 2e-5);
        got.push(grads.get(p.name)![i]);
      }
      expect(relL2(got, want), `gradient of ${p.name}`).toBeLessThan(1e-3);
    }
    plan.dispose();
    constants.dispose();
  });

  it('refuses a BatchNormalization whose scale trains (training mode is not wired yet), naming node and op', async () => {
    const g = new Graph();
    g.opsetImports = [{ domain: '', version: 17 }];
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [2, 3, 4, 4] }];
    g.values.set('x', { ...g.inputs[0] });
    const b = new GraphBuilder(g, 2);
    const bn = b.op('BatchNormalization', ['x', b.weight('s', [3], 'glorot'), b.weight('t', [3], 'glorot'), b.weight('m', [3], 'glorot', false), b.weight('v', [3], 'he', false)], {}, 'bn1');
    const f = b.op('Flatten', [b.op('GlobalAveragePool', [bn], {}, 'gap')], { axis: 1 }, 'flatten');
    g.outputs = [{ name: b.op('Gemm', [f, b.weight('fc', [2, 3], 'glorot')], { transB: 1 }, 'fc'), dtype: 'float32' }];
    const constants = new ConstantStore(gpu);
    await expect(TrainingPlan.create(gpu, prepareGraph(g), { constants })).rejects.toThrow(/node 'bn1' \(BatchNormalization\).*training mode/s);
    constants.dispose();
  });

  it('refuses an op without a gradient rule on the gradient path, naming node and op', async () => {
    const g = new Graph();
    g.opsetImports = [{ domain: '', version: 17 }];
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [2, 4] }];
    g.values.set('x', { ...g.inputs[0] });
    const b = new GraphBuilder(g, 1);
    const w = b.weight('w', [4, 3], 'glorot');
    const y = b.op('MatMul', ['x', w], {}, 'mm');
    const t = b.node('Tanh', [y], {}, { name: 'squash', outputs: ['t'] })[0];
    g.outputs = [{ name: t, dtype: 'float32' }];
    const constants = new ConstantStore(gpu);
    await expect(TrainingPlan.create(gpu, prepareGraph(g), { constants })).rejects.toThrow(/node 'squash' \(Tanh\).*no gradient rule/s);
    await expect(TrainingPlan.create(gpu, prepareGraph(g), { constants })).rejects.toBeInstanceOf(ModelError);
    constants.dispose();
  });
});
