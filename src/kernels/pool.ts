// Pooling over NCHW (1-D pools run with H = 1): MaxPool and AveragePool with kernel_shape,
// strides, pads, dilations, ceil_mode (through the output size the host computes) and
// count_include_pad; GlobalAveragePool and GlobalMaxPool. One invocation per output element.
import { F32_LOWEST, LINEAR_INDEX, linearDispatch, ParamBlock, type KernelProgram } from './program.ts';

export interface Pool2dParams {
  kind: 'max' | 'avg';
  /** N·C: every plane pools alone. */
  planes: number;
  height: number;
  width: number;
  outH: number;
  outW: number;
  kernelH: number;
  kernelW: number;
  strideH: number;
  strideW: number;
  /** [top, left, bottom, right] */
  pads: [number, number, number, number];
  dilationH: number;
  dilationW: number;
  /** AveragePool: divide by the window's size within the padded input (else: by the valid count). */
  countIncludePad?: boolean;
}

/** Bindings: x, y, params. */
export function pool2dProgram(p: Pool2dParams): KernelProgram {
  const total = p.planes * p.outH * p.outW;
  const { dispatch, rowSize } = linearDispatch(total);
  const P = new ParamBlock()
    .u32('size', total).u32('rowSize', rowSize)
    .u32('height', p.height).u32('width', p.width).u32('outH', p.outH).u32('outW', p.outW)
    .u32('kernelH', p.kernelH).u32('kernelW', p.kernelW).u32('strideH', p.strideH).u32('strideW', p.strideW)
    .i32('padTop', p.pads[0]).i32('padLeft', p.pads[1])
    // count_include_pad counts window positions inside the padded input (clipped at its end,
    // which ceil_mode windows can pass), as ONNX Runtime and PyTorch do.
    .i32('paddedH', p.height + p.pads[2]).i32('paddedW', p.width + p.pads[3])
    .i32('dilationH', p.dilationH).i32('dilationW', p.dilationW);
  const max = p.kind === 'max';
  const include = !max && p.countIncludePad === true;
  const wgsl = `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
${P.wgsl(2)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = ${LINEAR_INDEX};
  if (idx >= P.size) { return; }
  let ow = idx % P.outW;
  let oh = (idx / P.outW) % P.outH;
  let plane = idx / (P.outW * P.outH);
  let base = plane * P.height * P.width;
  let h0 = i32(oh * P.strideH) - P.padTop;
  let w0 = i32(ow * P.strideW) - P.padLeft;
  var acc = ${max ? F32_LOWEST : '0.0'};
  var count = 0;
  for (var kh = 0; kh < i32(P.kernelH); kh++) {
    let ih = h0 + kh * P.dilationH;
    for (var kw = 0; kw < i32(P.kernelW); kw++) {
      let iw = w0 + kw * P.dilationW;
      ${include ? 'if (ih < P.paddedH && iw < P.paddedW) { count++; }' : ''}
      if (u32(ih) < P.height && u32(iw) < P.width) {
        let v = x[base + u32(ih) * P.width + u32(iw)];
        ${max ? 'acc = max(acc, v);' : `acc += v;${include ? '' : ' count++;'}`}
      }
    }
  }
  y[idx] = ${max ? 'acc' : 'acc / f32(max(count, 1))'};
}`;
  return {
    label: `${p.kind}pool ${p.kernelH}x${p.kernelW} s${p.strideH} ${p.height}x${p.width}→${p.outH}x${p.outW}`,
    key: `pool2d|${p.kind}|${include ? 'incl' : 'excl'}`,
    wgsl,
    dispatch,
    bindings: [{ name: 'x', access: 'read' }, { name: 'y', access: 'read_write' }, { name: 'params', access: 'uniform' }],
    params: P.bytes(),
  };
}

/** GlobalAveragePool / GlobalMaxPool: y[plane] over `spatial` elements. Bindings: x, y, params. */
export function globalPoolProgram(kind: 'max' | 'avg', planes: number, spatial: number): KernelProgram {
  const { dispatch, rowSize } = linearDispatch(planes, 64);
  const P = new ParamBlock().u32('size', planes).u32('rowSize', rowSize).u32('spatial', spatial).f32('scale', 1 / spatial);
  const max = kind === 'max';
  const wgsl = `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
${P.wgsl(2)}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = ${LINEAR_INDEX};
  if (idx >= P.size) { return; }
  let base = idx * P.spatial;
  var acc = ${max ? F32_LOWEST : '0.0'};
  for (var i = 0u; i < P.spatial; i++) {
    ${max ? 'acc = max(acc, x[base + i]);' : 'acc += x[base + i];'}
  }
  y[idx] = ${max ? 'acc' : 'acc * P.scale'};
}`;
  return {
    label: `global${kind}pool ${planes}×${spatial}`,
    key: `globalpool|${kind}`,
    wgsl,
    dispatch,
    bindings: [{ name: 'x', access: 'read' }, { name: 'y', access: 'read_write' }, { name: 'params', access: 'uniform' }],
    params: P.bytes(),
  };
}
