// Weights larger than one storage binding: under a tiny forced binding limit (maxBindingBytes)
// a small MLP's Gemm/MatMul weights, gradients and optimizer moments are bound in blocks. The
// blocked run must give the gradients of the unblocked run and of a float64 backprop, and the
// same weights and evaluation logits after a few SGD-momentum and clipped Adam steps; the
// optimizer's chunked updates must equal its whole-tensor updates for every rule; what cannot
// be split is refused before anything runs, naming the value or weight, the node and the sizes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { ModelError } from '../src/graph/errors.ts';
import { Graph } from '../src/graph/ir.ts';
import { prepareGraph } from '../src/graph/load.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { ConstantStore } from '../src/runtime/plan.ts';
import { createOptimizer, type OptimizerConfig, type ParamBinding } from '../src/train/optimizers.ts';
import { TrainingPlan } from '../src/train/training-plan.ts';
import { mulberry32, randomFloat32Array } from './helpers/random.ts';
import { relL2 } from './helpers/reference-ops.ts';

const BATCH = 5;
const IN = 37;
const HIDDEN = 150;
const MID = 29;
/**
 * 16 KiB: W1 [150, 37] (22 200 B) splits into row blocks of 64, 64 and 22 rows (a block start
 * must be a multiple of 64 floats, and 64 rows of 37 are 9 472 B); W2 [150, 29] (17 400 B) into
 * 128 + 22 rows; the optimizer updates both in chunks of 4 096 floats. Every activation fits.
 */
const LIMIT = 16384;

type Layer =
  | { kind: 'gemm'; w: string; bias: string; transA: boolean; transB: boolean; dims: [number, number] }
  | { kind: 'matmul'; w: string; dims: [number, number] }
  | { kind: 'relu' }
  | { kind: 'transpose' };

interface Variant {
  title: string;
  layers: Layer[];
  classes: number;
  /** Weights the forced limit splits (checked to be split). */
  split: string[];
}

const gemm = (w: string, transA: boolean, transB: boolean, dims: [number, number]): Layer => ({
  kind: 'gemm',
  w,
  bias: `${w}_bias`,
  transA,
  transB,
  dims,
});

/** A small first layer, so that the split layers' input gradients are wanted too. */
const FIRST: Layer[] = [gemm('w0', false, true, [IN, IN]), { kind: 'relu' }];

const VARIANTS: Variant[] = [
  {
    title: 'Gemm transB=1 (W [N, K], split along N) and transB=0 (W [K, N], split along K)',
    layers: [
      ...FIRST,
      gemm('w1', false, true, [HIDDEN, IN]),
      { kind: 'relu' },
      gemm('w2', false, false, [HIDDEN, MID]),
      { kind: 'relu' },
      gemm('w3', false, true, [10, MID]),
    ],
    classes: 10,
    split: ['w1', 'w2'],
  },
  {
    title: 'Gemm with transA=1 on both layouts (A read at an offset, dY through a view)',
    layers: [
      ...FIRST,
      gemm('w1', false, true, [HIDDEN, IN]),
      { kind: 'relu' },
      { kind: 'transpose' },
      gemm('w2', true, false, [HIDDEN, MID]),
      { kind: 'relu' },
      { kind: 'transpose' },
      gemm('w3', true, true, [HIDDEN, MID]),
    ],
    classes: HIDDEN,
    split: ['w1', 'w2', 'w3'],
  },
  {
    title: 'MatMul with a shared B (split along K like Gemm transB=0)',
    layers: [
      ...FIRST,
      gemm('w1', false, true, [HIDDEN, IN]),
      { kind: 'relu' },
      { kind: 'matmul', w: 'w2', dims: [HIDDEN, MID] },
      { kind: 'relu' },
      gemm('w3', false, true, [10, MID]),
    ],
    classes: 10,
    split: ['w1', 'w2'],
  },
];

function buildGraph(v: Variant, inputDims = [BATCH, IN]): Graph {
  const g = new Graph();
  g.opsetImports = [{ domain: '', version: 17 }];
  g.inputs = [{ name: 'x', dtype: 'float32', shape: inputDims }];
  g.values.set('x', { ...g.inputs[0] });
  const b = new GraphBuilder(g, 17);
  let h = 'x';
  for (const [i, layer] of v.layers.entries()) {
    if (layer.kind === 'relu') h = b.op('Relu', [h], {}, `relu${i}`);
    else if (layer.kind === 'transpose') h = b.op('Transpose', [h], { perm: [1, 0] }, `transpose${i}`);
    else if (layer.kind === 'matmul') h = b.op('MatMul', [h, b.weight(layer.w, layer.dims, 'he')], {}, `mm${i}`);
    else {
      const n = layer.transB ? layer.dims[0] : layer.dims[1];
      const w = b.weight(layer.w, layer.dims, 'he');
      const bias = b.weight(layer.bias, [n], 'glorot');
      h = b.op('Gemm', [h, w, bias], { transA: layer.transA ? 1 : 0, transB: layer.transB ? 1 : 0 }, `fc${i}`);
    }
  }
  g.outputs = [{ name: h, dtype: 'float32' }];
  // Biases away from zero so few pre-activations sit near a Relu kink.
  for (const [name, init] of g.initializers) {
    if (name.endsWith('_bias'))
      init.value = { ...init.value, data: Float32Array.from(init.value.data as Float32Array, (x) => x + 0.1) };
  }
  return prepareGraph(g);
}

// ---- float64 backprop of the same network and mean softmax cross-entropy ----

interface Mat {
  data: Float64Array;
  rows: number;
  cols: number;
}

function transpose(m: Mat): Mat {
  const out = new Float64Array(m.data.length);
  for (let r = 0; r < m.rows; r++) for (let c = 0; c < m.cols; c++) out[c * m.rows + r] = m.data[r * m.cols + c];
  return { data: out, rows: m.cols, cols: m.rows };
}

/** C[M][N] = X[M][K]·Y[K][N]. */
function matmul(x: Mat, y: Mat): Mat {
  const out = new Float64Array(x.rows * y.cols);
  for (let m = 0; m < x.rows; m++) {
    for (let k = 0; k < x.cols; k++) {
      const a = x.data[m * x.cols + k];
      for (let n = 0; n < y.cols; n++) out[m * y.cols + n] += a * y.data[k * y.cols + n];
    }
  }
  return { data: out, rows: x.rows, cols: y.cols };
}

/** The loss and the gradient of every weight, in float64. */
function referenceGradients(
  v: Variant,
  weights: Map<string, Float32Array>,
  x: Float32Array,
  labels: Uint32Array,
): { loss: number; grads: Map<string, Float64Array> } {
  const W = (name: string, dims: [number, number]): Mat => ({
    data: Float64Array.from(weights.get(name)!),
    rows: dims[0],
    cols: dims[1],
  });
  const inputs: Mat[] = [];
  let h: Mat = { data: Float64Array.from(x), rows: BATCH, cols: IN };
  for (const layer of v.layers) {
    inputs.push(h);
    if (layer.kind === 'relu') h = { ...h, data: h.data.map((t) => Math.max(t, 0)) };
    else if (layer.kind === 'transpose') h = transpose(h);
    else if (layer.kind === 'matmul') h = matmul(h, W(layer.w, layer.dims));
    else {
      const opA = layer.transA ? transpose(h) : h;
      const w = W(layer.w, layer.dims);
      const y = matmul(opA, layer.transB ? transpose(w) : w);
      const bias = weights.get(layer.bias)!;
      for (let i = 0; i < y.data.length; i++) y.data[i] += bias[i % y.cols];
      h = y;
    }
  }
  // Mean softmax cross-entropy and its gradient.
  let loss = 0;
  const dy = new Float64Array(h.data.length);
  for (let n = 0; n < h.rows; n++) {
    const row = h.data.subarray(n * h.cols, (n + 1) * h.cols);
    const max = Math.max(...row);
    const sum = row.reduce((s, t) => s + Math.exp(t - max), 0);
    loss += max + Math.log(sum) - row[labels[n]];
    for (let c = 0; c < h.cols; c++)
      dy[n * h.cols + c] = (Math.exp(row[c] - max) / sum - (c === labels[n] ? 1 : 0)) / h.rows;
  }
  const grads = new Map<string, Float64Array>();
  let d: Mat = { data: dy, rows: h.rows, cols: h.cols };
  for (let i = v.layers.length - 1; i >= 0; i--) {
    const layer = v.layers[i];
    const input = inputs[i];
    if (layer.kind === 'relu') d = { ...d, data: d.data.map((t, j) => (input.data[j] > 0 ? t : 0)) };
    else if (layer.kind === 'transpose') d = transpose(d);
    else if (layer.kind === 'matmul') {
      grads.set(layer.w, matmul(transpose(input), d).data);
      d = matmul(d, transpose(W(layer.w, layer.dims)));
    } else {
      const opA = layer.transA ? transpose(input) : input;
      const w = W(layer.w, layer.dims);
      const opB = layer.transB ? transpose(w) : w;
      const dOpB = matmul(transpose(opA), d);
      grads.set(layer.w, (layer.transB ? transpose(dOpB) : dOpB).data);
      const bias = new Float64Array(d.cols);
      for (let j = 0; j < d.data.length; j++) bias[j % d.cols] += d.data[j];
      grads.set(layer.bias, bias);
      const dOpA = matmul(d, transpose(opB));
      d = layer.transA ? transpose(dOpA) : dOpA;
    }
  }
  return { loss: loss / h.rows, grads };
}

describe('weights larger than one storage binding', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  const x = randomFloat32Array(BATCH * IN, 31);
  const rng = mulberry32(8);

  for (const v of VARIANTS) {
    it(`${v.title}: blocked gradients equal the unblocked run and float64 backprop; SGD-momentum and clipped Adam give the same weights`, async () => {
      const labels = Uint32Array.from({ length: BATCH }, () => Math.floor(rng() * v.classes));
      const feeds = new Map([['x', x]]);
      const run = async (maxBindingBytes: number | undefined, optimizer?: OptimizerConfig) => {
        const graph = buildGraph(v);
        const constants = new ConstantStore(gpu);
        const plan = await TrainingPlan.create(gpu, graph, { constants, maxBindingBytes });
        try {
          const blockSteps = plan.lowered.steps.filter((s) => / rows \d+\+\d+\)/.test(s.program.label));
          const first = await plan.step(feeds, labels, undefined);
          const grads = await plan.readGradients();
          let clipScale: number | undefined;
          if (optimizer) {
            const opt = await createOptimizer(gpu, optimizer);
            for (let s = 0; s < 3; s++) await plan.step(feeds, labels, opt);
            clipScale = (await opt.readGradNorm())?.scale;
            opt.dispose();
          }
          const weights = await plan.readParameters();
          // The evaluation forward over the same parameter buffers binds them in blocks too.
          const evaluation = await TrainingPlan.create(gpu, graph, { constants, maxBindingBytes, mode: 'evaluate' });
          const logits = (await evaluation.evaluate(feeds, undefined, true)).logits!;
          evaluation.dispose();
          const initial = new Map([...graph.initializers].map(([k, t]) => [k, t.value.data as Float32Array]));
          return { loss: first.loss, grads, weights, logits, initial, blockSteps, clipScale };
        } finally {
          plan.dispose();
          constants.dispose();
        }
      };

      // One step without an update: gradients.
      const whole = await run(undefined);
      const blocked = await run(LIMIT);
      expect(whole.blockSteps).toHaveLength(0);
      for (const w of v.split) {
        expect(
          blocked.blockSteps.some((s) =>
            s.refs.some((r) => r.view && 'constant' in r && r.constant.key.endsWith(`:${w}`)),
          ),
          `${w} bound in blocks`,
        ).toBe(true);
      }
      const ref = referenceGradients(v, whole.initial, x, labels);
      expect(Math.abs(blocked.loss - ref.loss)).toBeLessThan(1e-5);
      for (const [name, want] of ref.grads) {
        expect(relL2(blocked.grads.get(name)!, whole.grads.get(name)!), `${name}: blocked vs whole`).toBeLessThan(1e-6);
        expect(relL2(blocked.grads.get(name)!, want), `${name}: blocked vs float64`).toBeLessThan(1e-5);
      }

      // Three steps of each optimizer: the same weights, and they moved.
      const optimizers: OptimizerConfig[] = [
        { type: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 1e-3 },
        { type: 'adam', lr: 0.01, clipNorm: 0.05 },
      ];
      for (const config of optimizers) {
        const a = await run(undefined, config);
        const b = await run(LIMIT, config);
        if (config.clipNorm) {
          expect(a.clipScale, 'the norm is clipped').toBeLessThan(1);
          expect(Math.abs(b.clipScale! - a.clipScale!)).toBeLessThan(1e-5 * a.clipScale!);
        }
        expect(relL2(b.logits, a.logits), `${config.type}: evaluation logits`).toBeLessThan(1e-5);
        for (const [name, want] of a.weights) {
          expect(relL2(b.weights.get(name)!, want), `${config.type} ${name}: blocked vs whole`).toBeLessThan(1e-5);
          expect(relL2(want, a.initial.get(name)!), `${config.type} ${name} moved`).toBeGreaterThan(1e-3);
        }
      }
    }, 240_000);
  }

  it('the optimizer updates chunked tensors exactly as whole ones (every rule, weight decay, clipping)', async () => {
    const sizes = [7, 257, 1023, 4099];
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const configs: OptimizerConfig[] = [
      { type: 'sgd', lr: 0.1, weightDecay: 0.05 },
      { type: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 1e-2 },
      { type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true },
      { type: 'adam', lr: 0.01, weightDecay: 0.1 },
      { type: 'adamw', lr: 0.01, weightDecay: 0.2, clipNorm: 5 },
    ];
    for (const config of configs) {
      const run = async (maxBindingBytes?: number) => {
        const opt = await createOptimizer(gpu, { ...config, reportGradNorm: true });
        const buffers = sizes.map((size, k) => {
          const param = gpu.createBuffer(`param ${k}`, size * 4, usage);
          const grad = gpu.createBuffer(`grad ${k}`, size * 4, usage);
          gpu.upload(param, randomFloat32Array(size, 40 + k));
          return { param, grad };
        });
        const bindings: ParamBinding[] = sizes.map((size, k) => ({
          name: `t${k}`,
          size,
          ...buffers[k],
          maxBindingBytes,
        }));
        for (let s = 1; s <= 3; s++) {
          sizes.forEach((size, k) => gpu.upload(buffers[k].grad, randomFloat32Array(size, 100 * s + k)));
          const encoder = gpu.device.createCommandEncoder();
          opt.step(bindings, encoder, config.lr * (1 + 0.1 * s));
          gpu.device.queue.submit([encoder.finish()]);
        }
        const params = await Promise.all(buffers.map(async (b) => new Float32Array(await gpu.read(b.param))));
        const state = await opt.state();
        const norm = (await opt.readGradNorm())!;
        opt.dispose();
        for (const b of buffers) {
          b.param.destroy();
          b.grad.destroy();
        }
        return { params, state, norm };
      };
      const whole = await run();
      const chunked = await run(1024); // 256 floats per chunk: 1, 2, 4 and 17 chunks
      // Σg² of the last step's gradients in float64: both norms against it.
      let sum = 0;
      sizes.forEach((size, k) => randomFloat32Array(size, 300 + k).forEach((g) => (sum += g * g)));
      for (const r of [whole, chunked])
        expect(Math.abs(r.norm.norm - Math.sqrt(sum)) / Math.sqrt(sum)).toBeLessThan(1e-5);
      const exact = config.clipNorm === undefined; // clipping: the norm's summation order differs
      sizes.forEach((_, k) => {
        if (exact) expect(chunked.params[k], `${config.type} t${k}`).toEqual(whole.params[k]);
        else expect(relL2(chunked.params[k], whole.params[k])).toBeLessThan(1e-6);
        for (const [slot, data] of Object.entries(whole.state.slots.get(`t${k}`)!)) {
          if (exact)
            expect(chunked.state.slots.get(`t${k}`)![slot as 'exp_avg'], `${config.type} t${k} ${slot}`).toEqual(data);
          else expect(relL2(chunked.state.slots.get(`t${k}`)![slot as 'exp_avg']!, data!)).toBeLessThan(1e-6);
        }
      });
    }
  }, 120_000);

  it('refuses what cannot be split, naming the value or weight, the node and the sizes', async () => {
    // An activation over the limit at one image: bound whole by its Gemm (a larger batch would
    // train as slices of the batch, test/batch-slicing.test.ts; one image cannot be sliced).
    const wide = buildGraph(
      { title: '', layers: [gemm('w1', false, true, [1200, 2])], classes: 1200, split: [] },
      [1, 2],
    );
    const constants = new ConstantStore(gpu);
    const activation = TrainingPlan.create(gpu, wide, { constants, maxBindingBytes: 4096 });
    await expect(activation).rejects.toThrow(
      /node 'fc0' \(Gemm\): value 'fc0_output' takes 4800 bytes, over the binding limit of 4096 bytes \(maxBindingBytes; the device allows \d+\), and this step binds it whole/,
    );
    await expect(activation).rejects.toBeInstanceOf(ModelError);
    // A weight whose 64-row blocks (37 floats a row) already exceed the limit.
    const narrow = buildGraph(VARIANTS[0]);
    await expect(TrainingPlan.create(gpu, narrow, { constants, maxBindingBytes: 8192 })).rejects.toThrow(
      /node 'fc2' \(Gemm\): weight 'w1' \[150, 37\] takes 22200 bytes, over the binding limit of 8192 bytes, and cannot be split into row blocks: 64 rows of 37 floats \(9472 bytes\) already exceed it/,
    );
    constants.dispose();
  });
});
