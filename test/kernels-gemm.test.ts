// The GEMM core: every variant against the float64 reference on odd shapes, both layouts of each
// operand, bias broadcasts, fused activations, batches and column chunks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeGpuContext } from '../src/node/index.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import {
  GEMM_VARIANTS,
  gemmProgram,
  gemmPrograms,
  gemmTarget,
  roundUp,
  variantKey,
  variantRuns,
  type GemmProblem,
  type GemmVariant,
} from '../src/kernels/gemm.ts';
import { packConvWeights, type Conv2dParams } from '../src/kernels/conv.ts';
import { floatArrayReader, packB, packBBands } from '../src/kernels/linear.ts';
import { conv2dProgram, runProgram } from './helpers/run-program.ts';
import type { Activation } from '../src/kernels/program.ts';
import { Autotuner, memoryTuningStore } from '../src/kernels/autotune.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { convRef, gemmRef, relL2, type ConvRefOptions } from './helpers/reference-ops.ts';

interface Case {
  name: string;
  batch?: number;
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  /** Pack B as [K][roundUp(N, 8)] with zero columns (how conv weights are stored). */
  padB?: boolean;
  alpha?: number;
  bias?: { dims: [number, number]; beta?: number };
  act?: Activation;
}

// Cases are grouped so that those of one structure (layouts, bias, activation: what selects
// the WGSL; sizes travel as uniforms) share a pipeline: lavapipe compiles each in 0.2–1 s.
const CASES: Case[] = [
  // A[m][k] · B[k][n] + bias, relu
  { name: '1×1×1 bias relu', M: 1, N: 1, K: 1, bias: { dims: [1, 1] }, act: { kind: 'relu' } },
  { name: '7×13×5 bias[N] relu', M: 7, N: 13, K: 5, bias: { dims: [1, 13] }, act: { kind: 'relu' } },
  { name: '65×33×129 bias[M,N] relu', M: 65, N: 33, K: 129, bias: { dims: [65, 33] }, act: { kind: 'relu' } },
  {
    name: 'batch 3, 9×20×17 bias[M,N] relu',
    batch: 3,
    M: 9,
    N: 20,
    K: 17,
    bias: { dims: [9, 20] },
    act: { kind: 'relu' },
  },
  // Aᵀ · Bᵀ, alpha, beta·bias, clip
  {
    name: '7×13×5 AᵀBᵀ bias[M,1] clip α β',
    M: 7,
    N: 13,
    K: 5,
    transA: true,
    transB: true,
    alpha: 0.5,
    bias: { dims: [7, 1], beta: -2 },
    act: { kind: 'clip', min: -0.5, max: 1.5 },
  },
  {
    name: '65×33×129 AᵀBᵀ bias[1,N] clip α β',
    M: 65,
    N: 33,
    K: 129,
    transA: true,
    transB: true,
    alpha: 1.5,
    bias: { dims: [1, 33], beta: 0.25 },
    act: { kind: 'clip', min: -1, max: 1 },
  },
  {
    name: '3×40×300 (GEMV-like) AᵀBᵀ bias[1,1] clip',
    M: 3,
    N: 40,
    K: 300,
    transA: true,
    transB: true,
    bias: { dims: [1, 1], beta: 3 },
    act: { kind: 'clip', min: -2, max: 2 },
  },
  // A · Bᵀ and Aᵀ · B, no bias, no activation
  { name: '7×13×5 Bᵀ', M: 7, N: 13, K: 5, transB: true },
  { name: '65×33×129 Bᵀ', M: 65, N: 33, K: 129, transB: true },
  { name: '7×13×5 Aᵀ', M: 7, N: 13, K: 5, transA: true },
  { name: '65×33×129 Aᵀ', M: 65, N: 33, K: 129, transA: true },
  // Aᵀ with M % 4 = 0 (vec4 A loads) and packed B [K][roundUp(N, 8)], leaky relu
  {
    name: '64×61×32 Aᵀ (vec4 A) packed B, leaky relu',
    M: 64,
    N: 61,
    K: 32,
    transA: true,
    padB: true,
    bias: { dims: [64, 61] },
    act: { kind: 'leakyRelu', alpha: 0.1 },
  },
  {
    name: 'batch 2, 20×8×9 Aᵀ (vec4 A) packed B, leaky relu',
    batch: 2,
    M: 20,
    N: 8,
    K: 9,
    transA: true,
    padB: true,
    bias: { dims: [1, 8] },
    act: { kind: 'leakyRelu', alpha: 0.3 },
  },
];

describe('GEMM core', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  /** Skips (saying why) a variant this device cannot run: the subgroup ones need subgroups of 8.
   * On lavapipe (CI and the benchmarks) every variant runs; a GPU with other subgroup sizes never
   * picks them (variantRuns gates defaultVariant and the autotuner too), so nothing is left untested there. */
  const skipUnless = (variant: GemmVariant, ctx: { skip: (note?: string) => void }) => {
    if (!variantRuns(variant, gemmTarget(gpu)))
      ctx.skip(
        `${variantKey(variant)} needs subgroups of exactly ${variant.wgX} invocations; this device has ${gemmTarget(gpu).subgroupSize ?? 'none (or no fixed size)'}`,
      );
  };

  for (const variant of GEMM_VARIANTS) {
    describe(variantKey(variant), () => {
      for (const c of CASES) {
        it(c.name, async (ctx) => {
          skipUnless(variant, ctx);
          const err = await runCase(gpu, c, variant);
          expect(err).toBeLessThan(1e-5);
        });
      }
    });
  }

  // The subgroup variants load A in their own way (lane l takes rows l, l + 8, …), im2col
  // included: every one on convs whose row count is no multiple of the tile, with padding
  // masks, strides, dilation and groups (the GEMM batch), against the float64 reference.
  const subgroupVariants = GEMM_VARIANTS.filter((v) => v.kind === 'register' && v.subgroupA);
  const CONV_CASES: ConvCase[] = [
    {
      name: '3×3 pad 1, 2 images, bias relu (M = 2·9·11)',
      x: [2, 5, 9, 11],
      w: [13, 5, 3, 3],
      bias: true,
      o: { pads: [1, 1, 1, 1], act: { kind: 'relu' } },
    },
    {
      name: '3×3 stride 2, asymmetric pads, groups 2',
      x: [1, 6, 10, 9],
      w: [10, 3, 3, 3],
      bias: true,
      o: { strides: [2, 2], pads: [0, 1, 1, 0], group: 2, act: { kind: 'relu' } },
    },
    {
      name: '3×3 dilation 2, no pad, no bias (unmasked loads)',
      x: [1, 4, 12, 13],
      w: [9, 4, 3, 3],
      bias: false,
      o: { dilations: [2, 2] },
    },
  ];
  for (const variant of subgroupVariants) {
    for (const c of CONV_CASES) {
      it(`conv ${c.name} [${variantKey(variant)}]`, async (ctx) => {
        skipUnless(variant, ctx);
        expect(await runConvCase(gpu, c, variant)).toBeLessThan(1e-5);
      });
    }
  }

  it('computes a wide GEMM in column chunks (nOffset), as the runtime does for weights over the binding limit', async () => {
    const M = 5,
      K = 70,
      N = 45,
      chunk = 16;
    const a = randomFloat32Array(M * K, 11);
    const b = randomFloat32Array(N * K, 12); // [N][K], transB
    const bias = randomFloat32Array(N, 13);
    const want = gemmRef(a, b, { M, N, K, transB: true, c: { data: bias, dims: [N] } });
    const got = new Float32Array(M * N);
    for (let n0 = 0; n0 < N; n0 += chunk) {
      const nc = Math.min(chunk, N - n0);
      const problem: GemmProblem = {
        batch: 1,
        M,
        N: nc,
        K,
        a: { kind: 'matrix', layout: 'mk', batchStride: 0 },
        b: { layout: 'nk', batchStride: 0, ld: K },
        c: { kind: 'matrix', batchStride: 0, strideM: N, strideN: 1 },
        bias: { batchStride: 0, strideM: 0, strideN: 1 },
        nOffset: n0,
      };
      const program = gemmProgram(problem, GEMM_VARIANTS[0]);
      const res = await runProgram(gpu, program, { a, b: b.slice(n0 * K, (n0 + nc) * K), bias }, { c: M * N });
      for (let m = 0; m < M; m++) for (let n = n0; n < n0 + nc; n++) got[m * N + n] = res.c[m * N + n];
    }
    expect(relL2(got, want)).toBeLessThan(1e-5);
  });

  // The subgroup variant too: its lanes load rows from the program's row offset.
  const SG24 = GEMM_VARIANTS.find((v) => variantKey(v) === 'reg24x8@8x1sg')!;
  for (const variant of [GEMM_VARIANTS[0], GEMM_VARIANTS[5], SG24]) {
    it(`splits rows over several dispatches past the workgroup limit [${variantKey(variant)}]`, async (ctx) => {
      skipUnless(variant, ctx);
      const M = 70,
        N = 20,
        K = 9;
      const a = randomFloat32Array(M * K, 21);
      const b = randomFloat32Array(K * N, 22);
      const problem: GemmProblem = {
        batch: 1,
        M,
        N,
        K,
        a: { kind: 'matrix', layout: 'mk', batchStride: 0 },
        b: { layout: 'kn', batchStride: 0, ld: N },
        c: { kind: 'matrix', batchStride: 0, strideM: N, strideN: 1 },
        activation: { kind: 'relu' },
      };
      const programs = gemmPrograms(problem, variant, 1); // one workgroup per dimension
      expect(programs.length).toBeGreaterThan(1);
      const got = await runProgram(gpu, programs, { a, b }, { c: M * N });
      expect(relL2(got.c, gemmRef(a, b, { M, N, K, act: { kind: 'relu' } }))).toBeLessThan(1e-5);
    });
  }

  it('autotuner picks a variant once per shape class and remembers it in the store', async () => {
    const store = memoryTuningStore();
    const tuner = new Autotuner(gpu, { store, repetitions: 1, maxRepresentative: 64 });
    const first = await tuner.choose({ kind: 'gemm', M: 40, N: 24, K: 50 });
    expect(GEMM_VARIANTS.map(variantKey)).toContain(variantKey(first));
    expect(tuner.measurements).toBeGreaterThan(1);
    const measured = tuner.measurements;
    // Same class (same buckets): no new measurement.
    const again = await tuner.choose({ kind: 'gemm', M: 60, N: 30, K: 40 });
    expect(variantKey(again)).toBe(variantKey(first));
    expect(tuner.measurements).toBe(measured);
    // A new tuner on the same store reads the choice back without measuring.
    const fresh = new Autotuner(gpu, { store, repetitions: 1, maxRepresentative: 64 });
    const restored = await fresh.choose({ kind: 'gemm', M: 40, N: 24, K: 50 });
    expect(variantKey(restored)).toBe(variantKey(first));
    expect(fresh.measurements).toBe(0);
  });
});

async function runCase(gpu: GpuContext, c: Case, variant: GemmVariant): Promise<number> {
  const batch = c.batch ?? 1;
  const { M, N, K } = c;
  const seed = M * 1000 + N * 10 + K;
  const a = randomFloat32Array(batch * M * K, seed);
  const b = randomFloat32Array(batch * K * N, seed + 1);
  const biasData = c.bias ? randomFloat32Array(batch * c.bias.dims[0] * c.bias.dims[1], seed + 2) : undefined;
  const ldB = c.padB ? roundUp(N, 8) : c.transB ? K : N;
  let bStored = b;
  if (c.padB) {
    if (c.transB) throw new Error('padB is for [K][N] packing');
    bStored = new Float32Array(batch * K * ldB);
    for (let i = 0; i < batch * K; i++) bStored.set(b.subarray(i * N, (i + 1) * N), i * ldB);
  }
  const problem: GemmProblem = {
    batch,
    M,
    N,
    K,
    a: { kind: 'matrix', layout: c.transA ? 'km' : 'mk', batchStride: M * K },
    b: { layout: c.transB ? 'nk' : 'kn', batchStride: K * ldB, ld: ldB, padded: c.padB },
    c: { kind: 'matrix', batchStride: M * N, strideM: N, strideN: 1 },
    alpha: c.alpha,
    bias: c.bias && {
      batchStride: c.bias.dims[0] * c.bias.dims[1],
      strideM: c.bias.dims[0] === 1 ? 0 : c.bias.dims[1],
      strideN: c.bias.dims[1] === 1 ? 0 : 1,
      beta: c.bias.beta,
    },
    activation: c.act,
  };
  const inputs: Record<string, Float32Array> = { a, b: bStored };
  if (biasData) inputs.bias = biasData;
  const got = (await runProgram(gpu, gemmProgram(problem, variant), inputs, { c: batch * M * N })).c;
  const want = new Float64Array(batch * M * N);
  for (let i = 0; i < batch; i++) {
    const biasDims = c.bias?.dims;
    const y = gemmRef(a.subarray(i * M * K, (i + 1) * M * K), b.subarray(i * K * N, (i + 1) * K * N), {
      M,
      N,
      K,
      transA: c.transA,
      transB: c.transB,
      alpha: c.alpha,
      beta: c.bias?.beta,
      c:
        biasData && biasDims
          ? {
              data: biasData.subarray(i * biasDims[0] * biasDims[1], (i + 1) * biasDims[0] * biasDims[1]),
              dims: biasDims,
            }
          : undefined,
      act: c.act && c.act.kind !== 'sigmoid' ? c.act : undefined,
    });
    want.set(y, i * M * N);
  }
  return relL2(got, want);
}

/** A conv through the GEMM core against convRef: x [N,C,H,W], w [Cout, C/group, KH, KW]. */
interface ConvCase {
  name: string;
  x: [number, number, number, number];
  w: [number, number, number, number];
  bias: boolean;
  o: ConvRefOptions;
}

async function runConvCase(gpu: GpuContext, c: ConvCase, variant: GemmVariant): Promise<number> {
  const [N, C, H, W] = c.x;
  const [CO, CG, KH, KW] = c.w;
  const seed = N * C * H * W + CO;
  const x = randomFloat32Array(N * C * H * W, seed);
  const w = randomFloat32Array(CO * CG * KH * KW, seed + 1, 0.3);
  const bias = c.bias ? randomFloat32Array(CO, seed + 2) : undefined;
  const want = convRef(x, c.x, w, c.w, bias, c.o);
  const [sh, sw] = c.o.strides ?? [1, 1];
  const [dh, dw] = c.o.dilations ?? [1, 1];
  const p: Conv2dParams = {
    images: N,
    inChannels: C,
    height: H,
    width: W,
    outChannels: CO,
    group: c.o.group ?? 1,
    kernelH: KH,
    kernelW: KW,
    strideH: sh,
    strideW: sw,
    pads: (c.o.pads ?? [0, 0, 0, 0]) as Conv2dParams['pads'],
    dilationH: dh,
    dilationW: dw,
    outH: want.dims[2],
    outW: want.dims[3],
    hasBias: c.bias,
    activation: c.o.act,
  };
  const inputs: Record<string, Float32Array> = { x, w: packConvWeights(w, p) };
  if (bias) inputs.bias = bias;
  const got = (await runProgram(gpu, conv2dProgram(p, variant), inputs, { y: want.data.length })).y;
  return relL2(got, want.data);
}

describe('packBBands', () => {
  // K·ld over one band (2^22 floats) so that a band boundary falls inside the tensor; 1001 columns
  // pad to 1008, and the source is offset by n0 = 5 columns (rows, with transB).
  const [K, N, n0, columns] = [4200, 1010, 5, 1001];
  for (const transB of [false, true]) {
    it(`packs B band by band as a plain loop does (transB ${transB}), each band's padding zero though its buffer is reused`, () => {
      const data = randomFloat32Array(K * N, transB ? 62 : 61);
      const ld = roundUp(columns, 8);
      const want = new Float32Array(K * ld);
      for (let k = 0; k < K; k++)
        for (let n = 0; n < columns; n++) want[k * ld + n] = transB ? data[(n0 + n) * K + k] : data[k * N + n0 + n];
      const bands = packBBands(floatArrayReader(data), K, N, transB, n0, columns);
      expect(bands.length).toBe(want.length);
      const count = Math.ceil(bands.length / bands.bandLength);
      expect(count).toBeGreaterThan(1);
      const band = new Float32Array(bands.bandLength).fill(Number.NaN);
      const got = new Float32Array(bands.length);
      for (let i = 0; i < count; i++) {
        const out = band.subarray(0, Math.min(bands.bandLength, bands.length - i * bands.bandLength));
        bands.fill(i, out);
        got.set(out, i * bands.bandLength);
      }
      expect(got.findIndex((v, i) => v !== want[i])).toBe(-1);
      // packB makes the same floats whole, batch after batch.
      const twice = new Float32Array(2 * K * N);
      twice.set(data);
      twice.set(data, K * N);
      const packed = packB(twice, K, N, transB, n0, columns, 2);
      expect(packed.length).toBe(2 * want.length);
      expect(packed.findIndex((v, i) => v !== want[i % want.length])).toBe(-1);
    });
  }
});
