// Backward of the pooling family (forward: ../pool.ts). Every kernel is a gather: one
// invocation per input element walks the output windows that cover it, so no atomics and no
// zero-fill pass are needed, and each gradient element is written exactly once.
import type { Pool2dParams } from '../pool.ts';
import { F32_LOWEST, type KernelProgram, type ParamBlock } from '../program.ts';
import { accKey, gradElementProgram, storeGrad, type GradOptions } from './common.ts';

/** The forward pool's geometry; `kind` and `countIncludePad` are chosen by the builder called. */
export type PoolBackwardParams = Omit<Pool2dParams, 'kind'>;

/**
 * MaxPool backward: dx[p] = Σ over windows w containing p whose arg-max is p of dy[w].
 * The arg-max is the FIRST maximum in row-major window order (kh, then kw), padding ignored,
 * as onnxruntime and PyTorch break ties. Needs saved: x (the forward input); the arg-max is
 * recomputed per covering window (KH·KW reads each), so no index tensor is kept.
 * Bindings: x, dy, dx, params.
 */
export function maxPool2dBackwardProgram(p: PoolBackwardParams, o?: GradOptions): KernelProgram {
  return poolBackward('max', p, o);
}

/**
 * AveragePool backward: dx[p] = Σ over windows w containing p of dy[w] / count(w), count as in
 * the forward (valid positions, or with count_include_pad the positions inside the padded input,
 * clipped where ceil_mode windows run past it). Needs saved: nothing (shapes only).
 * Bindings: dy, dx, params.
 */
export function avgPool2dBackwardProgram(p: PoolBackwardParams, o?: GradOptions): KernelProgram {
  return poolBackward('avg', p, o);
}

/**
 * GlobalAveragePool backward: dx[plane, i] = dy[plane] / spatial. Needs saved: nothing.
 * GlobalMaxPool backward: dx[plane, i] = dy[plane] at the plane's first maximum, else 0.
 * Needs saved: x. One invocation per element (avg) or per plane (max: one scan for the
 * arg-max, one pass writing the plane).
 * Bindings: avg: dy, dx, params; max: x, dy, dx, params.
 */
export function globalPoolBackwardProgram(kind: 'max' | 'avg', planes: number, spatial: number, o?: GradOptions): KernelProgram {
  const max = kind === 'max';
  const body = max
    ? `  let base = idx * P.spatial;
  var best = x[base];
  var at = 0u;
  for (var i = 1u; i < P.spatial; i++) {
    let v = x[base + i];
    if (v > best) { best = v; at = i; }
  }
  let g = dy[idx];
  for (var i = 0u; i < P.spatial; i++) {
    let v = select(0.0, g, i == at);
    ${storeGrad('dx', 'base + i', 'v', o?.accumulate)}
  }`
    : `  let g = dy[idx / P.spatial] * P.scale;
  ${storeGrad('dx', 'idx', 'g', o?.accumulate)}`;
  return gradElementProgram({
    label: `global${kind}pool backward ${planes}×${spatial}`,
    key: `globalpool-bwd|${kind}|${accKey(o)}`,
    total: max ? planes : planes * spatial,
    workgroup: max ? 64 : 256,
    reads: max ? ['x', 'dy'] : ['dy'],
    params: (P) => P.u32('spatial', spatial).f32('scale', 1 / spatial),
    body,
  });
}

// ---- helpers ----

function poolBackward(kind: 'max' | 'avg', p: PoolBackwardParams, o: GradOptions | undefined): KernelProgram {
  const params = (P: ParamBlock): void => {
    P.i32('height', p.height).i32('width', p.width).i32('outH', p.outH).i32('outW', p.outW)
      .i32('kernelH', p.kernelH).i32('kernelW', p.kernelW).i32('strideH', p.strideH).i32('strideW', p.strideW)
      .i32('padTop', p.pads[0]).i32('padLeft', p.pads[1])
      .i32('paddedH', p.height + p.pads[2]).i32('paddedW', p.width + p.pads[3])
      .i32('dilationH', p.dilationH).i32('dilationW', p.dilationW);
  };
  const max = kind === 'max';
  const include = !max && p.countIncludePad === true;
  // Per covering window (oh, ow) in which this element sits at (kh, kw): its share of dy.
  const share = max
    ? `
      // First maximum of the window in row-major order: does it sit at (kh, kw)?
      var best = ${F32_LOWEST};
      var arg = -1;
      for (var a = 0; a < P.kernelH; a++) {
        let ah = h0 + a * P.dilationH;
        if (ah < 0 || ah >= P.height) { continue; }
        for (var b = 0; b < P.kernelW; b++) {
          let aw = w0 + b * P.dilationW;
          if (aw < 0 || aw >= P.width) { continue; }
          let v = x[xBase + u32(ah * P.width + aw)];
          if (arg < 0 || v > best) { best = v; arg = a * P.kernelW + b; }
        }
      }
      if (arg == kh * P.kernelW + kw) { acc += dy[yBase + u32(oh * P.outW + ow)]; }`
    : `
      var rows = 0;
      var cols = 0;
      for (var a = 0; a < P.kernelH; a++) {
        let ah = h0 + a * P.dilationH;
        ${include ? 'if (ah < P.paddedH) { rows++; }' : 'if (ah >= 0 && ah < P.height) { rows++; }'}
      }
      for (var b = 0; b < P.kernelW; b++) {
        let aw = w0 + b * P.dilationW;
        ${include ? 'if (aw < P.paddedW) { cols++; }' : 'if (aw >= 0 && aw < P.width) { cols++; }'}
      }
      acc += dy[yBase + u32(oh * P.outW + ow)] / f32(max(rows * cols, 1));`;
  const body = `  let iw = i32(idx % u32(P.width));
  let ih = i32((idx / u32(P.width)) % u32(P.height));
  let plane = idx / u32(P.width * P.height);
  let xBase = plane * u32(P.height * P.width);
  let yBase = plane * u32(P.outH * P.outW);
  var acc = 0.0;
  for (var kh = 0; kh < P.kernelH; kh++) {
    let th = ih + P.padTop - kh * P.dilationH;
    if (th < 0 || th % P.strideH != 0) { continue; }
    let oh = th / P.strideH;
    if (oh >= P.outH) { continue; }
    let h0 = oh * P.strideH - P.padTop;
    for (var kw = 0; kw < P.kernelW; kw++) {
      let tw = iw + P.padLeft - kw * P.dilationW;
      if (tw < 0 || tw % P.strideW != 0) { continue; }
      let ow = tw / P.strideW;
      if (ow >= P.outW) { continue; }
      let w0 = ow * P.strideW - P.padLeft;${share}
    }
  }
  ${storeGrad('dx', 'idx', 'acc', o?.accumulate)}`;
  return gradElementProgram({
    label: `${kind}pool backward ${p.kernelH}x${p.kernelW} s${p.strideH} ${p.outH}x${p.outW}→${p.height}x${p.width}`,
    key: `pool2d-bwd|${kind}|${include ? 'incl' : 'excl'}|${accKey(o)}`,
    total: p.planes * p.height * p.width,
    reads: max ? ['x', 'dy'] : ['dy'],
    params,
    body,
  });
}
