// Plain float64 references for the forward kernels: loops that follow the ONNX operator
// definitions literally, no cleverness. The oracle for every kernel test.

export type Act =
  | { kind: 'none' }
  | { kind: 'relu' }
  | { kind: 'clip'; min: number; max: number }
  | { kind: 'leakyRelu'; alpha: number };

export function applyAct(v: number, act: Act | undefined): number {
  if (!act || act.kind === 'none') return v;
  if (act.kind === 'relu') return Math.max(v, 0);
  if (act.kind === 'leakyRelu') return v >= 0 ? v : v * act.alpha;
  return Math.min(Math.max(v, act.min), act.max);
}

/** Relative L2 error ‖got − want‖ / ‖want‖ (absolute when want is all zeros). */
export function relL2(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) throw new Error(`length ${got.length} vs ${want.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  if (!Number.isFinite(num)) return Infinity;
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

export function size(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

export function stridesOf(dims: readonly number[]): number[] {
  const s = new Array(dims.length).fill(1);
  for (let i = dims.length - 2; i >= 0; i--) s[i] = s[i + 1] * dims[i + 1];
  return s;
}

// ---- GEMM ----

export interface GemmRefOptions {
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: number;
  /** C, unidirectionally broadcast to [M, N] (dims of rank ≤ 2). */
  c?: { data: ArrayLike<number>; dims: number[] };
  act?: Act;
}

/** Y = act(alpha·op(A)·op(B) + beta·C); A is [M,K] or [K,M] (transA), B is [K,N] or [N,K]. */
export function gemmRef(a: ArrayLike<number>, b: ArrayLike<number>, o: GemmRefOptions): Float64Array {
  const { M, N, K } = o;
  const alpha = o.alpha ?? 1;
  const beta = o.beta ?? 1;
  const y = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        const av = o.transA ? a[k * M + m] : a[m * K + k];
        const bv = o.transB ? b[n * K + k] : b[k * N + n];
        s += av * bv;
      }
      let v = alpha * s;
      if (o.c) v += beta * o.c.data[broadcastIndex([m, n], [M, N], o.c.dims)];
      y[m * N + n] = applyAct(v, o.act);
    }
  }
  return y;
}

/** numpy matmul of [..., M, K] × [..., K, N] with broadcast batch dims (rank ≥ 2 each). */
export function matmulRef(
  a: ArrayLike<number>,
  aDims: number[],
  b: ArrayLike<number>,
  bDims: number[],
): { data: Float64Array; dims: number[] } {
  const M = aDims[aDims.length - 2];
  const K = aDims[aDims.length - 1];
  const N = bDims[bDims.length - 1];
  const batchA = aDims.slice(0, -2);
  const batchB = bDims.slice(0, -2);
  const batch = broadcastDims([batchA, batchB]);
  const dims = [...batch, M, N];
  const out = new Float64Array(size(dims));
  const nb = size(batch);
  for (let i = 0; i < nb; i++) {
    const idx = unravel(i, batch);
    const ia = broadcastIndex(idx, batch, batchA);
    const ib = broadcastIndex(idx, batch, batchB);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[ia * M * K + m * K + k] * b[ib * K * N + k * N + n];
        out[i * M * N + m * N + n] = s;
      }
    }
  }
  return { data: out, dims };
}

// ---- convolution ----

export interface ConvRefOptions {
  strides?: number[];
  /** [top, left, bottom, right] */
  pads?: number[];
  dilations?: number[];
  group?: number;
  act?: Act;
}

/** NCHW 2-D convolution; x [N,C,H,W], w [Cout, C/group, KH, KW], bias [Cout] or undefined. */
export function convRef(
  x: ArrayLike<number>,
  xDims: number[],
  w: ArrayLike<number>,
  wDims: number[],
  bias: ArrayLike<number> | undefined,
  o: ConvRefOptions = {},
): { data: Float64Array; dims: number[] } {
  const [N, C, H, W] = xDims;
  const [CO, CG, KH, KW] = wDims;
  const [sh, sw] = o.strides ?? [1, 1];
  const [pt, pl, pb, pr] = o.pads ?? [0, 0, 0, 0];
  const [dh, dw] = o.dilations ?? [1, 1];
  const group = o.group ?? 1;
  if (CG * group !== C) throw new Error('convRef: channel mismatch');
  const OH = Math.floor((H + pt + pb - ((KH - 1) * dh + 1)) / sh) + 1;
  const OW = Math.floor((W + pl + pr - ((KW - 1) * dw + 1)) / sw) + 1;
  const out = new Float64Array(N * CO * OH * OW);
  const cog = CO / group;
  for (let n = 0; n < N; n++) {
    for (let co = 0; co < CO; co++) {
      const g = Math.floor(co / cog);
      for (let oh = 0; oh < OH; oh++) {
        for (let ow = 0; ow < OW; ow++) {
          let s = bias ? bias[co] : 0;
          for (let ci = 0; ci < CG; ci++) {
            for (let kh = 0; kh < KH; kh++) {
              const ih = oh * sh - pt + kh * dh;
              if (ih < 0 || ih >= H) continue;
              for (let kw = 0; kw < KW; kw++) {
                const iw = ow * sw - pl + kw * dw;
                if (iw < 0 || iw >= W) continue;
                s += x[((n * C + g * CG + ci) * H + ih) * W + iw] * w[((co * CG + ci) * KH + kh) * KW + kw];
              }
            }
          }
          out[((n * CO + co) * OH + oh) * OW + ow] = applyAct(s, o.act);
        }
      }
    }
  }
  return { data: out, dims: [N, CO, OH, OW] };
}

// ---- pooling ----

export interface PoolRefOptions {
  kernel: number[];
  strides?: number[];
  /** [top, left, bottom, right] */
  pads?: number[];
  dilations?: number[];
  ceilMode?: boolean;
  countIncludePad?: boolean;
}

/** Output size per ONNX (and PyTorch's ceil_mode rule: the last window must start inside the input or left padding). */
export function poolOutputSize(
  input: number,
  k: number,
  s: number,
  padBegin: number,
  padEnd: number,
  d: number,
  ceil: boolean,
): number {
  const span = (k - 1) * d + 1;
  const room = input + padBegin + padEnd - span;
  let out = Math.floor((ceil ? room + s - 1 : room) / s) + 1;
  if (ceil && (out - 1) * s >= input + padBegin) out -= 1;
  return out;
}

export function poolRef(
  kind: 'max' | 'avg',
  x: ArrayLike<number>,
  xDims: number[],
  o: PoolRefOptions,
): { data: Float64Array; dims: number[] } {
  const [N, C, H, W] = xDims;
  const [KH, KW] = o.kernel;
  const [sh, sw] = o.strides ?? [1, 1];
  const [pt, pl, pb, pr] = o.pads ?? [0, 0, 0, 0];
  const [dh, dw] = o.dilations ?? [1, 1];
  const OH = poolOutputSize(H, KH, sh, pt, pb, dh, !!o.ceilMode);
  const OW = poolOutputSize(W, KW, sw, pl, pr, dw, !!o.ceilMode);
  const out = new Float64Array(N * C * OH * OW);
  for (let nc = 0; nc < N * C; nc++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        let best = -Infinity;
        let sum = 0;
        let count = 0;
        let padCount = 0;
        for (let kh = 0; kh < KH; kh++) {
          const ih = oh * sh - pt + kh * dh;
          for (let kw = 0; kw < KW; kw++) {
            const iw = ow * sw - pl + kw * dw;
            // count_include_pad counts positions inside the padded input, not past its end
            // (ceil_mode windows that run past the padding are clipped), as ONNX Runtime does.
            if (ih < H + pb && iw < W + pr) padCount++;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            const v = x[(nc * H + ih) * W + iw];
            best = Math.max(best, v);
            sum += v;
            count++;
          }
        }
        out[(nc * OH + oh) * OW + ow] = kind === 'max' ? best : sum / (o.countIncludePad ? padCount : count);
      }
    }
  }
  return { data: out, dims: [N, C, OH, OW] };
}

export function globalPoolRef(
  kind: 'max' | 'avg',
  x: ArrayLike<number>,
  xDims: number[],
): { data: Float64Array; dims: number[] } {
  const [N, C] = xDims;
  const S = size(xDims.slice(2));
  const out = new Float64Array(N * C);
  for (let nc = 0; nc < N * C; nc++) {
    let best = -Infinity;
    let sum = 0;
    for (let i = 0; i < S; i++) {
      const v = x[nc * S + i];
      best = Math.max(best, v);
      sum += v;
    }
    out[nc] = kind === 'max' ? best : sum / S;
  }
  return { data: out, dims: [N, C, ...xDims.slice(2).map(() => 1)] };
}

// ---- normalisation ----

export function batchNormRef(
  x: ArrayLike<number>,
  xDims: number[],
  scale: ArrayLike<number>,
  bias: ArrayLike<number>,
  mean: ArrayLike<number>,
  variance: ArrayLike<number>,
  epsilon: number,
): Float64Array {
  const [N, C] = xDims;
  const S = size(xDims.slice(2));
  const out = new Float64Array(size(xDims));
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      const inv = 1 / Math.sqrt(variance[c] + epsilon);
      for (let i = 0; i < S; i++) {
        const at = (n * C + c) * S + i;
        out[at] = (x[at] - mean[c]) * inv * scale[c] + bias[c];
      }
    }
  }
  return out;
}

/** LRN across channels: y = x / (bias + alpha/size · Σ x²)^beta over channels c−⌊(size−1)/2⌋ … c+⌈(size−1)/2⌉. */
export function lrnRef(
  x: ArrayLike<number>,
  xDims: number[],
  o: { size: number; alpha: number; beta: number; bias: number },
): Float64Array {
  const [N, C] = xDims;
  const S = size(xDims.slice(2));
  const out = new Float64Array(size(xDims));
  const lo = Math.floor((o.size - 1) / 2);
  const hi = Math.ceil((o.size - 1) / 2);
  for (let n = 0; n < N; n++) {
    for (let c = 0; c < C; c++) {
      for (let i = 0; i < S; i++) {
        let sq = 0;
        for (let j = Math.max(0, c - lo); j <= Math.min(C - 1, c + hi); j++) sq += x[(n * C + j) * S + i] ** 2;
        const at = (n * C + c) * S + i;
        out[at] = x[at] / Math.pow(o.bias + (o.alpha / o.size) * sq, o.beta);
      }
    }
  }
  return out;
}

// ---- elementwise ----

export function unaryRef(x: ArrayLike<number>, f: (v: number) => number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f(x[i]);
  return out;
}

export const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

export function broadcastDims(shapes: number[][]): number[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const e = s[s.length - rank + i] ?? 1;
      if (e !== 1) {
        if (d !== 1 && d !== e) throw new Error(`cannot broadcast [${shapes.join('] [')}]`);
        d = e;
      }
    }
    out.push(d);
  }
  return out;
}

export function unravel(i: number, dims: number[]): number[] {
  const idx = new Array(dims.length).fill(0);
  for (let d = dims.length - 1; d >= 0; d--) {
    idx[d] = i % dims[d];
    i = Math.floor(i / dims[d]);
  }
  return idx;
}

/** Flat index into a tensor of `from` dims for output index `idx` of `outDims` (numpy rules). */
export function broadcastIndex(idx: number[], outDims: number[], from: number[]): number {
  let flat = 0;
  const shift = outDims.length - from.length;
  for (let d = 0; d < from.length; d++) flat = flat * from[d] + (from[d] === 1 ? 0 : idx[d + shift]);
  return flat;
}

export function broadcastRef(
  inputs: { data: ArrayLike<number>; dims: number[] }[],
  f: (...v: number[]) => number,
): { data: Float64Array; dims: number[] } {
  const dims = broadcastDims(inputs.map((t) => t.dims));
  const out = new Float64Array(size(dims));
  for (let i = 0; i < out.length; i++) {
    const idx = unravel(i, dims);
    out[i] = f(...inputs.map((t) => t.data[broadcastIndex(idx, dims, t.dims)]));
  }
  return { data: out, dims };
}

// ---- data movement ----

export function concatRef(
  inputs: { data: ArrayLike<number>; dims: number[] }[],
  axis: number,
): { data: Float64Array; dims: number[] } {
  const dims = [...inputs[0].dims];
  dims[axis] = inputs.reduce((s, t) => s + t.dims[axis], 0);
  const outer = size(dims.slice(0, axis));
  const inner = size(dims.slice(axis + 1));
  const out = new Float64Array(size(dims));
  let at = 0;
  for (let o = 0; o < outer; o++) {
    for (const t of inputs) {
      const chunk = t.dims[axis] * inner;
      for (let i = 0; i < chunk; i++) out[at++] = t.data[o * chunk + i];
    }
  }
  return { data: out, dims };
}

export function transposeRef(
  x: ArrayLike<number>,
  dims: number[],
  perm: number[],
): { data: Float64Array; dims: number[] } {
  const outDims = perm.map((p) => dims[p]);
  const inStrides = stridesOf(dims);
  const out = new Float64Array(size(dims));
  for (let i = 0; i < out.length; i++) {
    const idx = unravel(i, outDims);
    let src = 0;
    for (let d = 0; d < perm.length; d++) src += idx[d] * inStrides[perm[d]];
    out[i] = x[src];
  }
  return { data: out, dims: outDims };
}

/** Constant Pad; pads = [begin_0 … begin_{r-1}, end_0 … end_{r-1}], negative values crop. */
export function padRef(
  x: ArrayLike<number>,
  dims: number[],
  pads: number[],
  value: number,
): { data: Float64Array; dims: number[] } {
  const r = dims.length;
  const outDims = dims.map((d, i) => d + pads[i] + pads[i + r]);
  const out = new Float64Array(size(outDims));
  for (let i = 0; i < out.length; i++) {
    const idx = unravel(i, outDims);
    let src = 0;
    let inside = true;
    for (let d = 0; d < r; d++) {
      const s = idx[d] - pads[d];
      if (s < 0 || s >= dims[d]) inside = false;
      src = src * dims[d] + s;
    }
    out[i] = inside ? x[src] : value;
  }
  return { data: out, dims: outDims };
}

/**
 * Softmax. opset < 13: the input is coerced to 2-D [∏dims[:axis], ∏dims[axis:]] and normalised
 * over the second; opset ≥ 13: normalised along `axis` alone.
 */
export function softmaxRef(x: ArrayLike<number>, dims: number[], axis: number, opset: number): Float64Array {
  const r = dims.length;
  const a = axis < 0 ? axis + r : axis;
  const out = new Float64Array(x.length);
  const outer = size(dims.slice(0, a));
  const len = opset < 13 ? size(dims.slice(a)) : dims[a];
  const inner = opset < 13 ? 1 : size(dims.slice(a + 1));
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let mx = -Infinity;
      for (let j = 0; j < len; j++) mx = Math.max(mx, x[(o * len + j) * inner + i]);
      let sum = 0;
      for (let j = 0; j < len; j++) sum += Math.exp(x[(o * len + j) * inner + i] - mx);
      for (let j = 0; j < len; j++) out[(o * len + j) * inner + i] = Math.exp(x[(o * len + j) * inner + i] - mx) / sum;
    }
  }
  return out;
}
