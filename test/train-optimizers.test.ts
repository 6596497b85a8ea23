// The fused optimizer kernels against a float64 reference of PyTorch's update rules: k steps on
// seeded random parameters and gradients of odd sizes, with a per-step learning rate, weight
// decay, per-tensor overrides, global-norm clipping, and a state round trip.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeGpuContext } from '../src/node/index.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import {
  createOptimizer,
  OptimizerError,
  resolveConfig,
  type Optimizer,
  type OptimizerConfig,
  type ParamBinding,
  type ResolvedOptimizerConfig,
} from '../src/train/optimizers.ts';
import { updateDispatch } from '../src/kernels/optimizer-kernels.ts';
import { randomFloat32Array } from './helpers/random.ts';

// ---- the float64 oracle: PyTorch's formulas, written out, one element at a time ----

interface RefTensor {
  p: Float64Array;
  buf: Float64Array; // SGD momentum_buffer
  m: Float64Array; // Adam exp_avg
  v: Float64Array; // Adam exp_avg_sq
  lrScale: number;
  weightDecay: number;
}

function refTensor(initial: Float32Array, lrScale: number, weightDecay: number): RefTensor {
  const n = initial.length;
  return {
    p: Float64Array.from(initial),
    buf: new Float64Array(n),
    m: new Float64Array(n),
    v: new Float64Array(n),
    lrScale,
    weightDecay,
  };
}

/** clip_grad_norm_: total = ‖all grads‖₂, coefficient min(1, max/(total + 1e-6)). */
function refClip(grads: Float32Array[], clipNorm: number | null): { norm: number; scale: number } {
  let sum = 0;
  for (const g of grads) for (const x of g) sum += x * x;
  const norm = Math.sqrt(sum);
  return { norm, scale: clipNorm === null ? 1 : Math.min(1, clipNorm / (norm + 1e-6)) };
}

function refStep(
  c: ResolvedOptimizerConfig,
  t: RefTensor,
  grad: Float32Array,
  scale: number,
  step: number,
  baseLr: number,
): void {
  const lr = baseLr * t.lrScale;
  const wd = t.weightDecay;
  for (let i = 0; i < t.p.length; i++) {
    let g = grad[i] * scale;
    if (c.type === 'sgd') {
      g += wd * t.p[i];
      if (c.momentum !== 0) {
        t.buf[i] = step === 1 ? g : c.momentum * t.buf[i] + g; // PyTorch: buf = clone(g) at the first step
        g = c.nesterov ? g + c.momentum * t.buf[i] : t.buf[i];
      }
      t.p[i] -= lr * g;
    } else {
      if (c.type === 'adamw') t.p[i] *= 1 - lr * wd;
      else g += wd * t.p[i];
      t.m[i] = c.beta1 * t.m[i] + (1 - c.beta1) * g;
      t.v[i] = c.beta2 * t.v[i] + (1 - c.beta2) * g * g;
      const bc1 = 1 - c.beta1 ** step;
      const bc2 = 1 - c.beta2 ** step;
      const denom = Math.sqrt(t.v[i]) / Math.sqrt(bc2) + c.eps;
      t.p[i] -= (lr / bc1) * (t.m[i] / denom);
    }
  }
}

/** max over i of |got − want| / max(|want|, 0.1·rms(want)): relative error with a floor for values near 0. */
function relativeError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let ss = 0;
  for (let i = 0; i < want.length; i++) ss += want[i] * want[i];
  const floor = 0.1 * Math.sqrt(ss / want.length) || 1e-30;
  let worst = 0;
  for (let i = 0; i < want.length; i++)
    worst = Math.max(worst, Math.abs(got[i] - want[i]) / Math.max(Math.abs(want[i]), floor));
  return worst;
}

// ---- harness ----

interface TensorSpec {
  name: string;
  size: number;
  lrScale?: number;
  weightDecay?: number;
}

const ODD_SIZES: TensorSpec[] = [
  { name: 'one', size: 1 },
  { name: 'seven', size: 7 },
  { name: 'conv.weight', size: 1023 },
  { name: 'fc.weight', size: 4099 },
];

const LR_FACTORS = [1, 0.8, 1.3, 0.5, 1]; // a different learning rate each step

describe('optimizers on the GPU', () => {
  let gpu: GpuContext;
  const usage = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;

  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  /** GPU buffers for a set of tensors, filled with seeded random values. */
  function makeTensors(specs: TensorSpec[], seed: number) {
    return specs.map((s, k) => {
      const initial = randomFloat32Array(s.size, seed * 100 + k);
      const param = gpu.createBuffer(`param ${s.name}`, s.size * 4, usage());
      const grad = gpu.createBuffer(`grad ${s.name}`, s.size * 4, usage());
      gpu.upload(param, initial);
      return { spec: s, initial, param, grad };
    });
  }

  function gradsFor(specs: TensorSpec[], seed: number, step: number, scale: number): Float32Array[] {
    return specs.map((s, k) => randomFloat32Array(s.size, 7919 * seed + 131 * step + k, scale));
  }

  /**
   * Runs `steps` steps on the GPU and in the reference; returns the worst relative errors of the
   * parameters and of the optimizer state, and the last gradient norms of both.
   */
  async function compare(
    config: OptimizerConfig,
    specs: TensorSpec[],
    opts: { steps?: number; seed?: number; gradScale?: number } = {},
  ) {
    const { steps = 5, seed = 1, gradScale = 1 } = opts;
    const resolved = resolveConfig(config);
    const optimizer = await createOptimizer(gpu, config);
    const tensors = makeTensors(specs, seed);
    const refs = tensors.map((t) =>
      refTensor(t.initial, t.spec.lrScale ?? 1, t.spec.weightDecay ?? resolved.weightDecay),
    );
    const bindings: ParamBinding[] = tensors.map((t) => ({
      name: t.spec.name,
      param: t.param,
      grad: t.grad,
      size: t.spec.size,
      lrScale: t.spec.lrScale,
      weightDecay: t.spec.weightDecay,
    }));
    let refNorm = 0;
    try {
      for (let s = 1; s <= steps; s++) {
        const grads = gradsFor(specs, seed, s, gradScale);
        const lr = resolved.lr * LR_FACTORS[(s - 1) % LR_FACTORS.length];
        tensors.forEach((t, k) => gpu.upload(t.grad, grads[k]));
        await gpu.scope(`optimizer step ${s}`, () => {
          const encoder = gpu.device.createCommandEncoder();
          optimizer.step(bindings, encoder, lr);
          gpu.device.queue.submit([encoder.finish()]);
        });
        const clip = refClip(grads, resolved.clipNorm);
        refNorm = clip.norm;
        refs.forEach((r, k) => refStep(resolved, r, grads[k], clip.scale, s, lr));
      }
      let paramError = 0;
      let stateError = 0;
      const state = await optimizer.state();
      for (let k = 0; k < tensors.length; k++) {
        const got = new Float32Array(await gpu.read(tensors[k].param));
        paramError = Math.max(paramError, relativeError(got, refs[k].p));
        const slots = state.slots.get(tensors[k].spec.name)!;
        if (slots.momentum_buffer) stateError = Math.max(stateError, relativeError(slots.momentum_buffer, refs[k].buf));
        if (slots.exp_avg) stateError = Math.max(stateError, relativeError(slots.exp_avg, refs[k].m));
        if (slots.exp_avg_sq) stateError = Math.max(stateError, relativeError(slots.exp_avg_sq, refs[k].v));
        // The update must be large enough for the comparison to mean something.
        expect(relativeError(tensors[k].initial, refs[k].p), `${tensors[k].spec.name} moved`).toBeGreaterThan(1e-3);
      }
      return { paramError, stateError, state, gradNorm: await optimizer.readGradNorm(), refNorm };
    } finally {
      optimizer.dispose();
      for (const t of tensors) {
        t.param.destroy();
        t.grad.destroy();
      }
    }
  }

  const cases: [string, OptimizerConfig][] = [
    ['SGD', { type: 'sgd', lr: 0.1 }],
    ['SGD + L2 weight decay', { type: 'sgd', lr: 0.1, weightDecay: 0.05 }],
    ['SGD momentum', { type: 'sgd', lr: 0.05, momentum: 0.9, weightDecay: 1e-2 }],
    ['SGD Nesterov', { type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 1e-2 }],
    ['Adam', { type: 'adam', lr: 0.01 }],
    ['Adam + L2 weight decay', { type: 'adam', lr: 0.01, weightDecay: 0.1, beta1: 0.8, beta2: 0.99, eps: 1e-6 }],
    ['AdamW', { type: 'adamw', lr: 0.01, weightDecay: 0.2 }],
  ];

  for (const [title, config] of cases) {
    it(`${title}: 5 steps on sizes 1, 7, 1023, 4099 match the float64 reference`, async () => {
      const { paramError, stateError, state } = await compare(config, ODD_SIZES);
      expect(paramError).toBeLessThan(1e-5);
      expect(stateError).toBeLessThan(1e-5);
      expect(state.step).toBe(5);
    });
  }

  it('applies per-tensor learning-rate scales and weight-decay overrides', async () => {
    const specs: TensorSpec[] = [
      { name: 'backbone', size: 513, lrScale: 0.1 },
      { name: 'head.weight', size: 130, lrScale: 2 },
      { name: 'head.bias', size: 10, weightDecay: 0 },
    ];
    for (const config of [
      { type: 'adamw', lr: 0.01, weightDecay: 0.3 },
      { type: 'sgd', lr: 0.1, momentum: 0.5, weightDecay: 0.1 },
    ] as OptimizerConfig[]) {
      const { paramError, stateError } = await compare(config, specs);
      expect(paramError).toBeLessThan(1e-5);
      expect(stateError).toBeLessThan(1e-5);
    }
  });

  it('clips the global gradient norm on the GPU (over 256 partial sums) and reports it', async () => {
    // 2^20 + 5 elements: 257 partial sums, more than the norm fold's one pass of 256.
    const specs: TensorSpec[] = [...ODD_SIZES, { name: 'big', size: (1 << 20) + 5 }];
    // No L2 term here: among 10^6 elements some g·scale + λp cancel to ~1e-7, and Adam's division
    // by √v turns f32's rounding of that sum into a visible update error (in PyTorch's f32 too).
    const clipped = await compare({ type: 'adam', lr: 0.01, clipNorm: 1.5 }, specs, { steps: 3 });
    expect(clipped.paramError).toBeLessThan(1e-5);
    expect(clipped.stateError).toBeLessThan(1e-5);
    expect(clipped.gradNorm).not.toBeNull();
    expect(Math.abs(clipped.gradNorm!.norm - clipped.refNorm) / clipped.refNorm).toBeLessThan(1e-5);
    expect(clipped.gradNorm!.scale).toBeCloseTo(1.5 / clipped.refNorm, 6);
    expect(clipped.gradNorm!.nonFinite).toBe(false);

    // SGD: the update is proportional to the clipped gradient, so a wrong scale shows directly.
    const sgd = await compare({ type: 'sgd', lr: 0.5, momentum: 0.9, clipNorm: 0.7 }, ODD_SIZES, { gradScale: 3 });
    expect(sgd.paramError).toBeLessThan(1e-5);
    expect(sgd.stateError).toBeLessThan(1e-5);
    expect(sgd.gradNorm!.scale).toBeLessThan(1);

    // A tiny norm, where PyTorch's + 1e-6 in max/(‖g‖ + 1e-6) matters at this tolerance.
    const tiny = await compare({ type: 'sgd', lr: 200, clipNorm: 2e-3 }, ODD_SIZES, { gradScale: 1e-4 });
    expect(tiny.paramError).toBeLessThan(1e-5);
    expect(Math.abs(tiny.gradNorm!.norm - tiny.refNorm) / tiny.refNorm).toBeLessThan(1e-5);

    // Under the limit: scale 1, same as no clipping.
    const loose = await compare({ type: 'adamw', lr: 0.01, weightDecay: 0.1, clipNorm: 1e6 }, ODD_SIZES);
    expect(loose.paramError).toBeLessThan(1e-5);
    expect(loose.gradNorm!.scale).toBe(1);
  });

  it('reports the norm without clipping when asked, and null when not', async () => {
    const reported = await compare({ type: 'sgd', lr: 0.1, reportGradNorm: true }, ODD_SIZES);
    expect(Math.abs(reported.gradNorm!.norm - reported.refNorm) / reported.refNorm).toBeLessThan(1e-5);
    expect(reported.gradNorm!.scale).toBe(1);
    const silent = await compare({ type: 'sgd', lr: 0.1 }, ODD_SIZES);
    expect(silent.gradNorm).toBeNull();
  });

  it('updates a tensor too large for one row of workgroups (2-D dispatch)', async () => {
    const size = 65535 * 256 + 300; // one workgroup row holds 65535 × 256 elements
    const { dispatch, rowSize } = updateDispatch(size, gpu.device.limits.maxComputeWorkgroupsPerDimension);
    expect(dispatch[1]).toBeGreaterThan(1);
    expect(dispatch[0] * dispatch[1] * 256).toBeGreaterThanOrEqual(size);
    expect(rowSize).toBe(dispatch[0] * 256);
    const initial = new Float32Array(size).map((_, i) => ((i * 2654435761) >>> 0) / 2 ** 32 - 0.5);
    const grad = new Float32Array(size).map((_, i) => ((i * 40503 + 7) % 1009) / 1009 - 0.5);
    const p = gpu.createBuffer('huge param', size * 4, usage());
    const g = gpu.createBuffer('huge grad', size * 4, usage());
    gpu.upload(p, initial);
    gpu.upload(g, grad);
    const opt = await createOptimizer(gpu, { type: 'sgd', lr: 0.5, weightDecay: 0.1 });
    const encoder = gpu.device.createCommandEncoder();
    opt.step([{ name: 'huge', param: p, grad: g, size }], encoder);
    gpu.device.queue.submit([encoder.finish()]);
    const got = new Float32Array(await gpu.read(p));
    let worst = 0;
    for (let i = 0; i < size; i++) {
      const want = initial[i] - 0.5 * (grad[i] + 0.1 * initial[i]);
      worst = Math.max(worst, Math.abs(got[i] - want) / Math.max(Math.abs(want), 0.05));
    }
    expect(worst).toBeLessThan(1e-5);
    opt.dispose();
    p.destroy();
    g.destroy();
  });

  it('resumes from state(): 3 steps + loadState + 2 steps equals 5 steps', async () => {
    const config: OptimizerConfig = { type: 'adamw', lr: 0.01, weightDecay: 0.1, clipNorm: 5 };
    const specs = ODD_SIZES;
    const seed = 3;
    const full = await compare(config, specs, { steps: 5, seed });

    // First optimizer: 3 steps, then its state moves to a second one that does steps 4 and 5.
    const tensors = makeTensors(specs, seed);
    const bindings = tensors.map((t) => ({ name: t.spec.name, param: t.param, grad: t.grad, size: t.spec.size }));
    const runSteps = async (opt: Optimizer, from: number, to: number) => {
      for (let s = from; s <= to; s++) {
        const grads = gradsFor(specs, seed, s, 1);
        tensors.forEach((t, k) => gpu.upload(t.grad, grads[k]));
        const encoder = gpu.device.createCommandEncoder();
        opt.step(bindings, encoder, 0.01 * LR_FACTORS[s - 1]);
        gpu.device.queue.submit([encoder.finish()]);
      }
    };
    const first = await createOptimizer(gpu, config);
    await runSteps(first, 1, 3);
    const saved = await first.state();
    first.dispose();
    expect(saved.step).toBe(3);
    const second = await createOptimizer(gpu, config);
    second.loadState(saved);
    expect(second.stepCount).toBe(3);
    await runSteps(second, 4, 5);
    const resumed = await second.state();
    for (const [name, slots] of full.state.slots) {
      expect([...resumed.slots.get(name)!.exp_avg!]).toEqual([...slots.exp_avg!]);
      expect([...resumed.slots.get(name)!.exp_avg_sq!]).toEqual([...slots.exp_avg_sq!]);
    }
    second.dispose();
    for (const t of tensors) {
      t.param.destroy();
      t.grad.destroy();
    }
  });

  it('refuses misuse with messages that say what to do', async () => {
    expect(() => resolveConfig({ type: 'sgd', lr: 0.1, nesterov: true })).toThrow(/nesterov needs momentum > 0/);
    expect(() => resolveConfig({ type: 'adam', lr: 0.1, momentum: 0.9 })).toThrow(/SGD options/);
    expect(() => resolveConfig({ type: 'adam', lr: -1 })).toThrow(/lr must be/);
    expect(() => resolveConfig({ type: 'rmsprop' as 'sgd', lr: 1 })).toThrow(/unknown optimizer type 'rmsprop'/);
    expect(() => resolveConfig({ type: 'sgd', lr: 0.1, clipNorm: 0 })).toThrow(/clipNorm must be > 0/);

    const opt = await createOptimizer(gpu, { type: 'adam', lr: 0.01 });
    const [t] = makeTensors([{ name: 'w', size: 10 }], 9);
    const binding = { name: 'w', param: t.param, grad: t.grad, size: 10 };
    const encoder = gpu.device.createCommandEncoder();
    opt.step([binding], encoder);
    expect(() => opt.step([binding], encoder)).toThrow(/twice with one command encoder/);
    gpu.device.queue.submit([encoder.finish()]);
    expect(() => opt.step([{ ...binding, size: 12 }], gpu.device.createCommandEncoder())).toThrow(OptimizerError);
    expect(() => opt.step([{ ...binding, size: 12 }], gpu.device.createCommandEncoder())).toThrow(
      /'w' has 12 elements but the optimizer's state for it has 10/,
    );
    expect(() => opt.step([binding, binding], gpu.device.createCommandEncoder())).toThrow(/appears twice/);
    expect(() => opt.step([{ ...binding, name: 'x', size: 11 }], gpu.device.createCommandEncoder())).toThrow(
      /do not fit its param buffer/,
    );
    expect(() => opt.step([{ ...binding, grad: t.param }], gpu.device.createCommandEncoder())).toThrow(
      /different buffers/,
    );
    const sgd = await createOptimizer(gpu, { type: 'sgd', lr: 0.1, momentum: 0.9 });
    const adamState = await opt.state();
    expect(() => sgd.loadState({ ...adamState, type: 'sgd' })).toThrow(
      /holds \[exp_avg, exp_avg_sq\] but sgd-momentum keeps \[momentum_buffer\]/,
    );
    expect(() => sgd.loadState(adamState)).toThrow(/state is for 'adam', this optimizer is 'sgd'/);
    opt.dispose();
    sgd.dispose();
    expect(() => opt.step([binding], gpu.device.createCommandEncoder())).toThrow(/disposed/);
    t.param.destroy();
    t.grad.destroy();
    // Nothing above left a GPU error behind.
    await expect(gpu.scope('after misuse', () => 1)).resolves.toBe(1);
  });
});
