// Each forward op family against the float64 reference at a few shapes: strides, padding,
// groups, depthwise, dilation, ceil_mode, count_include_pad, broadcasting, both softmax rules.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeGpuContext } from '../src/node/index.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { GEMM_VARIANTS, gemmProgram, variantKey, type GemmVariant } from '../src/kernels/gemm.ts';
import { packConvWeights, type Conv2dParams } from '../src/kernels/conv.ts';
import { conv2dProgram, runProgram } from './helpers/run-program.ts';
import { globalPoolProgram, pool2dProgram } from '../src/kernels/pool.ts';
import { batchNormProgram, foldBatchNormIntoConv, lrnProgram } from '../src/kernels/normalization.ts';
import { broadcastProgram, unaryProgram, type UnaryOp } from '../src/kernels/elementwise.ts';
import { concatSliceProgram, padProgram, softmaxProgram, transposeProgram } from '../src/kernels/transform.ts';
import { columnChunk, gemmOpProblem, matmulProblem, packB } from '../src/kernels/linear.ts';
import type { KernelProgram } from '../src/kernels/program.ts';
import { randomFloat32Array } from './helpers/random.ts';
import {
  batchNormRef,
  broadcastRef,
  concatRef,
  convRef,
  gemmRef,
  globalPoolRef,
  lrnRef,
  matmulRef,
  padRef,
  poolOutputSize,
  poolRef,
  relL2,
  sigmoid,
  softmaxRef,
  transposeRef,
  unaryRef,
  type Act,
} from './helpers/reference-ops.ts';

const TOLERANCE = 1e-5;
let seed = 100;
const rand = (n: number, scale = 1) => randomFloat32Array(n, seed++, scale);

describe('forward ops', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  async function run(
    program: KernelProgram,
    inputs: Record<string, Float32Array>,
    out: string,
    size: number,
  ): Promise<Float32Array> {
    return (await runProgram(gpu, program, inputs, { [out]: size }))[out];
  }

  describe('Conv (implicit GEMM)', () => {
    interface ConvCase {
      name: string;
      x: [number, number, number, number];
      w: [number, number, number, number];
      strides?: [number, number];
      pads?: [number, number, number, number];
      dilations?: [number, number];
      group?: number;
      bias?: boolean;
      act?: Act;
    }
    const cases: ConvCase[] = [
      {
        name: '3×3 pad 1, bias, relu',
        x: [2, 5, 9, 11],
        w: [7, 5, 3, 3],
        pads: [1, 1, 1, 1],
        bias: true,
        act: { kind: 'relu' },
      },
      {
        name: '3×3 stride 2, asymmetric pads',
        x: [1, 4, 10, 9],
        w: [6, 4, 3, 3],
        strides: [2, 2],
        pads: [0, 1, 1, 0],
        bias: true,
        act: { kind: 'relu' },
      },
      {
        name: '5×5 dilation 2, pad 3',
        x: [1, 3, 13, 12],
        w: [9, 3, 5, 5],
        dilations: [2, 2],
        pads: [3, 3, 3, 3],
        bias: true,
        act: { kind: 'relu' },
      },
      {
        name: 'groups 2 (AlexNet-style)',
        x: [1, 6, 8, 8],
        w: [10, 3, 3, 3],
        pads: [1, 1, 1, 1],
        group: 2,
        bias: true,
        act: { kind: 'relu' },
      },
      {
        name: 'depthwise 3×3',
        x: [2, 8, 7, 7],
        w: [8, 1, 3, 3],
        pads: [1, 1, 1, 1],
        group: 8,
        bias: true,
        act: { kind: 'relu' },
      },
      {
        name: '7×7 stride 2 no pad, clip',
        x: [1, 3, 20, 17],
        w: [5, 3, 7, 7],
        strides: [2, 2],
        bias: true,
        act: { kind: 'clip', min: -0.3, max: 0.6 },
      },
      { name: '1×1 stride 2 (downsample), no bias', x: [1, 16, 9, 9], w: [12, 16, 1, 1], strides: [2, 2] },
      { name: '1×1 pointwise, batch 2', x: [2, 13, 6, 6], w: [20, 13, 1, 1], bias: true, act: { kind: 'relu' } },
      { name: '1×1 pointwise, odd spatial', x: [1, 9, 5, 3], w: [11, 9, 1, 1], bias: true, act: { kind: 'relu' } },
    ];
    // Every case on the default lavapipe variant and the workgroup-memory one; a few on the
    // other register tiles (TM = 1 and 16 take other code paths in the A loads).
    const runs: [GemmVariant, ConvCase[]][] = [
      [GEMM_VARIANTS[0], cases],
      [GEMM_VARIANTS[5], cases],
      [GEMM_VARIANTS[3], [cases[0], cases[4], cases[8]]],
      [GEMM_VARIANTS[1], [cases[1], cases[7]]],
    ];
    for (const [variant, some] of runs) {
      for (const c of some) {
        it(`${c.name} [${variantKey(variant)}]`, async () => {
          const [N, C, H, W] = c.x;
          const [CO, CG, KH, KW] = c.w;
          const [sh, sw] = c.strides ?? [1, 1];
          const pads = c.pads ?? [0, 0, 0, 0];
          const [dh, dw] = c.dilations ?? [1, 1];
          const x = rand(N * C * H * W);
          const w = rand(CO * CG * KH * KW, 0.3);
          const bias = c.bias ? rand(CO) : undefined;
          const want = convRef(x, c.x, w, c.w, bias, {
            strides: [sh, sw],
            pads,
            dilations: [dh, dw],
            group: c.group,
            act: c.act,
          });
          const p: Conv2dParams = {
            images: N,
            inChannels: C,
            height: H,
            width: W,
            outChannels: CO,
            group: c.group ?? 1,
            kernelH: KH,
            kernelW: KW,
            strideH: sh,
            strideW: sw,
            pads: pads as [number, number, number, number],
            dilationH: dh,
            dilationW: dw,
            outH: want.dims[2],
            outW: want.dims[3],
            hasBias: !!bias,
            activation: c.act,
          };
          const inputs: Record<string, Float32Array> = { x, w: packConvWeights(w, p) };
          if (bias) inputs.bias = bias;
          const got = await run(conv2dProgram(p, variant), inputs, 'y', want.data.length);
          expect(relL2(got, want.data)).toBeLessThan(TOLERANCE);
        });
      }
    }

    it('BatchNormalization folded into the conv equals conv then BN', async () => {
      const xd = [1, 4, 6, 6],
        wd = [5, 4, 3, 3];
      const x = rand(144),
        w = rand(180, 0.3),
        b = rand(5);
      const scale = rand(5),
        shift = rand(5),
        mean = rand(5),
        variance = rand(5).map((v) => Math.abs(v) + 0.1);
      const conv = convRef(x, xd, w, wd, b, { pads: [1, 1, 1, 1] });
      const want = batchNormRef(conv.data, conv.dims, scale, shift, mean, variance, 1e-5).map((v) => Math.max(v, 0));
      const folded = foldBatchNormIntoConv(w, b, 5, { scale, bias: shift, mean, variance, epsilon: 1e-5 });
      const p: Conv2dParams = {
        images: 1,
        inChannels: 4,
        height: 6,
        width: 6,
        outChannels: 5,
        group: 1,
        kernelH: 3,
        kernelW: 3,
        strideH: 1,
        strideW: 1,
        pads: [1, 1, 1, 1],
        dilationH: 1,
        dilationW: 1,
        outH: 6,
        outW: 6,
        hasBias: true,
        activation: { kind: 'relu' },
      };
      const got = await run(
        conv2dProgram(p, GEMM_VARIANTS[0]),
        { x, w: packConvWeights(folded.weights, p), bias: folded.bias },
        'y',
        want.length,
      );
      expect(relL2(got, want)).toBeLessThan(TOLERANCE);
    });
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
      { name: 'max 3×3 s2', kind: 'max', x: [2, 3, 11, 11], k: [3, 3], s: [2, 2] },
      { name: 'max 3×3 s2 pad 1', kind: 'max', x: [1, 4, 10, 9], k: [3, 3], s: [2, 2], pads: [1, 1, 1, 1] },
      { name: 'max 3×3 s2 ceil_mode', kind: 'max', x: [1, 3, 10, 10], k: [3, 3], s: [2, 2], ceil: true },
      { name: 'max 2×2 dilation 2', kind: 'max', x: [1, 2, 9, 8], k: [2, 2], d: [2, 2] },
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
      { name: 'avg 7×7 pads end 1 (Inception tail)', kind: 'avg', x: [1, 4, 7, 7], k: [7, 7], pads: [0, 0, 1, 1] },
    ];
    for (const c of cases) {
      it(c.name, async () => {
        const x = rand(c.x.reduce((a, b) => a * b, 1));
        const o = {
          kernel: c.k,
          strides: c.s,
          pads: c.pads,
          dilations: c.d,
          ceilMode: c.ceil,
          countIncludePad: c.include,
        };
        const want = poolRef(c.kind, x, c.x, o);
        const [s, pads, d] = [c.s ?? [1, 1], c.pads ?? [0, 0, 0, 0], c.d ?? [1, 1]];
        expect(want.dims[2]).toBe(poolOutputSize(c.x[2], c.k[0], s[0], pads[0], pads[2], d[0], !!c.ceil));
        const program = pool2dProgram({
          kind: c.kind,
          planes: c.x[0] * c.x[1],
          height: c.x[2],
          width: c.x[3],
          outH: want.dims[2],
          outW: want.dims[3],
          kernelH: c.k[0],
          kernelW: c.k[1],
          strideH: s[0],
          strideW: s[1],
          pads: pads as [number, number, number, number],
          dilationH: d[0],
          dilationW: d[1],
          countIncludePad: c.include,
        });
        expect(relL2(await run(program, { x }, 'y', want.data.length), want.data)).toBeLessThan(TOLERANCE);
      });
    }
    for (const kind of ['max', 'avg'] as const) {
      it(`global ${kind} pool`, async () => {
        const dims = [2, 5, 7, 9];
        const x = rand(630);
        const want = globalPoolRef(kind, x, dims);
        expect(relL2(await run(globalPoolProgram(kind, 10, 63), { x }, 'y', 10), want.data)).toBeLessThan(TOLERANCE);
      });
    }
  });

  describe('normalisation', () => {
    it('BatchNormalization (inference)', async () => {
      const dims = [2, 6, 5, 4];
      const x = rand(240),
        scale = rand(6),
        bias = rand(6),
        mean = rand(6),
        variance = rand(6).map((v) => v * v + 0.05);
      const want = batchNormRef(x, dims, scale, bias, mean, variance, 1e-3);
      const got = await run(batchNormProgram(2, 6, 20, 1e-3), { x, scale, bias, mean, var: variance }, 'y', 240);
      expect(relL2(got, want)).toBeLessThan(TOLERANCE);
    });
    for (const size of [5, 4]) {
      it(`LRN size ${size}`, async () => {
        const dims = [2, 9, 4, 3];
        const x = rand(216, 3);
        const o = { size, alpha: 1e-2, beta: 0.75, bias: 1.5 };
        const want = lrnRef(x, dims, o);
        const got = await run(lrnProgram({ images: 2, channels: 9, spatial: 12, ...o }), { x }, 'y', 216);
        expect(relL2(got, want)).toBeLessThan(TOLERANCE);
      });
    }
  });

  describe('elementwise', () => {
    const unary: [string, UnaryOp, (v: number) => number][] = [
      ['Relu', { kind: 'relu' }, (v) => Math.max(v, 0)],
      ['LeakyRelu', { kind: 'leakyRelu', alpha: 0.07 }, (v) => (v >= 0 ? v : 0.07 * v)],
      ['Clip', { kind: 'clip', min: -0.4, max: 0.9 }, (v) => Math.min(Math.max(v, -0.4), 0.9)],
      ['Sigmoid', { kind: 'sigmoid' }, sigmoid],
      ['Tanh', { kind: 'tanh' }, Math.tanh],
    ];
    for (const [name, op, f] of unary) {
      it(name, async () => {
        const x = rand(1000, 2);
        expect(relL2(await run(unaryProgram(op, 1000), { x }, 'y', 1000), unaryRef(x, f))).toBeLessThan(TOLERANCE);
      });
    }
    const binary: [string, 'add' | 'sub' | 'mul' | 'div', number[], number[], (a: number, b: number) => number][] = [
      ['Add [2,3,4,5] + [3,1,1] (per channel)', 'add', [2, 3, 4, 5], [3, 1, 1], (a, b) => a + b],
      ['Sub [4,5] − [] (scalar)', 'sub', [4, 5], [], (a, b) => a - b],
      ['Mul [4,1] × [3] (outer)', 'mul', [4, 1], [3], (a, b) => a * b],
      ['Div [2,1,6] ÷ [5,1]', 'div', [2, 1, 6], [5, 1], (a, b) => a / b],
      ['Add same shape [3,7]', 'add', [3, 7], [3, 7], (a, b) => a + b],
    ];
    for (const [name, op, da, db, f] of binary) {
      it(name, async () => {
        const a = { data: rand(da.reduce((x, y) => x * y, 1)), dims: da };
        const b = {
          data:
            op === 'div'
              ? rand(db.reduce((x, y) => x * y, 1)).map((v) => v + Math.sign(v) * 0.5)
              : rand(db.reduce((x, y) => x * y, 1)),
          dims: db,
        };
        const want = broadcastRef([a, b], f);
        const got = await run(
          broadcastProgram(op, [da, db], want.dims),
          { x0: a.data, x1: b.data },
          'y',
          want.data.length,
        );
        expect(relL2(got, want.data)).toBeLessThan(TOLERANCE);
      });
    }
    it('Sum of three with broadcasting and a fused Relu', async () => {
      const ts = [
        { dims: [2, 3, 4], data: rand(24) },
        { dims: [3, 1], data: rand(3) },
        { dims: [2, 3, 4], data: rand(24) },
      ];
      const want = broadcastRef(ts, (a, b, c) => Math.max(a + b + c, 0));
      const got = await run(
        broadcastProgram(
          'add',
          ts.map((t) => t.dims),
          want.dims,
          { kind: 'relu' },
        ),
        { x0: ts[0].data, x1: ts[1].data, x2: ts[2].data },
        'y',
        24,
      );
      expect(relL2(got, want.data)).toBeLessThan(TOLERANCE);
    });
  });

  describe('data movement', () => {
    for (const axis of [0, 1, 2]) {
      it(`Concat axis ${axis}`, async () => {
        const shapes = [
          [2, 3, 4],
          [2, 3, 4],
          [2, 3, 4],
        ].map((s, i) => s.map((d, k) => (k === axis ? d + i : d)));
        const ts = shapes.map((dims) => ({ dims, data: rand(dims.reduce((a, b) => a * b, 1)) }));
        const want = concatRef(ts, axis);
        const outer = want.dims.slice(0, axis).reduce((a, b) => a * b, 1);
        const outInner = want.dims.slice(axis).reduce((a, b) => a * b, 1);
        // One copy program per input into a shared output: run them in sequence on the host.
        const got = new Float32Array(want.data.length);
        let offset = 0;
        for (const t of ts) {
          const inner = t.dims.slice(axis).reduce((a, b) => a * b, 1);
          const part = await run(
            concatSliceProgram('forward', outer, inner, outInner, offset),
            { x: t.data },
            'y',
            want.data.length,
          );
          for (let o = 0; o < outer; o++)
            for (let i = 0; i < inner; i++) got[o * outInner + offset + i] = part[o * outInner + offset + i];
          offset += inner;
        }
        expect(relL2(got, want.data)).toBeLessThan(TOLERANCE);
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
    ] as [number[], number[]][]) {
      it(`Transpose [${dims}] perm (${perm})`, async () => {
        const x = rand(dims.reduce((a, b) => a * b, 1));
        const want = transposeRef(x, dims, perm);
        expect(relL2(await run(transposeProgram(dims, perm), { x }, 'y', x.length), want.data)).toBeLessThan(TOLERANCE);
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
    ] as [number[], number[]][]) {
      it(`Pad (constant) [${dims}] pads (${pads})`, async () => {
        const x = rand(dims.reduce((a, b) => a * b, 1));
        const want = padRef(x, dims, pads, 0.75);
        expect(relL2(await run(padProgram(dims, pads, 0.75), { x }, 'y', want.data.length), want.data)).toBeLessThan(
          TOLERANCE,
        );
      });
    }
    it('Softmax opset 11 (coerced to 2-D at axis 1) and opset 13 (axis 1 alone)', async () => {
      const dims = [2, 3, 4];
      const x = rand(24, 3);
      const old = await run(softmaxProgram(2, 12, 1), { x }, 'y', 24);
      expect(relL2(old, softmaxRef(x, dims, 1, 11))).toBeLessThan(TOLERANCE);
      const now = await run(softmaxProgram(2, 3, 4), { x }, 'y', 24);
      expect(relL2(now, softmaxRef(x, dims, 1, 13))).toBeLessThan(TOLERANCE);
    });
  });

  describe('Gemm and MatMul ops', () => {
    it('Gemm transA, transB, alpha, beta, C [M,1], relu', async () => {
      const M = 6,
        N = 11,
        K = 9;
      const a = rand(K * M),
        b = rand(N * K),
        c = rand(M);
      const want = gemmRef(a, b, {
        M,
        N,
        K,
        transA: true,
        transB: true,
        alpha: 0.7,
        beta: 1.3,
        c: { data: c, dims: [M, 1] },
        act: { kind: 'relu' },
      });
      const problem = gemmOpProblem(
        { M, N, K, transA: true, transB: true, alpha: 0.7, beta: 1.3, cDims: [M, 1], activation: { kind: 'relu' } },
        { packed: false },
      );
      const got = await run(gemmProgram(problem, GEMM_VARIANTS[0]), { a, b, bias: c }, 'c', M * N);
      expect(relL2(got, want)).toBeLessThan(TOLERANCE);
    });
    it('Gemm with a packed constant B split into column chunks (the binding-limit path)', async () => {
      const M = 1,
        N = 50,
        K = 33;
      const a = rand(M * K),
        b = rand(N * K),
        c = rand(N);
      const want = gemmRef(a, b, { M, N, K, transB: true, c: { data: c, dims: [N] } });
      const chunk = columnChunk(K, N, 16 * K * 4); // 16 columns per chunk
      expect(chunk).toBe(16);
      const got = new Float32Array(M * N);
      for (let n0 = 0; n0 < N; n0 += chunk) {
        const columns = Math.min(chunk, N - n0);
        const problem = gemmOpProblem(
          { M, N, K, transA: false, transB: true, alpha: 1, beta: 1, cDims: [N] },
          { packed: true, nOffset: n0, columns },
        );
        const part = await run(
          gemmProgram(problem, GEMM_VARIANTS[3]),
          { a, b: packB(b, K, N, true, n0, columns), bias: c },
          'c',
          M * N,
        );
        got.set(part.subarray(n0, n0 + columns), n0);
      }
      expect(relL2(got, want)).toBeLessThan(TOLERANCE);
    });
    for (const [da, db] of [
      [
        [2, 3, 5, 4],
        [2, 3, 4, 6],
      ],
      [
        [2, 5, 4],
        [4, 3],
      ],
      [
        [3, 4],
        [2, 4, 5],
      ],
      [
        [7, 4],
        [4, 9],
      ],
    ] as [number[], number[]][]) {
      it(`MatMul [${da}] × [${db}]`, async () => {
        const a = rand(da.reduce((x, y) => x * y, 1)),
          b = rand(db.reduce((x, y) => x * y, 1));
        const want = matmulRef(a, da, b, db);
        const got = await run(gemmProgram(matmulProblem(da, db), GEMM_VARIANTS[0]), { a, b }, 'c', want.data.length);
        expect(relL2(got, want.data)).toBeLessThan(TOLERANCE);
      });
    }
  });
});
