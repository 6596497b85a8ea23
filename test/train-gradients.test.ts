// Backward kernels against central finite differences of the float64 reference forward: for a
// random upstream gradient g, the gradient of L(θ) = Σ g·f(θ) with respect to every input and
// parameter element, at several shapes (odd sizes, strides, padding, dilation, groups, transposes).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Conv2dParams } from '../src/kernels/conv.ts';
import {
  channelSumProgram,
  col2imProgram,
  conv2dBackwardDataPrograms,
  conv2dBackwardDataProblem,
  conv2dBackwardFilterPrograms,
  conv2dBackwardFilterProblem,
  convGradRowsProgram,
  convTrainSizes,
  im2colProgram,
} from '../src/kernels/conv-backward.ts';
import { defaultVariant, GEMM_VARIANTS, type GemmProblem } from '../src/kernels/gemm.ts';
import { gradientSumProgram } from '../src/kernels/backward/elementwise.ts';
import { globalPoolBackwardProgram, unaryBackwardProgram } from '../src/kernels/backward/index.ts';
import { DIFFERENTIABLE_OPS, gradientRule } from '../src/ops/registry.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import {
  gemmBackwardAPrograms,
  gemmBackwardAProblem,
  gemmBackwardBPrograms,
  gemmBackwardBProblem,
  gemmTrainForwardPrograms,
  matmulBackwardAPrograms,
  matmulBackwardBPrograms,
  matmulShape,
  matmulTrainForwardPrograms,
} from '../src/kernels/linear-backward.ts';
import { reduceToShapeProgram } from '../src/kernels/backward/elementwise.ts';
import type { GemmOpParams } from '../src/kernels/linear.ts';
import type { KernelProgram } from '../src/kernels/program.ts';
import { conv2dColumnsForwardProblem, conv2dColumnsForwardPrograms, runProgram } from './helpers/run-program.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { convRef, gemmRef, globalPoolRef, matmulRef, relL2 } from './helpers/reference-ops.ts';

/** ∂/∂θ Σ g·f(θ) by central differences, every element, in float64. */
function finiteDifferences(
  theta: Float32Array,
  f: (t: Float64Array) => ArrayLike<number>,
  g: ArrayLike<number>,
  h = 1e-3,
): Float64Array {
  const t = Float64Array.from(theta);
  const out = new Float64Array(t.length);
  const dot = (y: ArrayLike<number>) => {
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i] * g[i];
    return s;
  };
  for (let i = 0; i < t.length; i++) {
    const keep = t[i];
    t[i] = keep + h;
    const up = dot(f(t));
    t[i] = keep - h;
    const down = dot(f(t));
    t[i] = keep;
    out[i] = (up - down) / (2 * h);
  }
  return out;
}

const numel = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

describe('gradient kernels vs finite differences', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  const variant = (p: GemmProblem) => defaultVariant(p, true);
  const run = (
    programs: KernelProgram | KernelProgram[],
    inputs: Record<string, Float32Array>,
    out: string,
    floats: number,
  ) => runProgram(gpu, programs, inputs, { [out]: floats }).then((r) => r[out]);

  const convCases: {
    name: string;
    x: number[];
    w: number[];
    stride?: number;
    pad?: [number, number, number, number];
    dilation?: number;
    group?: number;
    bias: boolean;
  }[] = [
    { name: '3x3 pad 1, odd sizes', x: [2, 3, 7, 5], w: [4, 3, 3, 3], pad: [1, 1, 1, 1], bias: true },
    {
      name: '3x3 stride 2, asymmetric pad',
      x: [2, 4, 9, 8],
      w: [5, 4, 3, 3],
      stride: 2,
      pad: [1, 0, 1, 1],
      bias: true,
    },
    { name: 'grouped 2x2 dilation 2', x: [1, 6, 7, 7], w: [4, 3, 2, 2], dilation: 2, group: 2, bias: false },
    // col2im steps each tap by whole strides and a remainder of the dilation: both nonzero here.
    {
      name: '3x3 stride 2 dilation 3',
      x: [2, 3, 11, 10],
      w: [4, 3, 3, 3],
      stride: 2,
      dilation: 3,
      pad: [2, 1, 2, 3],
      bias: true,
    },
    {
      name: 'depthwise 3x3 stride 2',
      x: [2, 4, 6, 6],
      w: [4, 1, 3, 3],
      stride: 2,
      pad: [1, 1, 1, 1],
      group: 4,
      bias: true,
    },
    { name: 'pointwise 1x1', x: [3, 5, 3, 4], w: [6, 5, 1, 1], bias: true },
  ];

  for (const c of convCases) {
    it(`Conv ${c.name}: dX, dW, dB`, async () => {
      const [N, C, H, W] = c.x;
      const [CO, , KH, KW] = c.w;
      const stride = c.stride ?? 1;
      const dilation = c.dilation ?? 1;
      const pads = c.pad ?? [0, 0, 0, 0];
      const group = c.group ?? 1;
      const outH = Math.floor((H + pads[0] + pads[2] - (dilation * (KH - 1) + 1)) / stride) + 1;
      const outW = Math.floor((W + pads[1] + pads[3] - (dilation * (KW - 1) + 1)) / stride) + 1;
      const p: Conv2dParams = {
        images: N,
        inChannels: C,
        height: H,
        width: W,
        outChannels: CO,
        group,
        kernelH: KH,
        kernelW: KW,
        strideH: stride,
        strideW: stride,
        pads,
        dilationH: dilation,
        dilationW: dilation,
        outH,
        outW,
        hasBias: c.bias,
      };
      const x = randomFloat32Array(numel(c.x), 1);
      const w = randomFloat32Array(numel(c.w), 2, 0.5);
      const b = randomFloat32Array(CO, 3);
      const yDims = [N, CO, outH, outW];
      const g = randomFloat32Array(numel(yDims), 4);
      const s = convTrainSizes(p);
      const opts = { strides: [stride, stride], pads, dilations: [dilation, dilation], group };

      // Forward on the training path (im2col + GEMM) matches the reference.
      const col = await run(im2colProgram(p), { x }, 'col', p.group * s.M * s.K);
      const y = await run(
        conv2dColumnsForwardPrograms(p, variant(conv2dColumnsForwardProblem(p))),
        c.bias ? { col, w, bias: b } : { col, w },
        'y',
        numel(yDims),
      );
      expect(relL2(y, convRef(x, c.x, w, c.w, c.bias ? b : undefined, opts).data)).toBeLessThan(1e-5);

      const rows = await run(convGradRowsProgram(p), { dy: g }, 'rows', p.group * s.M * s.groupOut);
      const dcol = await run(
        conv2dBackwardDataPrograms(p, variant(conv2dBackwardDataProblem(p))),
        { rows, w },
        'dcol',
        p.group * s.M * s.K,
      );
      const dx = await run(col2imProgram(p), { dcol }, 'dx', numel(c.x));
      const dw = await run(
        conv2dBackwardFilterPrograms(p, variant(conv2dBackwardFilterProblem(p))),
        { rows, col },
        'dw',
        numel(c.w),
      );
      const db = await run(channelSumProgram(N, CO, outH * outW), { dy: g }, 'db', CO);

      const fdX = finiteDifferences(x, (t) => convRef(t, c.x, w, c.w, b, opts).data, g);
      const fdW = finiteDifferences(w, (t) => convRef(x, c.x, t, c.w, b, opts).data, g);
      const fdB = finiteDifferences(b, (t) => convRef(x, c.x, w, c.w, t, opts).data, g);
      expect(relL2(dx, fdX)).toBeLessThan(1e-3);
      expect(relL2(dw, fdW)).toBeLessThan(1e-3);
      expect(relL2(db, fdB)).toBeLessThan(1e-3);
    });
  }

  const gemmCases: {
    M: number;
    N: number;
    K: number;
    transA: boolean;
    transB: boolean;
    alpha: number;
    beta: number;
    c?: number[];
  }[] = [
    { M: 5, N: 7, K: 3, transA: false, transB: false, alpha: 1, beta: 1, c: [7] },
    { M: 6, N: 9, K: 11, transA: false, transB: true, alpha: 0.7, beta: 1.3, c: [6, 9] },
    { M: 3, N: 4, K: 13, transA: true, transB: false, alpha: 1.5, beta: 0.5, c: [3, 1] },
    { M: 9, N: 5, K: 6, transA: true, transB: true, alpha: 1, beta: 2, c: [1, 5] },
    { M: 1, N: 10, K: 17, transA: false, transB: true, alpha: 1, beta: 1 },
  ];
  for (const c of gemmCases) {
    it(`Gemm ${c.M}×${c.N}×${c.K}${c.transA ? ' transA' : ''}${c.transB ? ' transB' : ''} C [${c.c ?? '-'}]: dA, dB, dC`, async () => {
      const p: GemmOpParams = {
        M: c.M,
        N: c.N,
        K: c.K,
        transA: c.transA,
        transB: c.transB,
        alpha: c.alpha,
        beta: c.beta,
        cDims: c.c,
      };
      const a = randomFloat32Array(c.M * c.K, 11);
      const b = randomFloat32Array(c.K * c.N, 12);
      const cData = c.c ? randomFloat32Array(numel(c.c), 13) : undefined;
      const g = randomFloat32Array(c.M * c.N, 14);
      const ref = (ta: ArrayLike<number>, tb: ArrayLike<number>, tc?: ArrayLike<number>) =>
        gemmRef(ta, tb, {
          M: c.M,
          N: c.N,
          K: c.K,
          transA: c.transA,
          transB: c.transB,
          alpha: c.alpha,
          beta: c.beta,
          c: tc && c.c ? { data: tc, dims: c.c } : undefined,
        });

      for (const v of [GEMM_VARIANTS[0], GEMM_VARIANTS[3], GEMM_VARIANTS[5]]) {
        const y = await run(gemmTrainForwardPrograms(p, v), cData ? { a, b, bias: cData } : { a, b }, 'y', c.M * c.N);
        expect(relL2(y, ref(a, b, cData))).toBeLessThan(1e-5);
        const da = await run(gemmBackwardAPrograms(p, v), { dy: g, b }, 'da', a.length);
        const db = await run(gemmBackwardBPrograms(p, v), { a, dy: g }, 'db', b.length);
        expect(
          relL2(
            da,
            finiteDifferences(a, (t) => ref(t, b, cData), g),
          ),
        ).toBeLessThan(1e-3);
        expect(
          relL2(
            db,
            finiteDifferences(b, (t) => ref(a, t, cData), g),
          ),
        ).toBeLessThan(1e-3);
      }
      // The default variants as autodiff picks them.
      expect(
        relL2(
          await run(gemmBackwardAPrograms(p, variant(gemmBackwardAProblem(p))), { dy: g, b }, 'da', a.length),
          finiteDifferences(a, (t) => ref(t, b, cData), g),
        ),
      ).toBeLessThan(1e-3);
      expect(
        relL2(
          await run(gemmBackwardBPrograms(p, variant(gemmBackwardBProblem(p))), { a, dy: g }, 'db', b.length),
          finiteDifferences(b, (t) => ref(a, t, cData), g),
        ),
      ).toBeLessThan(1e-3);
      if (c.c && cData) {
        const dc = await run(reduceToShapeProgram([c.M, c.N], c.c, { scale: c.beta }), { dy: g }, 'dx', cData.length);
        expect(
          relL2(
            dc,
            finiteDifferences(cData, (t) => ref(a, b, t), g),
          ),
        ).toBeLessThan(1e-3);
      }
    });
  }

  for (const [aDims, bDims] of [
    [
      [5, 7],
      [7, 3],
    ],
    [
      [2, 3, 5, 4],
      [4, 6],
    ],
    [
      [3, 4, 5],
      [3, 5, 2],
    ],
  ] as const) {
    it(`MatMul [${aDims}] × [${bDims}]: dA, dB`, async () => {
      const s = matmulShape([...aDims], [...bDims]);
      const a = randomFloat32Array(numel([...aDims]), 21);
      const b = randomFloat32Array(numel([...bDims]), 22);
      const yDims = matmulRef(a, [...aDims], b, [...bDims]).dims;
      const g = randomFloat32Array(numel(yDims), 23);
      const v = defaultVariant({ M: s.M, N: s.N }, true);
      const da = await run(matmulBackwardAPrograms(s, v), { dy: g, b }, 'da', a.length);
      const db = await run(matmulBackwardBPrograms(s, v), { a, dy: g }, 'db', b.length);
      expect(
        relL2(
          da,
          finiteDifferences(a, (t) => matmulRef(t, [...aDims], b, [...bDims]).data, g),
        ),
      ).toBeLessThan(1e-3);
      expect(
        relL2(
          db,
          finiteDifferences(b, (t) => matmulRef(a, [...aDims], t, [...bDims]).data, g),
        ),
      ).toBeLessThan(1e-3);
    });
  }

  it('MatMul [7, 3] × [2, 4, 3, 5] (A shared, an averaging matrix): forward and dB; dA refused', async () => {
    const aDims = [7, 3];
    const bDims = [2, 4, 3, 5];
    const s = matmulShape(aDims, bDims);
    expect(s.aShared).toBe(true);
    const a = randomFloat32Array(numel(aDims), 24);
    const b = randomFloat32Array(numel(bDims), 25);
    const want = matmulRef(a, aDims, b, bDims);
    const g = randomFloat32Array(numel(want.dims), 26);
    const v = defaultVariant({ M: s.M, N: s.N }, true);
    const y = await run(matmulTrainForwardPrograms(s, v), { a, b }, 'y', numel(want.dims));
    expect(relL2(y, want.data)).toBeLessThan(1e-5);
    const db = await run(matmulBackwardBPrograms(s, v), { a, dy: g }, 'db', b.length);
    expect(
      relL2(
        db,
        finiteDifferences(b, (t) => matmulRef(a, aDims, t, bDims).data, g),
      ),
    ).toBeLessThan(1e-3);
    expect(() => matmulBackwardAPrograms(s, v)).toThrow('the gradient of an A without batch against a batched B');
  });

  it('Relu: dX (inputs kept away from the kink)', async () => {
    const x = randomFloat32Array(1000, 31).map((v) => (Math.abs(v) < 0.01 ? v + 0.05 : v));
    const g = randomFloat32Array(1000, 32);
    const dx = await run(unaryBackwardProgram({ kind: 'relu' }, 1000), { x, dy: g }, 'dx', 1000);
    expect(
      relL2(
        dx,
        finiteDifferences(x, (t) => t.map((v) => Math.max(v, 0)), g),
      ),
    ).toBeLessThan(1e-3);
  });

  it('GlobalAveragePool: dX at odd spatial sizes', async () => {
    const dims = [3, 5, 7, 3];
    const x = randomFloat32Array(numel(dims), 41);
    const g = randomFloat32Array(15, 42);
    const dx = await run(globalPoolBackwardProgram('avg', 15, 21), { dy: g }, 'dx', x.length);
    expect(
      relL2(
        dx,
        finiteDifferences(x, (t) => globalPoolRef('avg', t, dims).data, g),
      ),
    ).toBeLessThan(1e-3);
  });

  it('registry: rules for the ops of this family, identities pass the gradient through', () => {
    for (const op of [
      'Conv',
      'Gemm',
      'MatMul',
      'Relu',
      'Add',
      'Sum',
      'Flatten',
      'Reshape',
      'Dropout',
      'Identity',
      'GlobalAveragePool',
    ]) {
      expect(DIFFERENTIABLE_OPS).toContain(op);
    }
    expect(gradientRule('Conv')?.forward).toBeDefined();
    expect(gradientRule('Relu')?.forward).toBeUndefined();
    expect(gradientRule('NoSuchOp')).toBeUndefined();
  });
});

// The conv bias gradient (one workgroup per channel, vec4 units where 4 divides the spatial
// size) and autodiff's gradient sum (vec4 units where 4 divides the size) at odd and large
// sizes, against float64.
describe('channel sum and gradient sum at odd sizes', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  for (const [N, C, S] of [
    [3, 13, 1],
    [1, 13, 35],
    [3, 5, 3136],
    [2, 70000, 1],
    [8, 64, 49],
  ]) {
    it(`channel sum ${N}×${C}×${S}`, async () => {
      const dy = randomFloat32Array(N * C * S, 50 + C, 2).map((v, i) => v + ((Math.floor(i / S) % C) % 3));
      const want = new Float64Array(C);
      for (let i = 0; i < dy.length; i++) want[Math.floor(i / S) % C] += dy[i];
      const db = (await runProgram(gpu, channelSumProgram(N, C, S), { dy }, { db: C })).db;
      expect(relL2(db, want)).toBeLessThan(1e-6);
    });
  }

  for (const n of [12000, 4099, 3]) {
    it(`gradient sum over ${n} elements`, async () => {
      const a = randomFloat32Array(n, 60),
        b = randomFloat32Array(n, 61);
      const y = (await runProgram(gpu, gradientSumProgram(n), { a, b }, { y: n })).y;
      expect(
        relL2(
          y,
          Array.from(a, (v, i) => v + b[i]),
        ),
      ).toBeLessThan(1e-7);
    });
  }
});
