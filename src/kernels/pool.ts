// Pooling over NCHW (1-D pools run with H = 1): MaxPool and AveragePool with kernel_shape,
// strides, pads, dilations, ceil_mode (through the output size the host computes) and
// count_include_pad; GlobalAveragePool and GlobalMaxPool. One invocation per output element.
import { WINDOW_TAPS_WGSL, windowUniforms, type Window2d } from './program.ts';
import { elementProgram, F32_LOWEST, NAN_WGSL, type KernelProgram } from './shader.ts';

export interface Pool2dParams extends Window2d {
  kind: 'max' | 'avg';
  /** N·C: every plane pools alone. */
  planes: number;
  height: number;
  width: number;
  outH: number;
  outW: number;
  /** AveragePool: divide by the window's size within the padded input (else: by the valid count). */
  countIncludePad?: boolean;
}

/** Bindings: x, y, params. */
export function pool2dProgram(p: Pool2dParams): KernelProgram {
  const max = p.kind === 'max';
  const include = !max && p.countIncludePad === true;
  return elementProgram({
    label: `${p.kind}pool ${p.kernelH}x${p.kernelW} s${p.strideH} ${p.height}x${p.width}→${p.outH}x${p.outW}`,
    key: `pool2d|${p.kind}|${include ? 'incl' : 'excl'}`,
    total: p.planes * p.outH * p.outW,
    // MaxPool: a NaN in the window gives NaN and an all −∞ window −∞ (the first valid value
    // starts the max), as ONNX defines it; onnxruntime's MLAS max depends on where the NaN sits.
    prelude: (max ? NAN_WGSL : '') + WINDOW_TAPS_WGSL,
    params: (P) =>
      windowUniforms(P, p, 'u32')
        // count_include_pad counts window positions inside the padded input (clipped at its end,
        // which ceil_mode windows can pass), as ONNX Runtime and PyTorch do.
        .i32('paddedH', p.height + p.pads[2])
        .i32('paddedW', p.width + p.pads[3]),
    body: `
  let ow = idx % P.outW;
  let oh = (idx / P.outW) % P.outH;
  let plane = idx / (P.outW * P.outH);
  let base = plane * P.height * P.width;
  let h0 = i32(oh * P.strideH) - P.padTop;
  let w0 = i32(ow * P.strideW) - P.padLeft;
  // Only the taps inside the input are visited (row-major, as before); a window of padding alone
  // gives the max's lowest value or an average of 0.
  let kh0 = windowTapFirst(h0, P.dilationH);
  let kh1 = windowTapEnd(h0, i32(P.kernelH), P.dilationH, i32(P.height));
  let kw0 = windowTapFirst(w0, P.dilationW);
  let kw1 = windowTapEnd(w0, i32(P.kernelW), P.dilationW, i32(P.width));
  var acc = ${max ? F32_LOWEST : '0.0'};${max ? '\n  var seen = false;' : ''}
  for (var kh = kh0; kh < kh1; kh++) {
    let ih = u32(h0 + kh * P.dilationH);
    for (var kw = kw0; kw < kw1; kw++) {
      let v = x[base + ih * P.width + u32(w0 + kw * P.dilationW)];
      ${max ? 'acc = select(maxOrNaN(acc, v), v, !seen);\n      seen = true;' : 'acc += v;'}
    }
  }${
    max
      ? ''
      : include
        ? `
  // count_include_pad: the taps inside the padded input (windows start at or after -pad).
  // (f32: a window of 65536 × 65536 positions overflows i32.)
  let count = f32(windowTapEnd(h0, i32(P.kernelH), P.dilationH, P.paddedH)) * f32(windowTapEnd(w0, i32(P.kernelW), P.dilationW, P.paddedW));`
        : `
  let count = f32(max(kh1 - kh0, 0)) * f32(max(kw1 - kw0, 0));`
  }
  y[idx] = ${max ? 'acc' : 'acc / max(count, 1.0)'};`,
  });
}

/** GlobalAveragePool / GlobalMaxPool: y[plane] over `spatial` elements. Bindings: x, y, params. */
export function globalPoolProgram(kind: 'max' | 'avg', planes: number, spatial: number): KernelProgram {
  const max = kind === 'max';
  return elementProgram({
    label: `global${kind}pool ${planes}×${spatial}`,
    key: `globalpool|${kind}`,
    total: planes,
    workgroup: 64,
    prelude: max ? NAN_WGSL : '',
    params: (P) => P.u32('spatial', spatial).f32('scale', 1 / spatial),
    body: `
  let base = idx * P.spatial;
  var acc = ${max ? 'x[base]' : '0.0'};
  for (var i = ${max ? '1u' : '0u'}; i < P.spatial; i++) {
    ${max ? 'acc = maxOrNaN(acc, x[base + i]);' : 'acc += x[base + i];'}
  }
  y[idx] = ${max ? 'acc' : 'acc * P.scale'};`,
  });
}
