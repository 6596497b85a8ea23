// BatchNormalization in training mode (forward with batch statistics, and its backward), the
// backward of a frozen BatchNormalization (running statistics), and LRN backward. Forward
// inference kernels: ../normalization.ts. Data is [N, C, spatial…] viewed as N × C × S.
import { elementProgram, input, output, type KernelProgram } from '../shader.ts';
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
    reads: ['x', 'scale', 'bias', 'saveMean', 'saveInvStd'].map((name) => input(name)),
    writes: [output('y')],
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
