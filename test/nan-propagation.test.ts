// NaN and ±Inf go through every forward kernel as onnxruntime-node's CPU provider computes them:
// single-node models of each runtime op (and the fused Conv/Gemm epilogues) fed seeded random
// data with NaN, +Inf and −Inf mixed in, and all-NaN / all-±Inf tensors, then each light model
// with a poisoned input. Compared position by position: NaN where onnxruntime has NaN, the
// same infinity where it has one, |got − want| ≤ atol + rtol·|want| elsewhere.
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder, type AttributeInput } from '../src/graph/builder.ts';
import { Graph } from '../src/graph/ir.ts';
import { loadModel, prepareGraph } from '../src/graph/load.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { NonFiniteLossError } from '../src/kernels/loss.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { ConstantStore } from '../src/runtime/plan.ts';
import { Session } from '../src/runtime/session.ts';
import { createOptimizer } from '../src/train/optimizers.ts';
import { TrainingPlan } from '../src/train/training-plan.ts';
import { mulberry32, randomFloat32Array } from './helpers/random.ts';
import { globalPoolRef, lrnRef, poolRef } from './helpers/reference-ops.ts';
import {
  LIGHT_MODELS,
  lightModelPath,
  onnxBytesForOrt,
  randomizeWeights,
  runOrt,
  type LightModel,
} from './helpers/reference-models.ts';

const RTOL = 1e-3;
const ATOL = 1e-5;

interface Tensor {
  dims: number[];
  data: Float32Array;
}

/** How an input is poisoned. */
type Poison = 'nan' | 'inf' | 'mixed' | 'all NaN' | 'all +Inf' | 'all -Inf';
const POISONS: Poison[] = ['nan', 'inf', 'mixed', 'all NaN', 'all +Inf', 'all -Inf'];

/** Seeded random data with NaN / ±Inf at ~1 position in 8 (by `poison`), or all one value. */
function poisoned(n: number, seed: number, poison: Poison): Float32Array {
  if (poison === 'all NaN') return new Float32Array(n).fill(NaN);
  if (poison === 'all +Inf') return new Float32Array(n).fill(Infinity);
  if (poison === 'all -Inf') return new Float32Array(n).fill(-Infinity);
  const data = randomFloat32Array(n, seed);
  const rng = mulberry32(seed + 7);
  const specials = poison === 'nan' ? [NaN] : poison === 'inf' ? [Infinity, -Infinity] : [NaN, Infinity, -Infinity];
  for (let i = 0; i < n; i++) if (rng() < 1 / 8) data[i] = specials[Math.floor(rng() * specials.length)];
  return data;
}

interface OpCase {
  name: string;
  /** Op chain applied to the input `x` of `dims` (weights added through the builder). */
  build: (b: GraphBuilder) => string;
  dims: number[];
  /** Kernel steps the plan must have (the fused cases: one kernel, the epilogue inside it). */
  steps?: number;
  /** The reference when onnxruntime is inconsistent (see Departure). */
  spec?: Departure;
}

/**
 * Where onnxruntime is inconsistent: the ONNX definition in float64, and where onnxruntime may
 * depart from it (`ort` its value, `def` the definition's); it must agree everywhere else.
 */
interface Departure {
  reason: string;
  ref: (x: Float32Array, dims: number[]) => ArrayLike<number>;
  departs: (ort: number, def: number) => boolean;
}

/** A constant float tensor with NaN/±Inf mixed in when `poison` is given, else plain random. */
function constant(b: GraphBuilder, name: string, dims: number[], seed: number, poison?: Poison): string {
  const n = dims.reduce((a, c) => a * c, 1);
  const data = poison ? poisoned(n, seed, poison) : randomFloat32Array(n, seed, 0.5);
  const unique = b.unique(name);
  b.graph.setInitializer(unique, { dtype: 'float32', dims, data }, false);
  return unique;
}

function positive(b: GraphBuilder, name: string, n: number, seed: number): string {
  const rng = mulberry32(seed);
  const unique = b.unique(name);
  b.graph.setInitializer(
    unique,
    { dtype: 'float32', dims: [n], data: Float32Array.from({ length: n }, () => 0.5 + rng()) },
    false,
  );
  return unique;
}

const conv = (b: GraphBuilder, x: string, poison?: Poison, attrs: Record<string, AttributeInput> = {}) =>
  b.op('Conv', [x, constant(b, 'w', [4, 3, 3, 3], 11, poison), constant(b, 'bias', [4], 12)], {
    kernel_shape: [3, 3],
    pads: [1, 1, 1, 1],
    ...attrs,
  });
const gemm = (b: GraphBuilder, x: string, poison?: Poison) =>
  b.op('Gemm', [x, constant(b, 'w', [6, 20], 21, poison), constant(b, 'c', [6], 22)], { transB: 1 });

const FLT_LOWEST = -3.4028234663852886e38;

/**
 * onnxruntime's MaxPool and GlobalMaxPool keep or drop a NaN depending on where it sits in the
 * window (its vectorised max returns one operand of a NaN pair) and start from −FLT_MAX, so an
 * all −∞ window (or one with padding) gives −FLT_MAX; ONNX defines the window's max: NaN when
 * a NaN is in it, −∞ when all are −∞.
 */
const maxPoolSpec = (ref: Departure['ref']): Departure => ({
  reason: 'onnxruntime drops some NaN and turns −∞ into −FLT_MAX; ONNX: the max of the window',
  ref,
  departs: (ort, def) => Number.isNaN(def) || (def === -Infinity && ort === FLT_LOWEST),
});

const OP_CASES: OpCase[] = [
  { name: 'Relu', dims: [2, 3, 5, 7], build: (b) => b.op('Relu', ['x']) },
  { name: 'LeakyRelu', dims: [2, 3, 5, 7], build: (b) => b.op('LeakyRelu', ['x'], { alpha: 0.1 }) },
  {
    name: 'Clip',
    dims: [2, 3, 5, 7],
    build: (b) => b.op('Clip', ['x', scalar(b, 'lo', -0.5), scalar(b, 'hi', 0.75)]),
  },
  // Absent bounds are float32's lowest / max (±∞ inputs clip to them); given ±∞ bounds clip nothing.
  { name: 'Clip, min only', dims: [2, 3, 5, 7], build: (b) => b.op('Clip', ['x', scalar(b, 'lo', -0.5)]) },
  { name: 'Clip, max only', dims: [2, 3, 5, 7], build: (b) => b.op('Clip', ['x', '', scalar(b, 'hi', 0.5)]) },
  {
    name: 'Clip, min > max (all max)',
    dims: [2, 3, 5, 7],
    build: (b) => b.op('Clip', ['x', scalar(b, 'lo', 0.5), scalar(b, 'hi', -0.25)]),
  },
  {
    name: 'Conv + Clip, min > max (fused)',
    dims: [1, 3, 6, 7],
    build: (b) => b.op('Clip', [conv(b, 'x'), scalar(b, 'lo', 0.5), scalar(b, 'hi', -0.25)]),
    steps: 1,
  },
  {
    name: 'Clip, bounds −∞ and +∞',
    dims: [2, 3, 5, 7],
    build: (b) => b.op('Clip', ['x', scalar(b, 'lo', -Infinity), scalar(b, 'hi', Infinity)]),
  },
  {
    name: 'Conv + Clip to [0, +∞] (fused)',
    dims: [1, 3, 6, 7],
    build: (b) => b.op('Clip', [conv(b, 'x'), scalar(b, 'lo', 0), scalar(b, 'hi', Infinity)]),
    steps: 1,
  },
  { name: 'Sigmoid', dims: [2, 3, 5, 7], build: (b) => b.op('Sigmoid', ['x']) },
  { name: 'Tanh', dims: [2, 3, 5, 7], build: (b) => b.op('Tanh', ['x']) },
  { name: 'Softmax', dims: [6, 10], build: (b) => b.op('Softmax', ['x'], { axis: -1 }) },
  { name: 'Softmax axis 1 of 3', dims: [2, 5, 4], build: (b) => b.op('Softmax', ['x'], { axis: 1 }) },
  {
    name: 'MaxPool 3x3 s2 pad 1',
    dims: [1, 3, 9, 9],
    build: (b) => b.op('MaxPool', ['x'], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }),
    spec: maxPoolSpec(
      (x, dims) => poolRef('max', x, dims, { kernel: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] }).data,
    ),
  },
  {
    name: 'MaxPool 2x2 dilation 2',
    dims: [1, 3, 8, 8],
    build: (b) => b.op('MaxPool', ['x'], { kernel_shape: [2, 2], dilations: [2, 2] }),
    spec: maxPoolSpec((x, dims) => poolRef('max', x, dims, { kernel: [2, 2], dilations: [2, 2] }).data),
  },
  {
    name: 'AveragePool 3x3 pad 1',
    dims: [1, 3, 7, 7],
    build: (b) => b.op('AveragePool', ['x'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }),
  },
  {
    name: 'AveragePool count_include_pad',
    dims: [1, 3, 7, 7],
    build: (b) =>
      b.op('AveragePool', ['x'], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], count_include_pad: 1 }),
  },
  {
    name: 'GlobalMaxPool',
    dims: [2, 3, 4, 5],
    build: (b) => b.op('GlobalMaxPool', ['x']),
    spec: maxPoolSpec((x, dims) => globalPoolRef('max', x, dims).data),
  },
  { name: 'GlobalAveragePool', dims: [2, 3, 4, 5], build: (b) => b.op('GlobalAveragePool', ['x']) },
  {
    name: 'BatchNormalization',
    dims: [2, 4, 3, 5],
    build: (b) =>
      b.op('BatchNormalization', [
        'x',
        constant(b, 'scale', [4], 31),
        constant(b, 'beta', [4], 32),
        constant(b, 'mean', [4], 33),
        positive(b, 'var', 4, 34),
      ]),
  },
  {
    name: 'LRN',
    dims: [1, 7, 3, 4],
    build: (b) => b.op('LRN', ['x'], { size: 5, alpha: 1e-2, beta: 0.75, bias: { float: 1 } }),
    // onnxruntime keeps a running sum over the channels (adding the square entering the window,
    // subtracting the one leaving it), so a NaN or ∞ makes every later channel NaN; ONNX sums
    // the window only.
    spec: {
      reason: "onnxruntime's running window sum spreads NaN/∞ to later channels; ONNX: the window's sum",
      ref: (x, dims) => lrnRef(x, dims, { size: 5, alpha: 1e-2, beta: 0.75, bias: 1 }),
      departs: (ort) => Number.isNaN(ort),
    },
  },
  { name: 'Conv 3x3 pad 1', dims: [1, 3, 6, 7], build: (b) => conv(b, 'x') },
  { name: 'Conv + Relu (fused)', dims: [1, 3, 6, 7], build: (b) => b.op('Relu', [conv(b, 'x')]), steps: 1 },
  {
    name: 'Conv + LeakyRelu (fused)',
    dims: [1, 3, 6, 7],
    build: (b) => b.op('LeakyRelu', [conv(b, 'x')], { alpha: 0.2 }),
    steps: 1,
  },
  {
    name: 'Conv + Clip (fused)',
    dims: [1, 3, 6, 7],
    build: (b) => b.op('Clip', [conv(b, 'x'), scalar(b, 'lo', 0), scalar(b, 'hi', 6)]),
    steps: 1,
  },
  { name: 'Conv stride 2 pad 1', dims: [1, 3, 7, 7], build: (b) => conv(b, 'x', undefined, { strides: [2, 2] }) },
  { name: 'Gemm', dims: [3, 20], build: (b) => gemm(b, 'x') },
  { name: 'Gemm + Relu (fused)', dims: [3, 20], build: (b) => b.op('Relu', [gemm(b, 'x')]), steps: 1 },
  { name: 'MatMul', dims: [3, 4, 6], build: (b) => b.op('MatMul', ['x', constant(b, 'w', [6, 5], 41)]) },
  { name: 'Add (broadcast)', dims: [2, 3, 4], build: (b) => b.op('Add', ['x', constant(b, 'k', [3, 4], 51)]) },
  { name: 'Mul (broadcast)', dims: [2, 3, 4], build: (b) => b.op('Mul', ['x', constant(b, 'k', [4], 52)]) },
  { name: 'Sub', dims: [2, 3, 4], build: (b) => b.op('Sub', ['x', constant(b, 'k', [2, 3, 4], 53)]) },
  { name: 'Div', dims: [2, 3, 4], build: (b) => b.op('Div', ['x', constant(b, 'k', [2, 3, 4], 54)]) },
  { name: 'Add x + x', dims: [2, 3, 4], build: (b) => b.op('Add', ['x', 'x']) },
  {
    name: 'Concat',
    dims: [2, 3, 4],
    build: (b) => b.op('Concat', ['x', constant(b, 'k', [2, 2, 4], 55), 'x'], { axis: 1 }),
  },
  { name: 'Dropout (inference)', dims: [2, 3, 4], build: (b) => b.op('Dropout', ['x']) },
  { name: 'ReduceMean', dims: [2, 3, 4, 5], build: (b) => b.op('ReduceMean', ['x'], { axes: [2, 3], keepdims: 1 }) },
  {
    name: 'Pad',
    dims: [1, 2, 3, 4],
    build: (b) => b.op('Pad', ['x', b.int64('pads', [0, 0, 1, 2, 0, 0, 2, 1])]),
  },
  { name: 'Transpose', dims: [2, 3, 4], build: (b) => b.op('Transpose', ['x'], { perm: [2, 0, 1] }) },
];

/** Weights with NaN/±Inf, finite random input: what corrupt weights do. */
// Without padding: onnxruntime's direct Conv skips the products of padded zeros (0·NaN) while
// its grouped Conv and ONNX's zero padding make them NaN, as the engine does (the grouped case).
const WEIGHT_CASES: OpCase[] = POISONS.flatMap((poison): OpCase[] => [
  { name: `Conv, weights ${poison}`, dims: [1, 3, 6, 7], build: (b) => conv(b, 'x', poison, { pads: [0, 0, 0, 0] }) },
  {
    name: `Conv + Relu, weights ${poison}`,
    dims: [1, 3, 6, 7],
    build: (b) => b.op('Relu', [conv(b, 'x', poison, { pads: [0, 0, 0, 0] })]),
    steps: 1,
  },
  {
    name: `Conv group 2 pad 1, weights ${poison}`,
    dims: [1, 4, 5, 6],
    build: (b) =>
      b.op('Conv', ['x', constant(b, 'w', [4, 2, 3, 3], 13, poison)], {
        kernel_shape: [3, 3],
        pads: [1, 1, 1, 1],
        group: 2,
      }),
  },
  { name: `Gemm, weights ${poison}`, dims: [3, 20], build: (b) => gemm(b, 'x', poison) },
  {
    name: `BatchNormalization, statistics ${poison}`,
    dims: [2, 4, 3, 5],
    build: (b) =>
      b.op('BatchNormalization', [
        'x',
        constant(b, 'scale', [4], 31, poison),
        constant(b, 'beta', [4], 32, poison),
        constant(b, 'mean', [4], 33, poison),
        positive(b, 'var', 4, 34),
      ]),
  },
]);

function scalar(b: GraphBuilder, name: string, value: number): string {
  const unique = b.unique(name);
  b.graph.setInitializer(unique, { dtype: 'float32', dims: [], data: Float32Array.of(value) }, false);
  return unique;
}

/** An empty graph (opset 13) with the float input `x` of `dims`. */
function graphWithInput(dims: number[]): Graph {
  const g = new Graph();
  g.irVersion = 8;
  g.opsetImports = [{ domain: '', version: 13 }];
  g.inputs = [{ name: 'x', dtype: 'float32', shape: dims }];
  g.values.set('x', { ...g.inputs[0] });
  return g;
}

function singleOpGraph(c: OpCase): Graph {
  const g = graphWithInput(c.dims);
  const y = c.build(new GraphBuilder(g, 1));
  g.outputs = [{ name: y, dtype: 'float32' }];
  return g;
}

/**
 * Positions where `got` disagrees with `want` (NaN, infinities, tolerance), except where
 * `allowed`; `names` label the two in the messages.
 */
function mismatches(
  got: Tensor,
  want: Tensor,
  names = ['got', 'onnxruntime'],
  allowed: (a: number, b: number) => boolean = () => false,
): string[] {
  const out: string[] = [];
  if (JSON.stringify(got.dims) !== JSON.stringify(want.dims)) return [`dims [${got.dims}] ≠ [${want.dims}]`];
  for (let i = 0; i < want.data.length; i++) {
    const a = got.data[i];
    const b = want.data[i];
    const ok = Number.isNaN(b)
      ? Number.isNaN(a)
      : !Number.isFinite(b)
        ? a === b
        : Number.isFinite(a) && Math.abs(a - b) <= ATOL + RTOL * Math.abs(b);
    if (!ok && !allowed(a, b)) out.push(`[${i}] ${names[0]} ${a}, ${names[1]} ${b}`);
  }
  return out;
}

/** Each light model with one poisoned input (batch 1, 3×224×224, the files' fixed size). */
const MODEL_POISONS: Record<LightModel, Poison | 'one NaN pixel'> = {
  bvlc_alexnet: 'all NaN',
  vgg19: 'all +Inf',
  inception_v1: 'mixed',
  resnet50: 'all -Inf',
  squeezenet: 'one NaN pixel',
};

describe('NaN and ±Inf propagate as in onnxruntime (CPU)', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it.each([...OP_CASES, ...WEIGHT_CASES].map((c) => [c.name, c] as const))(
    '%s',
    async (_, c) => {
      const graph = singleOpGraph(c);
      const session = await Session.create(graph, { gpu });
      try {
        if (c.steps !== undefined) expect(session.planStats.steps, 'kernel steps (fused epilogue)').toBe(c.steps);
        const n = c.dims.reduce((a, d) => a * d, 1);
        const weightCase = WEIGHT_CASES.includes(c);
        const poisons: (Poison | 'finite')[] = weightCase ? ['finite'] : POISONS;
        const problems: string[] = [];
        let specials = 0;
        for (const [k, poison] of poisons.entries()) {
          const data = poison === 'finite' ? randomFloat32Array(n, 300 + k) : poisoned(n, 300 + k, poison);
          const feeds = { x: { dims: c.dims, data } };
          const want = (await runOrt(onnxBytesForOrt(graph), feeds, 'cpu'))[graph.outputs[0].name];
          const got = (await session.run(feeds))[graph.outputs[0].name];
          const report = (what: string, bad: string[], of: number) => {
            if (bad.length)
              problems.push(`${poison}: ${what} ${bad.length}/${of} differ, ${bad.slice(0, 4).join('; ')}`);
          };
          if (c.spec) {
            const ref = { dims: want.dims, data: Float32Array.from(c.spec.ref(data, c.dims)) };
            report('vs the ONNX definition', mismatches(got, ref, ['got', 'ONNX']), ref.data.length);
            const ortBad = mismatches(want, ref, ['onnxruntime', 'ONNX'], c.spec.departs);
            report(`onnxruntime beyond "${c.spec.reason}":`, ortBad, ref.data.length);
          } else report('vs onnxruntime', mismatches(got, want), want.data.length);
          specials += want.data.filter((v) => !Number.isFinite(v)).length;
        }
        expect(problems).toEqual([]);
        // The case does exercise non-finite outputs.
        expect(specials).toBeGreaterThan(0);
      } finally {
        session.dispose();
      }
    },
    60_000,
  );

  // The final Softmax stays: a poisoned input must not come out as confident probabilities.
  it.each(LIGHT_MODELS.map((name, k) => [name, k] as const))(
    'light model %s',
    async (name, k) => {
      const file = lightModelPath(name);
      const bytes = fs.readFileSync(file);
      const graph = loadModel(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), { file });
      randomizeWeights(graph, 1000 + k);
      const dims = [1, 3, 224, 224];
      const poison = MODEL_POISONS[name];
      const n = 3 * 224 * 224;
      const data = poison === 'one NaN pixel' ? randomFloat32Array(n, 500 + k) : poisoned(n, 500 + k, poison);
      if (poison === 'one NaN pixel') data[224 * 100 + 37] = NaN;
      const feeds = { [graph.feedInputs[0].name]: { dims, data } };
      const output = graph.outputs[0].name;
      const want = (await runOrt(onnxBytesForOrt(graph), feeds, 'cpu'))[output];
      const session = await Session.create(graph, { gpu });
      try {
        const got = (await session.run(feeds))[output];
        expect(mismatches(got, want)).toEqual([]);
        expect(want.data.some((v) => !Number.isFinite(v))).toBe(true);
      } finally {
        session.dispose();
      }
    },
    120_000,
  );
});

describe('training with a NaN input', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('gives a NaN loss naming the sample, and the clipped optimizer skips the update', async () => {
    const [batch, classes] = [4, 5];
    const g = graphWithInput([batch, 3, 6, 6]);
    const b = new GraphBuilder(g, 3);
    const conv = b.op('Conv', ['x', b.weight('w', [6, 3, 3, 3], 'he'), b.weight('bias', [6], 'glorot')], {
      kernel_shape: [3, 3],
      pads: [1, 1, 1, 1],
    });
    const pooled = b.op('Flatten', [b.op('GlobalAveragePool', [b.op('Relu', [conv])])]);
    const logits = b.op(
      'Gemm',
      [pooled, b.weight('fc', [classes, 6], 'glorot'), b.weight('fcb', [classes], 'glorot')],
      {
        transB: 1,
      },
    );
    g.outputs = [{ name: logits, dtype: 'float32' }];
    const constants = new ConstantStore(gpu);
    const plan = await TrainingPlan.create(gpu, prepareGraph(g), { constants });
    const optimizer = await createOptimizer(gpu, { type: 'adam', lr: 0.01, clipNorm: 1 });
    try {
      const labels = Uint32Array.from({ length: batch }, (_, i) => i % classes);
      const x = randomFloat32Array(batch * 3 * 36, 61);
      // One good step first, so that Adam's moments are not zero.
      await plan.step(new Map([['x', x]]), labels, optimizer);
      const before = await plan.readParameters();
      const moments = (await optimizer.state()).slots;

      const poisonedX = x.slice();
      poisonedX[2 * 3 * 36 + 40] = NaN; // sample 2, channel 1
      const { stats } = await plan.evaluate(new Map([['x', poisonedX]]), labels);
      expect(stats!.loss).toBeNaN();
      expect(stats!.firstNonFiniteRow).toBe(2);

      const error = await plan.step(new Map([['x', poisonedX]]), labels, optimizer).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(NonFiniteLossError);
      expect((error as NonFiniteLossError).firstRow).toBe(2);
      expect((await optimizer.readGradNorm())!.nonFinite).toBe(true);
      // Before any undo: the update kernel left parameters and moments as they were.
      expect(await plan.readParameters()).toEqual(before);
      expect((await optimizer.state()).slots).toEqual(moments);

      // The guard is not stuck: the next finite batch updates.
      await plan.step(new Map([['x', x]]), labels, optimizer);
      expect((await optimizer.readGradNorm())!.nonFinite).toBe(false);
      expect((await plan.readParameters()).get('fc')).not.toEqual(before.get('fc'));
    } finally {
      optimizer.dispose();
      plan.dispose();
      constants.dispose();
    }
  });
});
