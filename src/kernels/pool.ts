// Pooling over NCHW (1-D pools run with H = 1): MaxPool and AveragePool with kernel_shape,
// strides, pads, dilations, ceil_mode (through the output size the host computes) and
// count_include_pad; GlobalAveragePool and GlobalMaxPool. One invocation per output element.
import { windowUniforms, type Window2d } from './program.ts';
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
    prelude: max ? NAN_WGSL : '',
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
  var acc = ${max ? F32_LOWEST : '0.0'};
  var count = 0;${max ? '\n  var seen = false;' : ''}
  for (var kh = 0; kh < i32(P.kernelH); kh++) {
    let ih = h0 + kh * P.dilationH;
    for (var kw = 0; kw < i32(P.kernelW); kw++) {
      let iw = w0 + kw * P.dilationW;
      ${include ? 'if (ih < P.paddedH && iw < P.paddedW) { count++; }' : ''}
      if (u32(ih) < P.height && u32(iw) < P.width) {
        let v = x[base + u32(ih) * P.width + u32(iw)];
        ${max ? 'acc = select(maxOrNaN(acc, v), v, !seen);\n        seen = true;' : `acc += v;${include ? '' : ' count++;'}`}
      }
    }
  }
  y[idx] = ${max ? 'acc' : 'acc / f32(max(count, 1))'};`,
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
