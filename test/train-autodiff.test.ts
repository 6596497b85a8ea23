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
import { dropoutKeep } from '../src/kernels/backward/index.ts';
import { mixSeed } from '../src/train/training-plan.ts';
import { batchNormTrainingRef } from './helpers/reference-backward.ts';
import {
  batchNormRef,
  broadcastRef,
  concatRef,
  convRef,
  gemmRef,
  globalPoolRef,
  lrnRef,
  padRef,
  poolRef,
  relL2,
  softmaxRef,
  transposeRef,
  unaryRef,
} from './helpers/reference-ops.ts';

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
    if (name.startsWith('b') || name === 'fcb')
      init.value = { ...init.value, data: Float32Array.from(init.value.data as Float32Array, (v) => v + 0.1) };
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
  const z = gemmRef(pooled.data, w.get('fc')!, {
    M: BATCH,
    N: CLASSES,
    K: 6,
    transB: true,
    c: { data: w.get('fcb')!, dims: [CLASSES] },
  });
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
    const weights = new Map<string, Float64Array>(
      [...graph.initializers].map(([k, v]) => [k, Float64Array.from(v.value.data as Float32Array)]),
    );
    expect(Math.abs(stats.loss - referenceLoss(weights, x, labels))).toBeLessThan(1e-5);

    const grads = await plan.readGradients();
    const rng = mulberry32(99);
    const h = 1e-5;
    for (const p of plan.parameters) {
      const w = weights.get(p.name)!;
      const coords =
        p.size <= 12 ? [...Array(p.size).keys()] : Array.from({ length: 12 }, () => Math.floor(rng() * p.size));
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
    expect(
      lowered.steps
        .slice(0, lowered.forwardSteps)
        .filter((s) => s.node.name.startsWith('conv1') || s.node.name === 'relu1').length,
    ).toBe(1);
    const x = randomFloat32Array(BATCH * 3 * 81, 5);
    const labels = Uint32Array.from([0, 3, 2]);
    await plan.step(new Map([['x', x]]), labels, undefined);
    const grads = await plan.readGradients();
    const weights = new Map<string, Float64Array>(
      [...graph.initializers].map(([k, v]) => [k, Float64Array.from(v.value.data as Float32Array)]),
    );
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
    const c1 = b.op(
      'Conv',
      ['x', b.weight('w1', [4, 3, 3, 3], 'he'), b.weight('b1', [4], 'glorot')],
      { kernel_shape: [3, 3], pads: [1, 1, 1, 1] },
      'conv1',
    );
    const bnParams = ['scale', 'shift', 'mean', 'var'].map((n) => b.weight(n, [4], 'glorot', false));
    const bn = b.op('BatchNormalization', [c1, ...bnParams], { epsilon: 1e-3 }, 'bn');
    const r = b.op('Relu', [bn], {}, 'relu');
    const mp = b.op('MaxPool', [r], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }, 'maxpool');
    const c2 = b.op(
      'Conv',
      [mp, b.weight('w2', [4, 4, 3, 3], 'he')],
      { kernel_shape: [3, 3], pads: [1, 1, 1, 1] },
      'conv2',
    );
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
    const weights = new Map<string, Float64Array>(
      [...graph.initializers].map(([k, t]) => [k, Float64Array.from(t.value.data as Float32Array)]),
    );
    const lossOf = () => {
      const W = (n: string) => weights.get(n)!;
      const c1r = convRef(x, [2, 3, 8, 8], W('w1'), [4, 3, 3, 3], W('b1'), { pads: [1, 1, 1, 1] });
      const bnr = batchNormRef(c1r.data, c1r.dims, W('scale'), W('shift'), W('mean'), W('var'), 1e-3).map((t) =>
        Math.max(t, 0),
      );
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
      const coords =
        p.size <= 12 ? [...Array(p.size).keys()] : Array.from({ length: 12 }, () => Math.floor(rng() * p.size));
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

  it('refuses an op without a gradient rule on the gradient path, naming node and op', async () => {
    const g = new Graph();
    g.opsetImports = [{ domain: '', version: 17 }];
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [2, 4] }];
    g.values.set('x', { ...g.inputs[0] });
    const b = new GraphBuilder(g, 1);
    const w = b.weight('w', [4, 3], 'glorot');
    const y = b.op('MatMul', ['x', w], {}, 'mm');
    const t = b.node('Cast', [y], { to: 1 }, { name: 'squash', outputs: ['t'] })[0];
    g.outputs = [{ name: t, dtype: 'float32' }];
    const constants = new ConstantStore(gpu);
    await expect(TrainingPlan.create(gpu, prepareGraph(g), { constants })).rejects.toThrow(
      /node 'squash' \(Cast\).*no gradient rule/s,
    );
    await expect(TrainingPlan.create(gpu, prepareGraph(g), { constants })).rejects.toBeInstanceOf(ModelError);
    constants.dispose();
  });
});

// ---- one op at a time: its trainable inputs → op → flatten → frozen dense head (+ fed offset) ----

type Tensor64 = { data: ArrayLike<number>; dims: number[] };
interface OpCase {
  name: string;
  /** Trainable inputs of the op: name → dims. */
  params: Record<string, number[]>;
  /** Values moved away from kinks / zero, per parameter. */
  shape?: Record<string, (v: number) => number>;
  /** Adds the op (and any frozen constants) and returns its output ([B, …]). */
  build(b: GraphBuilder, g: Graph): string;
  ref(p: Map<string, Float64Array>, graph: Graph): Tensor64;
}

const OP_CLASSES = 3;
const away = (v: number) => (Math.abs(v) < 0.05 ? v + Math.sign(v || 1) * 0.1 : v);
const floatConst = (g: Graph, name: string, dims: number[], values: number[]) =>
  g.setInitializer(name, { dtype: 'float32', dims, data: Float32Array.from(values) }, false);
const intConst = (g: Graph, name: string, values: number[]) =>
  g.setInitializer(
    name,
    { dtype: 'int64', dims: [values.length], data: BigInt64Array.from(values.map(BigInt)) },
    false,
  );
const DROPOUT_SEED = 1234;

const opCases: OpCase[] = [
  {
    name: 'Sigmoid',
    params: { a: [2, 3, 4] },
    build: (b) => b.op('Sigmoid', ['a']),
    ref: (p) => ({ data: unaryRef(p.get('a')!, (v) => 1 / (1 + Math.exp(-v))), dims: [2, 3, 4] }),
  },
  {
    name: 'Tanh',
    params: { a: [2, 3, 4] },
    build: (b) => b.op('Tanh', ['a']),
    ref: (p) => ({ data: unaryRef(p.get('a')!, Math.tanh), dims: [2, 3, 4] }),
  },
  {
    name: 'LeakyRelu',
    params: { a: [2, 3, 4] },
    shape: { a: away },
    build: (b) => b.op('LeakyRelu', ['a'], { alpha: 0.1 }),
    ref: (p) => ({ data: unaryRef(p.get('a')!, (v) => (v >= 0 ? v : 0.1 * v)), dims: [2, 3, 4] }),
  },
  {
    name: 'Clip (opset-11 bounds as float initializers, never trained)',
    params: { a: [2, 3, 4] },
    shape: { a: (v) => (Math.abs(Math.abs(v) - 0.4) < 0.05 ? v * 1.3 : v) },
    build: (b, g) => {
      g.setInitializer('lo', { dtype: 'float32', dims: [], data: Float32Array.of(-0.4) });
      g.setInitializer('hi', { dtype: 'float32', dims: [], data: Float32Array.of(0.4) });
      return b.op('Clip', ['a', 'lo', 'hi']);
    },
    ref: (p) => ({ data: unaryRef(p.get('a')!, (v) => Math.min(0.4, Math.max(-0.4, v))), dims: [2, 3, 4] }),
  },
  {
    // Flags read as onnxruntime reads them: any non-zero transA/transB is true, in the gradient too.
    name: 'Gemm with transA = 10,000,000 and transB = 5 (non-zero is true)',
    params: { c: [2, 4], a: [3, 2], w: [4, 3] },
    build: (b) => b.op('Gemm', ['a', 'w', 'c'], { transA: 10_000_000, transB: 5, alpha: 0.7, beta: 1.3 }),
    ref: (p) => ({
      data: gemmRef(p.get('a')!, p.get('w')!, {
        M: 2,
        N: 4,
        K: 3,
        transA: true,
        transB: true,
        alpha: 0.7,
        beta: 1.3,
        c: { data: p.get('c')!, dims: [2, 4] },
      }),
      dims: [2, 4],
    }),
  },
  {
    name: 'Add broadcasting both ways',
    params: { a: [2, 3, 1, 5], b: [3, 4, 1] },
    build: (b) => b.op('Add', ['a', 'b']),
    ref: (p) =>
      broadcastRef(
        [
          { data: p.get('a')!, dims: [2, 3, 1, 5] },
          { data: p.get('b')!, dims: [3, 4, 1] },
        ],
        (u, v) => u + v,
      ),
  },
  {
    name: 'Sub broadcasting',
    params: { a: [2, 3, 1], b: [4] },
    build: (b) => b.op('Sub', ['a', 'b']),
    ref: (p) =>
      broadcastRef(
        [
          { data: p.get('a')!, dims: [2, 3, 1] },
          { data: p.get('b')!, dims: [4] },
        ],
        (u, v) => u - v,
      ),
  },
  {
    name: 'Mul broadcasting',
    params: { a: [2, 3, 4], b: [1, 4] },
    build: (b) => b.op('Mul', ['a', 'b']),
    ref: (p) =>
      broadcastRef(
        [
          { data: p.get('a')!, dims: [2, 3, 4] },
          { data: p.get('b')!, dims: [1, 4] },
        ],
        (u, v) => u * v,
      ),
  },
  {
    name: 'Div broadcasting',
    params: { a: [2, 3, 4], b: [3, 1] },
    shape: { b: (v) => Math.abs(v) + 0.5 },
    build: (b) => b.op('Div', ['a', 'b']),
    ref: (p) =>
      broadcastRef(
        [
          { data: p.get('a')!, dims: [2, 3, 4] },
          { data: p.get('b')!, dims: [3, 1] },
        ],
        (u, v) => u / v,
      ),
  },
  {
    // Div's dB binds a' as both x0 and x1: that step reads a copy (inputs are declared writable).
    name: 'a · (a / a): one backward step binds a value twice',
    params: { a: [2, 3, 4] },
    shape: { a: (v) => Math.abs(v) + 0.5 },
    build: (b) => b.op('Mul', ['a', b.op('Div', ['a', 'a'])]),
    ref: (p) => ({ data: p.get('a')!, dims: [2, 3, 4] }),
  },
  {
    name: 'Sum of three with broadcasting',
    params: { a: [2, 3, 4], b: [4], c: [2, 1, 4] },
    build: (b) => b.op('Sum', ['a', 'b', 'c']),
    ref: (p) =>
      broadcastRef(
        [
          { data: p.get('a')!, dims: [2, 3, 4] },
          { data: p.get('b')!, dims: [4] },
          { data: p.get('c')!, dims: [2, 1, 4] },
        ],
        (u, v, w) => u + v + w,
      ),
  },
  {
    name: 'Concat on channels',
    params: { a: [2, 3, 2, 2], b: [2, 2, 2, 2] },
    build: (b) => b.op('Concat', ['a', 'b'], { axis: 1 }),
    ref: (p) =>
      concatRef(
        [
          { data: p.get('a')!, dims: [2, 3, 2, 2] },
          { data: p.get('b')!, dims: [2, 2, 2, 2] },
        ],
        1,
      ),
  },
  {
    name: 'Transpose',
    params: { a: [2, 3, 4, 5] },
    build: (b) => b.op('Transpose', ['a'], { perm: [0, 2, 3, 1] }),
    ref: (p) => transposeRef(p.get('a')!, [2, 3, 4, 5], [0, 2, 3, 1]),
  },
  {
    name: 'Pad (constant, pads as an int64 initializer, one negative)',
    params: { a: [2, 3, 3, 3] },
    build: (b, g) => {
      intConst(g, 'pads', [0, 1, 2, 0, 0, 0, 1, -1]);
      floatConst(g, 'padValue', [], [0.25]);
      return b.op('Pad', ['a', 'pads', 'padValue'], { mode: 'constant' });
    },
    ref: (p) => padRef(p.get('a')!, [2, 3, 3, 3], [0, 1, 2, 0, 0, 0, 1, -1], 0.25),
  },
  {
    name: 'GlobalMaxPool',
    params: { a: [2, 3, 4, 5] },
    build: (b) => b.op('GlobalMaxPool', ['a']),
    ref: (p) => globalPoolRef('max', p.get('a')!, [2, 3, 4, 5]),
  },
  {
    name: 'LRN',
    params: { a: [2, 5, 3, 3] },
    build: (b) => b.op('LRN', ['a'], { size: 3, alpha: 0.5, beta: 0.75, bias: 1.5 }),
    ref: (p) => ({
      data: lrnRef(p.get('a')!, [2, 5, 3, 3], { size: 3, alpha: 0.5, beta: 0.75, bias: 1.5 }),
      dims: [2, 5, 3, 3],
    }),
  },
  {
    name: 'Softmax inside the network (axis 1 of a rank-3 tensor)',
    params: { a: [2, 4, 3] },
    build: (b) => b.op('Softmax', ['a'], { axis: 1 }),
    ref: (p) => ({ data: softmaxRef(p.get('a')!, [2, 4, 3], 1, 17), dims: [2, 4, 3] }),
  },
  {
    name: 'BatchNormalization in training mode (batch statistics)',
    params: { a: [4, 3, 2, 2], scale: [3], bias: [3] },
    build: (b, g) => {
      // Running statistics start trainable-flagged float initializers: the rule keeps them out of the parameters.
      g.setInitializer('mean', { dtype: 'float32', dims: [3], data: Float32Array.of(0.1, -0.2, 0.3) });
      g.setInitializer('var', { dtype: 'float32', dims: [3], data: Float32Array.of(1.5, 0.7, 2) });
      return b.op('BatchNormalization', ['a', 'scale', 'bias', 'mean', 'var'], { epsilon: 1e-3, momentum: 0.8 }, 'bn');
    },
    ref: (p) => ({
      data: batchNormTrainingRef(p.get('a')!, [4, 3, 2, 2], p.get('scale')!, p.get('bias')!, 1e-3).y,
      dims: [4, 3, 2, 2],
    }),
  },
  {
    name: 'Dropout in training mode (seeded mask)',
    params: { a: [2, 3, 8] },
    build: (b, g) => {
      floatConst(g, 'ratio', [], [0.3]);
      return b.op('Dropout', ['a', 'ratio'], {}, 'drop');
    },
    ref: (p, graph) => {
      const seed = mixSeed(
        DROPOUT_SEED,
        graph.nodes.findIndex((n) => n.opType === 'Dropout'),
      );
      return { data: p.get('a')!.map((v, i) => (dropoutKeep(seed, i, 0.3) ? v / 0.7 : 0)), dims: [2, 3, 8] };
    },
  },
];

/** The case's graph: op → Flatten → Gemm with frozen W → + fed offset x. */
function opGraph(c: OpCase): { graph: Graph; K: number; B: number } {
  const g = new Graph();
  g.opsetImports = [{ domain: '', version: 17 }];
  const first = Object.values(c.params)[0];
  const B = first[0];
  // e (fed zeros) keeps the op off the constant folder: a' = Sum(a, e) = a, same shape, so
  // the gradient of a is the op's own.
  g.inputs = [
    { name: 'x', dtype: 'float32', shape: [B, OP_CLASSES] },
    { name: 'e', dtype: 'float32', shape: [1] },
  ];
  for (const i of g.inputs) g.values.set(i.name, { ...i });
  const b = new GraphBuilder(g, 3);
  let seed = 50;
  for (const [name, dims] of Object.entries(c.params)) {
    const data = randomFloat32Array(
      dims.reduce((a, d) => a * d, 1),
      seed++,
    ).map(c.shape?.[name] ?? ((v) => v));
    g.setInitializer(name, { dtype: 'float32', dims: [...dims], data });
  }
  const y = c.build(b, g);
  for (const node of g.nodes) {
    node.inputs = node.inputs.map((i) => (i in c.params ? `${i}'` : i));
  }
  for (const name of Object.keys(c.params))
    b.node('Sum', [name, 'e'], {}, { name: `live ${name}`, outputs: [`${name}'`] });
  g.nodes.unshift(...g.nodes.splice(g.nodes.length - Object.keys(c.params).length));
  const f = b.op('Flatten', [y], { axis: 1 }, 'flatten');
  g.outputs = [{ name: f, dtype: 'float32' }];
  const graph0 = prepareGraph(g.clone());
  const K = (graph0.values.get(f)!.shape as number[])[1];
  const w = b.weight('W', [OP_CLASSES, K], 'glorot', false);
  const z = b.op('Gemm', [f, w], { transB: 1 }, 'head');
  g.outputs = [{ name: b.op('Add', [z, 'x'], {}, 'offset'), dtype: 'float32' }];
  return { graph: prepareGraph(g), K, B };
}

function crossEntropy(z: ArrayLike<number>, labels: Uint32Array, classes: number): number {
  let loss = 0;
  for (let n = 0; n < labels.length; n++) {
    const row = Array.from({ length: classes }, (_, j) => z[n * classes + j]);
    const m = Math.max(...row);
    loss += m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0)) - row[labels[n]];
  }
  return loss / labels.length;
}

describe('autodiff per op: gradient rules vs float64 finite differences', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  for (const c of opCases) {
    it(c.name, async () => {
      const { graph, K, B } = opGraph(c);
      const names = Object.keys(c.params);
      const constants = new ConstantStore(gpu);
      const plan = await TrainingPlan.create(gpu, graph, { constants });
      expect(plan.parameters.map((p) => p.name).sort()).toEqual([...names].sort());
      const x = randomFloat32Array(B * OP_CLASSES, 7);
      const labels = Uint32Array.from({ length: B }, (_, i) => (i * 2 + 1) % OP_CLASSES);
      const W = Float64Array.from(graph.initializers.get('W')!.value.data as Float32Array);
      const weights = new Map(
        names.map((n) => [n, Float64Array.from(graph.initializers.get(n)!.value.data as Float32Array)]),
      );
      const lossOf = () => {
        const y = c.ref(weights, graph);
        const z = gemmRef(y.data, W, { M: B, N: OP_CLASSES, K, transB: true });
        return crossEntropy(
          z.map((v, i) => v + x[i]),
          labels,
          OP_CLASSES,
        );
      };
      const feeds = new Map([
        ['x', x],
        ['e', new Float32Array(1)],
      ]);
      const stats = await plan.step(feeds, labels, undefined, undefined, '', DROPOUT_SEED);
      expect(Math.abs(stats.loss - lossOf())).toBeLessThan(1e-5);
      const grads = await plan.readGradients();
      for (const name of names) {
        const w = weights.get(name)!;
        const want: number[] = [];
        for (let i = 0; i < w.length; i++) {
          const keep = w[i];
          w[i] = keep + 1e-5;
          const up = lossOf();
          w[i] = keep - 1e-5;
          const down = lossOf();
          w[i] = keep;
          want.push((up - down) / 2e-5);
        }
        expect(relL2(grads.get(name)!, want), `gradient of ${name}`).toBeLessThan(1e-3);
      }
      if (c.name.startsWith('BatchNormalization')) {
        // Running statistics: updated in place with ONNX's momentum, declared as state; the
        // evaluation plan over the same buffers normalizes with them.
        expect([...plan.state].sort()).toEqual(['mean', 'var']);
        const r = batchNormTrainingRef(
          weights.get('a')!,
          [4, 3, 2, 2],
          weights.get('scale')!,
          weights.get('bias')!,
          1e-3,
          { mean: [0.1, -0.2, 0.3], variance: [1.5, 0.7, 2], momentum: 0.8 },
        );
        const got = await plan.readValues(['mean', 'var']);
        expect(relL2(got.get('mean')!, r.runningMean)).toBeLessThan(1e-5);
        expect(relL2(got.get('var')!, r.runningVar)).toBeLessThan(1e-5);
        const evaluation = await TrainingPlan.create(gpu, graph, { constants, mode: 'evaluate' });
        const { logits } = await evaluation.evaluate(feeds, undefined, true);
        const y = batchNormRef(
          weights.get('a')!,
          [4, 3, 2, 2],
          weights.get('scale')!,
          weights.get('bias')!,
          r.runningMean,
          r.runningVar,
          1e-3,
        );
        const z = gemmRef(y, W, { M: B, N: OP_CLASSES, K, transB: true }).map((v, i) => v + x[i]);
        expect(relL2(logits!, z)).toBeLessThan(1e-5);
        evaluation.dispose();
      }
      if (c.name.startsWith('Dropout')) {
        // Evaluation: an identity. Another seed: another mask.
        const evaluation = await TrainingPlan.create(gpu, graph, { constants, mode: 'evaluate' });
        const { logits } = await evaluation.evaluate(feeds, undefined, true);
        const z = gemmRef(weights.get('a')!, W, { M: B, N: OP_CLASSES, K, transB: true }).map((v, i) => v + x[i]);
        expect(relL2(logits!, z)).toBeLessThan(1e-5);
        evaluation.dispose();
        const again = await plan.step(feeds, labels, undefined, undefined, '', DROPOUT_SEED);
        expect(again.loss).toBe(stats.loss);
        const other = await plan.step(feeds, labels, undefined, undefined, '', DROPOUT_SEED + 1);
        expect(other.loss).not.toBe(stats.loss);
      }
      plan.dispose();
      constants.dispose();
    });
  }
});

describe('autodiff: a CNN of the new rules, every parameter vs finite differences', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  // x [2,3,12,12] → conv(4)-BN(train)-relu-maxpool2 → LRN → conv(6)-BN(train)-relu → (+ conv1×1) → avgpool2
  //   → [conv(4)-BN(train)-relu ‖ conv1×1(2)] concat → GlobalAveragePool → flatten → gemm(8) → relu → Dropout (off) → gemm(5)
  const N = 2;
  const bnNames = (k: number) => [`s${k}`, `t${k}`, `m${k}`, `v${k}`];
  function net(): Graph {
    const g = new Graph();
    g.opsetImports = [{ domain: '', version: 17 }];
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [N, 3, 12, 12] }];
    g.values.set('x', { ...g.inputs[0] });
    const b = new GraphBuilder(g, 31);
    const bn = (input: string, c: number, k: number) => {
      const [s, t, m, v] = bnNames(k);
      g.setInitializer(s, { dtype: 'float32', dims: [c], data: randomFloat32Array(c, 100 + k, 0.3).map((u) => 1 + u) });
      g.setInitializer(t, { dtype: 'float32', dims: [c], data: randomFloat32Array(c, 110 + k, 0.3) });
      g.setInitializer(m, { dtype: 'float32', dims: [c], data: new Float32Array(c) });
      g.setInitializer(v, { dtype: 'float32', dims: [c], data: new Float32Array(c).fill(1) });
      return b.op('BatchNormalization', [input, s, t, m, v], { epsilon: 1e-3 }, `bn${k}`);
    };
    const conv = (input: string, w: string, dims: number[], pad: number, bias?: string) =>
      b.op('Conv', [input, b.weight(w, dims, 'he'), ...(bias ? [b.weight(bias, [dims[0]], 'glorot')] : [])], {
        kernel_shape: dims.slice(2),
        pads: [pad, pad, pad, pad],
      });
    const r1 = b.op('Relu', [bn(conv('x', 'w1', [4, 3, 3, 3], 1, 'b1'), 4, 1)]);
    const l1 = b.op('LRN', [b.op('MaxPool', [r1], { kernel_shape: [2, 2], strides: [2, 2] })], {
      size: 3,
      alpha: 0.3,
      beta: 0.75,
      bias: 1,
    });
    const r2 = b.op('Relu', [bn(conv(l1, 'w2', [6, 4, 3, 3], 1, 'b2'), 6, 2)]);
    const res = b.op('Add', [r2, conv(r2, 'w3', [6, 6, 1, 1], 0)]);
    const a2 = b.op('AveragePool', [res], { kernel_shape: [2, 2], strides: [2, 2] });
    const r3 = b.op('Relu', [bn(conv(a2, 'w4', [4, 6, 3, 3], 1), 4, 3)]);
    const cat = b.op('Concat', [r3, conv(a2, 'w5', [2, 6, 1, 1], 0, 'b5')], { axis: 1 });
    const f = b.op('Flatten', [b.op('GlobalAveragePool', [cat])], { axis: 1 });
    const h = b.op('Relu', [
      b.op('Gemm', [f, b.weight('fc1', [8, 6], 'he'), b.weight('fb1', [8], 'glorot')], { transB: 1 }),
    ]);
    g.setInitializer('ratio', { dtype: 'float32', dims: [], data: Float32Array.of(0.5) }, false);
    const d = b.op('Dropout', [h, 'ratio']);
    g.outputs = [
      {
        name: b.op('Gemm', [d, b.weight('fc2', [5, 8], 'glorot'), b.weight('fb2', [5], 'glorot')], { transB: 1 }),
        dtype: 'float32',
      },
    ];
    for (const name of ['b1', 'b2', 'b5', 'fb1']) {
      const init = g.initializers.get(name)!;
      init.value = { ...init.value, data: Float32Array.from(init.value.data as Float32Array, (u) => u + 0.1) };
    }
    return prepareGraph(g);
  }

  function lossOf(W: (n: string) => Float64Array, x: Float32Array, labels: Uint32Array): number {
    const relu = (a: ArrayLike<number>) => Float64Array.from(a, (v) => Math.max(v, 0));
    const bnr = (t: { data: Float64Array; dims: number[] }, k: number) => {
      const [s, sh] = bnNames(k);
      return { data: batchNormTrainingRef(t.data, t.dims, W(s), W(sh), 1e-3).y, dims: t.dims };
    };
    const c1 = convRef(x, [N, 3, 12, 12], W('w1'), [4, 3, 3, 3], W('b1'), { pads: [1, 1, 1, 1] });
    const r1 = relu(bnr(c1, 1).data);
    const p1 = poolRef('max', r1, c1.dims, { kernel: [2, 2], strides: [2, 2] });
    const l1 = lrnRef(p1.data, p1.dims, { size: 3, alpha: 0.3, beta: 0.75, bias: 1 });
    const c2 = convRef(l1, p1.dims, W('w2'), [6, 4, 3, 3], W('b2'), { pads: [1, 1, 1, 1] });
    const r2 = relu(bnr(c2, 2).data);
    const c3 = convRef(r2, c2.dims, W('w3'), [6, 6, 1, 1], undefined);
    const a2 = poolRef(
      'avg',
      r2.map((v, i) => v + c3.data[i]),
      c2.dims,
      { kernel: [2, 2], strides: [2, 2] },
    );
    const c4 = convRef(a2.data, a2.dims, W('w4'), [4, 6, 3, 3], undefined, { pads: [1, 1, 1, 1] });
    const r3 = relu(bnr(c4, 3).data);
    const c5 = convRef(a2.data, a2.dims, W('w5'), [2, 6, 1, 1], W('b5'));
    const cat = concatRef([{ data: r3, dims: c4.dims }, c5], 1);
    const pooled = globalPoolRef('avg', cat.data, cat.dims);
    const h = relu(
      gemmRef(pooled.data, W('fc1'), { M: N, N: 8, K: 6, transB: true, c: { data: W('fb1'), dims: [8] } }),
    );
    const z = gemmRef(h, W('fc2'), { M: N, N: 5, K: 8, transB: true, c: { data: W('fb2'), dims: [5] } });
    return crossEntropy(z, labels, 5);
  }

  it('conv-BN(train)-relu-pool ×3, residual Add, Concat branch, LRN, dense head with Dropout off', async () => {
    const graph = net();
    const constants = new ConstantStore(gpu);
    const plan = await TrainingPlan.create(gpu, graph, { constants, dropout: false });
    const expected = [
      'w1',
      'b1',
      's1',
      't1',
      'w2',
      'b2',
      's2',
      't2',
      'w3',
      'w4',
      's3',
      't3',
      'w5',
      'b5',
      'fc1',
      'fb1',
      'fc2',
      'fb2',
    ];
    expect(plan.parameters.map((p) => p.name).sort()).toEqual([...expected].sort());
    expect([...plan.state].sort()).toEqual(['m1', 'm2', 'm3', 'v1', 'v2', 'v3']);
    const x = randomFloat32Array(N * 3 * 144, 77);
    const labels = Uint32Array.from([3, 1]);
    const weights = new Map(
      [...graph.initializers]
        .filter(([, t]) => t.value.dtype === 'float32')
        .map(([k, t]) => [k, Float64Array.from(t.value.data as Float32Array)]),
    );
    const W = (n: string) => weights.get(n)!;
    const stats = await plan.step(new Map([['x', x]]), labels, undefined);
    expect(Math.abs(stats.loss - lossOf(W, x, labels))).toBeLessThan(1e-4);
    const grads = await plan.readGradients();
    const rng = mulberry32(13);
    for (const p of plan.parameters) {
      const w = W(p.name);
      const coords =
        p.size <= 8 ? [...Array(p.size).keys()] : Array.from({ length: 8 }, () => Math.floor(rng() * p.size));
      const got: number[] = [];
      const want: number[] = [];
      for (const i of coords) {
        const keep = w[i];
        w[i] = keep + 1e-5;
        const up = lossOf(W, x, labels);
        w[i] = keep - 1e-5;
        const down = lossOf(W, x, labels);
        w[i] = keep;
        want.push((up - down) / 2e-5);
        got.push(grads.get(p.name)![i]);
      }
      if (p.name === 'b1' || p.name === 'b2') {
        // A bias right before a training-mode BN: the batch mean removes it, the gradient is 0.
        expect(Math.max(...want.map(Math.abs)), `finite differences of ${p.name}`).toBeLessThan(1e-6);
        expect(Math.max(...got.map(Math.abs)), `gradient of ${p.name}`).toBeLessThan(1e-4);
        continue;
      }
      expect(relL2(got, want), `gradient of ${p.name}`).toBeLessThan(1e-3);
    }
    plan.dispose();
    constants.dispose();
  }, 120_000);
});
