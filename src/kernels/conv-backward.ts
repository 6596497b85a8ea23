// Conv (2-D, NCHW, groups, strides, pads, dilations) for training, forward and backward on the
// shared GEMM core. The trainable weight stays in its ONNX layout [Cout, Cin/group, KH, KW] (the
// optimizer updates it in place); every step repacks it on the GPU into what the kernels read.
//
// Forward: the inference implicit-GEMM conv (conv.ts: no im2col matrix), on a weight packed per
// step by convPackWeightsProgram into packConvWeights' layout. Only x is saved for the backward.
//
// Backward, with every temporary bounded (convBackwardChunkRows): rows m = (image, oh, ow) are
// processed in chunks, per chunk
//   col [g][m][k]     = im2col(x), k = (ci, kh, kw)   (the ONNX weight's order)
//   dyRows [g][m][co] = dy                             (channels of each group last)
//   dW [g][co][k]    += dyRowsᵀ · col                  GEMM A=dyRows 'km', B=col 'kn' (first chunk: =)
//   dCol              = dyRows · W                     GEMM A=dyRows 'mk', B=W 'kn'   (strided only)
//   dx (its images)   = col2im(dCol)                   gather: each input sums the windows reading it
// and dB [c] = Σ_image Σ_pos dy. A stride-1 conv needs no dCol: dx is itself a stride-1 conv of
// dy (convDataGradParams) with the weight flipped and its channels swapped per group, run on
// the implicit-GEMM conv like the forward.
import { PACKED_N_MULTIPLE, type Conv2dParams } from './conv.ts';
import { windowUniforms } from './program.ts';
import { channelReduceProgram } from './backward/channel.ts';
import { gemmPrograms, roundUp, type GemmProblem, type GemmVariant } from './gemm.ts';
import {
  elementProgram,
  input,
  NO_ACTIVATION,
  output,
  renameBindings,
  type KernelProgram,
  type ParamBlock,
} from './shader.ts';

/** Sizes derived from the params, shared by every program below. */
export function convTrainSizes(p: Conv2dParams): {
  M: number;
  K: number;
  groupIn: number;
  groupOut: number;
  spatial: number;
} {
  const groupIn = p.inChannels / p.group;
  const groupOut = p.outChannels / p.group;
  const spatial = p.outH * p.outW;
  return { M: p.images * spatial, K: groupIn * p.kernelH * p.kernelW, groupIn, groupOut, spatial };
}

/** Rows [offset, offset + count) of the M = images·OH·OW rows: what one backward chunk covers. */
export interface ConvRows {
  offset: number;
  count: number;
}

const allRows = (p: Conv2dParams): ConvRows => ({ offset: 0, count: convTrainSizes(p).M });

/** Bytes per row of the largest backward temporary (col and dCol: K floats per group; dyRows: groupOut). */
export function convBackwardRowBytes(p: Conv2dParams): number {
  const s = convTrainSizes(p);
  return 4 * p.group * Math.max(s.K, s.groupOut);
}

/**
 * Rows per backward chunk so that each temporary fits `budgetBytes`: whole images when one fits
 * (then col2im can finish the images of a chunk), else a part of an image (dW only), at least 1.
 */
export function convBackwardChunkRows(p: Conv2dParams, budgetBytes: number): number {
  const s = convTrainSizes(p);
  const fit = Math.max(1, Math.floor(budgetBytes / convBackwardRowBytes(p)));
  if (fit >= s.M) return s.M;
  return fit >= s.spatial ? fit - (fit % s.spatial) : fit;
}

/** Channels one invocation of im2col and of the weight pack walks: enough invocations to fill a
 * device, long enough runs that each invocation streams its writes. */
const CHANNEL_BLOCK = 16;

/**
 * col[g][r][k] = x at the window of row m = rows.offset + r, 0 in padding. One invocation per
 * (group, block of input channels, row), rows fastest: neighbouring invocations read
 * neighbouring positions of x, and each writes one run of its col row (k = (ci, kh, kw), so a
 * block's channels and taps are adjacent). Bindings: x, col, params.
 */
export function im2colProgram(p: Conv2dParams, rows: ConvRows = allRows(p)): KernelProgram {
  const s = convTrainSizes(p);
  const blocks = Math.ceil(s.groupIn / CHANNEL_BLOCK);
  return windowProgram(
    'im2col',
    p,
    p.group * blocks * rows.count,
    'x',
    'col',
    (P) => P.u32('rows', rows.count).u32('rowOffset', rows.offset).u32('blocks', blocks),
    `
  let r = idx % P.rows;
  let block = (idx / P.rows) % P.blocks;
  let g = idx / (P.rows * P.blocks);
  let m = P.rowOffset + r;
  let pos = m % P.spatial;
  let img = m / P.spatial;
  let ih0 = i32((pos / P.outW) * P.strideH) - P.padTop;
  let iw0 = i32((pos % P.outW) * P.strideW) - P.padLeft;
  let c0 = block * ${CHANNEL_BLOCK}u;
  let c1 = min(c0 + ${CHANNEL_BLOCK}u, P.groupIn);
  var out = ((g * P.rows + r) * P.groupIn + c0) * P.kernelH * P.kernelW;
  for (var ci = c0; ci < c1; ci++) {
    let plane = (img * P.channels + g * P.groupIn + ci) * P.height;
    for (var kh = 0u; kh < P.kernelH; kh++) {
      let ih = ih0 + i32(kh) * P.dilationH;
      let rowOk = u32(ih) < P.height;
      let base = (plane + u32(ih)) * P.width;
      for (var kw = 0u; kw < P.kernelW; kw++) {
        let iw = iw0 + i32(kw) * P.dilationW;
        var v = 0.0;
        if (rowOk && u32(iw) < P.width) { v = x[base + u32(iw)]; }
        y[out] = v;
        out++;
      }
    }
  }`,
  );
}

/**
 * dx of images [first, first + count) = Σ dCol over the windows that read each input, where
 * dCol [g][r][k] holds those images' rows. Bindings: dcol, dx, params.
 */
export function col2imProgram(
  p: Conv2dParams,
  images: { first: number; count: number } = { first: 0, count: p.images },
): KernelProgram {
  const imageSize = p.inChannels * p.height * p.width;
  const rows = images.count * convTrainSizes(p).spatial;
  return windowProgram(
    'col2im',
    p,
    images.count * imageSize,
    'dcol',
    'dx',
    (P) =>
      P.u32('rows', rows)
        .u32('outOffset', images.first * imageSize)
        // A dilation as whole strides and a remainder: each tap steps (q, r) without dividing.
        .i32('dilationHStrides', Math.floor(p.dilationH / p.strideH))
        .i32('dilationHRest', p.dilationH % p.strideH)
        .i32('dilationWStrides', Math.floor(p.dilationW / p.strideW))
        .i32('dilationWRest', p.dilationW % p.strideW),
    `
  let w = i32(idx % P.width);
  let h = i32((idx / P.width) % P.height);
  let c = (idx / (P.width * P.height)) % P.channels;
  let img = idx / (P.width * P.height * P.channels);
  let g = c / P.groupIn;
  let ci = c % P.groupIn;
  // Tap kh reads output row th / strideH where th = h + padTop - kh·dilationH divides evenly:
  // th = qh·strideH + rh (0 ≤ rh < strideH) is stepped from tap to tap instead of divided per
  // tap (llvmpipe divides lane by lane, about 2 ns a lane; the taps did two divisions each).
  var qh = (h + P.padTop) / i32(P.strideH);
  var rh = (h + P.padTop) % i32(P.strideH);
  let qw0 = (w + P.padLeft) / i32(P.strideW);
  let rw0 = (w + P.padLeft) % i32(P.strideW);
  var acc = 0.0;
  for (var kh = 0u; kh < P.kernelH; kh++) {
    if (rh == 0 && qh >= 0 && u32(qh) < P.outH) {
      var qw = qw0;
      var rw = rw0;
      for (var kw = 0u; kw < P.kernelW; kw++) {
        if (rw == 0 && qw >= 0 && u32(qw) < P.outW) {
          let r = img * P.spatial + u32(qh) * P.outW + u32(qw);
          let k = (ci * P.kernelH + kh) * P.kernelW + kw;
          acc += dcol[(g * P.rows + r) * P.K + k];
        }
        rw -= P.dilationWRest;
        qw -= P.dilationWStrides + select(0, 1, rw < 0);
        rw += select(0, i32(P.strideW), rw < 0);
      }
    }
    rh -= P.dilationHRest;
    qh -= P.dilationHStrides + select(0, 1, rh < 0);
    rh += select(0, i32(P.strideH), rh < 0);
  }
  y[P.outOffset + idx] = acc;`,
  );
}

/**
 * dyRows[g][r][co] = dy[img][g·groupOut + co][pos] of row m = rows.offset + r. One invocation
 * per (group, row) copies its groupOut channels: neighbouring invocations read neighbouring
 * positions of dy and each writes one run of rows. Bindings: dy, rows, params.
 */
export function convGradRowsProgram(p: Conv2dParams, rows: ConvRows = allRows(p)): KernelProgram {
  const s = convTrainSizes(p);
  return elementProgram({
    label: `conv dy rows ${p.outChannels}×${rows.count}`,
    key: 'conv-dy-rows',
    total: p.group * rows.count,
    inputs: [input('dy')],
    outputs: [output('rows', { variable: 'y' })],
    params: (P) =>
      P.u32('rows', rows.count)
        .u32('rowOffset', rows.offset)
        .u32('groupOut', s.groupOut)
        .u32('spatial', s.spatial)
        .u32('outChannels', p.outChannels),
    body: `
  let r = idx % P.rows;
  let g = idx / P.rows;
  let m = P.rowOffset + r;
  var at = ((m / P.spatial) * P.outChannels + g * P.groupOut) * P.spatial + m % P.spatial;
  let to = idx * P.groupOut;
  for (var co = 0u; co < P.groupOut; co++) {
    y[to + co] = dy[at];
    at += P.spatial;
  }`,
  });
}

/**
 * db[c] = Σ over images and positions of dy[img][c][pos], one workgroup per channel reading
 * its runs contiguously (backward/channel.ts). Bindings: dy, db, params.
 */
export function channelSumProgram(images: number, channels: number, spatial: number): KernelProgram {
  return channelReduceProgram(
    { images, channels, spatial },
    {
      label: `channel sum ${images}×${channels}×${spatial}`,
      key: 'channel-sum',
      reads: [input('dy')],
      writes: [output('db')],
      before: '',
      element: 'acc0 += dy[i];',
      after: '  db[c] = acc.x;',
    },
  );
}

/**
 * The ONNX weight [Cout, Cin/group, KH, KW] packed for the implicit-GEMM conv (conv.ts
 * packConvWeights' layout: B[group][K in (kh, kw, ci) order][roundUp(Cout/group, 8)], zero
 * columns past Cout/group). transposed: the weight of dx as a conv of dy (convDataGradParams):
 * B[group][(kh, kw, co)][roundUp(Cin/group, 8)] = W[co][ci][KH-1-kh][KW-1-kw], zero columns
 * past Cin/group. One invocation per (group, block of output channels, input channel), input
 * channels fastest: neighbouring invocations read neighbouring runs of W, and each writes its
 * taps in runs (on lavapipe, reads adjacent across invocations matter most).
 * Bindings: w, packed, params.
 */
export function convPackWeightsProgram(p: Conv2dParams, transposed = false): KernelProgram {
  const s = convTrainSizes(p);
  const kernel = p.kernelH * p.kernelW;
  const ld = roundUp(transposed ? s.groupIn : s.groupOut, PACKED_N_MULTIPLE);
  // Input channels run over the padded columns when they are the columns, output channels otherwise.
  const ciRange = transposed ? ld : s.groupIn;
  const coRange = transposed ? s.groupOut : ld;
  const blocks = Math.ceil(coRange / CHANNEL_BLOCK);
  return elementProgram({
    label: `conv pack weights${transposed ? ' (transposed)' : ''} ${p.outChannels}×${s.groupIn}×${p.kernelH}×${p.kernelW}`,
    key: 'conv-pack-weights',
    total: p.group * blocks * ciRange,
    inputs: [input('w')],
    outputs: [output('packed', { variable: 'y' })],
    params: (P) =>
      P.u32('ld', ld)
        .u32('blocks', blocks)
        .u32('ciRange', ciRange)
        .u32('coRange', coRange)
        .u32('kernel', kernel)
        .u32('groupIn', s.groupIn)
        .u32('groupOut', s.groupOut)
        .u32('transposed', transposed ? 1 : 0),
    body: `
  let ci = idx % P.ciRange;
  let block = (idx / P.ciRange) % P.blocks;
  let g = idx / (P.ciRange * P.blocks);
  let t = P.transposed == 1u;
  let co0 = block * ${CHANNEL_BLOCK}u;
  let co1 = min(co0 + ${CHANNEL_BLOCK}u, P.coRange);
  for (var co = co0; co < co1; co++) {
    let live = co < P.groupOut && ci < P.groupIn;
    let src = ((g * P.groupOut + co) * P.groupIn + ci) * P.kernel;
    for (var r = 0u; r < P.kernel; r++) {
      var v = 0.0;
      if (live) { v = w[src + r]; }
      // Forward: row (tap, ci), column co; transposed: row (flipped tap, co), column ci.
      let row = select((g * P.kernel + r) * P.groupIn + ci, (g * P.kernel + P.kernel - 1u - r) * P.groupOut + co, t);
      y[row * P.ld + select(co, ci, t)] = v;
    }
  }`,
  });
}

/** Floats of convPackWeightsProgram's output. */
export function convPackedWeightsSize(p: Conv2dParams, transposed = false): number {
  const s = convTrainSizes(p);
  return (
    p.group *
    (transposed ? s.groupOut : s.groupIn) *
    p.kernelH *
    p.kernelW *
    roundUp(transposed ? s.groupIn : s.groupOut, PACKED_N_MULTIPLE)
  );
}

/**
 * dx of a stride-1 conv as a conv of dy: dy[n][co][oh][ow] feeds dx[n][ci][h][w] through tap
 * (kh, kw) where oh = h + pad - kh·d, i.e. a stride-1 conv with the flipped kernel and pads
 * d·(k-1) - pad (negative where a pad exceeds the kernel's reach: the window starts inside).
 */
export function convDataGradParams(p: Conv2dParams): Conv2dParams {
  if (p.strideH !== 1 || p.strideW !== 1)
    throw new Error(`conv dX as a conv needs stride 1, got ${p.strideH}x${p.strideW}`);
  const reachH = p.dilationH * (p.kernelH - 1);
  const reachW = p.dilationW * (p.kernelW - 1);
  return {
    images: p.images,
    inChannels: p.outChannels,
    height: p.outH,
    width: p.outW,
    outChannels: p.inChannels,
    group: p.group,
    kernelH: p.kernelH,
    kernelW: p.kernelW,
    strideH: 1,
    strideW: 1,
    dilationH: p.dilationH,
    dilationW: p.dilationW,
    pads: [reachH - p.pads[0], reachW - p.pads[1], reachH - p.pads[2], reachW - p.pads[3]],
    outH: p.height,
    outW: p.width,
    hasBias: false,
    activation: NO_ACTIVATION,
  };
}

/** dCol = dyRows · W over `rows` (dyRows and dCol hold those rows only). Bindings: rows, w, dcol. Follow with col2imProgram. */
export function conv2dBackwardDataPrograms(
  p: Conv2dParams,
  variant: GemmVariant,
  maxWorkgroupsPerDimension?: number,
  rows: ConvRows = allRows(p),
): KernelProgram[] {
  return renameBindings(
    gemmPrograms(conv2dBackwardDataProblem(p, rows), variant, maxWorkgroupsPerDimension),
    { a: 'rows', b: 'w', c: 'dcol' },
    'conv-bwd-data',
  );
}

export function conv2dBackwardDataProblem(p: Conv2dParams, rows: ConvRows = allRows(p)): GemmProblem {
  const s = convTrainSizes(p);
  const M = rows.count;
  return {
    label: `conv dX ${p.inChannels}←${p.outChannels} ${p.height}x${p.width}`,
    batch: p.group,
    M,
    N: s.K,
    K: s.groupOut,
    a: { kind: 'matrix', layout: 'mk', batchStride: M * s.groupOut, ld: s.groupOut },
    b: { layout: 'kn', batchStride: s.groupOut * s.K, ld: s.K },
    c: { kind: 'matrix', batchStride: M * s.K, strideM: s.K, strideN: 1 },
  };
}

/**
 * dW[g][co][k] = dyRowsᵀ · col over `rows` (ONNX weight layout), added to dW when `accumulate`
 * (every chunk but the first). Bindings: rows, col, dw.
 */
export function conv2dBackwardFilterPrograms(
  p: Conv2dParams,
  variant: GemmVariant,
  maxWorkgroupsPerDimension?: number,
  rows: ConvRows = allRows(p),
  accumulate = false,
): KernelProgram[] {
  return renameBindings(
    gemmPrograms(conv2dBackwardFilterProblem(p, rows, accumulate), variant, maxWorkgroupsPerDimension),
    { a: 'rows', b: 'col', c: 'dw' },
    'conv-bwd-filter',
  );
}

export function conv2dBackwardFilterProblem(
  p: Conv2dParams,
  rows: ConvRows = allRows(p),
  accumulate = false,
): GemmProblem {
  const s = convTrainSizes(p);
  const K = rows.count;
  return {
    label: `conv dW ${p.outChannels}×${p.inChannels / p.group}×${p.kernelH}×${p.kernelW}`,
    batch: p.group,
    M: s.groupOut,
    N: s.K,
    K,
    a: { kind: 'matrix', layout: 'km', batchStride: K * s.groupOut, ld: s.groupOut },
    b: { layout: 'kn', batchStride: K * s.K, ld: s.K },
    c: { kind: 'matrix', batchStride: s.groupOut * s.K, strideM: s.K, strideN: 1 },
    accumulate,
  };
}

// ---- helpers ----

/** An element program over the conv's window geometry (im2col, col2im): reads `from`, writes `to` (WGSL y). */
function windowProgram(
  kind: string,
  p: Conv2dParams,
  total: number,
  from: string,
  to: string,
  extra: (P: ParamBlock) => void,
  body: string,
): KernelProgram {
  const s = convTrainSizes(p);
  return elementProgram({
    label: `${kind} ${p.kernelH}x${p.kernelW} s${p.strideH} ${p.inChannels}ch ${p.height}x${p.width}`,
    key: kind,
    total,
    inputs: [input(from)],
    outputs: [output(to, { variable: 'y' })],
    params: (P) => {
      P.u32('K', s.K).u32('spatial', s.spatial).u32('channels', p.inChannels).u32('groupIn', s.groupIn);
      windowUniforms(P, p, 'u32');
      extra(P);
    },
    body,
  });
}
