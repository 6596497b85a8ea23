// Every backward kernel against central finite differences of the float64 forward reference,
// with L = Σ y·r for a random r (so dy = r): pooling (strides, padding, ceil_mode,
// count_include_pad, the first-max tie rule), BatchNormalization training (forward, running
// statistics, backward) and frozen, LRN, unary activations, broadcasting binary ops, Dropout,
// Concat, Transpose, Pad.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeGpuContext } from '../src/node/index.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import {
  encodeSteps,
  prepareStep,
  storageUsage,
  wgslOf,
  type KernelProgram,
  type KernelStep,
} from '../src/kernels/program.ts';
import { runProgram } from './helpers/run-program.ts';
import {
  avgPool2dBackwardProgram,
  globalPoolBackwardProgram,
  maxPool2dBackwardProgram,
  type PoolBackwardParams,
} from '../src/kernels/backward/pool.ts';
import {
  batchNormCombineGradientSumsProgram,
  batchNormCombineStatisticsProgram,
  batchNormFrozenBackwardProgram,
  batchNormPartialStatisticsProgram,
  batchNormTrainingBackwardPrograms,
  batchNormTrainingForwardPrograms,
  lrnBackwardProgram,
} from '../src/kernels/backward/normalization.ts';
import {
  broadcastBackwardProgram,
  dropoutBackwardProgram,
  dropoutForwardProgram,
  dropoutKeep,
  reduceToShapeProgram,
  unaryBackwardProgram,
  type UnaryBackwardOp,
} from '../src/kernels/backward/elementwise.ts';
import {
  concatBackwardPrograms,
  padBackwardProgram,
  transposeBackwardProgram,
} from '../src/kernels/backward/concat.ts';
import { randomFloat32Array } from './helpers/random.ts';
import {
  batchNormRef,
  broadcastDims,
  broadcastRef,
  concatRef,
  globalPoolRef,
  lrnRef,
  padRef,
  poolOutputSize,
  poolRef,
  relL2,
  sigmoid,
  size,
  transposeRef,
  unaryRef,
} from './helpers/reference-ops.ts';
import { batchNormTrainingRef, finiteDifferenceGradient, maxPoolArgmaxRef } from './helpers/reference-backward.ts';

const TOLERANCE = 1e-3;
let seed = 7000;
const rand = (n: number, scale = 1) => randomFloat32Array(n, seed++, scale);
const fd = finiteDifferenceGradient;

describe('backward kernels', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  /**
   * Runs programs in order over buffers named by their bindings (the union over all programs):
   * `inputs` are uploaded, the other names are zeroed buffers of `outputs` floats; every name in
   * `outputs` is read back (an input there too is read back after the run: in-place updates).
   */
  async function runAll(
    programs: KernelProgram | KernelProgram[],
    inputs: Record<string, Float32Array>,
    outputs: Record<string, number>,
  ): Promise<Record<string, Float32Array>> {
    const list = Array.isArray(programs) ? programs : [programs];
    const buffers = new Map<string, GPUBuffer>();
    const owned: GPUBuffer[] = [];
    try {
      for (const p of list) {
        for (const b of p.bindings) {
          if (b.name === 'params' || buffers.has(b.name)) continue;
          const data = inputs[b.name];
          const floats = data ? data.length : outputs[b.name];
          if (floats === undefined) throw new Error(`${p.label}: no data or size for '${b.name}'`);
          const buffer = gpu.createBuffer(`${p.label}:${b.name}`, Math.max(16, floats * 4), storageUsage());
          owned.push(buffer);
          if (data) gpu.upload(buffer, data);
          buffers.set(b.name, buffer);
        }
      }
      const steps: KernelStep[] = [];
      for (const p of list) {
        const step = await prepareStep(
          gpu,
          p,
          p.bindings.filter((b) => b.name !== 'params').map((b) => ({ buffer: buffers.get(b.name)! })),
        );
        owned.push(...step.owned);
        steps.push(step);
      }
      await gpu.scope(`run '${list[0].label}'`, () => {
        const encoder = gpu.device.createCommandEncoder();
        encodeSteps(encoder, steps);
        gpu.device.queue.submit([encoder.finish()]);
      });
      const out: Record<string, Float32Array> = {};
      for (const [name, floats] of Object.entries(outputs)) {
        const buffer = buffers.get(name);
        if (!buffer) throw new Error(`no binding named '${name}'`);
        out[name] = new Float32Array(await gpu.read(buffer, floats * 4));
      }
      return out;
    } finally {
      for (const b of owned) b.destroy();
    }
  }

  it('pipeline keys: equal keys mean equal WGSL, and sizes do not change the key', () => {
    const pool = (h: number, k: number, s: number, pad: number) => ({
      planes: 3,
      height: h,
      width: h + 1,
      outH: 4,
      outW: 5,
      kernelH: k,
      kernelW: k,
      strideH: s,
      strideW: s,
      pads: [pad, pad, pad, pad] as [number, number, number, number],
      dilationH: 1,
      dilationW: 1,
    });
    const programs: KernelProgram[] = [
      maxPool2dBackwardProgram(pool(9, 3, 2, 1)),
      maxPool2dBackwardProgram(pool(17, 2, 1, 0)),
      avgPool2dBackwardProgram(pool(9, 3, 2, 1)),
      avgPool2dBackwardProgram({ ...pool(9, 3, 2, 1), countIncludePad: true }),
      avgPool2dBackwardProgram(pool(33, 7, 1, 0)),
      globalPoolBackwardProgram('max', 4, 49),
      globalPoolBackwardProgram('max', 40, 9),
      globalPoolBackwardProgram('avg', 4, 49),
      ...batchNormTrainingForwardPrograms({ images: 2, channels: 3, spatial: 4, epsilon: 1e-5 }, 0.9),
      ...batchNormTrainingForwardPrograms({ images: 8, channels: 64, spatial: 49, epsilon: 1e-3 }, 0.99),
      ...batchNormTrainingBackwardPrograms({ images: 2, channels: 3, spatial: 4, epsilon: 1e-5 }),
      batchNormFrozenBackwardProgram({ images: 2, channels: 3, spatial: 4, epsilon: 1e-5 }),
      batchNormPartialStatisticsProgram({ images: 2, channels: 3, spatial: 4, epsilon: 1e-5 }),
      batchNormPartialStatisticsProgram({ images: 5, channels: 8, spatial: 9, epsilon: 1e-3 }),
      batchNormCombineStatisticsProgram(
        3,
        4,
        { slices: 2, images: 2, lastImages: 1, sliceStride: 128, partStride: 64 },
        1e-5,
        0.9,
        true,
      ),
      batchNormCombineStatisticsProgram(
        8,
        9,
        { slices: 4, images: 8, lastImages: 8, sliceStride: 128, partStride: 64 },
        1e-3,
        0.99,
        false,
      ),
      batchNormCombineGradientSumsProgram(3, { slices: 2, images: 2, lastImages: 1, sliceStride: 128, partStride: 64 }),
      batchNormCombineGradientSumsProgram(8, {
        slices: 3,
        images: 4,
        lastImages: 2,
        sliceStride: 256,
        partStride: 128,
      }),
      lrnBackwardProgram({ images: 1, channels: 9, spatial: 4, size: 5, alpha: 1e-4, beta: 0.75, bias: 1 }),
      lrnBackwardProgram({ images: 2, channels: 16, spatial: 9, size: 3, alpha: 2e-4, beta: 0.5, bias: 2 }),
      unaryBackwardProgram({ kind: 'leakyRelu', alpha: 0.1 }, 10),
      unaryBackwardProgram({ kind: 'leakyRelu', alpha: 0.2 }, 99),
      unaryBackwardProgram({ kind: 'clip', min: 0, max: 6 }, 10),
      unaryBackwardProgram({ kind: 'relu' }, 10),
      unaryBackwardProgram({ kind: 'sigmoid' }, 10),
      broadcastBackwardProgram(
        'mul',
        [
          [2, 3, 4],
          [3, 1],
        ],
        0,
        [2, 3, 4],
      ),
      broadcastBackwardProgram(
        'mul',
        [
          [5, 6, 7],
          [6, 1],
        ],
        0,
        [5, 6, 7],
      ),
      broadcastBackwardProgram(
        'mul',
        [
          [2, 3, 4],
          [3, 1],
        ],
        1,
        [2, 3, 4],
      ),
      broadcastBackwardProgram(
        'div',
        [
          [2, 3, 4],
          [3, 1],
        ],
        1,
        [2, 3, 4],
      ),
      broadcastBackwardProgram(
        'div',
        [
          [2, 3, 4],
          [3, 1],
        ],
        0,
        [2, 3, 4],
      ),
      reduceToShapeProgram([2, 3, 4], [3, 1]),
      reduceToShapeProgram([4, 64, 9], [64, 1]),
      dropoutForwardProgram(100, 0.5, 1),
      dropoutForwardProgram(1000, 0.1, 2),
      dropoutForwardProgram(100, 0.5, 1, true),
      dropoutBackwardProgram(100, 0.5, 1),
      ...concatBackwardPrograms(
        [
          [2, 3],
          [2, 5],
        ],
        1,
      ),
      transposeBackwardProgram([2, 3, 4], [2, 0, 1]),
      transposeBackwardProgram([5, 6, 7], [1, 2, 0]),
      transposeBackwardProgram([2, 3, 4, 5], [0, 2, 1, 3]),
      padBackwardProgram([2, 3], [1, 0, 0, 1]),
      padBackwardProgram([4, 5], [0, 2, 1, -1]),
    ];
    const byKey = new Map<string, string>();
    for (const p of programs) {
      const seen = byKey.get(p.key);
      if (seen !== undefined) expect(wgslOf(p), p.key).toBe(seen);
      else byKey.set(p.key, wgslOf(p));
    }
    expect(new Set(byKey.values()).size).toBe(byKey.size);
    // Sizes live in the params block: these pairs share a pipeline.
    expect(programs[0].key).toBe(programs[1].key);
    expect(programs[5].key).toBe(programs[6].key);
    expect(byKey.size).toBeLessThan(programs.length - 10);
  });

  describe('pooling', () => {
    interface PoolCase {
      name: string;
      kind: 'max' | 'avg';
      x: number[];
      k: [number, number];
      s?: [number, number];
      pads?: [number, number, number, number];
      d?: [number, number];
      ceil?: boolean;
      include?: boolean;
    }
    const cases: PoolCase[] = [
      { name: 'max 3×3 s2 odd input', kind: 'max', x: [2, 3, 11, 11], k: [3, 3], s: [2, 2] },
      { name: 'max 3×3 s2 pad 1', kind: 'max', x: [1, 4, 10, 9], k: [3, 3], s: [2, 2], pads: [1, 1, 1, 1] },
      { name: 'max 3×3 s2 ceil_mode', kind: 'max', x: [1, 3, 10, 10], k: [3, 3], s: [2, 2], ceil: true },
      {
        name: 'max 2×2 dilation 2, asymmetric pads',
        kind: 'max',
        x: [1, 2, 9, 8],
        k: [2, 2],
        d: [2, 2],
        pads: [1, 0, 0, 1],
      },
      { name: 'max 3×2 s(1,2) overlapping', kind: 'max', x: [1, 3, 7, 9], k: [3, 2], s: [1, 2] },
      { name: 'avg 3×3 pad 1 exclude pad', kind: 'avg', x: [1, 3, 7, 7], k: [3, 3], pads: [1, 1, 1, 1] },
      {
        name: 'avg 3×3 pad 1 count_include_pad',
        kind: 'avg',
        x: [1, 3, 7, 7],
        k: [3, 3],
        pads: [1, 1, 1, 1],
        include: true,
      },
      {
        name: 'avg 3×3 s2 ceil_mode count_include_pad',
        kind: 'avg',
        x: [1, 2, 8, 8],
        k: [3, 3],
        s: [2, 2],
        pads: [1, 1, 1, 1],
        ceil: true,
        include: true,
      },
      {
        name: 'avg 3×3 s2 ceil_mode exclude pad',
        kind: 'avg',
        x: [2, 2, 9, 10],
        k: [3, 3],
        s: [2, 2],
        pads: [0, 1, 1, 0],
        ceil: true,
      },
      { name: 'avg 7×7 pads end 1 (Inception tail)', kind: 'avg', x: [1, 4, 7, 7], k: [7, 7], pads: [0, 0, 1, 1] },
    ];
    function geometry(c: PoolCase): PoolBackwardParams {
      const [s, pads, d] = [c.s ?? [1, 1], c.pads ?? [0, 0, 0, 0], c.d ?? [1, 1]];
      return {
        planes: c.x[0] * c.x[1],
        height: c.x[2],
        width: c.x[3],
        outH: poolOutputSize(c.x[2], c.k[0], s[0], pads[0], pads[2], d[0], !!c.ceil),
        outW: poolOutputSize(c.x[3], c.k[1], s[1], pads[1], pads[3], d[1], !!c.ceil),
        kernelH: c.k[0],
        kernelW: c.k[1],
        strideH: s[0],
        strideW: s[1],
        pads: pads as [number, number, number, number],
        dilationH: d[0],
        dilationW: d[1],
        countIncludePad: c.include,
      };
    }
    for (const c of cases) {
      it(c.name, async () => {
        const g = geometry(c);
        const n = size(c.x);
        const x = rand(n);
        const o = {
          kernel: c.k,
          strides: c.s,
          pads: c.pads,
          dilations: c.d,
          ceilMode: c.ceil,
          countIncludePad: c.include,
        };
        const forward = poolRef(c.kind, x, c.x, o);
        expect(forward.dims).toEqual([c.x[0], c.x[1], g.outH, g.outW]);
        const dy = rand(forward.data.length);
        const want = fd((v) => poolRef(c.kind, v, c.x, o).data, x, dy);
        const got =
          c.kind === 'max'
            ? await runAll(maxPool2dBackwardProgram(g), { x, dy }, { dx: n })
            : await runAll(avgPool2dBackwardProgram(g), { dy }, { dx: n });
        expect(relL2(got.dx, want)).toBeLessThan(TOLERANCE);
      });
    }

    it('max ties go to the first maximum in row-major window order', async () => {
      const dims = [2, 2, 7, 8];
      const c: PoolCase = { name: 'ties', kind: 'max', x: dims, k: [3, 3], s: [2, 2], pads: [1, 1, 1, 1] };
      const g = geometry(c);
      // Values from {−1, 0, 1}: almost every window holds its maximum more than once.
      const x = rand(size(dims)).map((v) => Math.max(-1, Math.min(1, Math.round(v))));
      const dy = rand(g.planes * g.outH * g.outW);
      const arg = maxPoolArgmaxRef(x, dims, {
        kernel: c.k,
        strides: c.s!,
        pads: c.pads!,
        dilations: [1, 1],
        outH: g.outH,
        outW: g.outW,
      });
      const want = new Float64Array(x.length);
      arg.forEach((at, k) => (want[at] += dy[k]));
      let tiedWindows = 0;
      const windowMax = poolRef('max', x, dims, { kernel: c.k, strides: c.s, pads: c.pads }).data;
      for (let k = 0; k < arg.length; k++) {
        const plane = Math.floor(k / (g.outH * g.outW));
        const oh = Math.floor(k / g.outW) % g.outH,
          ow = k % g.outW;
        let hits = 0;
        for (let a = 0; a < 3; a++)
          for (let b = 0; b < 3; b++) {
            const ih = oh * 2 - 1 + a,
              iw = ow * 2 - 1 + b;
            if (
              ih >= 0 &&
              ih < dims[2] &&
              iw >= 0 &&
              iw < dims[3] &&
              x[(plane * dims[2] + ih) * dims[3] + iw] === windowMax[k]
            )
              hits++;
          }
        if (hits > 1) tiedWindows++;
      }
      expect(tiedWindows).toBeGreaterThan(arg.length / 2);
      const got = await runAll(maxPool2dBackwardProgram(g), { x, dy }, { dx: x.length });
      expect(relL2(got.dx, want)).toBeLessThan(1e-6);
    });

    it('global max pool: a constant plane routes the gradient to its first element', async () => {
      const x = new Float32Array(3 * 20).fill(0.5);
      const dy = rand(3);
      const got = await runAll(globalPoolBackwardProgram('max', 3, 20), { x, dy }, { dx: 60 });
      expect(Array.from(got.dx)).toEqual(Array.from(x, (_, i) => (i % 20 === 0 ? dy[i / 20] : 0)));
    });

    for (const kind of ['max', 'avg'] as const) {
      it(`global ${kind} pool`, async () => {
        const dims = [2, 5, 7, 9];
        const x = rand(size(dims));
        const dy = rand(10);
        const want = fd((v) => globalPoolRef(kind, v, dims).data, x, dy);
        const got = await runAll(globalPoolBackwardProgram(kind, 10, 63), kind === 'max' ? { x, dy } : { dy }, {
          dx: x.length,
        });
        expect(relL2(got.dx, want)).toBeLessThan(TOLERANCE);
      });
    }
  });

  describe('normalisation', () => {
    const shapes = [
      [2, 3, 5, 4],
      [6, 5],
      [1, 4, 9, 7],
    ];
    const eps = 1e-5;
    for (const dims of shapes) {
      const [N, C] = dims;
      const S = size(dims.slice(2));
      const shape = { images: N, channels: C, spatial: S, epsilon: eps };
      it(`BatchNormalization training forward and running statistics [${dims}]`, async () => {
        const x = rand(size(dims), 2).map((v, i) => v + (i % 3));
        const scale = rand(C),
          bias = rand(C),
          rm = rand(C),
          rv = rand(C).map((v) => v * v + 0.1);
        const want = batchNormTrainingRef(x, dims, scale, bias, eps, { mean: rm, variance: rv, momentum: 0.9 });
        const got = await runAll(
          batchNormTrainingForwardPrograms(shape, 0.9),
          { x, scale, bias, runningMean: rm, runningVar: rv },
          {
            y: x.length,
            saveMean: C,
            saveInvStd: C,
            runningMean: C,
            runningVar: C,
          },
        );
        expect(relL2(got.y, want.y)).toBeLessThan(1e-5);
        expect(relL2(got.saveMean, want.mean)).toBeLessThan(1e-5);
        expect(relL2(got.saveInvStd, inverseStd(want.variance, eps))).toBeLessThan(1e-5);
        expect(relL2(got.runningMean, want.runningMean)).toBeLessThan(1e-5);
        expect(relL2(got.runningVar, want.runningVar)).toBeLessThan(1e-5);
      });
      it(`BatchNormalization training backward (dX, dScale, dBias) [${dims}]`, async () => {
        const x = rand(size(dims), 2),
          scale = rand(C),
          bias = rand(C),
          dy = rand(x.length);
        const fwd = await runAll(
          batchNormTrainingForwardPrograms(shape, 0.9),
          { x, scale, bias, runningMean: rand(C), runningVar: rand(C) },
          { y: x.length, saveMean: C, saveInvStd: C },
        );
        const got = await runAll(
          batchNormTrainingBackwardPrograms(shape),
          { x, dy, scale, saveMean: fwd.saveMean, saveInvStd: fwd.saveInvStd },
          { dx: x.length, dScale: C, dBias: C },
        );
        const f = (xv: ArrayLike<number>, s: ArrayLike<number>, b: ArrayLike<number>) =>
          batchNormTrainingRef(xv, dims, s, b, eps).y;
        expect(
          relL2(
            got.dx,
            fd((v) => f(v, scale, bias), x, dy),
          ),
        ).toBeLessThan(TOLERANCE);
        expect(
          relL2(
            got.dScale,
            fd((v) => f(x, v, bias), scale, dy),
          ),
        ).toBeLessThan(TOLERANCE);
        expect(
          relL2(
            got.dBias,
            fd((v) => f(x, scale, v), bias, dy),
          ),
        ).toBeLessThan(TOLERANCE);
      });
    }
    // The batch held as slices (layer-major): each slice's partials, then the combine, against
    // float64 over the whole batch. Channel means far from 0 against their spread test that the
    // combination does not cancel in f32; the strides leave gaps, as the device alignment does.
    const slices = [3, 3, 1];
    const held = { slices: 3, images: 3, lastImages: 1, sliceStride: 11, partStride: 5 };
    const [C, S] = [4, 6];
    const N = slices.reduce((a, b) => a + b, 0);
    it(`BatchNormalization statistics of a batch of ${N} from slices of [${slices}] (partials, then combined), running statistics once`, async () => {
      const x = rand(N * C * S).map((v, i) => 50 + 10 * Math.floor(i / S) + v);
      const runningMean = rand(C);
      const runningVar = rand(C).map((v) => v * v + 0.1);
      const partials = new Float32Array(held.slices * held.sliceStride).fill(Number.NaN);
      let first = 0;
      for (const [j, images] of slices.entries()) {
        const part = await runAll(
          batchNormPartialStatisticsProgram({ images, channels: C, spatial: S, epsilon: eps }),
          { x: x.subarray(first * C * S, (first + images) * C * S) },
          { partMean: C, partM2: C },
        );
        partials.set(part.partMean, j * held.sliceStride);
        partials.set(part.partM2, j * held.sliceStride + held.partStride);
        first += images;
      }
      const want = batchNormTrainingRef(x, [N, C, S], rand(C), rand(C), eps, {
        mean: runningMean,
        variance: runningVar,
        momentum: 0.8,
      });
      for (const updateRunning of [true, false]) {
        const got = await runAll(
          batchNormCombineStatisticsProgram(C, S, held, eps, 0.8, updateRunning),
          { partials, runningMean, runningVar },
          { saveMean: C, saveInvStd: C, runningMean: C, runningVar: C },
        );
        expect(relL2(got.saveMean, want.mean)).toBeLessThan(1e-6);
        expect(relL2(got.saveInvStd, inverseStd(want.variance, eps))).toBeLessThan(1e-5);
        expect(relL2(got.runningMean, updateRunning ? want.runningMean : runningMean)).toBeLessThan(1e-6);
        expect(relL2(got.runningVar, updateRunning ? want.runningVar : runningVar)).toBeLessThan(1e-5);
      }
    });
    it("BatchNormalization gradient sums of a batch from its slices' (each of its own mean loss): Σ (b_j/N)·part_j", async () => {
      const partials = rand(held.slices * held.sliceStride);
      const got = await runAll(batchNormCombineGradientSumsProgram(C, held), { partials }, { dScale: C, dBias: C });
      const sum = (offset: number) =>
        Float64Array.from({ length: C }, (_, c) =>
          slices.reduce((acc, images, j) => acc + (images / N) * partials[j * held.sliceStride + offset + c], 0),
        );
      expect(relL2(got.dScale, sum(0))).toBeLessThan(1e-6);
      expect(relL2(got.dBias, sum(held.partStride))).toBeLessThan(1e-6);
    });
    it('BatchNormalization frozen backward (running statistics)', async () => {
      const dims = [2, 6, 5, 3];
      const C = 6;
      const x = rand(size(dims)),
        scale = rand(C),
        bias = rand(C),
        mean = rand(C),
        variance = rand(C).map((v) => v * v + 0.05),
        dy = rand(x.length);
      const shape = { images: 2, channels: C, spatial: 15, epsilon: 1e-3 };
      const f = (xv: ArrayLike<number>, s: ArrayLike<number>, b: ArrayLike<number>) =>
        batchNormRef(xv, dims, s, b, mean, variance, 1e-3);
      const got = await runAll(batchNormFrozenBackwardProgram(shape), { dy, scale, var: variance }, { dx: x.length });
      expect(
        relL2(
          got.dx,
          fd((v) => f(v, scale, bias), x, dy),
        ),
      ).toBeLessThan(TOLERANCE);
    });
    for (const [dims, lrnSize] of [
      [[2, 9, 4, 3], 5],
      [[2, 9, 4, 3], 4],
      [[1, 6, 3, 5], 3],
      [[1, 3, 2, 2], 5],
    ] as [number[], number][]) {
      it(`LRN size ${lrnSize} [${dims}]`, async () => {
        const x = rand(size(dims), 2);
        const o = { size: lrnSize, alpha: 0.4, beta: 0.75, bias: 1.5 };
        const dy = rand(x.length);
        const want = fd((v) => lrnRef(v, dims, o), x, dy);
        const got = await runAll(
          lrnBackwardProgram({ images: dims[0], channels: dims[1], spatial: size(dims.slice(2)), ...o }),
          { x, dy },
          { dx: x.length },
        );
        expect(relL2(got.dx, want)).toBeLessThan(TOLERANCE);
      });
    }
  });

  describe('elementwise', () => {
    const unary: [UnaryBackwardOp, (v: number) => number][] = [
      [{ kind: 'relu' }, (v) => Math.max(v, 0)],
      [{ kind: 'leakyRelu', alpha: 0.07 }, (v) => (v >= 0 ? v : 0.07 * v)],
      [{ kind: 'clip', min: -0.4, max: 0.9 }, (v) => Math.min(Math.max(v, -0.4), 0.9)],
      [{ kind: 'clip', min: 0, max: Infinity }, (v) => Math.max(v, 0)],
      [{ kind: 'sigmoid' }, sigmoid],
      [{ kind: 'tanh' }, Math.tanh],
    ];
    for (const [op, f] of unary) {
      it(`${op.kind} ${JSON.stringify(op).slice(0, 40)}`, async () => {
        const x = rand(1000, 2);
        const dy = rand(1000);
        const want = fd((v) => unaryRef(v, f), x, dy);
        const saved: Record<string, Float32Array> =
          op.kind === 'sigmoid' || op.kind === 'tanh' ? { y: Float32Array.from(unaryRef(x, f)) } : { x };
        const got = await runAll(unaryBackwardProgram(op, 1000), { ...saved, dy }, { dx: 1000 });
        expect(relL2(got.dx, want)).toBeLessThan(TOLERANCE);
      });
    }
    const ops = {
      add: (a: number, b: number) => a + b,
      sub: (a: number, b: number) => a - b,
      mul: (a: number, b: number) => a * b,
      div: (a: number, b: number) => a / b,
    };
    const binary: [keyof typeof ops, number[], number[]][] = [
      ['add', [2, 3, 4, 5], [3, 1, 1]],
      ['sub', [4, 5], []],
      ['mul', [4, 1], [3]],
      ['div', [2, 1, 6], [5, 1]],
      ['mul', [2, 3, 8, 8], [1, 3, 1, 1]],
      ['div', [3, 1, 1], [2, 3, 8, 9]],
      ['sub', [3, 7], [3, 7]],
      ['add', [1, 70, 2], [3, 1, 1]],
    ];
    for (const [op, da, db] of binary) {
      it(`${op} [${da}] , [${db}]: both gradients`, async () => {
        const a = rand(size(da)),
          b0 = rand(size(db));
        const b = op === 'div' ? b0.map((v) => v + Math.sign(v) * 0.5) : b0;
        const out = broadcastDims([da, db]);
        const dy = rand(size(out));
        const f = (av: ArrayLike<number>, bv: ArrayLike<number>) =>
          broadcastRef(
            [
              { data: av, dims: da },
              { data: bv, dims: db },
            ],
            ops[op],
          ).data;
        const wantA = fd((v) => f(v, b), a, dy);
        const wantB = fd((v) => f(a, v), b, dy);
        const gotA = await runAll(
          broadcastBackwardProgram(op, [da, db], 0, out),
          { dy, x0: a, x1: b },
          { dx: a.length },
        );
        const gotB = await runAll(
          broadcastBackwardProgram(op, [da, db], 1, out),
          { dy, x0: a, x1: b },
          { dx: b.length },
        );
        expect(relL2(gotA.dx, wantA)).toBeLessThan(TOLERANCE);
        expect(relL2(gotB.dx, wantB)).toBeLessThan(TOLERANCE);
      });
    }
    it('Sum of three with broadcasting: reduce-to-shape per input', async () => {
      const dims = [[2, 3, 4], [3, 1], [4]];
      const xs = dims.map((d) => rand(size(d)));
      const out = broadcastDims(dims);
      const dy = rand(size(out));
      for (let i = 0; i < 3; i++) {
        const want = fd(
          (v) =>
            broadcastRef(
              dims.map((d, j) => ({ dims: d, data: j === i ? v : xs[j] })),
              (p, q, r) => p + q + r,
            ).data,
          xs[i],
          dy,
        );
        const got = await runAll(reduceToShapeProgram(out, dims[i]), { dy }, { dx: xs[i].length });
        expect(relL2(got.dx, want)).toBeLessThan(TOLERANCE);
      }
    });
    it('reduce-to-shape of a long reduction (bias gradient [4,40,5,5] → [40,1,1]), scaled', async () => {
      const out = [4, 40, 5, 5];
      const dy = rand(size(out));
      const scale = 0.37;
      const want = new Float64Array(40);
      for (let i = 0; i < dy.length; i++) want[Math.floor(i / 25) % 40] += scale * dy[i];
      const got = await runAll(reduceToShapeProgram(out, [40, 1, 1], { scale }), { dy }, { dx: 40 });
      expect(relL2(got.dx, want)).toBeLessThan(1e-5);
    });

    describe('Dropout (training mode)', () => {
      const n = 65536;
      for (const ratio of [0.3, 0.5]) {
        it(`ratio ${ratio}: seeded mask, zero fraction, scale, backward`, async () => {
          const x = rand(n).map((v) => v + Math.sign(v) * 0.01);
          const dy = rand(n);
          const a = await runAll(dropoutForwardProgram(n, ratio, 1234, true), { x }, { y: n, mask: n });
          const again = await runAll(dropoutForwardProgram(n, ratio, 1234, true), { x }, { y: n, mask: n });
          const other = await runAll(dropoutForwardProgram(n, ratio, 1235, true), { x }, { y: n, mask: n });
          expect(again.mask).toEqual(a.mask);
          expect(again.y).toEqual(a.y);
          let zeros = 0,
            differ = 0;
          for (let i = 0; i < n; i++) {
            const keep = a.mask[i] === 1;
            expect(keep).toBe(dropoutKeep(1234, i, ratio));
            if (!keep) zeros++;
            if (a.mask[i] !== other.mask[i]) differ++;
          }
          expect(Math.abs(zeros / n - ratio)).toBeLessThan(0.01);
          expect(differ / n).toBeGreaterThan(2 * ratio * (1 - ratio) - 0.02);
          const scale = 1 / (1 - ratio);
          const wantY = Array.from(x, (v, i) => (a.mask[i] ? v * scale : 0));
          expect(relL2(a.y, wantY)).toBeLessThan(1e-6);
          const got = await runAll(dropoutBackwardProgram(n, ratio, 1234), { dy }, { dx: n });
          const wantDx = Array.from(dy, (v, i) => (a.mask[i] ? v * scale : 0));
          expect(relL2(got.dx, wantDx)).toBeLessThan(1e-6);
          // As a finite-difference check: with the mask fixed the forward is linear in x.
          const sub = 500;
          const fdDx = fd(
            (v) => Array.from(v, (e, i) => (dropoutKeep(1234, i, ratio) ? e * scale : 0)),
            x.subarray(0, sub),
            dy.subarray(0, sub),
          );
          expect(relL2(got.dx.subarray(0, sub), fdDx)).toBeLessThan(TOLERANCE);
        });
      }
      it('ratio 0 keeps everything; ratio 1 is refused', async () => {
        const x = rand(100);
        const got = await runAll(dropoutForwardProgram(100, 0, 9), { x }, { y: 100 });
        expect(relL2(got.y, x)).toBe(0);
        expect(() => dropoutForwardProgram(100, 1, 9)).toThrow(/ratio 1/);
      });
    });
  });

  describe('data movement', () => {
    for (const axis of [0, 1, 2, -1]) {
      it(`Concat axis ${axis}`, async () => {
        const a = axis < 0 ? axis + 3 : axis;
        const shapes = [
          [2, 3, 4],
          [2, 3, 4],
          [2, 3, 4],
        ].map((s, i) => s.map((d, k) => (k === a ? d + i : d)));
        const xs = shapes.map((d) => rand(size(d)));
        const outLen = xs.reduce((s, v) => s + v.length, 0);
        const dy = rand(outLen);
        const programs = concatBackwardPrograms(shapes, axis);
        for (let i = 0; i < shapes.length; i++) {
          const want = fd(
            (v) =>
              concatRef(
                shapes.map((dims, j) => ({ dims, data: j === i ? v : xs[j] })),
                a,
              ).data,
            xs[i],
            dy,
          );
          const got = await runAll(programs[i], { dy }, { dx: xs[i].length });
          expect(relL2(got.dx, want)).toBeLessThan(TOLERANCE);
        }
      });
    }
    for (const [dims, perm] of [
      [
        [2, 3, 4, 5],
        [0, 2, 3, 1],
      ],
      [
        [3, 4, 5],
        [2, 0, 1],
      ],
      [
        [6, 7],
        [1, 0],
      ],
      [
        [2, 1, 3, 4],
        [0, 3, 1, 2],
      ],
      [
        [2, 3, 4],
        [0, 1, 2],
      ],
    ] as [number[], number[]][]) {
      it(`Transpose [${dims}] perm (${perm})`, async () => {
        const x = rand(size(dims));
        const dy = rand(x.length);
        const want = fd((v) => transposeRef(v, dims, perm).data, x, dy);
        const got = await runAll(transposeBackwardProgram(dims, perm), { dy }, { dx: x.length });
        expect(relL2(got.dx, want)).toBeLessThan(TOLERANCE);
      });
    }
    for (const [dims, pads] of [
      [
        [1, 2, 4, 5],
        [0, 0, 1, 2, 0, 0, 2, 1],
      ],
      [
        [3, 4],
        [1, -1, 0, 2],
      ],
      [
        [2, 5, 3],
        [0, -2, 1, 1, -1, 0],
      ],
    ] as [number[], number[]][]) {
      it(`Pad [${dims}] pads (${pads})`, async () => {
        const x = rand(size(dims));
        const outLen = padRef(x, dims, pads, 0).data.length;
        const dy = rand(outLen);
        const want = fd((v) => padRef(v, dims, pads, 0.75).data, x, dy);
        const got = await runAll(padBackwardProgram(dims, pads), { dy }, { dx: x.length });
        expect(relL2(got.dx, want)).toBeLessThan(TOLERANCE);
      });
    }
  });
});

// The per-channel BatchNormalization kernels (backward/channel.ts: one workgroup per channel, or
// whole planes per workgroup, vec4 units where 4 divides S), the strip-owning MaxPool backward
// and the vec4 element programs, at the sizes that pick their code paths: channels not a
// multiple of 8, spatial 1 / odd / large, images 1 and 3, several planes per workgroup and
// several workgroups, strips of one row / several rows / whole planes, channels past one
// dispatch row.
describe('backward kernels at odd and large sizes', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());
  const run = (
    programs: KernelProgram | KernelProgram[],
    inputs: Record<string, Float32Array>,
    outputs: Record<string, number>,
  ) => runProgram(gpu, programs, inputs, outputs);

  /** BatchNormalization training backward in float64 (the analytic form): dx, dScale, dBias. */
  function batchNormBackwardRef(
    x: ArrayLike<number>,
    dims: number[],
    scale: ArrayLike<number>,
    dy: ArrayLike<number>,
    eps: number,
  ) {
    const [N, C] = dims;
    const S = size(dims.slice(2));
    const M = N * S;
    const { mean, variance } = batchNormTrainingRef(x, dims, scale, new Float64Array(C), eps);
    const dScale = new Float64Array(C),
      dBias = new Float64Array(C),
      dx = new Float64Array(x.length);
    const at = (n: number, c: number, s: number) => (n * C + c) * S + s;
    for (let c = 0; c < C; c++) {
      const inv = 1 / Math.sqrt(variance[c] + eps);
      for (let n = 0; n < N; n++)
        for (let s = 0; s < S; s++) {
          dBias[c] += dy[at(n, c, s)];
          dScale[c] += dy[at(n, c, s)] * (x[at(n, c, s)] - mean[c]) * inv;
        }
      for (let n = 0; n < N; n++)
        for (let s = 0; s < S; s++) {
          const i = at(n, c, s);
          dx[i] = scale[c] * inv * (dy[i] - (dBias[c] + (x[i] - mean[c]) * inv * dScale[c]) / M);
        }
    }
    return { dx, dScale, dBias, mean, variance };
  }

  /** Forward (stats, apply) then backward (sums, dx), each program on its own bindings. */
  async function batchNormRoundTrip(
    dims: number[],
    x: Float32Array,
    scale: Float32Array,
    bias: Float32Array,
    dy: Float32Array,
    eps: number,
  ): Promise<Record<'saveMean' | 'saveInvStd' | 'y' | 'dScale' | 'dBias' | 'dx', Float32Array>> {
    const [N, C] = dims;
    const shape = { images: N, channels: C, spatial: size(dims.slice(2)), epsilon: eps };
    const [stats, apply] = batchNormTrainingForwardPrograms(shape, 0.9);
    const s = await run(
      stats,
      { x, runningMean: new Float32Array(C), runningVar: new Float32Array(C) },
      { saveMean: C, saveInvStd: C },
    );
    const y = (await run(apply, { x, scale, bias, saveMean: s.saveMean, saveInvStd: s.saveInvStd }, { y: x.length })).y;
    const [sums, data] = batchNormTrainingBackwardPrograms(shape);
    const g = await run(sums, { x, dy, saveMean: s.saveMean, saveInvStd: s.saveInvStd }, { dScale: C, dBias: C });
    const dxInputs = { x, dy, scale, saveMean: s.saveMean, saveInvStd: s.saveInvStd, dScale: g.dScale, dBias: g.dBias };
    const dx = (await run(data, dxInputs, { dx: x.length })).dx;
    return { saveMean: s.saveMean, saveInvStd: s.saveInvStd, y, dScale: g.dScale, dBias: g.dBias, dx };
  }

  // [N, C, …]: vec4 units (S % 4 = 0) or f32; planes per workgroup 2048/S, so [3, 100, 4, 4]
  // (128 planes a group) and [2, 45, 7, 7] (41) run several groups, the last one short.
  const bnShapes = [
    [3, 13],
    [1, 13, 5, 7],
    [3, 100, 4, 4],
    [2, 45, 7, 7],
    [1, 5, 57, 57],
    [2, 3, 60, 60],
    [3, 70000],
  ];
  for (const dims of bnShapes) {
    it(`BatchNormalization training [${dims}]: statistics, y, dx, dScale, dBias against float64`, async () => {
      const [, C] = dims;
      const eps = 1e-5;
      // Channel means far from 0 against their spread: the one-pass variance must not cancel.
      const x = rand(size(dims), 0.5).map((v, i) => v + 4 * ((Math.floor(i / size(dims.slice(2))) % C) % 5) - 6);
      const scale = rand(C),
        bias = rand(C),
        dy = rand(x.length);
      const got = await batchNormRoundTrip(dims, x, scale, bias, dy, eps);
      const want = batchNormBackwardRef(x, dims, scale, dy, eps);
      const y = batchNormTrainingRef(x, dims, scale, bias, eps).y;
      expect(relL2(got.saveMean, want.mean)).toBeLessThan(1e-6);
      expect(
        relL2(
          got.saveInvStd,
          want.variance.map((v) => 1 / Math.sqrt(v + eps)),
        ),
      ).toBeLessThan(1e-5);
      expect(relL2(got.y, y)).toBeLessThan(1e-5);
      expect(relL2(got.dScale, want.dScale)).toBeLessThan(1e-5);
      expect(relL2(got.dBias, want.dBias)).toBeLessThan(1e-5);
      expect(relL2(got.dx, want.dx)).toBeLessThan(1e-4);
    });
  }

  it('BatchNormalization training at images 1 and 3, channels 13, spatial 1 and 35: finite differences', async () => {
    for (const dims of [
      [3, 13],
      [1, 13, 5, 7],
    ]) {
      const [, C] = dims;
      const eps = 1e-3;
      const x = rand(size(dims), 2),
        scale = rand(C),
        bias = rand(C),
        dy = rand(x.length);
      const got = await batchNormRoundTrip(dims, x, scale, bias, dy, eps);
      const f = (xv: ArrayLike<number>, s: ArrayLike<number>, b: ArrayLike<number>) =>
        batchNormTrainingRef(xv, dims, s, b, eps).y;
      expect(
        relL2(
          got.dx,
          fd((v) => f(v, scale, bias), x, dy),
        ),
      ).toBeLessThan(TOLERANCE);
      expect(
        relL2(
          got.dScale,
          fd((v) => f(x, v, bias), scale, dy),
        ),
      ).toBeLessThan(TOLERANCE);
      expect(
        relL2(
          got.dBias,
          fd((v) => f(x, scale, v), bias, dy),
        ),
      ).toBeLessThan(TOLERANCE);
    }
  });

  it('frozen BatchNormalization [3, 13, 4, 4] (vec4) and [1, 13, 5, 7]: dx against float64', async () => {
    for (const dims of [
      [3, 13, 4, 4],
      [1, 13, 5, 7],
    ]) {
      const [N, C] = dims;
      const S = size(dims.slice(2));
      const x = rand(size(dims)),
        dy = rand(x.length),
        scale = rand(C),
        variance = rand(C).map((v) => v * v + 0.05);
      const shape = { images: N, channels: C, spatial: S, epsilon: 1e-3 };
      const dx = (await run(batchNormFrozenBackwardProgram(shape), { dy, scale, var: variance }, { dx: x.length })).dx;
      const want = new Float64Array(x.length);
      for (let i = 0; i < x.length; i++) {
        const c = Math.floor(i / S) % C;
        want[i] = (dy[i] * scale[c]) / Math.sqrt(variance[c] + 1e-3);
      }
      expect(relL2(dx, want)).toBeLessThan(1e-6);
    }
  });

  // MaxPool backward against the exact routing (dy to each window's first maximum, in float64).
  // 512+ planes: one strip per plane; 128 planes of 56 rows: 4 strips of 14; 13 planes: strips
  // of one row; 1-D (height 1).
  const maxCases: {
    x: number[];
    k: [number, number];
    s: [number, number];
    pads: [number, number, number, number];
    d?: [number, number];
    ceil?: boolean;
  }[] = [
    { x: [8, 65, 14, 14], k: [3, 3], s: [2, 2], pads: [1, 1, 1, 1], ceil: true },
    { x: [2, 64, 56, 56], k: [3, 3], s: [2, 2], pads: [1, 1, 1, 1] },
    { x: [1, 13, 9, 10], k: [2, 2], s: [2, 2], pads: [0, 0, 0, 0] },
    { x: [3, 1, 31, 17], k: [3, 2], s: [1, 2], pads: [1, 0, 0, 1], d: [2, 2] },
    { x: [5, 7, 1, 40], k: [1, 3], s: [1, 2], pads: [0, 1, 0, 1] },
  ];
  for (const c of maxCases) {
    it(`MaxPool backward [${c.x}] kernel ${c.k} stride ${c.s}: exact routing`, async () => {
      const d = c.d ?? [1, 1];
      const outH = poolOutputSize(c.x[2], c.k[0], c.s[0], c.pads[0], c.pads[2], d[0], !!c.ceil);
      const outW = poolOutputSize(c.x[3], c.k[1], c.s[1], c.pads[1], c.pads[3], d[1], !!c.ceil);
      const g: PoolBackwardParams = {
        planes: c.x[0] * c.x[1],
        height: c.x[2],
        width: c.x[3],
        outH,
        outW,
        kernelH: c.k[0],
        kernelW: c.k[1],
        strideH: c.s[0],
        strideW: c.s[1],
        pads: c.pads,
        dilationH: d[0],
        dilationW: d[1],
      };
      // Coarse values: many windows hold their maximum twice (the first one must win).
      const x = rand(size(c.x)).map((v) => Math.round(v * 4) / 4);
      const dy = rand(g.planes * outH * outW);
      const want = new Float64Array(x.length);
      maxPoolArgmaxRef(x, c.x, { kernel: c.k, strides: c.s, pads: c.pads, dilations: d, outH, outW }).forEach(
        (at, k) => {
          if (at >= 0) want[at] += dy[k];
        },
      );
      const got = await run(maxPool2dBackwardProgram(g), { x, dy }, { dx: x.length });
      expect(relL2(got.dx, want)).toBeLessThan(1e-6);
    });
  }

  // vec4 units when 4 divides the size (12000: 3000 units over 3 workgroups), else f32 (4099).
  for (const n of [12000, 4099]) {
    it(`unary backward over ${n} elements: every op exact against float64`, async () => {
      const x = rand(n, 2),
        dy = rand(n);
      const ops: [UnaryBackwardOp, (v: number) => number, boolean][] = [
        [{ kind: 'relu' }, (v) => (v > 0 ? 1 : 0), false],
        [{ kind: 'leakyRelu', alpha: 0.07 }, (v) => (v >= 0 ? 1 : 0.07), false],
        [{ kind: 'clip', min: -0.4, max: 0.9 }, (v) => (v >= -0.4 && v <= 0.9 ? 1 : 0), false],
        [{ kind: 'sigmoid' }, (y) => y * (1 - y), true],
        [{ kind: 'tanh' }, (y) => 1 - y * y, true],
      ];
      for (const [op, derivative, fromOutput] of ops) {
        const got = (await run(unaryBackwardProgram(op, n), { [fromOutput ? 'y' : 'x']: x, dy }, { dx: n })).dx;
        expect(
          relL2(
            got,
            Array.from(x, (v, i) => dy[i] * derivative(v)),
          ),
          op.kind,
        ).toBeLessThan(1e-6);
      }
    });
  }
});

/** 1/√(var + ε) per channel: what BatchNormalization's training forward saves for its backward. */
function inverseStd<T extends { map(f: (v: number) => number): T }>(variance: T, eps: number): T {
  return variance.map((v) => 1 / Math.sqrt(v + eps));
}
