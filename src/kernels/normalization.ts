// BatchNormalization (inference: running statistics) and LRN (across channels), over NC… data.
// When a BatchNormalization follows a Conv the runtime folds it into the Conv's weights and
// bias instead (foldBatchNormIntoConv), and this kernel does not run at all.
import { elementProgram, input, type KernelProgram, type ParamBlock } from './shader.ts';

/**
 * y = (x − mean[c]) / √(var[c] + ε) · scale[c] + bias[c] for x [N, C, spatial…], computed as
 * x·s + (bias − mean·s) with s = scale/√(var + ε): onnxruntime's order and the Conv fold's, so
 * infinite statistics give the same NaN/±∞ whether or not the BatchNormalization is folded.
 * Bindings: x, scale, bias, mean, var, y, params.
 */
export function batchNormProgram(images: number, channels: number, spatial: number, epsilon: number): KernelProgram {
  return elementProgram({
    label: `batchnorm ${images}×${channels}×${spatial}`,
    key: 'batchnorm',
    total: images * channels * spatial,
    inputs: [input('x'), input('scale'), input('bias'), input('mean'), input('var', { variable: 'variance' })],
    params: (P) => P.u32('channels', channels).u32('spatial', spatial).f32('epsilon', epsilon),
    body: `
  let c = (idx / P.spatial) % P.channels;
  let s = scale[c] * inverseSqrt(variance[c] + P.epsilon);
  y[idx] = x[idx] * s + (bias[c] - mean[c] * s);`,
  });
}

/** Running statistics of a BatchNormalization, to fold into the Conv before it. */
export interface BatchNormStatistics {
  scale: ArrayLike<number>;
  bias: ArrayLike<number>;
  mean: ArrayLike<number>;
  variance: ArrayLike<number>;
  epsilon: number;
}

/**
 * Folds y = BN(conv(x)) into the conv: w'[co] = w[co]·s, b'[co] = (b[co] − mean)·s + beta with
 * s = scale/√(var + ε). Computed in float64, rounded once. (The runtime folds the weights while
 * packing them: packConvWeights with batchNormChannelScale.)
 */
export function foldBatchNormIntoConv(
  weights: Float32Array,
  bias: Float32Array | undefined,
  outChannels: number,
  bn: BatchNormStatistics,
): { weights: Float32Array; bias: Float32Array } {
  const per = weights.length / outChannels;
  const s = batchNormChannelScale(bn, outChannels);
  const w = new Float32Array(weights.length);
  for (let c = 0; c < outChannels; c++) {
    for (let i = 0; i < per; i++) w[c * per + i] = weights[c * per + i] * s[c];
  }
  return { weights: w, bias: foldBatchNormBias(bias, bn, outChannels) };
}

/** s[c] = scale[c]/√(var[c] + ε), in float64: what folding multiplies output channel c's weights by. */
export function batchNormChannelScale(bn: BatchNormStatistics, outChannels: number): Float64Array {
  const s = new Float64Array(outChannels);
  for (let c = 0; c < outChannels; c++) s[c] = bn.scale[c] / Math.sqrt(bn.variance[c] + bn.epsilon);
  return s;
}

/** The conv bias with a BatchNormalization folded in: (b − mean)·s + beta (b = 0 without a bias). */
export function foldBatchNormBias(
  bias: Float32Array | undefined,
  bn: BatchNormStatistics,
  outChannels: number,
): Float32Array {
  const s = batchNormChannelScale(bn, outChannels);
  const b = new Float32Array(outChannels);
  for (let c = 0; c < outChannels; c++) b[c] = ((bias ? bias[c] : 0) - bn.mean[c]) * s[c] + bn.bias[c];
  return b;
}

export interface LrnParams {
  images: number;
  channels: number;
  spatial: number;
  size: number;
  alpha: number;
  beta: number;
  bias: number;
}

/**
 * LRN: y = x / (bias + α/size · Σ x²)^β, the sum over channels c − ⌊(size−1)/2⌋ … c + ⌈(size−1)/2⌉.
 * Bindings: x, y, params.
 */
export function lrnProgram(p: LrnParams): KernelProgram {
  return elementProgram({
    label: `lrn ${p.size} ${p.images}×${p.channels}×${p.spatial}`,
    key: 'lrn',
    total: p.images * p.channels * p.spatial,
    params: (P) => lrnUniforms(P, p),
    prelude: LRN_DENOMINATOR,
    body: `
  let pos = idx % P.spatial;
  let c = i32((idx / P.spatial) % P.channels);
  let base = (idx / (P.spatial * P.channels)) * P.channels * P.spatial + pos;
  y[idx] = x[idx] / pow(denominator(base, c), P.beta);`,
  });
}

/** LRN's uniforms after size and rowSize (the forward's and the backward's). */
export function lrnUniforms(P: ParamBlock, p: LrnParams): ParamBlock {
  return P.u32('channels', p.channels)
    .u32('spatial', p.spatial)
    .i32('below', Math.floor((p.size - 1) / 2))
    .i32('above', Math.ceil((p.size - 1) / 2))
    .f32('alphaOverSize', p.alpha / p.size)
    .f32('beta', p.beta)
    .f32('bias', p.bias);
}

/** D_c = bias + α/size·Σ x_j² over channel c's window, at `base` (its image and position) in x. */
export const LRN_DENOMINATOR = `fn denominator(base: u32, c: i32) -> f32 {
  let first = max(c - P.below, 0);
  let last = min(c + P.above, i32(P.channels) - 1);
  var sum = 0.0;
  for (var j = first; j <= last; j++) {
    let v = x[base + u32(j) * P.spatial];
    sum += v * v;
  }
  return P.bias + P.alphaOverSize * sum;
}`;
