// The 'shader-f16' GEMM variants: every one against the float64 reference on shapes off every
// tile (K up to 1024), both layouts of each operand, bias broadcasts and fused activations, within
// a tolerance derived from f16's unit roundoff; a Conv → Gemm model in a Session against
// onnxruntime-node; the refusal on a device without 'shader-f16'; never a default choice.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { Graph } from '../src/graph/ir.ts';
import {
  candidateVariants,
  defaultVariant,
  F16_GEMM_VARIANTS,
  GEMM_VARIANTS,
  gemmProgram,
  gemmTarget,
  variantKey,
  variantRefusal,
  variantRuns,
  type GemmTarget,
  type GemmVariant,
} from '../src/kernels/gemm.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { gemmOpProblem, packB, type GemmOpParams } from '../src/kernels/linear.ts';
import type { Activation } from '../src/kernels/program.ts';
import { wgslOf } from '../src/kernels/shader.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { SessionUsageError } from '../src/runtime/errors.ts';
import { Session } from '../src/runtime/session.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { onnxBytesForOrt, runOrt } from './helpers/reference-models.ts';
import { gemmRef, relL2 } from './helpers/reference-ops.ts';
import { runProgram } from './helpers/run-program.ts';

/** f16's unit roundoff. */
const U16 = 2 ** -11;

/**
 * Per-element error bound, as a multiple of |alpha|·Σ_k |a_k·b_k|.
 * - Every product rounds its two inputs to f16 and itself to f16: relative error ≤ 3u (+O(u²)).
 * - 'f32-accumulate' then sums in f32: at most K·2^-24 more (Higham's γ_K), a rigorous bound.
 * - 'f16-accumulate' sums in f16: the worst case γ_K = K·u is 0.5 at K = 1024 (useless), so the
 *   probabilistic bound of Higham & Mary (2019) applies, λ·√K·u with λ = 6 (rounding errors
 *   independent, mean zero; exceeded with probability below 2·exp(−λ²/2) ≈ 3e-8 per element).
 */
function f16Tolerance(math: NonNullable<GemmVariant['f16']>, K: number): number {
  return math === 'f32-accumulate' ? 3.01 * U16 + 1.01 * K * 2 ** -24 : 3.01 * U16 + 6 * Math.sqrt(K) * U16;
}

/**
 * Bound on normalisedRms. Rounding a product's inputs and result costs about u/√3 each (RMS,
 * relative), independent across terms: about 1 in these units, bounded here by 2. Summing in f16
 * adds the rounding of every partial sum s_k, E[s_k²] ≈ k·mean((a·b)²): about 0.4·√K (measured
 * 0.23·√K on lavapipe), bounded by 0.5·√K + 2.
 */
function expectedRms(math: NonNullable<GemmVariant['f16']>, K: number): number {
  return math === 'f32-accumulate' ? 2 : 0.5 * Math.sqrt(K) + 2;
}

/** A Gemm node's problem as the runtime lowers it (gemmOpProblem), B packed as the runtime packs
 * constant weights ([K][roundUp(N, 8)], vec4 loads) or left as given. */
type Case = GemmOpParams & { name: string; packB: boolean; activation?: Exclude<Activation, { kind: 'sigmoid' }> };

const relu: Activation = { kind: 'relu' };
// Sizes off every tile (8, 16, 24 rows; 8 and 64 columns; 16-deep K steps).
const CASES: Case[] = [
  {
    name: '37×29×1024 packed B, C[N], relu',
    M: 37,
    N: 29,
    K: 1024,
    transA: false,
    transB: true,
    alpha: 1,
    beta: 1,
    cDims: [29],
    activation: relu,
    packB: true,
  },
  {
    name: '70×35×200 AᵀBᵀ, C[M,N], clip α β',
    M: 70,
    N: 35,
    K: 200,
    transA: true,
    transB: true,
    alpha: 1.5,
    beta: 0.25,
    cDims: [70, 35],
    activation: { kind: 'clip', min: -1, max: 1 },
    packB: false,
  },
  {
    name: '19×45×300 Bᵀ, C[M,1], leaky relu',
    M: 19,
    N: 45,
    K: 300,
    transA: false,
    transB: true,
    alpha: 1,
    beta: -2,
    cDims: [19, 1],
    activation: { kind: 'leakyRelu', alpha: 0.1 },
    packB: false,
  },
  { name: '9×20×517 Aᵀ, no C, α', M: 9, N: 20, K: 517, transA: true, transB: false, alpha: 0.5, beta: 1, packB: false },
];

describe('shader-f16 GEMM variants', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  /**
   * Skips, with variantRefusal's reason (the missing feature), a variant this device cannot run:
   * an adapter without shader-f16 has nothing to test here. lavapipe, CI's adapter, has the
   * feature and subgroups of 8, so in CI every case runs.
   */
  const skipUnless = (variant: GemmVariant, ctx: { skip: (note?: string) => void }) => {
    const refusal = variantRefusal(variant, gemmTarget(gpu));
    if (refusal) ctx.skip(refusal);
  };

  it("requests 'shader-f16' on the device whenever the adapter has it", () => {
    expect(gpu.info.deviceFeatures.includes('shader-f16')).toBe(gpu.info.features.includes('shader-f16'));
  });

  for (const variant of F16_GEMM_VARIANTS) {
    describe(variantKey(variant), () => {
      for (const c of CASES) {
        it(c.name, async (ctx) => {
          skipUnless(variant, ctx);
          const { got, want, scale, squares } = await runCase(gpu, c, variant);
          const bound = f16Tolerance(variant.f16!, c.K);
          let worst = 0;
          for (let i = 0; i < want.length; i++) {
            // The epilogue (alpha, bias, activation) runs in f32: 2^-20 covers its roundings.
            const excess = Math.abs(got[i] - want[i]) / (bound * scale[i] + 2 ** -20 * (1 + Math.abs(want[i])));
            worst = Math.max(worst, Number.isNaN(excess) ? Infinity : excess);
          }
          expect(worst, 'largest error as a fraction of its bound').toBeLessThanOrEqual(1);
          // The bound above scales with Σ|a·b|, loose enough to miss a dropped term of the sum; the
          // RMS error in units of u·sqrt(Σ(a·b)²) does not (one term of K missing is about 1/(u·√K) ≥ 64).
          expect(normalisedRms(got, want, squares)).toBeLessThan(expectedRms(variant.f16!, c.K));
          // It really computes in f16: further from float64 than any f32 variant (< 1e-5 there).
          expect(relL2(got, want)).toBeGreaterThan(1e-5);
        });
      }
    });
  }

  it('runs a Conv → Relu → Gemm model in a Session with an f16 variant, as onnxruntime-node does within f16 tolerance', async (ctx) => {
    const variant = F16_GEMM_VARIANTS.find((v) => v.kind === 'register' && v.f16 === 'f16-accumulate')!;
    skipUnless(variant, ctx);
    const g = new Graph();
    g.irVersion = 8;
    g.opsetImports = [{ domain: '', version: 13 }];
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [3, 4, 9, 11] }];
    g.values.set('x', { ...g.inputs[0] });
    const b = new GraphBuilder(g, 7);
    const conv = b.op('Conv', ['x', b.weight('w1', [6, 4, 3, 3], 'glorot'), b.weight('b1', [6], 'glorot')], {
      pads: [1, 1, 1, 1],
    });
    const f = b.op('Flatten', [b.op('Relu', [conv])]);
    const y = b.op('Gemm', [f, b.weight('w2', [10, 6 * 9 * 11], 'glorot'), b.weight('b2', [10], 'glorot')], {
      transB: 1,
    });
    g.outputs = [{ name: y, dtype: 'float32' }];
    const x = { dims: [3, 4, 9, 11], data: randomFloat32Array(3 * 4 * 9 * 11, 91) };
    const want = (await runOrt(onnxBytesForOrt(g), { x }))[y];
    const session = await Session.create(g, { gpu, gemm: variant });
    try {
      const got = (await session.run({ x }))[y];
      expect(got.dims).toEqual(want.dims);
      // Two f16 GEMMs in a row (K = 36, then 594): each contributes a relative L2 error of about
      // u·√(K/2) (f16 sums); 4·u·√594 ≈ 0.048 bounds the pair with a margin of about 3.
      const err = relL2(got.data, want.data);
      expect(err).toBeLessThan(4 * U16 * Math.sqrt(594));
      expect(err).toBeGreaterThan(1e-5); // the f16 variant ran, not an f32 one
    } finally {
      session.dispose();
    }
  });

  it("refuses an f16 variant on a device without 'shader-f16', naming the feature", async () => {
    const withoutF16 = {
      device: gpu.device,
      info: { ...gpu.info, deviceFeatures: gpu.info.deviceFeatures.filter((f) => f !== 'shader-f16') },
    } as unknown as GpuContext;
    const g = new Graph();
    g.irVersion = 8;
    g.opsetImports = [{ domain: '', version: 13 }];
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [2, 5] }];
    g.values.set('x', { ...g.inputs[0] });
    const b = new GraphBuilder(g, 3);
    const y = b.op('Gemm', ['x', b.weight('w', [5, 3], 'glorot')]);
    g.outputs = [{ name: y, dtype: 'float32' }];
    for (const variant of F16_GEMM_VARIANTS) {
      expect(variantRuns(variant, gemmTarget(withoutF16))).toBe(false);
      const refused = Session.create(g, { gpu: withoutF16, gemm: variant });
      await expect(refused).rejects.toBeInstanceOf(SessionUsageError);
      await expect(refused).rejects.toThrow(
        new RegExp(`options\\.gemm: GEMM variant ${variantKey(variant)} needs the 'shader-f16' feature`),
      );
    }
  });

  it("writes `enable f16;` into the f16 variants' WGSL and into no other variant's", () => {
    for (const c of CASES) {
      const problem = gemmOpProblem(c, { packed: c.packB });
      for (const v of F16_GEMM_VARIANTS) expect(wgslOf(gemmProgram(problem, v)).startsWith('enable f16;\n')).toBe(true);
      for (const v of GEMM_VARIANTS) expect(wgslOf(gemmProgram(problem, v))).not.toMatch(/\bf16\b|vec4h/);
    }
  });

  it('never picks an f16 variant by default or among the autotuner candidates', () => {
    const f16Keys = new Set(F16_GEMM_VARIANTS.map(variantKey));
    const targets: GemmTarget[] = [
      { software: true, shaderF16: true },
      { software: true, subgroupSize: 8, shaderF16: true },
      { software: false, shaderF16: true },
      { software: false, subgroupSize: 32, shaderF16: true },
    ];
    for (const t of targets) {
      for (const M of [1, 3, 8, 17, 24, 40, 64, 100, 2048]) {
        expect(f16Keys.has(variantKey(defaultVariant({ M, N: 64 }, t)))).toBe(false);
        for (const v of candidateVariants(t, M)) expect(f16Keys.has(variantKey(v))).toBe(false);
      }
    }
  });
});

/** One case through the variant: the result, the float64 reference, and per element Σ_k |alpha·a_k·b_k|
 * (scale) and Σ_k (alpha·a_k·b_k)² (squares). */
async function runCase(
  gpu: GpuContext,
  c: Case,
  variant: GemmVariant,
): Promise<{ got: Float32Array; want: Float64Array; scale: Float64Array; squares: Float64Array }> {
  const { M, N, K, transA, transB, alpha, beta } = c;
  const seed = M * 1000 + N * 10 + K;
  const a = randomFloat32Array(M * K, seed);
  const b = randomFloat32Array(K * N, seed + 1);
  const bias =
    c.cDims &&
    randomFloat32Array(
      c.cDims.reduce((x, y) => x * y, 1),
      seed + 2,
    );
  const inputs: Record<string, Float32Array> = { a, b: c.packB ? packB(b, K, N, transB) : b };
  if (bias) inputs.bias = bias;
  const problem = gemmOpProblem(c, { packed: c.packB });
  const got = (await runProgram(gpu, gemmProgram(problem, variant), inputs, { c: M * N })).c;
  const shape = { M, N, K, transA, transB };
  const cRef = bias && c.cDims ? { data: bias, dims: c.cDims } : undefined;
  const want = gemmRef(a, b, { ...shape, alpha, beta, c: cRef, act: c.activation });
  const scale = gemmRef(a.map(Math.abs), b.map(Math.abs), { ...shape, alpha: Math.abs(alpha) });
  const squares = gemmRef(
    a.map((v) => v * v),
    b.map((v) => v * v),
    { ...shape, alpha: alpha * alpha },
  );
  return { got, want, scale, squares };
}

/**
 * sqrt(mean_i err_i² / (u²·Σ_k (alpha·a_k·b_k)²)): the RMS error in units of what rounding each
 * product's inputs and result to f16 costs when the errors are independent (about 1 per element).
 */
function normalisedRms(got: ArrayLike<number>, want: ArrayLike<number>, squares: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < want.length; i++) sum += (got[i] - want[i]) ** 2 / (U16 ** 2 * squares[i] + 2 ** -40);
  return Math.sqrt(sum / want.length);
}
