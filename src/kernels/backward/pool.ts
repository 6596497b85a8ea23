// Backward of the pooling family (forward: ../pool.ts). No atomics and no separate zero-fill
// pass: AveragePool's is a gather (one invocation per input element walks the output windows
// that cover it); MaxPool's has each invocation own a strip of input rows of one plane.
import type { Pool2dParams } from '../pool.ts';
import { WINDOW_TAPS_WGSL, windowUniforms } from '../program.ts';
import {
  defineProgram,
  dispatch1d,
  elementProgram,
  F32_LOWEST,
  input,
  output,
  ParamBlock,
  type KernelProgram,
} from '../shader.ts';

/** The forward pool's geometry; `kind` and `countIncludePad` are chosen by the builder called. */
export type PoolBackwardParams = Omit<Pool2dParams, 'kind'>;

/** MaxPool backward invocations aimed at (planes × strips): enough to keep every core busy. */
const MAXPOOL_INVOCATIONS = 512;
/** MaxPool backward workgroup: one SIMD vector of lavapipe, its lanes on neighbouring planes. */
const MAXPOOL_WORKGROUP = 8;

/**
 * MaxPool backward: dx[p] = Σ over windows w containing p whose arg-max is p of dy[w].
 * The arg-max is the FIRST maximum in row-major window order (kh, then kw), padding ignored,
 * as onnxruntime and PyTorch break ties. Needs saved: x (the forward input); no index tensor.
 * Each invocation owns the input rows [r0, r1) of one plane: it zeroes them, then walks every
 * window that reaches into them, finds its arg-max once and adds dy there when it falls inside
 * the strip (a window across two strips is searched by both). Neighbouring lanes take the same
 * strip of neighbouring planes, so they branch alike. Each window is searched once, not once per
 * covered input element as a gather would.
 * Bindings: x, dy, dx, params.
 */
export function maxPool2dBackwardProgram(p: PoolBackwardParams): KernelProgram {
  const strips = Math.min(p.height, Math.max(1, Math.ceil(MAXPOOL_INVOCATIONS / p.planes)));
  const stripRows = Math.ceil(p.height / strips);
  const total = p.planes * Math.ceil(p.height / stripRows);
  const dispatch = dispatch1d(Math.ceil(total / MAXPOOL_WORKGROUP));
  const P = windowUniforms(
    new ParamBlock()
      .u32('total', total)
      .u32('groupsX', dispatch[0])
      .i32('planes', p.planes)
      .i32('stripRows', stripRows),
    p,
    'i32',
  );
  return defineProgram({
    label: `maxpool backward ${p.kernelH}x${p.kernelW} s${p.strideH} ${p.outH}x${p.outW}→${p.height}x${p.width}`,
    key: 'maxpool2d-bwd',
    dispatch,
    bindings: [input('x'), input('dy'), output('dx')],
    params: P,
    prelude: () => WINDOW_TAPS_WGSL,
    workgroupSize: MAXPOOL_WORKGROUP,
    builtins: { wid: 'workgroup_id', lid: 'local_invocation_index' },
    guard: {
      index: { name: 'id', expr: `(wid.x + wid.y * P.groupsX) * ${MAXPOOL_WORKGROUP}u + lid` },
      exit: 'id >= P.total',
    },
    body: () => `  let plane = i32(id % u32(P.planes));
  let r0 = i32(id / u32(P.planes)) * P.stripRows;
  let r1 = min(r0 + P.stripRows, P.height);
  let xBase = plane * P.height * P.width;
  let yBase = plane * P.outH * P.outW;
  for (var i = xBase + r0 * P.width; i < xBase + r1 * P.width; i++) { dx[i] = 0.0; }
  // Windows whose rows oh·stride − padTop + a·dilation (a < kernelH) meet [r0, r1).
  let reach = r0 + P.padTop - (P.kernelH - 1) * P.dilationH;
  let ohFirst = select(0, (reach + P.strideH - 1) / P.strideH, reach > 0);
  let ohLast = min(P.outH - 1, (r1 - 1 + P.padTop) / P.strideH);
  for (var oh = ohFirst; oh <= ohLast; oh++) {
    let h0 = oh * P.strideH - P.padTop;
    for (var ow = 0; ow < P.outW; ow++) {
      let w0 = ow * P.strideW - P.padLeft;
      var best = ${F32_LOWEST};
      var at = -1;
      let a1 = windowTapEnd(h0, P.kernelH, P.dilationH, P.height);
      let b0 = windowTapFirst(w0, P.dilationW);
      let b1 = windowTapEnd(w0, P.kernelW, P.dilationW, P.width);
      for (var a = windowTapFirst(h0, P.dilationH); a < a1; a++) {
        let h = h0 + a * P.dilationH;
        for (var b = b0; b < b1; b++) {
          let w = w0 + b * P.dilationW;
          let v = x[xBase + h * P.width + w];
          if (at < 0 || v > best) { best = v; at = h * P.width + w; }
        }
      }
      let row = at / P.width;
      if (at >= 0 && row >= r0 && row < r1) { dx[xBase + at] += dy[yBase + oh * P.outW + ow]; }
    }
  }`,
  });
}

/**
 * AveragePool backward: dx[p] = Σ over windows w containing p of dy[w] / count(w), count as in
 * the forward (valid positions, or with count_include_pad the positions inside the padded input,
 * clipped where ceil_mode windows run past it). Needs saved: nothing (shapes only).
 * Bindings: dy, dx, params.
 */
export function avgPool2dBackwardProgram(p: PoolBackwardParams): KernelProgram {
  const params = (P: ParamBlock): void => {
    windowUniforms(P, p, 'i32')
      .i32('paddedH', p.height + p.pads[2])
      .i32('paddedW', p.width + p.pads[3]);
  };
  const include = p.countIncludePad === true;
  const body = `  let iw = i32(idx % u32(P.width));
  let ih = i32((idx / u32(P.width)) % u32(P.height));
  let plane = idx / u32(P.width * P.height);
  let yBase = plane * u32(P.outH * P.outW);
  var acc = 0.0;
  // Every window (oh, ow) in which this element sits at a tap (kh, kw) adds its share of dy. The
  // windows are walked by output position, oh from the first whose span reaches ih (at most
  // (kernel - 1) · dilation before it) to the last starting at or before it, so a huge kernel
  // costs no more than the outputs it covers.
  let ohFirst = max(0, ceilDiv(ih + P.padTop - (P.kernelH - 1) * P.dilationH, P.strideH));
  let ohLast = min(P.outH - 1, (ih + P.padTop) / P.strideH);
  let owFirst = max(0, ceilDiv(iw + P.padLeft - (P.kernelW - 1) * P.dilationW, P.strideW));
  let owLast = min(P.outW - 1, (iw + P.padLeft) / P.strideW);
  for (var oh = ohFirst; oh <= ohLast; oh++) {
    let h0 = oh * P.strideH - P.padTop;
    if ((ih - h0) % P.dilationH != 0) { continue; }
    let rows = ${
      include
        ? 'windowTapEnd(h0, P.kernelH, P.dilationH, P.paddedH)'
        : 'windowTapEnd(h0, P.kernelH, P.dilationH, P.height) - windowTapFirst(h0, P.dilationH)'
    };
    for (var ow = owFirst; ow <= owLast; ow++) {
      let w0 = ow * P.strideW - P.padLeft;
      if ((iw - w0) % P.dilationW != 0) { continue; }
      let cols = ${
        include
          ? 'windowTapEnd(w0, P.kernelW, P.dilationW, P.paddedW)'
          : 'windowTapEnd(w0, P.kernelW, P.dilationW, P.width) - windowTapFirst(w0, P.dilationW)'
      };
      acc += dy[yBase + u32(oh * P.outW + ow)] / max(f32(rows) * f32(cols), 1.0);
    }
  }
  dx[idx] = acc;`;
  return elementProgram({
    label: `avgpool backward ${p.kernelH}x${p.kernelW} s${p.strideH} ${p.outH}x${p.outW}→${p.height}x${p.width}`,
    key: `pool2d-bwd|avg|${include ? 'incl' : 'excl'}`,
    total: p.planes * p.height * p.width,
    inputs: [input('dy')],
    outputs: [output('dx')],
    params,
    prelude: `${WINDOW_TAPS_WGSL}
fn ceilDiv(a: i32, b: i32) -> i32 { return select(0, (a + b - 1) / b, a > 0); }
`,
    body,
  });
}

/**
 * GlobalAveragePool backward: dx[plane, i] = dy[plane] / spatial. Needs saved: nothing.
 * GlobalMaxPool backward: dx[plane, i] = dy[plane] at the plane's first maximum, else 0.
 * Needs saved: x. One invocation per element (avg) or per plane (max: one scan for the
 * arg-max, one pass writing the plane).
 * Bindings: avg: dy, dx, params; max: x, dy, dx, params.
 */
export function globalPoolBackwardProgram(kind: 'max' | 'avg', planes: number, spatial: number): KernelProgram {
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
    dx[base + i] = select(0.0, g, i == at);
  }`
    : '  dx[idx] = dy[idx / P.spatial] * P.scale;';
  return elementProgram({
    label: `global${kind}pool backward ${planes}×${spatial}`,
    key: `globalpool-bwd|${kind}`,
    total: max ? planes : planes * spatial,
    workgroup: max ? 64 : 256,
    inputs: max ? [input('x'), input('dy')] : [input('dy')],
    outputs: [output('dx')],
    params: (P) => P.u32('spatial', spatial).f32('scale', 1 / spatial),
    body,
  });
}
