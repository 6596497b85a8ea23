// BatchNormalization in training mode (forward with batch statistics, and its backward), the
// backward of a frozen BatchNormalization (running statistics), and LRN backward. Forward
// inference kernels: ../normalization.ts. Data is [N, C, spatial…] viewed as N × C × S.
import type { KernelProgram, ParamBlock } from '../program.ts';
import { channelReduceProgram, planeProgram } from './channel.ts';
import { accKey, gradElementProgram, storeGrad, type GradOptions } from './common.ts';
import type { LrnParams } from '../normalization.ts';

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
    reads: ['x'],
    writes: ['saveMean', 'saveInvStd', 'runningMean', 'runningVar'],
    params: (P) => P.f32('epsilon', p.epsilon).f32('momentum', momentum),
    before: 'let k = firstOf(x[c * P.units]);',
    element: 'let d = x[i] - k; acc0 += d; acc1 += d * d;',
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
    reads: ['x', 'scale', 'bias', 'saveMean', 'saveInvStd'],
    writes: ['y'],
    channel: `let mu = saveMean[c];
    let a = saveInvStd[c] * scale[c];
    let b = bias[c];`,
    element: 'y[i] = (x[i] - mu) * a + b;',
  });
  return [stats, apply];
}

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
export function batchNormTrainingBackwardPrograms(p: BatchNormShape, o?: GradOptions): [KernelProgram, KernelProgram] {
  const params = batchNormParamGradProgram(p, 'batch');
  return [
    params,
    planeProgram(p, {
      label: `batchnorm-train dx ${p.images}×${p.channels}×${p.spatial}`,
      key: `batchnorm-train-dx|${accKey(o)}`,
      reads: ['x', 'dy', 'scale', 'saveMean', 'saveInvStd', 'dScale', 'dBias'],
      writes: ['dx'],
      channel: `let mu = saveMean[c];
    let inv = saveInvStd[c];
    let a = scale[c] * inv;
    let b = -a * inv * dScale[c] * P.invCount;
    let e = -a * dBias[c] * P.invCount;`,
      element: storeGrad('dx', 'i', 'a * dy[i] + b * (x[i] - mu) + e', o?.accumulate),
    }),
  ];
}

/**
 * Backward of a frozen BatchNormalization (inference mode, running statistics: the statistics
 * are constants): dx = dy·scale[c]/√(var[c] + ε). Needs saved: nothing but the initializers
 * scale and var. Bindings: dy, scale, var, dx, params.
 * Its dScale and dBias (when scale and bias train while the statistics stay frozen) come from
 * batchNormParamGradProgram(p, 'running').
 */
export function batchNormFrozenBackwardProgram(p: BatchNormShape, o?: GradOptions): KernelProgram {
  return planeProgram(p, {
    label: `batchnorm-frozen dx ${p.images}×${p.channels}×${p.spatial}`,
    key: `batchnorm-frozen-dx|${accKey(o)}`,
    reads: ['dy', 'scale', { name: 'var', wgsl: 'variance' }],
    writes: ['dx'],
    params: (P) => P.f32('epsilon', p.epsilon),
    channel: 'let a = scale[c] * inverseSqrt(variance[c] + P.epsilon);',
    element: storeGrad('dx', 'i', 'a * dy[i]', o?.accumulate),
  });
}

/**
 * dBias[c] = Σ dy, dScale[c] = Σ dy·x̂ over N and spatial, one workgroup per channel, with
 * x̂ = (x − mean)·invStd from the batch statistics the training forward saved ('batch':
 * bindings x, dy, saveMean, saveInvStd, dScale, dBias, params) or from the running statistics
 * of a frozen BatchNormalization ('running': x, dy, mean, var, dScale, dBias, params).
 * Needs saved: x (the forward input). Overwrites dScale and dBias.
 */
export function batchNormParamGradProgram(p: BatchNormShape, statistics: 'batch' | 'running'): KernelProgram {
  const batch = statistics === 'batch';
  return channelReduceProgram(p, {
    label: `batchnorm dScale/dBias (${statistics}) ${p.images}×${p.channels}×${p.spatial}`,
    key: `batchnorm-param-grad|${statistics}`,
    reads: ['x', 'dy', ...(batch ? ['saveMean', 'saveInvStd'] : ['mean', { name: 'var', wgsl: 'variance' }])],
    writes: ['dScale', 'dBias'],
    params: (P) => P.f32('epsilon', p.epsilon),
    before: `let mu = ${batch ? 'saveMean[c]' : 'mean[c]'};`,
    element: 'let g = dy[i]; acc0 += g * (x[i] - mu); acc1 += g;',
    after: `  dScale[c] = acc.x * ${batch ? 'saveInvStd[c]' : 'inverseSqrt(variance[c] + P.epsilon)'};
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
export function lrnBackwardProgram(p: LrnBackwardParams, o?: GradOptions): KernelProgram {
  const prelude = `fn denominator(base: u32, i: i32) -> f32 {
  let first = max(i - P.below, 0);
  let last = min(i + P.above, i32(P.channels) - 1);
  var sum = 0.0;
  for (var j = first; j <= last; j++) {
    let v = x[base + u32(j) * P.spatial];
    sum += v * v;
  }
  return P.bias + P.alphaOverSize * sum;
}`;
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
  let g = direct - 2.0 * P.alphaOverSize * P.beta * x[idx] * cross;
  ${storeGrad('dx', 'idx', 'g', o?.accumulate)}`;
  return gradElementProgram({
    label: `lrn backward ${p.size} ${p.images}×${p.channels}×${p.spatial}`,
    key: `lrn-bwd|${accKey(o)}`,
    total: p.images * p.channels * p.spatial,
    reads: ['x', 'dy'],
    params: (P) =>
      channelParams(p)(P)
        .i32('below', Math.floor((p.size - 1) / 2))
        .i32('above', Math.ceil((p.size - 1) / 2))
        .f32('alphaOverSize', p.alpha / p.size)
        .f32('beta', p.beta)
        .f32('bias', p.bias),
    prelude,
    body,
  });
}

// ---- helpers ----

/** The uniforms after size and rowSize of the per-element kernels over N × C × S. */
function channelParams(p: { channels: number; spatial: number }): (P: ParamBlock) => ParamBlock {
  return (P) => P.u32('channels', p.channels).u32('spatial', p.spatial);
}
