// Float64 oracles for the backward kernels: central finite differences of the forward
// references, and the forward references the backward tests need that reference-ops lacks.
import { size } from './reference-ops.ts';

/**
 * ∂L/∂x for L = Σ_k f(x)_k · r_k by central differences (f in float64), one element at a time:
 * (L(x + h·e_i) − L(x − h·e_i)) / 2h.
 */
export function finiteDifferenceGradient(
  f: (x: Float64Array) => ArrayLike<number>,
  x: ArrayLike<number>,
  r: ArrayLike<number>,
  h = 1e-5,
): Float64Array {
  const at = Float64Array.from(x);
  const grad = new Float64Array(at.length);
  const loss = (): number => {
    const y = f(at);
    if (y.length !== r.length) throw new Error(`finite differences: f gives ${y.length} values, r has ${r.length}`);
    let s = 0;
    for (let k = 0; k < y.length; k++) s += y[k] * r[k];
    return s;
  };
  for (let i = 0; i < at.length; i++) {
    const v = at[i];
    at[i] = v + h;
    const up = loss();
    at[i] = v - h;
    const down = loss();
    at[i] = v;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

/**
 * BatchNormalization in training mode (ONNX): batch mean and biased variance per channel over
 * N and the spatial dims, y = (x − mean)/√(var + ε)·scale + bias; running statistics
 * momentum·running + (1 − momentum)·batch.
 */
export function batchNormTrainingRef(
  x: ArrayLike<number>,
  dims: number[],
  scale: ArrayLike<number>,
  bias: ArrayLike<number>,
  epsilon: number,
  running?: { mean: ArrayLike<number>; variance: ArrayLike<number>; momentum: number },
): {
  y: Float64Array;
  mean: Float64Array;
  variance: Float64Array;
  runningMean: Float64Array;
  runningVar: Float64Array;
} {
  const [N, C] = dims;
  const S = size(dims.slice(2));
  const M = N * S;
  const mean = new Float64Array(C);
  const variance = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let n = 0; n < N; n++) for (let i = 0; i < S; i++) s += x[(n * C + c) * S + i];
    mean[c] = s / M;
    let q = 0;
    for (let n = 0; n < N; n++) for (let i = 0; i < S; i++) q += (x[(n * C + c) * S + i] - mean[c]) ** 2;
    variance[c] = q / M;
  }
  const y = new Float64Array(size(dims));
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const inv = 1 / Math.sqrt(variance[c] + epsilon);
      for (let i = 0; i < S; i++) {
        const at = (n * C + c) * S + i;
        y[at] = (x[at] - mean[c]) * inv * scale[c] + bias[c];
      }
    }
  }
  const runningMean = new Float64Array(C);
  const runningVar = new Float64Array(C);
  if (running) {
    for (let c = 0; c < C; c++) {
      runningMean[c] = running.momentum * running.mean[c] + (1 - running.momentum) * mean[c];
      runningVar[c] = running.momentum * running.variance[c] + (1 - running.momentum) * variance[c];
    }
  }
  return { y, mean, variance, runningMean, runningVar };
}

/** MaxPool's arg-max per window by the first-maximum rule (row-major window order): flat input index per output. */
export function maxPoolArgmaxRef(
  x: ArrayLike<number>,
  dims: number[],
  o: { kernel: number[]; strides: number[]; pads: number[]; dilations: number[]; outH: number; outW: number },
): Int32Array {
  const [N, C, H, W] = dims;
  const out = new Int32Array(N * C * o.outH * o.outW);
  for (let nc = 0; nc < N * C; nc++) {
    for (let oh = 0; oh < o.outH; oh++) {
      for (let ow = 0; ow < o.outW; ow++) {
        let best = -Infinity;
        let arg = -1;
        for (let kh = 0; kh < o.kernel[0]; kh++) {
          const ih = oh * o.strides[0] - o.pads[0] + kh * o.dilations[0];
          for (let kw = 0; kw < o.kernel[1]; kw++) {
            const iw = ow * o.strides[1] - o.pads[1] + kw * o.dilations[1];
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            const at = (nc * H + ih) * W + iw;
            if (arg < 0 || x[at] > best) {
              best = x[at];
              arg = at;
            }
          }
        }
        out[(nc * o.outH + oh) * o.outW + ow] = arg;
      }
    }
  }
  return out;
}
