// Every WGSL program the engine builds, from its factory in src/kernels with small representative
// parameters: each forward and backward kernel once per structure that changes its WGSL, and each
// GEMM variant the device runs over the GEMM structures the ops use (matrix A in both layouts, B
// in both layouts and packed, im2col A with and without padding, NCHW C, bias, activations,
// accumulation). Imports only the core, so the same list compiles under Dawn, wgpu and a browser.
import {
  channelSumProgram,
  col2imProgram,
  conv2dBackwardDataPrograms,
  conv2dBackwardFilterPrograms,
  convDataGradParams,
  convGradRowsProgram,
  convPackWeightsProgram,
  im2colProgram,
} from '../../src/kernels/conv-backward.ts';
import { conv2dPrograms, type Conv2dParams } from '../../src/kernels/conv.ts';
import { broadcastProgram, unaryProgram, type UnaryOp } from '../../src/kernels/elementwise.ts';
import { defaultVariant, GEMM_VARIANTS, gemmPrograms, variantKey, type GemmVariant } from '../../src/kernels/gemm.ts';
import {
  gemmBackwardAPrograms,
  gemmBackwardBPrograms,
  gemmTrainForwardPrograms,
  matmulBackwardAPrograms,
  matmulBackwardBPrograms,
  matmulShape,
  matmulTrainForwardPrograms,
} from '../../src/kernels/linear-backward.ts';
import { gemmOpProblem, matmulProblem, type GemmOpParams } from '../../src/kernels/linear.ts';
import { crossEntropyReduceProgram, crossEntropyRowsProgram } from '../../src/kernels/loss.ts';
import { batchNormProgram, lrnProgram, type LrnParams } from '../../src/kernels/normalization.ts';
import {
  gradNormFinishProgram,
  gradSquareSumProgram,
  optimizerUpdateProgram,
  type UpdateRule,
} from '../../src/kernels/optimizer-kernels.ts';
import { globalPoolProgram, pool2dProgram, type Pool2dParams } from '../../src/kernels/pool.ts';
import type { KernelProgram } from '../../src/kernels/shader.ts';
import {
  concatSliceProgram,
  padProgram,
  softmaxBackwardProgram,
  softmaxProgram,
  transposeProgram,
} from '../../src/kernels/transform.ts';
import {
  concatBackwardPrograms,
  padBackwardProgram,
  transposeBackwardProgram,
} from '../../src/kernels/backward/concat.ts';
import {
  broadcastBackwardProgram,
  dropoutBackwardProgram,
  dropoutForwardProgram,
  gradientSumProgram,
  reduceToShapeProgram,
  unaryBackwardProgram,
  type UnaryBackwardOp,
} from '../../src/kernels/backward/elementwise.ts';
import {
  batchNormFrozenBackwardProgram,
  batchNormParamGradProgram,
  batchNormTrainingBackwardPrograms,
  batchNormTrainingForwardPrograms,
  lrnBackwardProgram,
} from '../../src/kernels/backward/normalization.ts';
import {
  avgPool2dBackwardProgram,
  globalPoolBackwardProgram,
  maxPool2dBackwardProgram,
} from '../../src/kernels/backward/pool.ts';

/** A program to compile, named by the factory that built it. */
export interface NamedProgram {
  factory: string;
  program: KernelProgram;
}

/** A 3×3 conv with padding and stride 2 (im2col loads masked), bias and Relu; 2 groups. */
const PADDED_CONV: Conv2dParams = {
  images: 2,
  inChannels: 4,
  height: 9,
  width: 7,
  outChannels: 6,
  group: 2,
  kernelH: 3,
  kernelW: 3,
  strideH: 2,
  strideW: 2,
  pads: [1, 1, 1, 1],
  dilationH: 1,
  dilationW: 1,
  outH: 5,
  outW: 4,
  hasBias: true,
  activation: { kind: 'relu' },
};

/** A 1×1 conv without padding (no masked loads), no bias, a Clip epilogue. */
const POINTWISE_CONV: Conv2dParams = {
  ...PADDED_CONV,
  group: 1,
  inChannels: 5,
  outChannels: 12,
  kernelH: 1,
  kernelW: 1,
  strideH: 1,
  strideW: 1,
  pads: [0, 0, 0, 0],
  outH: 9,
  outW: 7,
  hasBias: false,
  activation: { kind: 'clip', min: 0, max: 6 },
};

/** Gemm with transA (A k-major, vec4 loads where the variant allows), a vector bias and Relu. */
const GEMM_TRANS_A: GemmOpParams = {
  M: 16,
  N: 24,
  K: 20,
  transA: true,
  transB: false,
  alpha: 1,
  beta: 1,
  cDims: [24],
  activation: { kind: 'relu' },
};

/** Gemm with transB (B n-major, a fully connected layer), a matrix bias and LeakyRelu. */
const GEMM_TRANS_B: GemmOpParams = {
  M: 6,
  N: 10,
  K: 13,
  transA: false,
  transB: true,
  alpha: 0.5,
  beta: 2,
  cDims: [6, 10],
  activation: { kind: 'leakyRelu', alpha: 0.1 },
};

/** The GEMM structures one variant is compiled for. */
function gemmStructures(v: GemmVariant): NamedProgram[] {
  const name = (what: string) => `${what} (${variantKey(v)})`;
  const list: [string, KernelProgram[]][] = [
    ['matmul, B shared', gemmPrograms(matmulProblem([2, 13, 20], [20, 24]), v)],
    ['matmul, batched B', gemmPrograms(matmulProblem([3, 8, 20], [3, 20, 12]), v)],
    ['gemm transA + bias + relu, packed B', gemmPrograms(gemmOpProblem(GEMM_TRANS_A, { packed: true }), v)],
    ['gemm transB + matrix bias + leakyRelu', gemmPrograms(gemmOpProblem(GEMM_TRANS_B, { packed: false }), v)],
    ['conv 3×3 padded, grouped', conv2dPrograms(PADDED_CONV, v)],
    ['conv 1×1 + clip', conv2dPrograms(POINTWISE_CONV, v)],
    ['conv backward filter, accumulating', conv2dBackwardFilterPrograms(PADDED_CONV, v, undefined, undefined, true)],
    ['conv backward data', conv2dBackwardDataPrograms(PADDED_CONV, v)],
  ];
  return list.flatMap(([what, programs]) => programs.map((program) => ({ factory: name(what), program })));
}

const POOL: Omit<Pool2dParams, 'kind'> = {
  planes: 6,
  height: 9,
  width: 8,
  outH: 5,
  outW: 4,
  kernelH: 3,
  kernelW: 3,
  strideH: 2,
  strideW: 2,
  pads: [1, 1, 1, 0],
  dilationH: 1,
  dilationW: 1,
};

const LRN: LrnParams = { images: 2, channels: 7, spatial: 10, size: 5, alpha: 1e-4, beta: 0.75, bias: 2 };

const UNARY: UnaryOp[] = [
  { kind: 'relu' },
  { kind: 'leakyRelu', alpha: 0.2 },
  { kind: 'clip', min: -1, max: 1 },
  { kind: 'sigmoid' },
  { kind: 'tanh' },
  { kind: 'identity' },
];
const UNARY_BACKWARD: UnaryBackwardOp[] = [
  { kind: 'relu' },
  { kind: 'leakyRelu', alpha: 0.2 },
  { kind: 'clip', min: -1, max: 1 },
  { kind: 'sigmoid' },
  { kind: 'tanh' },
];
const UPDATE_RULES: UpdateRule[] = ['sgd', 'sgd-momentum', 'sgd-nesterov', 'adam', 'adamw'];

/** The kernels outside the GEMM core, forward then backward. */
function otherKernels(variant: GemmVariant): NamedProgram[] {
  const bn = { images: 2, channels: 5, spatial: 12, epsilon: 1e-5 };
  const one = (factory: string, program: KernelProgram): NamedProgram => ({ factory, program });
  const many = (factory: string, programs: KernelProgram[]): NamedProgram[] =>
    programs.map((program, i) => ({ factory: `${factory} [${i}]`, program }));
  return [
    // forward
    ...UNARY.flatMap((op) => [
      one(`unary ${op.kind} (scalar)`, unaryProgram(op, 37)),
      one(`unary ${op.kind} (vec4)`, unaryProgram(op, 40)),
    ]),
    ...(['add', 'sub', 'mul', 'div'] as const).map((op) =>
      one(
        `broadcast ${op}`,
        broadcastProgram(
          op,
          [
            [2, 3, 4],
            [3, 1],
          ],
          [2, 3, 4],
        ),
      ),
    ),
    one(
      'broadcast add + relu, 3 inputs',
      broadcastProgram('add', [[2, 3, 4], [2, 3, 4], [4]], [2, 3, 4], { kind: 'relu' }),
    ),
    one('maxpool', pool2dProgram({ ...POOL, kind: 'max' })),
    one('avgpool, count_include_pad', pool2dProgram({ ...POOL, kind: 'avg', countIncludePad: true })),
    one('avgpool', pool2dProgram({ ...POOL, kind: 'avg' })),
    one('global maxpool', globalPoolProgram('max', 6, 49)),
    one('global avgpool', globalPoolProgram('avg', 6, 49)),
    one('batchnorm (inference)', batchNormProgram(2, 5, 12, 1e-5)),
    one('lrn', lrnProgram(LRN)),
    one('concat slice', concatSliceProgram('forward', 2, 12, 30, 6)),
    one('transpose', transposeProgram([2, 3, 4, 5], [0, 2, 3, 1])),
    one('pad', padProgram([1, 2, 3, 4], [0, 0, 1, 2, 0, 1, 2, 0], 0.5)),
    one('softmax', softmaxProgram(3, 10, 2)),
    one('cross-entropy rows', crossEntropyRowsProgram({ batch: 4, classes: 10, labelSmoothing: 0.1 })),
    one('cross-entropy rows (evaluation)', crossEntropyRowsProgram({ batch: 4, classes: 10, gradient: false })),
    one('cross-entropy reduce', crossEntropyReduceProgram(4)),
    one('dropout forward', dropoutForwardProgram(40, 0.3, 7)),
    one('dropout forward with mask', dropoutForwardProgram(40, 0.3, 7, true)),
    // backward
    ...UNARY_BACKWARD.map((op) => one(`unary backward ${op.kind}`, unaryBackwardProgram(op, 40))),
    ...(['add', 'sub', 'mul', 'div'] as const).flatMap((op) =>
      ([0, 1] as const).map((which) =>
        one(
          `broadcast backward ${op} dx${which}`,
          broadcastBackwardProgram(
            op,
            [
              [2, 3, 4],
              [3, 1],
            ],
            which,
            [2, 3, 4],
          ),
        ),
      ),
    ),
    one('reduce to shape', reduceToShapeProgram([2, 3, 4], [3, 1], { scale: 0.5 })),
    one('gradient sum', gradientSumProgram(40)),
    one('dropout backward', dropoutBackwardProgram(40, 0.3, 7)),
    one('maxpool backward', maxPool2dBackwardProgram(POOL)),
    one('avgpool backward, count_include_pad', avgPool2dBackwardProgram({ ...POOL, countIncludePad: true })),
    one('avgpool backward', avgPool2dBackwardProgram(POOL)),
    one('global maxpool backward', globalPoolBackwardProgram('max', 6, 49)),
    one('global avgpool backward', globalPoolBackwardProgram('avg', 6, 49)),
    ...many('batchnorm training forward', batchNormTrainingForwardPrograms(bn, 0.9)),
    ...many('batchnorm training backward', batchNormTrainingBackwardPrograms(bn)),
    one('batchnorm frozen backward', batchNormFrozenBackwardProgram(bn)),
    one('batchnorm parameter gradients', batchNormParamGradProgram(bn)),
    one('lrn backward', lrnBackwardProgram(LRN)),
    ...many(
      'concat backward',
      concatBackwardPrograms(
        [
          [2, 3, 4],
          [2, 5, 4],
        ],
        1,
      ),
    ),
    one('transpose backward', transposeBackwardProgram([2, 3, 4, 5], [0, 2, 3, 1])),
    one('pad backward', padBackwardProgram([1, 2, 3, 4], [0, 0, 1, 2, 0, 1, 2, 0])),
    one('softmax backward', softmaxBackwardProgram(3, 10, 2)),
    one('im2col', im2colProgram(PADDED_CONV)),
    one('col2im', col2imProgram(PADDED_CONV)),
    one('conv dy rows', convGradRowsProgram(PADDED_CONV)),
    one('channel sum', channelSumProgram(2, 6, 20)),
    one('conv pack weights', convPackWeightsProgram(PADDED_CONV)),
    one('conv pack weights, transposed', convPackWeightsProgram(PADDED_CONV, true)),
    ...many(
      'conv dx as a conv of dy',
      conv2dPrograms(convDataGradParams({ ...PADDED_CONV, strideH: 1, strideW: 1, outH: 9, outW: 7 }), variant),
    ),
    ...many('gemm backward dA', gemmBackwardAPrograms(GEMM_TRANS_B, variant)),
    ...many('gemm backward dB', gemmBackwardBPrograms(GEMM_TRANS_B, variant)),
    ...many('gemm training forward', gemmTrainForwardPrograms(GEMM_TRANS_A, variant)),
    ...many('matmul backward dA', matmulBackwardAPrograms(matmulShape([3, 8, 20], [3, 20, 12]), variant)),
    ...many('matmul backward dB', matmulBackwardBPrograms(matmulShape([2, 13, 20], [20, 24]), variant)),
    ...many('matmul training forward', matmulTrainForwardPrograms(matmulShape([2, 13, 20], [20, 24]), variant)),
    // optimizer
    ...UPDATE_RULES.flatMap((rule) => [
      one(`optimizer ${rule}`, optimizerUpdateProgram(rule, false)),
      one(`optimizer ${rule}, clipped`, optimizerUpdateProgram(rule, true)),
    ]),
    one('gradient Σg² partials', gradSquareSumProgram()),
    one('gradient global norm', gradNormFinishProgram()),
  ];
}

/** Whether the device can run a GEMM variant, and why not when it cannot. */
export type VariantFilter = (v: GemmVariant) => { runs: true } | { runs: false; reason: string };

/**
 * Every program, and the GEMM variants left out with the reason. `software` picks the variant the
 * non-GEMM backward kernels use (as the runtime would on this device).
 */
export function enginePrograms(
  filter: VariantFilter,
  software: boolean,
): { programs: NamedProgram[]; skippedVariants: string[] } {
  const programs: NamedProgram[] = [];
  const skippedVariants: string[] = [];
  for (const v of GEMM_VARIANTS) {
    const verdict = filter(v);
    if (verdict.runs) programs.push(...gemmStructures(v));
    else skippedVariants.push(`${variantKey(v)}: ${verdict.reason}`);
  }
  programs.push(...otherKernels(defaultVariant({ M: 64, N: 64 }, software)));
  return { programs, skippedVariants };
}
