// Conv (2-D, NCHW, groups, strides, pads, dilations) for training, forward and backward on the
// shared GEMM core. Training keeps the weights in their ONNX layout [Cout, Cin/group, KH, KW]
// (the optimizer updates them in place, so no host packing), which is K in (ci, kh, kw) order:
//
//   col [g][m][k]   = im2col(x), m = (image, oh, ow), k = (ci, kh, kw)     (saved for dW)
//   y               = col · Wᵀ                 GEMM A=col 'mk', B=W 'nk', C nchw (+ bias)
//   dyRows [g][m][co] = dy                      (channels of each group last)
//   dCol            = dyRows · W               GEMM A=dyRows 'mk', B=W 'kn'
//   dx              = col2im(dCol)             gather: each input sums the windows that read it
//   dW [g][co][k]   = dyRowsᵀ · col            GEMM A=dyRows 'km', B=col 'kn' (ONNX layout out)
//   dB [c]          = Σ_image Σ_pos dy
//
// The im2col matrix is materialised (K·KH·KW times the input): simple and exact; an implicit
// (addressing-only) form for dW and dX needs im2col-as-B and a transposed im2col in gemm.ts.
import type { Conv2dParams } from './conv.ts';
import { gemmPrograms, type GemmProblem, type GemmVariant } from './gemm.ts';
import { LINEAR_INDEX, linearDispatch, NO_ACTIVATION, ParamBlock, type KernelProgram } from './program.ts';

/** Sizes derived from the params, shared by every program below. */
export function convTrainSizes(p: Conv2dParams): { M: number; K: number; groupIn: number; groupOut: number; spatial: number } {
  const groupIn = p.inChannels / p.group;
  const groupOut = p.outChannels / p.group;
  const spatial = p.outH * p.outW;
  return { M: p.images * spatial, K: groupIn * p.kernelH * p.kernelW, groupIn, groupOut, spatial };
}

/** Floats of the col matrix (group · M · K). */
export function im2colSize(p: Conv2dParams): number {
  const s = convTrainSizes(p);
  return p.group * s.M * s.K;
}

/** col[g][m][k] = x at the window position, 0 in padding. Bindings: x, col, params. */
export function im2colProgram(p: Conv2dParams): KernelProgram {
  const s = convTrainSizes(p);
  const total = p.group * s.M * s.K;
  const { dispatch, rowSize } = linearDispatch(total);
  const P = windowParams(p, total, rowSize);
  const wgsl = `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> col: array<f32>;
${P.wgsl(2)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = ${LINEAR_INDEX};
  if (idx >= P.size) { return; }
  let k = idx % P.K;
  let m = (idx / P.K) % P.M;
  let g = idx / (P.K * P.M);
  let kw = k % P.kernelW;
  let kh = (k / P.kernelW) % P.kernelH;
  let ci = k / (P.kernelW * P.kernelH);
  let pos = m % P.spatial;
  let img = m / P.spatial;
  let ih = i32((pos / P.outW) * P.strideH) - P.padTop + i32(kh) * P.dilationH;
  let iw = i32((pos % P.outW) * P.strideW) - P.padLeft + i32(kw) * P.dilationW;
  var v = 0.0;
  if (u32(ih) < P.height && u32(iw) < P.width) {
    v = x[((img * P.channels + g * P.groupIn + ci) * P.height + u32(ih)) * P.width + u32(iw)];
  }
  col[idx] = v;
}`;
  return program('im2col', p, wgsl, dispatch, P, ['x', 'col']);
}

/** dx[img][c][h][w] = Σ dCol over the windows that read (h, w). Bindings: dcol, dx, params. */
export function col2imProgram(p: Conv2dParams): KernelProgram {
  const total = p.images * p.inChannels * p.height * p.width;
  const { dispatch, rowSize } = linearDispatch(total);
  const P = windowParams(p, total, rowSize);
  const wgsl = `
@group(0) @binding(0) var<storage, read> dcol: array<f32>;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
${P.wgsl(2)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = ${LINEAR_INDEX};
  if (idx >= P.size) { return; }
  let w = i32(idx % P.width);
  let h = i32((idx / P.width) % P.height);
  let c = (idx / (P.width * P.height)) % P.channels;
  let img = idx / (P.width * P.height * P.channels);
  let g = c / P.groupIn;
  let ci = c % P.groupIn;
  var acc = 0.0;
  for (var kh = 0u; kh < P.kernelH; kh++) {
    let th = h + P.padTop - i32(kh) * P.dilationH;
    if (th < 0 || th % i32(P.strideH) != 0) { continue; }
    let oh = u32(th) / P.strideH;
    if (oh >= P.outH) { continue; }
    for (var kw = 0u; kw < P.kernelW; kw++) {
      let tw = w + P.padLeft - i32(kw) * P.dilationW;
      if (tw < 0 || tw % i32(P.strideW) != 0) { continue; }
      let ow = u32(tw) / P.strideW;
      if (ow >= P.outW) { continue; }
      let m = img * P.spatial + oh * P.outW + ow;
      let k = (ci * P.kernelH + kh) * P.kernelW + kw;
      acc += dcol[(g * P.M + m) * P.K + k];
    }
  }
  dx[idx] = acc;
}`;
  return program('col2im', p, wgsl, dispatch, P, ['dcol', 'dx']);
}

/** dyRows[g][m][co] = dy[img][g·groupOut + co][pos]. Bindings: dy, rows, params. */
export function convGradRowsProgram(p: Conv2dParams): KernelProgram {
  const s = convTrainSizes(p);
  const total = p.group * s.M * s.groupOut;
  const { dispatch, rowSize } = linearDispatch(total);
  const P = new ParamBlock().u32('size', total).u32('rowSize', rowSize).u32('M', s.M).u32('groupOut', s.groupOut)
    .u32('spatial', s.spatial).u32('outChannels', p.outChannels);
  const wgsl = `
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> rows: array<f32>;
${P.wgsl(2)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = ${LINEAR_INDEX};
  if (idx >= P.size) { return; }
  let co = idx % P.groupOut;
  let m = (idx / P.groupOut) % P.M;
  let g = idx / (P.groupOut * P.M);
  let img = m / P.spatial;
  let pos = m % P.spatial;
  rows[idx] = dy[(img * P.outChannels + g * P.groupOut + co) * P.spatial + pos];
}`;
  return { label: `conv dy rows ${p.outChannels}×${s.M}`, key: 'conv-dy-rows', wgsl, dispatch, bindings: bindings(['dy', 'rows']), params: P.bytes() };
}

/** db[c] = Σ over images and positions of dy[img][c][pos]. Bindings: dy, db, params. */
export function channelSumProgram(images: number, channels: number, spatial: number): KernelProgram {
  const { dispatch, rowSize } = linearDispatch(channels, 64);
  const P = new ParamBlock().u32('size', channels).u32('rowSize', rowSize).u32('images', images).u32('channels', channels).u32('spatial', spatial);
  const wgsl = `
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> db: array<f32>;
${P.wgsl(2)}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let c = ${LINEAR_INDEX};
  if (c >= P.size) { return; }
  var acc = 0.0;
  for (var img = 0u; img < P.images; img++) {
    let base = (img * P.channels + c) * P.spatial;
    for (var i = 0u; i < P.spatial; i++) { acc += dy[base + i]; }
  }
  db[c] = acc;
}`;
  return { label: `channel sum ${images}×${channels}×${spatial}`, key: 'channel-sum', wgsl, dispatch, bindings: bindings(['dy', 'db']), params: P.bytes() };
}

/** y = col · Wᵀ (+ bias). Bindings: col, w, y, [bias]. */
export function conv2dTrainForwardPrograms(p: Conv2dParams, variant: GemmVariant, maxWorkgroupsPerDimension?: number): KernelProgram[] {
  return rename(gemmPrograms(conv2dTrainForwardProblem(p), variant, maxWorkgroupsPerDimension), { a: 'col', b: 'w', c: 'y' }, 'conv-train-fwd');
}

export function conv2dTrainForwardProblem(p: Conv2dParams): GemmProblem {
  const s = convTrainSizes(p);
  return {
    label: `conv train fwd ${p.inChannels}→${p.outChannels} ${p.height}x${p.width}`,
    batch: p.group, M: s.M, N: s.groupOut, K: s.K,
    a: { kind: 'matrix', layout: 'mk', batchStride: s.M * s.K },
    b: { layout: 'nk', batchStride: s.groupOut * s.K, ld: s.K },
    c: { kind: 'nchw', spatial: s.spatial, imageStride: p.outChannels * s.spatial, batchChannelStride: s.groupOut },
    bias: p.hasBias ? { batchStride: s.groupOut, strideM: 0, strideN: 1 } : undefined,
    activation: NO_ACTIVATION,
  };
}

/** dCol = dyRows · W. Bindings: rows, w, dcol. Follow with col2imProgram. */
export function conv2dBackwardDataPrograms(p: Conv2dParams, variant: GemmVariant, maxWorkgroupsPerDimension?: number): KernelProgram[] {
  return rename(gemmPrograms(conv2dBackwardDataProblem(p), variant, maxWorkgroupsPerDimension), { a: 'rows', b: 'w', c: 'dcol' }, 'conv-bwd-data');
}

export function conv2dBackwardDataProblem(p: Conv2dParams): GemmProblem {
  const s = convTrainSizes(p);
  return {
    label: `conv dX ${p.inChannels}←${p.outChannels} ${p.height}x${p.width}`,
    batch: p.group, M: s.M, N: s.K, K: s.groupOut,
    a: { kind: 'matrix', layout: 'mk', batchStride: s.M * s.groupOut, ld: s.groupOut },
    b: { layout: 'kn', batchStride: s.groupOut * s.K, ld: s.K },
    c: { kind: 'matrix', batchStride: s.M * s.K, strideM: s.K, strideN: 1 },
  };
}

/** dW[g][co][k] = dyRowsᵀ · col (ONNX weight layout). Bindings: rows, col, dw. */
export function conv2dBackwardFilterPrograms(p: Conv2dParams, variant: GemmVariant, maxWorkgroupsPerDimension?: number): KernelProgram[] {
  return rename(gemmPrograms(conv2dBackwardFilterProblem(p), variant, maxWorkgroupsPerDimension), { a: 'rows', b: 'col', c: 'dw' }, 'conv-bwd-filter');
}

export function conv2dBackwardFilterProblem(p: Conv2dParams): GemmProblem {
  const s = convTrainSizes(p);
  return {
    label: `conv dW ${p.outChannels}×${p.inChannels / p.group}×${p.kernelH}×${p.kernelW}`,
    batch: p.group, M: s.groupOut, N: s.K, K: s.M,
    a: { kind: 'matrix', layout: 'km', batchStride: s.M * s.groupOut, ld: s.groupOut },
    b: { layout: 'kn', batchStride: s.M * s.K, ld: s.K },
    c: { kind: 'matrix', batchStride: s.groupOut * s.K, strideM: s.K, strideN: 1 },
  };
}

// ---- helpers ----

function windowParams(p: Conv2dParams, total: number, rowSize: number): ParamBlock {
  const s = convTrainSizes(p);
  return new ParamBlock()
    .u32('size', total).u32('rowSize', rowSize).u32('M', s.M).u32('K', s.K).u32('spatial', s.spatial)
    .u32('channels', p.inChannels).u32('groupIn', s.groupIn).u32('height', p.height).u32('width', p.width)
    .u32('outH', p.outH).u32('outW', p.outW).u32('kernelH', p.kernelH).u32('kernelW', p.kernelW)
    .u32('strideH', p.strideH).u32('strideW', p.strideW).i32('padTop', p.pads[0]).i32('padLeft', p.pads[1])
    .i32('dilationH', p.dilationH).i32('dilationW', p.dilationW);
}

function program(kind: string, p: Conv2dParams, wgsl: string, dispatch: [number, number, number], P: ParamBlock, names: string[]): KernelProgram {
  return {
    label: `${kind} ${p.kernelH}x${p.kernelW} s${p.strideH} ${p.inChannels}ch ${p.height}x${p.width}`,
    key: kind,
    wgsl,
    dispatch,
    bindings: bindings(names),
    params: P.bytes(),
  };
}

function bindings(names: string[]): KernelProgram['bindings'] {
  return [
    ...names.map((name, i) => ({ name, access: i === names.length - 1 ? ('read_write' as const) : ('read' as const) })),
    { name: 'params', access: 'uniform' as const },
  ];
}

function rename(programs: KernelProgram[], names: Record<string, string>, kind: string): KernelProgram[] {
  return programs.map((program) => ({
    ...program,
    key: `${kind}|${program.key}`,
    bindings: program.bindings.map((b) => ({ ...b, name: names[b.name] ?? b.name })),
  }));
}
