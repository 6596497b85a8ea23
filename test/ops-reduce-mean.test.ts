// ReduceMean, the op added as one file (src/ops/reduce-mean.ts) plus one registry line: its
// forward against onnxruntime-node in the attribute (opset 13) and input (opset 18) forms,
// its gradient against float64 finite differences through a training plan, and a small conv
// net ending in ReduceMean over [2, 3] (Keras' GlobalAveragePooling2D as tf2onnx writes it)
// whose loss falls under SGD.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { encodeModel } from '../src/graph/codec.ts';
import { ModelError } from '../src/graph/errors.ts';
import { Graph } from '../src/graph/ir.ts';
import { prepareGraph } from '../src/graph/load.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { ConstantStore } from '../src/runtime/plan.ts';
import { Session } from '../src/runtime/session.ts';
import { createOptimizer } from '../src/train/optimizers.ts';
import { TrainingPlan } from '../src/train/training-plan.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { finiteDifferenceGradient } from './helpers/reference-backward.ts';
import { gemmRef, relL2 } from './helpers/reference-ops.ts';
import { runOrt } from './helpers/reference-models.ts';

interface ReduceCase {
  name: string;
  opset: number;
  dims: number[];
  /** undefined: no axes given (every axis, or none with noop). */
  axes?: number[];
  keepdims?: 0 | 1;
  noop?: 1;
}

/** A graph input `x` of `dims` → ReduceMean → output `y` (axes as an attribute before opset 18, an int64 input from 18). */
function reduceMeanGraph(c: ReduceCase): Graph {
  const g = new Graph();
  g.opsetImports = [{ domain: '', version: c.opset }];
  g.inputs = [{ name: 'x', dtype: 'float32', shape: c.dims }];
  g.values.set('x', { ...g.inputs[0] });
  const b = new GraphBuilder(g, 1);
  const attrs: Record<string, number | number[]> = {};
  if (c.keepdims !== undefined) attrs.keepdims = c.keepdims;
  if (c.noop !== undefined) attrs.noop_with_empty_axes = c.noop;
  const inputs = ['x'];
  if (c.opset < 18 && c.axes) attrs.axes = c.axes;
  if (c.opset >= 18 && c.axes) inputs.push(b.int64('axes', c.axes));
  const y = b.node('ReduceMean', inputs, attrs, { name: 'mean', outputs: ['y'] })[0];
  g.outputs = [{ name: y, dtype: 'float32' }];
  return g;
}

/** Float64 mean over `axes` (normalized) of x [dims], in the keepdims layout (same order either way). */
function reduceMeanRef(x: ArrayLike<number>, dims: number[], axes: number[]): Float64Array {
  const kept = dims.map((d, i) => (axes.includes(i) ? 1 : d));
  const out = new Float64Array(kept.reduce((a, b) => a * b, 1));
  const count = x.length / out.length;
  for (let i = 0; i < x.length; i++) {
    let rem = i;
    let o = 0;
    let stride = 1;
    for (let d = dims.length - 1; d >= 0; d--) {
      const c = rem % dims[d];
      rem = Math.floor(rem / dims[d]);
      o += (axes.includes(d) ? 0 : c) * stride;
      stride *= kept[d];
    }
    out[o] += x[i] / count;
  }
  return out;
}

const FORWARD_CASES: ReduceCase[] = [
  {
    name: 'opset 13, axes [2, 3], keepdims 0 (tf2onnx GlobalAveragePooling2D)',
    opset: 13,
    dims: [2, 5, 7, 3],
    axes: [2, 3],
    keepdims: 0,
  },
  { name: 'opset 13, axes [2, 3], keepdims 1', opset: 13, dims: [2, 5, 7, 3], axes: [2, 3], keepdims: 1 },
  { name: 'opset 13, axes [1], keepdims default', opset: 13, dims: [3, 70, 5], axes: [1] },
  { name: 'opset 13, negative axes [-1, -3], keepdims 0', opset: 13, dims: [2, 3, 4, 5], axes: [-1, -3], keepdims: 0 },
  { name: 'opset 13, all axes (none given), keepdims 1', opset: 13, dims: [3, 4, 9], keepdims: 1 },
  { name: 'opset 13, all axes, keepdims 0 (a scalar)', opset: 13, dims: [3, 4, 9], keepdims: 0 },
  { name: 'opset 11, axes [0, 2] as an attribute', opset: 11, dims: [4, 3, 6], axes: [0, 2] },
  { name: 'opset 18, axes [2, 3] as an input, keepdims 0', opset: 18, dims: [2, 5, 7, 3], axes: [2, 3], keepdims: 0 },
  { name: 'opset 18, negative axis [-2] as an input', opset: 18, dims: [2, 3, 4, 5], axes: [-2] },
  { name: 'opset 18, no axes input: every axis', opset: 18, dims: [2, 3, 5] },
  { name: 'opset 18, empty axes with noop_with_empty_axes: the input', opset: 18, dims: [2, 3, 5], axes: [], noop: 1 },
];

describe('ReduceMean forward vs onnxruntime', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  FORWARD_CASES.forEach((c, k) => {
    it(c.name, async () => {
      const bytes = encodeModel(reduceMeanGraph(c));
      // Shifted off zero: a mean near zero is a difference of sums, with no relative precision.
      const data = randomFloat32Array(
        c.dims.reduce((a, b) => a * b, 1),
        100 + k,
      ).map((v) => v + 0.5);
      const x = { dims: c.dims, data };
      const want = (await runOrt(bytes, { x })).y;
      const session = await Session.create(bytes, { gpu, file: 'reduce-mean.onnx' });
      const got = (await session.run({ x })).y;
      session.dispose();
      expect(got.dims).toEqual(want.dims);
      expect(relL2(got.data, want.data)).toBeLessThan(1e-6);
    });
  });

  it('refuses repeated and out-of-range axes, and the axes attribute at opset 18, naming the node', () => {
    const refused: [ReduceCase, RegExp][] = [
      [{ name: '', opset: 13, dims: [2, 3, 4], axes: [1, -2] }, /axes \[1,-2\] repeat an axis/],
      [{ name: '', opset: 13, dims: [2, 3, 4], axes: [3] }, /axis 3 is out of range for rank 3 \(accepted: -3 … 2\)/],
    ];
    for (const [c, message] of refused) {
      expect(() => prepareGraph(reduceMeanGraph(c))).toThrow(ModelError);
      expect(() => prepareGraph(reduceMeanGraph(c))).toThrow(/node 'mean' \(ReduceMean\)/);
      expect(() => prepareGraph(reduceMeanGraph(c))).toThrow(message);
    }
    const g = reduceMeanGraph({ name: '', opset: 18, dims: [2, 3, 4] });
    g.nodes[0].attributes.axes = { type: 'ints', value: [1] };
    expect(() => prepareGraph(g)).toThrow(/node 'mean' \(ReduceMean\).*replaced by the axes input in opset 18/);
  });
});

const CLASSES = 3;

interface GradientCase {
  name: string;
  opset: number;
  dims: number[];
  axes?: number[];
  keepdims: 0 | 1;
  /** The axes as the float64 reference takes them (normalized; all when none given). */
  reduced: number[];
}

const GRADIENT_CASES: GradientCase[] = [
  {
    name: 'opset 13, axes [2, 3], keepdims 0',
    opset: 13,
    dims: [2, 4, 3, 5],
    axes: [2, 3],
    keepdims: 0,
    reduced: [2, 3],
  },
  {
    name: 'opset 18, axis [-3] as an input, keepdims 1',
    opset: 18,
    dims: [2, 4, 3, 5],
    axes: [-3],
    keepdims: 1,
    reduced: [1],
  },
  { name: 'opset 13, every axis, keepdims 1', opset: 13, dims: [2, 3, 4], keepdims: 1, reduced: [0, 1, 2] },
];

/**
 * a (trainable) → Sum(a, e) (e fed zeros: keeps the node off the constant folder) → ReduceMean
 * → Flatten → Gemm with a frozen W → + fed x: the logits. Returns the graph and the Flatten width.
 */
function gradientGraph(c: GradientCase): { graph: Graph; rows: number; width: number } {
  const g = new Graph();
  g.opsetImports = [{ domain: '', version: c.opset }];
  const kept = c.dims.map((d, i) => (c.reduced.includes(i) ? 1 : d));
  const shown = c.keepdims ? kept : kept.filter((_, i) => !c.reduced.includes(i));
  const rows = shown.length > 1 ? shown[0] : 1;
  const width = kept.reduce((a, b) => a * b, 1) / rows;
  g.inputs = [
    { name: 'x', dtype: 'float32', shape: [rows, CLASSES] },
    { name: 'e', dtype: 'float32', shape: [1] },
  ];
  for (const i of g.inputs) g.values.set(i.name, { ...i });
  const b = new GraphBuilder(g, 2);
  g.setInitializer('a', {
    dtype: 'float32',
    dims: c.dims,
    data: randomFloat32Array(
      c.dims.reduce((p, d) => p * d, 1),
      7,
    ),
  });
  const live = b.op('Sum', ['a', 'e']);
  const inputs = [live];
  const attrs: Record<string, number | number[]> = { keepdims: c.keepdims };
  if (c.opset < 18 && c.axes) attrs.axes = c.axes;
  if (c.opset >= 18 && c.axes) inputs.push(b.int64('axes', c.axes));
  const mean = b.op('ReduceMean', inputs, attrs, 'mean');
  const flat =
    shown.length > 1 ? b.op('Flatten', [mean], { axis: 1 }) : b.op('Reshape', [mean, b.int64('shape', [1, width])]);
  const w = b.weight('W', [CLASSES, width], 'glorot', false);
  const z = b.op('Gemm', [flat, w], { transB: 1 });
  g.outputs = [{ name: b.op('Add', [z, 'x']), dtype: 'float32' }];
  return { graph: prepareGraph(g), rows, width };
}

function crossEntropy(z: ArrayLike<number>, labels: Uint32Array): number {
  let loss = 0;
  for (let n = 0; n < labels.length; n++) {
    const row = Array.from({ length: CLASSES }, (_, j) => z[n * CLASSES + j]);
    const m = Math.max(...row);
    loss += m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0)) - row[labels[n]];
  }
  return loss / labels.length;
}

describe('ReduceMean backward vs float64 finite differences', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  GRADIENT_CASES.forEach((c, k) => {
    it(c.name, async () => {
      const { graph, rows, width } = gradientGraph(c);
      const constants = new ConstantStore(gpu);
      const plan = await TrainingPlan.create(gpu, graph, { constants });
      expect(plan.parameters.map((p) => p.name)).toEqual(['a']);
      const x = randomFloat32Array(rows * CLASSES, 20 + k);
      const labels = Uint32Array.from({ length: rows }, (_, i) => (i + 1) % CLASSES);
      const W = graph.initializers.get('W')!.value.data as Float32Array;
      const lossOf = (a: ArrayLike<number>) => {
        const y = reduceMeanRef(a, c.dims, c.reduced);
        const z = gemmRef(y, W, { M: rows, N: CLASSES, K: width, transB: true });
        return [
          crossEntropy(
            z.map((v, i) => v + x[i]),
            labels,
          ),
        ];
      };
      const a = graph.initializers.get('a')!.value.data as Float32Array;
      const stats = await plan.step(
        new Map([
          ['x', x],
          ['e', new Float32Array(1)],
        ]),
        labels,
        undefined,
      );
      expect(Math.abs(stats.loss - lossOf(a)[0])).toBeLessThan(1e-5);
      const grads = await plan.readGradients();
      expect(relL2(grads.get('a')!, finiteDifferenceGradient(lossOf, a, [1]))).toBeLessThan(1e-4);
      plan.dispose();
      constants.dispose();
    });
  });
});

describe('a conv net ending in ReduceMean over [2, 3] trains', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('x → Conv 3×3 → Relu → ReduceMean [2, 3] keepdims 0 → Gemm: the loss falls under SGD', async () => {
    const batch = 6;
    const g = new Graph();
    g.opsetImports = [{ domain: '', version: 13 }];
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [batch, 3, 8, 8] }];
    g.values.set('x', { ...g.inputs[0] });
    const b = new GraphBuilder(g, 4);
    const conv = b.op('Conv', ['x', b.weight('w', [8, 3, 3, 3], 'he'), b.weight('bias', [8], 'glorot')], {
      kernel_shape: [3, 3],
      pads: [1, 1, 1, 1],
    });
    const pooled = b.op('ReduceMean', [b.op('Relu', [conv])], { axes: [2, 3], keepdims: 0 });
    const logits = b.op(
      'Gemm',
      [pooled, b.weight('fc', [CLASSES, 8], 'glorot'), b.weight('fcb', [CLASSES], 'glorot')],
      {
        transB: 1,
      },
    );
    g.outputs = [{ name: logits, dtype: 'float32' }];
    const graph = prepareGraph(g);
    const constants = new ConstantStore(gpu);
    const plan = await TrainingPlan.create(gpu, graph, { constants });
    expect(plan.parameters.map((p) => p.name).sort()).toEqual(['bias', 'fc', 'fcb', 'w']);
    const optimizer = await createOptimizer(gpu, { type: 'sgd', lr: 0.5, momentum: 0.9 });
    // Each class brightens its own input channel: learnable from channel means alone.
    const labels = Uint32Array.from({ length: batch }, (_, i) => i % CLASSES);
    const x = randomFloat32Array(batch * 3 * 64, 9);
    for (let n = 0; n < batch; n++) for (let i = 0; i < 64; i++) x[(n * 3 + labels[n]) * 64 + i] += 1;
    const feeds = new Map([['x', x]]);
    const losses: number[] = [];
    for (let step = 0; step < 30; step++) losses.push((await plan.step(feeds, labels, optimizer)).loss);
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses[losses.length - 1]).toBeLessThan(0.5 * losses[0]);
    optimizer.dispose();
    plan.dispose();
    constants.dispose();
  });
});
