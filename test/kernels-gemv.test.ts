// The split-K GEMV (batch-1 and small-M dense layers): seeded random inputs against the float64
// reference for shapes with K and N off every block size, weights given either way (transB) and
// packed as the runtime packs them, bias broadcasts, fused activations, one slice and several,
// column chunks (nOffset); NaN propagation; the Gemm lowering's choice; a Gemm model against
// onnxruntime-node.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { Graph } from '../src/graph/ir.ts';
import type { GemmProblem } from '../src/kernels/gemm.ts';
import {
  defaultGemvVariant,
  dotGemvProgram,
  dotGemvUnsupported,
  gemvPrograms,
  gemvUnsupported,
  GEMV_MAX_ROWS,
  type DotGemvVariant,
  type GemvVariant,
} from '../src/kernels/gemv.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { floatArrayReader, gemmOpProblem, packB, storedRowBands, type GemmOpParams } from '../src/kernels/linear.ts';
import type { Activation } from '../src/kernels/program.ts';
import { loadModelFile, saveModelFile } from '../src/node/files.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Session } from '../src/runtime/session.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { onnxBytesForOrt, runOrt } from './helpers/reference-models.ts';
import { gemmRef, relL2 } from './helpers/reference-ops.ts';
import { runProgram } from './helpers/run-program.ts';

interface Case {
  name: string;
  M: number;
  K: number;
  N: number;
  transB?: boolean;
  alpha?: number;
  bias?: { dims: number[]; beta?: number };
  act?: Exclude<Activation, { kind: 'sigmoid' }>;
}

const CASES: Case[] = [
  { name: '1×1→1', M: 1, K: 1, N: 1 },
  {
    name: '1×7→13 (K % 4 ≠ 0) Bᵀ bias[N] relu',
    M: 1,
    K: 7,
    N: 13,
    transB: true,
    bias: { dims: [13] },
    act: { kind: 'relu' },
  },
  {
    name: '3×300→40 bias[M,N] leaky relu α β',
    M: 3,
    K: 300,
    N: 40,
    alpha: 0.5,
    bias: { dims: [3, 40], beta: -2 },
    act: { kind: 'leakyRelu', alpha: 0.1 },
  },
  {
    name: '2×1030→517 Bᵀ bias[1,1] clip',
    M: 2,
    K: 1030,
    N: 517,
    transB: true,
    bias: { dims: [1, 1], beta: 3 },
    act: { kind: 'clip', min: -2, max: 2 },
  },
  {
    name: '4×2048→1000 Bᵀ bias[N] leaky relu',
    M: 4,
    K: 2048,
    N: 1000,
    transB: true,
    bias: { dims: [1000] },
    act: { kind: 'leakyRelu', alpha: 0.2 },
  },
  { name: '1×4099→70 bias[M,1]', M: 1, K: 4099, N: 70, bias: { dims: [1, 1] } },
];

const VARIANTS: GemvVariant[] = [
  { colsPerLane: 8, workgroupSize: 64, splitK: 1 },
  { colsPerLane: 4, workgroupSize: 8, splitK: 1 },
  { colsPerLane: 8, workgroupSize: 64, splitK: 3 },
  { colsPerLane: 4, workgroupSize: 32, splitK: 7 },
];

const variantName = (v: GemvVariant) =>
  `${v.colsPerLane} columns per lane, workgroups of ${v.workgroupSize}, split K ${v.splitK}`;

function opParams(c: Case): GemmOpParams {
  return {
    M: c.M,
    N: c.N,
    K: c.K,
    transA: false,
    transB: c.transB ?? false,
    alpha: c.alpha ?? 1,
    beta: c.bias?.beta ?? 1,
    cDims: c.bias?.dims,
    activation: c.act,
  };
}

/** Runs the case's problem (columns [n0, n0 + columns) of it, the weights packed as the runtime packs them) into `y`. */
async function runChunk(
  gpu: GpuContext,
  c: Case,
  v: GemvVariant,
  data: { a: Float32Array; b: Float32Array; bias?: Float32Array },
  y: Float32Array,
  n0 = 0,
  columns = c.N,
): Promise<void> {
  const problem = gemmOpProblem(opParams(c), { packed: true, nOffset: n0, columns });
  expect(gemvUnsupported(problem)).toBeUndefined();
  const plan = gemvPrograms(problem, v);
  expect(plan.programs.length).toBe(plan.partialFloats ? 2 : 1);
  const inputs: Record<string, Float32Array> = {
    a: data.a,
    b: packB(data.b, c.K, c.N, c.transB ?? false, n0, columns),
  };
  if (data.bias) inputs.bias = data.bias;
  const sizes: Record<string, number> = { c: c.M * c.N };
  if (plan.partialFloats) sizes.partial = plan.partialFloats;
  const out = await runProgram(gpu, plan.programs, inputs, sizes);
  for (let m = 0; m < c.M; m++) for (let n = n0; n < n0 + columns; n++) y[m * c.N + n] = out.c[m * c.N + n];
}

function caseData(c: Case, seed: number) {
  const a = randomFloat32Array(c.M * c.K, seed);
  const b = randomFloat32Array(c.K * c.N, seed + 1);
  const bias = c.bias
    ? randomFloat32Array(
        c.bias.dims.reduce((x, d) => x * d, 1),
        seed + 2,
      )
    : undefined;
  return { a, b, bias };
}

function reference(c: Case, d: ReturnType<typeof caseData>): Float64Array {
  return gemmRef(d.a, d.b, {
    M: c.M,
    N: c.N,
    K: c.K,
    transB: c.transB,
    alpha: c.alpha,
    beta: c.bias?.beta,
    c: d.bias && c.bias ? { data: d.bias, dims: c.bias.dims } : undefined,
    act: c.act,
  });
}

/** A test per case: `run` computes the case's whole output into `y`, compared with the float64 reference. */
function itComputesEveryCase(
  run: (c: Case, d: ReturnType<typeof caseData>, y: Float32Array) => Promise<void>,
  seed: number,
): void {
  CASES.forEach((c, i) => {
    it(c.name, async () => {
      const d = caseData(c, seed + 10 * i);
      const y = new Float32Array(c.M * c.N);
      await run(c, d, y);
      expect(relL2(y, reference(c, d))).toBeLessThan(1e-5);
    });
  });
}

/** NaN where the reference has NaN, the same infinity where it has one, close elsewhere; and at least `least` such specials. */
function expectSpecialsAsReference(got: Float32Array, want: Float64Array, least: number): void {
  let specials = 0;
  for (let i = 0; i < want.length; i++) {
    if (Number.isNaN(want[i])) {
      specials++;
      expect(got[i], `[${i}] NaN`).toBeNaN();
    } else if (!Number.isFinite(want[i])) {
      specials++;
      expect(got[i], `[${i}]`).toBe(want[i]);
    } else {
      expect(Math.abs(got[i] - want[i]), `[${i}]`).toBeLessThan(1e-4 * (1 + Math.abs(want[i])));
    }
  }
  expect(specials).toBeGreaterThanOrEqual(least);
}

describe('split-K GEMV', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  for (const v of VARIANTS) {
    describe(variantName(v), () => itComputesEveryCase((c, d, y) => runChunk(gpu, c, v, d, y), 100));
  }

  it('computes a wide layer in column chunks (nOffset), each a GEMV with its own slices, as the runtime splits weights over bindings', async () => {
    const c: Case = { name: 'chunks', M: 2, K: 1500, N: 45, transB: true, bias: { dims: [45] }, act: { kind: 'relu' } };
    const d = caseData(c, 7);
    const y = new Float32Array(c.M * c.N);
    for (let n0 = 0; n0 < c.N; n0 += 16) await runChunk(gpu, c, VARIANTS[2], d, y, n0, Math.min(16, c.N - n0));
    expect(relL2(y, reference(c, d))).toBeLessThan(1e-5);
  });

  it('propagates NaN and ±Inf: a poisoned input row, a poisoned weight column, through relu, one slice and several', async () => {
    const c: Case = { name: 'nan', M: 3, K: 600, N: 20, transB: true, bias: { dims: [20] }, act: { kind: 'relu' } };
    for (const v of [VARIANTS[0], VARIANTS[2]]) {
      const d = caseData(c, 31);
      d.a[1 * c.K + 17] = NaN; // row 1: all NaN
      d.b[5 * c.K + 400] = Infinity; // column 5 (transB: row 5 of W): ±∞ or NaN where rows meet it
      d.a[2 * c.K + 400] = 0; // row 2 meets it with 0: 0·∞ = NaN
      const want = reference(c, d);
      const got = new Float32Array(c.M * c.N);
      await runChunk(gpu, c, v, d, got);
      expectSpecialsAsReference(got, want, c.N + 1);
    }
  });

  it('says why a problem is no GEMV', () => {
    const base = gemmOpProblem(opParams({ name: '', M: 2, K: 8, N: 8 }), { packed: true });
    expect(gemvUnsupported(base)).toBeUndefined();
    const cases: [Partial<GemmProblem>, RegExp][] = [
      [{ M: GEMV_MAX_ROWS + 1 }, /M = 5 > 4/],
      [{ batch: 2 }, /batch 2/],
      [{ a: { kind: 'matrix', layout: 'km', batchStride: 0 } }, /column-major/],
      [{ b: { layout: 'nk', batchStride: 0, ld: 8 } }, /\[K\]\[ld\]/],
      [{ b: { layout: 'kn', batchStride: 0, ld: 10 } }, /multiple of 4/],
      [{ N: 9 }, /at least N rounded up to 8 \(16\)/],
      [{ accumulate: true }, /accumulated/],
    ];
    for (const [change, why] of cases) {
      const p = { ...base, ...change } as GemmProblem;
      expect(gemvUnsupported(p)).toMatch(why);
      expect(() => gemvPrograms(p, VARIANTS[0])).toThrow(why);
    }
    expect(() => gemvPrograms(base, { ...VARIANTS[0], splitK: 0 })).toThrow(/splitK must be a positive integer, got 0/);
  });

  it('splits K only where columns are too few to fill the device, in slices of 512 or more', () => {
    expect(defaultGemvVariant({ N: 6, K: 20 }).splitK).toBe(1);
    const fc = defaultGemvVariant({ N: 1000, K: 2048 });
    expect(fc.splitK).toBeGreaterThan(1);
    expect(2048 / fc.splitK).toBeGreaterThanOrEqual(512);
  });

  it('runs a batch-1 Gemm model (Flatten → Gemm → Relu → Gemm) as onnxruntime-node does, through the GEMV', async () => {
    const g = new Graph();
    g.irVersion = 8;
    g.opsetImports = [{ domain: '', version: 13 }];
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [1, 2, 17, 31] }];
    g.values.set('x', { ...g.inputs[0] });
    const b = new GraphBuilder(g, 5);
    const f = b.op('Flatten', ['x']);
    const h = b.op('Relu', [
      b.op('Gemm', [f, b.weight('w1', [300, 1054], 'glorot'), b.weight('b1', [300], 'glorot')], { transB: 1 }),
    ]);
    const y = b.op('Gemm', [h, b.weight('w2', [300, 10], 'glorot'), b.weight('b2', [10], 'glorot')], { alpha: 0.5 });
    g.outputs = [{ name: y, dtype: 'float32' }];
    const x = { dims: [1, 2, 17, 31], data: randomFloat32Array(2 * 17 * 31, 77) };
    const want = (await runOrt(onnxBytesForOrt(g), { x }))[y];
    const session = await Session.create(g, { gpu, denseKernel: 'gemv' });
    try {
      // Gemm 1 (K = 1054 in slices) + its sum, Gemm 2 in one pass: three kernels, the Relu inside.
      expect(session.planStats.steps).toBe(3);
      const got = (await session.run({ x }))[y];
      expect(got.dims).toEqual(want.dims);
      expect(relL2(got.data, want.data)).toBeLessThan(1e-5);
    } finally {
      session.dispose();
    }
    // By default a software adapter runs these layers in two kernels (the first, transB, on the
    // dot GEMV; the second on the GEMM core), a GPU on the GEMV.
    const defaulted = await Session.create(g, { gpu });
    try {
      expect(defaulted.planStats.steps).toBe(gpu.info.isSoftware ? 2 : 3);
      expect(relL2((await defaulted.run({ x }))[y].data, want.data)).toBeLessThan(1e-5);
    } finally {
      defaulted.dispose();
    }
  });
});

/** B [N][K] (as a Gemm with transB stores it) from a case's B, given either way. */
function storedRows(c: Case, b: Float32Array): Float32Array {
  if (c.transB) return b;
  const rows = new Float32Array(c.N * c.K);
  for (let k = 0; k < c.K; k++) for (let n = 0; n < c.N; n++) rows[n * c.K + k] = b[k * c.N + n];
  return rows;
}

/** Runs columns [n0, n0 + columns) of the case on the dot GEMV, B bound as stored (rows n0… of [N][K]), into `y`. */
async function runDotChunk(
  gpu: GpuContext,
  c: Case,
  v: DotGemvVariant,
  data: { a: Float32Array; b: Float32Array; bias?: Float32Array },
  y: Float32Array,
  n0 = 0,
  columns = c.N,
): Promise<void> {
  const problem = gemmOpProblem({ ...opParams(c), transB: true }, { packed: false, nOffset: n0, columns });
  expect(dotGemvUnsupported(problem)).toBeUndefined();
  const inputs: Record<string, Float32Array> = {
    a: data.a,
    b: storedRows(c, data.b).slice(n0 * c.K, (n0 + columns) * c.K),
  };
  if (data.bias) inputs.bias = data.bias;
  const out = await runProgram(gpu, [dotGemvProgram(problem, v)], inputs, { c: c.M * c.N });
  for (let m = 0; m < c.M; m++) for (let n = n0; n < n0 + columns; n++) y[m * c.N + n] = out.c[m * c.N + n];
}

const DOT_VARIANTS: DotGemvVariant[] = [
  { rowsPerLane: 1, workgroupSize: 8 },
  { rowsPerLane: 2, workgroupSize: 32 },
  { rowsPerLane: 4, workgroupSize: 8 },
];

describe('dot GEMV (B as stored, [N][K])', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  for (const v of DOT_VARIANTS) {
    describe(`${v.rowsPerLane} rows per lane, workgroups of ${v.workgroupSize}`, () =>
      itComputesEveryCase((c, d, y) => runDotChunk(gpu, c, v, d, y), 300));
  }

  it('computes a wide layer in chunks of B rows (nOffset), as the runtime splits weights over bindings', async () => {
    const c: Case = { name: 'chunks', M: 3, K: 1502, N: 45, transB: true, bias: { dims: [45] }, act: { kind: 'relu' } };
    const d = caseData(c, 9);
    const y = new Float32Array(c.M * c.N);
    for (let n0 = 0; n0 < c.N; n0 += 16) await runDotChunk(gpu, c, DOT_VARIANTS[1], d, y, n0, Math.min(16, c.N - n0));
    expect(relL2(y, reference(c, d))).toBeLessThan(1e-5);
  });

  it('propagates NaN and ±Inf from an input row and a weight row', async () => {
    const c: Case = { name: 'nan', M: 3, K: 600, N: 20, transB: true, bias: { dims: [20] }, act: { kind: 'relu' } };
    const d = caseData(c, 33);
    d.a[1 * c.K + 17] = NaN;
    d.b[5 * c.K + 400] = Infinity;
    d.a[2 * c.K + 400] = 0;
    const want = reference(c, d);
    const got = new Float32Array(c.M * c.N);
    await runDotChunk(gpu, c, DOT_VARIANTS[1], d, got);
    expectSpecialsAsReference(got, want, c.N + 1);
  });

  it('says why a problem is no dot GEMV', () => {
    const base = gemmOpProblem(opParams({ name: '', M: 2, K: 8, N: 8, transB: true }), { packed: false });
    expect(dotGemvUnsupported(base)).toBeUndefined();
    const cases: [Partial<GemmProblem>, RegExp][] = [
      [{ M: GEMV_MAX_ROWS + 1 }, /M = 5 > 4/],
      [{ batch: 2 }, /batch 2/],
      [{ a: { kind: 'matrix', layout: 'km', batchStride: 0 } }, /column-major/],
      [{ b: { layout: 'kn', batchStride: 0, ld: 8 } }, /not stored as \[N\]\[K\]/],
      [{ accumulate: true }, /accumulated/],
    ];
    for (const [change, why] of cases) {
      const p = { ...base, ...change } as GemmProblem;
      expect(dotGemvUnsupported(p)).toMatch(why);
      expect(() => dotGemvProgram(p)).toThrow(why);
    }
  });

  it('reads stored rows band by band: the bands, one after another, are the rows', () => {
    // 1500 rows of 3001 floats from row 7: over one band (2^22 floats), so a band boundary falls inside.
    const [K, n0, rows] = [3001, 7, 1500];
    const data = randomFloat32Array((n0 + rows + 3) * K, 71);
    const bands = storedRowBands(floatArrayReader(data), K, n0, rows);
    expect(bands.length).toBe(rows * K);
    const count = Math.ceil(bands.length / bands.bandLength);
    expect(count).toBeGreaterThan(1);
    const got = new Float32Array(bands.length);
    for (let i = 0; i < count; i++)
      bands.fill(i, got.subarray(i * bands.bandLength, Math.min(bands.length, (i + 1) * bands.bandLength)));
    const want = data.subarray(n0 * K, (n0 + rows) * K);
    // One mismatch found by a loop (toEqual over millions of floats takes seconds).
    const firstMismatch = got.findIndex((v, i) => v !== want[i]);
    expect(firstMismatch).toBe(-1);
  });

  it('runs a transB dense layer left in its file, over the binding limit, as onnxruntime-node does, with no packing', async () => {
    // W [1100, 4000] (17.6 MB, more than a band) in chunks of 64 rows under a 1 MiB binding limit.
    const g = new Graph();
    g.irVersion = 8;
    g.opsetImports = [{ domain: '', version: 13 }];
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [2, 4000] }];
    g.values.set('x', { ...g.inputs[0] });
    const b = new GraphBuilder(g, 6);
    const y = b.op('Relu', [
      b.op('Gemm', ['x', b.weight('w', [1100, 4000], 'glorot'), b.weight('bias', [1100], 'glorot')], { transB: 1 }),
    ]);
    g.outputs = [{ name: y, dtype: 'float32' }];
    const x = { dims: [2, 4000], data: randomFloat32Array(8000, 78) };
    const want = (await runOrt(onnxBytesForOrt(g), { x }))[y];
    const dir = mkdtempSync(join(tmpdir(), 'graft-dot-gemv-'));
    try {
      const file = join(dir, 'dense.onnx');
      saveModelFile(g, file);
      const session = await Session.create(loadModelFile(file, { leaveTensorsInFile: true }), {
        gpu,
        denseKernel: 'dot',
        maxBindingBytes: 1 << 20,
      });
      try {
        expect(session.planStats.steps).toBe(Math.ceil(1100 / Math.floor((1 << 20) / (4 * 4000))));
        // The weights as stored: no padding to 8 columns.
        expect(session.weightBytes).toBe(1100 * 4000 * 4 + 1100 * 4);
        const got = (await session.run({ x }))[y];
        expect(relL2(got.data, want.data)).toBeLessThan(1e-5);
      } finally {
        session.dispose();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
