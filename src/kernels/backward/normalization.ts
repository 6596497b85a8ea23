// BatchNormalization in training mode (forward with batch statistics, and its backward), the
// backward of a frozen BatchNormalization (running statistics), and LRN backward. Forward
// inference kernels: ../normalization.ts. Data is [N, C, spatial…] viewed as N × C × S.
import { elementProgram, input, output, type KernelProgram, type ParamBlock } from '../shader.ts';
import { channelReduceProgram, planeProgram } from './channel.ts';
import { LRN_DENOMINATOR, lrnUniforms, type LrnParams } from '../normalization.ts';

export interface BatchNormShape {
  images: number;
  channels: number;
  /** ∏ of the dims after C (1 for [N, C]). */
  spatial: number;
  epsilon: number;
}

/**
 * BatchNormalization, training mode (ONNX training_mode = 1), as two programs run in order:
 * 1. statistics, one workgroup per channel in one pass over it: with k = the channel's first
 *    element and d = x − k, mean = k + Σd/M and the biased variance Σd²/M − (Σd/M)², M = N·S,
 *    as ONNX's ReduceVar (shifting by a sample of the channel keeps f32 from cancelling when
 *    the mean is large against the spread). Writes saveMean and saveInvStd = 1/√(var + ε), and
 *    updates runningMean / runningVar in place: running = momentum·running + (1 −
 *    momentum)·batch (ONNX; PyTorch's momentum is 1 − this and it keeps the unbiased variance
 *    in running_var).
 * 2. y = (x − saveMean[c]) · saveInvStd[c] · scale[c] + bias[c], per plane (see planeProgram).
 * Saves for the backward: x, saveMean, saveInvStd (and scale, an initializer).
 * Bindings: (1) x, saveMean, saveInvStd, runningMean, runningVar, params;
 *           (2) x, scale, bias, saveMean, saveInvStd, y, params.
 */
export function batchNormTrainingForwardPrograms(p: BatchNormShape, momentum: number): [KernelProgram, KernelProgram] {
  const stats = channelReduceProgram(p, {
    label: `batchnorm-train stats ${p.images}×${p.channels}×${p.spatial}`,
    key: 'batchnorm-train-stats',
    reads: [input('x')],
    writes: [output('saveMean'), output('saveInvStd'), output('runningMean'), output('runningVar')],
    params: (P) => P.f32('epsilon', p.epsilon).f32('momentum', momentum),
    ...SHIFTED_SUMS,
    after: `  let m = acc.x * P.invCount;
  let mean = k + m;
  let variance = max(acc.y * P.invCount - m * m, 0.0);
  saveMean[c] = mean;
  saveInvStd[c] = inverseSqrt(variance + P.epsilon);
  runningMean[c] = P.momentum * runningMean[c] + (1.0 - P.momentum) * mean;
  runningVar[c] = P.momentum * runningVar[c] + (1.0 - P.momentum) * variance;`,
  });
  const apply = planeProgram(p, {
    label: `batchnorm-train apply ${p.images}×${p.channels}×${p.spatial}`,
    key: 'batchnorm-train-apply',
    reads: ['x', 'scale', 'bias', 'saveMean', 'saveInvStd'].map((name) => input(name)),
    writes: [output('y')],
    channel: `let mu = saveMean[c];
    let a = saveInvStd[c] * scale[c];
    let b = bias[c];`,
    element: 'y[i] = (x[i] - mu) * a + b;',
  });
  return [stats, apply];
}

/** Σd and Σd² per channel with d = x − k, k the channel's first element (see the statistics above). */
const SHIFTED_SUMS = {
  before: 'let k = firstOf(x[c * P.units]);',
  element: 'let d = x[i] - k; acc0 += d; acc1 += d * d;',
};

/**
 * Where the partial results of a reduction over the batch lie when the batch is held as slices
 * side by side (layer-major slicing): one buffer for every slice, slice j's parts from
 * j·sliceStride floats, part q of it q·partStride floats further. The strides keep every part at
 * a multiple of the device's storage offset alignment, so a slice's partial step binds its parts
 * as views.
 */
export interface SlicePartials {
  slices: number;
  /** Images in each slice but the last, and in the last. */
  images: number;
  lastImages: number;
  sliceStride: number;
  partStride: number;
}

/**
 * One slice's part of batchNormTrainingForwardPrograms' statistics (layer-major slicing): per
 * channel, the slice's mean and M2 = Σ(x − mean)² (from the same shifted sums as the whole
 * batch's), for batchNormCombineStatisticsProgram. Bindings: x, partMean, partM2, params.
 */
export function batchNormPartialStatisticsProgram(p: BatchNormShape): KernelProgram {
  return channelReduceProgram(p, {
    label: `batchnorm-train partial stats ${p.images}×${p.channels}×${p.spatial}`,
    key: 'batchnorm-train-partial-stats',
    reads: [input('x')],
    writes: [output('partMean'), output('partM2')],
    ...SHIFTED_SUMS,
    after: `  let m = acc.x * P.invCount;
  partMean[c] = k + m;
  partM2[c] = max(acc.y - acc.x * m, 0.0);`,
  });
}

/**
 * The whole batch's statistics from every slice's (mean, M2), for one slice: with n_j = the
 * images of slice j times `spatial`, mean = Σ n_j·mean_j / n and M2 = Σ M2_j + Σ n_j·(mean_j −
 * mean)² (Chan et al.'s pairwise combination, all slices at once: no sum of squares about zero
 * to cancel in f32); the biased variance M2/n. Writes the slice's saveMean and saveInvStd as the
 * unsliced statistics step does, and, for the first slice only (`updateRunning`), the running
 * statistics. Bindings: partials, saveMean, saveInvStd, runningMean, runningVar, params.
 */
export function batchNormCombineStatisticsProgram(
  channels: number,
  spatial: number,
  layout: SlicePartials,
  epsilon: number,
  momentum: number,
  updateRunning: boolean,
): KernelProgram {
  return elementProgram({
    label: `batchnorm-train combine stats ${layout.slices}×${channels}`,
    key: 'batchnorm-train-combine-stats',
    total: channels,
    inputs: [input('partials')],
    outputs: ['saveMean', 'saveInvStd', 'runningMean', 'runningVar'].map((name) => output(name)),
    params: (P) =>
      slicePartialsUniforms(P, layout, spatial)
        .f32('epsilon', epsilon)
        .f32('momentum', momentum)
        .u32('updateRunning', updateRunning ? 1 : 0),
    prelude: SLICE_WEIGHT,
    body: `
  var sum = 0.0;
  var n = 0.0;
  for (var j = 0u; j < P.slices; j++) {
    sum += sliceWeight(j) * partials[j * P.sliceStride + idx];
    n += sliceWeight(j);
  }
  let mean = sum / n;
  var m2 = 0.0;
  for (var j = 0u; j < P.slices; j++) {
    let d = partials[j * P.sliceStride + idx] - mean;
    m2 += partials[j * P.sliceStride + P.partStride + idx] + sliceWeight(j) * d * d;
  }
  let variance = m2 / n;
  saveMean[idx] = mean;
  saveInvStd[idx] = inverseSqrt(variance + P.epsilon);
  if (P.updateRunning != 0u) {
    runningMean[idx] = P.momentum * runningMean[idx] + (1.0 - P.momentum) * mean;
    runningVar[idx] = P.momentum * runningVar[idx] + (1.0 - P.momentum) * variance;
  }`,
  });
}

/**
 * The whole batch's dScale and dBias from every slice's (batchNormParamGradProgram run on each
 * slice, its outputs bound to the slice's two parts), for one slice. A slice's gradients are of
 * its own mean loss (1/b_j, as slice-major slicing computes them), so the batch's sums are
 * Σ (b_j/N)·part_j; every slice gets them whole, which its dx step then scales back by its own
 * 1/(b_j·S) as it should, and which the slices' parameter-gradient sum (weights b_j/N, adding to
 * 1) leaves as they are. Bindings: partials, dScale, dBias, params.
 */
export function batchNormCombineGradientSumsProgram(channels: number, layout: SlicePartials): KernelProgram {
  return elementProgram({
    label: `batchnorm-train combine sums ${layout.slices}×${channels}`,
    key: 'batchnorm-train-combine-sums',
    total: channels,
    inputs: [input('partials')],
    outputs: [output('dScale'), output('dBias')],
    params: (P) => slicePartialsUniforms(P, layout, 1),
    prelude: SLICE_WEIGHT,
    body: `
  var scale = 0.0;
  var bias = 0.0;
  var n = 0.0;
  for (var j = 0u; j < P.slices; j++) { n += sliceWeight(j); }
  for (var j = 0u; j < P.slices; j++) {
    let w = sliceWeight(j) / n;
    scale += w * partials[j * P.sliceStride + idx];
    bias += w * partials[j * P.sliceStride + P.partStride + idx];
  }
  dScale[idx] = scale;
  dBias[idx] = bias;`,
  });
}

/** The layout's uniforms; `sliceWeight(j)` is then slice j's images times `per`. */
function slicePartialsUniforms(P: ParamBlock, layout: SlicePartials, per: number): ParamBlock {
  return P.u32('slices', layout.slices)
    .u32('sliceStride', layout.sliceStride)
    .u32('partStride', layout.partStride)
    .f32('sliceCount', layout.images * per)
    .f32('lastCount', layout.lastImages * per);
}

const SLICE_WEIGHT = `fn sliceWeight(j: u32) -> f32 { return select(P.sliceCount, P.lastCount, j + 1u == P.slices); }`;

/**
 * BatchNormalization backward, training mode (batch statistics), as two programs in order,
 * with x̂ = (x − saveMean)·saveInvStd and M = N·S:
 * 1. per channel (one workgroup each): dBias = Σ dy, dScale = Σ dy·x̂ (overwritten, never
 *    accumulated: program 2 reads them as this node's own sums);
 * 2. dx = scale·saveInvStd·(dy − dBias/M − x̂·dScale/M), per plane with the channel's
 *    coefficients folded: dx = a·dy + b·(x − saveMean) + e.
 * Needs saved: x, saveMean, saveInvStd (from batchNormTrainingForwardPrograms), scale.
 * Bindings: (1) x, dy, saveMean, saveInvStd, dScale, dBias, params;
 *           (2) x, dy, scale, saveMean, saveInvStd, dScale, dBias, dx, params.
 */
export function batchNormTrainingBackwardPrograms(p: BatchNormShape): [KernelProgram, KernelProgram] {
  const params = batchNormParamGradProgram(p);
  return [
    params,
    planeProgram(p, {
      label: `batchnorm-train dx ${p.images}×${p.channels}×${p.spatial}`,
      key: 'batchnorm-train-dx',
      reads: ['x', 'dy', 'scale', 'saveMean', 'saveInvStd', 'dScale', 'dBias'].map((name) => input(name)),
      writes: [output('dx')],
      channel: `let mu = saveMean[c];
    let inv = saveInvStd[c];
    let a = scale[c] * inv;
    let b = -a * inv * dScale[c] * P.invCount;
    let e = -a * dBias[c] * P.invCount;`,
      element: 'dx[i] = a * dy[i] + b * (x[i] - mu) + e;',
    }),
  ];
}

/**
 * Backward of a frozen BatchNormalization (inference mode, running statistics: the statistics
 * are constants): dx = dy·scale[c]/√(var[c] + ε). Needs saved: nothing but the initializers
 * scale and var. Bindings: dy, scale, var, dx, params.
 */
export function batchNormFrozenBackwardProgram(p: BatchNormShape): KernelProgram {
  return planeProgram(p, {
    label: `batchnorm-frozen dx ${p.images}×${p.channels}×${p.spatial}`,
    key: 'batchnorm-frozen-dx',
    reads: [input('dy'), input('scale'), input('var', { variable: 'variance' })],
    writes: [output('dx')],
    params: (P) => P.f32('epsilon', p.epsilon),
    channel: 'let a = scale[c] * inverseSqrt(variance[c] + P.epsilon);',
    element: 'dx[i] = a * dy[i];',
  });
}

/**
 * dBias[c] = Σ dy, dScale[c] = Σ dy·x̂ over N and spatial, one workgroup per channel, with
 * x̂ = (x − saveMean)·saveInvStd from the batch statistics the training forward saved.
 * Needs saved: x (the forward input). Overwrites dScale and dBias.
 * Bindings: x, dy, saveMean, saveInvStd, dScale, dBias, params.
 */
export function batchNormParamGradProgram(p: BatchNormShape): KernelProgram {
  return channelReduceProgram(p, {
    label: `batchnorm dScale/dBias ${p.images}×${p.channels}×${p.spatial}`,
    key: 'batchnorm-param-grad',
    reads: ['x', 'dy', 'saveMean', 'saveInvStd'].map((name) => input(name)),
    writes: [output('dScale'), output('dBias')],
    params: (P) => P.f32('epsilon', p.epsilon),
    before: 'let mu = saveMean[c];',
    element: 'let g = dy[i]; acc0 += g * (x[i] - mu); acc1 += g;',
    after: `  dScale[c] = acc.x * saveInvStd[c];
  dBias[c] = acc.y;`,
  });
}

/** The forward LRN's geometry and constants: the backward needs exactly the same. */
export type LrnBackwardParams = LrnParams;

/**
 * LRN backward. Forward: y_c = x_c·D_c^(−β), D_c = bias + α/size·Σ_{j∈W(c)} x_j², W(c) =
 * c − ⌊(size−1)/2⌋ … c + ⌈(size−1)/2⌉. Then
 *   dx_k = dy_k·D_k^(−β) − 2·(α/size)·β·x_k·Σ_{i: k∈W(i)} dy_i·x_i·D_i^(−β−1),
 * i running over k − ⌈(size−1)/2⌉ … k + ⌊(size−1)/2⌋. Needs saved: x (D is recomputed:
 * size² reads per element, cheaper than saving D for the small sizes LRN uses).
 * Bindings: x, dy, dx, params.
 */
export function lrnBackwardProgram(p: LrnBackwardParams): KernelProgram {
  const body = `  let pos = idx % P.spatial;
  let k = i32((idx / P.spatial) % P.channels);
  let base = (idx / (P.spatial * P.channels)) * P.channels * P.spatial + pos;
  let first = max(k - P.above, 0);
  let last = min(k + P.below, i32(P.channels) - 1);
  var direct = 0.0;
  var cross = 0.0;
  for (var i = first; i <= last; i++) {
    let at = base + u32(i) * P.spatial;
    let d = denominator(base, i);
    let dpow = pow(d, -P.beta);
    if (i == k) { direct = dy[at] * dpow; }
    cross += dy[at] * x[at] * dpow / d;
  }
  dx[idx] = direct - 2.0 * P.alphaOverSize * P.beta * x[idx] * cross;`;
  return elementProgram({
    label: `lrn backward ${p.size} ${p.images}×${p.channels}×${p.spatial}`,
    key: 'lrn-bwd',
    total: p.images * p.channels * p.spatial,
    inputs: [input('x'), input('dy')],
    outputs: [output('dx')],
    params: (P) => lrnUniforms(P, p),
    prelude: LRN_DENOMINATOR,
    body,
  });
}
