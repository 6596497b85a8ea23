// BatchNormalization in training mode (forward with batch statistics, and its backward), the
// backward of a frozen BatchNormalization (running statistics), and LRN backward. Forward
// inference kernels: ../normalization.ts. Data is [N, C, spatial…] viewed as N × C × S.
import { dispatch1d, ParamBlock, type KernelProgram } from '../program.ts';
import { accKey, bindingDecls, bindingList, gradElementProgram, storeGrad, type GradOptions } from './common.ts';
import type { LrnParams } from '../normalization.ts';

export interface BatchNormShape {
  images: number;
  channels: number;
  /** ∏ of the dims after C (1 for [N, C]). */
  spatial: number;
  epsilon: number;
}

/** Threads of the one-workgroup-per-channel reductions. */
const REDUCE_WORKGROUP = 256;

/**
 * BatchNormalization, training mode (ONNX training_mode = 1), as two programs run in order:
 * 1. statistics, one workgroup per channel (two passes over the channel: mean, then the biased
 *    variance Σ(x − mean)²/M, M = N·S, as ONNX's ReduceVar); writes saveMean and
 *    saveInvStd = 1/√(var + ε), and updates runningMean / runningVar in place:
 *    running = momentum·running + (1 − momentum)·batch (ONNX; PyTorch's momentum is 1 − this
 *    and it keeps the unbiased variance in running_var).
 * 2. y = (x − saveMean[c]) · saveInvStd[c] · scale[c] + bias[c].
 * Saves for the backward: x, saveMean, saveInvStd (and scale, an initializer).
 * Bindings: (1) x, saveMean, saveInvStd, runningMean, runningVar, params;
 *           (2) x, scale, bias, saveMean, saveInvStd, y, params.
 */
export function batchNormTrainingForwardPrograms(p: BatchNormShape, momentum: number): [KernelProgram, KernelProgram] {
  const P = new ParamBlock()
    .u32('channels', p.channels).u32('spatial', p.spatial).u32('count', p.images * p.spatial)
    .f32('epsilon', p.epsilon).f32('momentum', momentum).f32('invCount', 1 / (p.images * p.spatial));
  const stats = `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> saveMean: array<f32>;
@group(0) @binding(2) var<storage, read_write> saveInvStd: array<f32>;
@group(0) @binding(3) var<storage, read_write> runningMean: array<f32>;
@group(0) @binding(4) var<storage, read_write> runningVar: array<f32>;
${P.wgsl(5)}
var<workgroup> partial: array<f32, ${REDUCE_WORKGROUP}>;
${CHANNEL_PROLOGUE}
fn reduceAll(lid: u32, v: f32) -> f32 {
  partial[lid] = v;
  workgroupBarrier();
  for (var s = ${REDUCE_WORKGROUP / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier();
  return total;
}
@compute @workgroup_size(${REDUCE_WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x;
  var sum = 0.0;
  for (var j = lid; j < P.count; j += ${REDUCE_WORKGROUP}u) { sum += x[at(c, j)]; }
  let mean = reduceAll(lid, sum) * P.invCount;
  var sq = 0.0;
  for (var j = lid; j < P.count; j += ${REDUCE_WORKGROUP}u) { let d = x[at(c, j)] - mean; sq += d * d; }
  let variance = reduceAll(lid, sq) * P.invCount;
  if (lid == 0u) {
    saveMean[c] = mean;
    saveInvStd[c] = inverseSqrt(variance + P.epsilon);
    runningMean[c] = P.momentum * runningMean[c] + (1.0 - P.momentum) * mean;
    runningVar[c] = P.momentum * runningVar[c] + (1.0 - P.momentum) * variance;
  }
}`;
  return [
    {
      label: `batchnorm-train stats ${p.images}×${p.channels}×${p.spatial}`,
      key: 'batchnorm-train-stats',
      wgsl: stats,
      dispatch: channelDispatch(p.channels),
      bindings: bindingList(['x'], ['saveMean', 'saveInvStd', 'runningMean', 'runningVar']),
      params: P.bytes(),
    },
    gradElementProgram({
      label: `batchnorm-train apply ${p.images}×${p.channels}×${p.spatial}`,
      key: 'batchnorm-train-apply',
      total: p.images * p.channels * p.spatial,
      reads: ['x', 'scale', 'bias', 'saveMean', 'saveInvStd'],
      writes: ['y'],
      params: channelParams(p),
      body: `  let c = (idx / P.spatial) % P.channels;
  y[idx] = (x[idx] - saveMean[c]) * saveInvStd[c] * scale[c] + bias[c];`,
    }),
  ];
}

/**
 * BatchNormalization backward, training mode (batch statistics), as two programs in order,
 * with x̂ = (x − saveMean)·saveInvStd and M = N·S:
 * 1. per channel (one workgroup each): dBias = Σ dy, dScale = Σ dy·x̂ (overwritten, never
 *    accumulated: program 2 reads them as this node's own sums);
 * 2. dx = scale·saveInvStd·(dy − dBias/M − x̂·dScale/M).
 * Needs saved: x, saveMean, saveInvStd (from batchNormTrainingForwardPrograms), scale.
 * Bindings: (1) x, dy, saveMean, saveInvStd, dScale, dBias, params;
 *           (2) x, dy, scale, saveMean, saveInvStd, dScale, dBias, dx, params.
 */
export function batchNormTrainingBackwardPrograms(p: BatchNormShape, o?: GradOptions): [KernelProgram, KernelProgram] {
  const params = batchNormParamGradProgram(p, 'batch');
  return [
    params,
    gradElementProgram({
      label: `batchnorm-train dx ${p.images}×${p.channels}×${p.spatial}`,
      key: `batchnorm-train-dx|${accKey(o)}`,
      total: p.images * p.channels * p.spatial,
      reads: ['x', 'dy', 'scale', 'saveMean', 'saveInvStd', 'dScale', 'dBias'],
      params: (P) => channelParams(p)(P).f32('invCount', 1 / (p.images * p.spatial)),
      body: `  let c = (idx / P.spatial) % P.channels;
  let inv = saveInvStd[c];
  let xhat = (x[idx] - saveMean[c]) * inv;
  let g = scale[c] * inv * (dy[idx] - (dBias[c] + xhat * dScale[c]) * P.invCount);
  ${storeGrad('dx', 'idx', 'g', o?.accumulate)}`,
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
  return gradElementProgram({
    label: `batchnorm-frozen dx ${p.images}×${p.channels}×${p.spatial}`,
    key: `batchnorm-frozen-dx|${accKey(o)}`,
    total: p.images * p.channels * p.spatial,
    reads: ['dy', 'scale', { name: 'var', wgsl: 'variance' }],
    params: (P) => channelParams(p)(P).f32('epsilon', p.epsilon),
    body: `  let c = (idx / P.spatial) % P.channels;
  let g = dy[idx] * scale[c] * inverseSqrt(variance[c] + P.epsilon);
  ${storeGrad('dx', 'idx', 'g', o?.accumulate)}`,
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
  const P = new ParamBlock().u32('channels', p.channels).u32('spatial', p.spatial).u32('count', p.images * p.spatial).f32('epsilon', p.epsilon);
  const batch = statistics === 'batch';
  const reads = batch ? ['x', 'dy', 'saveMean', 'saveInvStd'] : ['x', 'dy', 'mean', 'var'];
  const { decls, paramsBinding } = bindingDecls(batch ? reads : ['x', 'dy', 'mean', 'variance'], ['dScale', 'dBias']);
  const wgsl = `
${decls}
${P.wgsl(paramsBinding)}
var<workgroup> partial: array<vec2f, ${REDUCE_WORKGROUP}>;
${CHANNEL_PROLOGUE}
@compute @workgroup_size(${REDUCE_WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let c = wid.x;
  let mu = ${batch ? 'saveMean[c]' : 'mean[c]'};
  let inv = ${batch ? 'saveInvStd[c]' : 'inverseSqrt(variance[c] + P.epsilon)'};
  var acc = vec2f(0.0);
  for (var j = lid; j < P.count; j += ${REDUCE_WORKGROUP}u) {
    let i = at(c, j);
    let g = dy[i];
    acc += vec2f(g * (x[i] - mu) * inv, g);
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var s = ${REDUCE_WORKGROUP / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    dScale[c] = partial[0].x;
    dBias[c] = partial[0].y;
  }
}`;
  return {
    label: `batchnorm dScale/dBias (${statistics}) ${p.images}×${p.channels}×${p.spatial}`,
    key: `batchnorm-param-grad|${statistics}`,
    wgsl,
    dispatch: channelDispatch(p.channels),
    bindings: bindingList(reads, ['dScale', 'dBias']),
    params: P.bytes(),
  };
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
    params: (P) => channelParams(p)(P)
      .i32('below', Math.floor((p.size - 1) / 2)).i32('above', Math.ceil((p.size - 1) / 2))
      .f32('alphaOverSize', p.alpha / p.size).f32('beta', p.beta).f32('bias', p.bias),
    prelude,
    body,
  });
}

// ---- helpers ----

/** Flat index of the j-th element (j < N·S) of channel c. */
const CHANNEL_PROLOGUE = `fn at(c: u32, j: u32) -> u32 {
  return ((j / P.spatial) * P.channels + c) * P.spatial + j % P.spatial;
}`;

/** The uniforms after size and rowSize of the per-element kernels over N × C × S. */
function channelParams(p: { channels: number; spatial: number }): (P: ParamBlock) => ParamBlock {
  return (P) => P.u32('channels', p.channels).u32('spatial', p.spatial);
}

function channelDispatch(channels: number): [number, number, number] {
  const d = dispatch1d(channels);
  if (d[1] !== 1) throw new Error(`batchnorm: ${channels} channels exceed one dispatch row (65535)`);
  return d;
}
