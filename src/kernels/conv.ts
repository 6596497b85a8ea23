// Conv (1-D and 2-D, NCHW) as implicit GEMM on the shared core: M = images·OH·OW,
// N = Cout/group, K = Cin/group·KH·KW, the GEMM batch is the group. The im2col matrix is never
// materialised: the core's A load computes each input address (and the padding mask) itself.
// Weights are constants, so they are packed once on the host as B[group][K][N padded to 8],
// which gives the core aligned vec4 loads with no column clamping.
import { gemmPrograms, roundUp, type GemmProblem, type GemmVariant } from './gemm.ts';
import type { Window2d } from './program.ts';
import { NO_ACTIVATION, renameBindings, type Activation, type KernelProgram } from './shader.ts';

export interface Conv2dParams extends Window2d {
  images: number;
  inChannels: number;
  height: number;
  width: number;
  outChannels: number;
  group: number;
  outH: number;
  outW: number;
  hasBias: boolean;
  activation?: Activation;
}

/** Columns of the packed weight matrix per group: N rounded up to the widest register tile. */
export const PACKED_N_MULTIPLE = 8;

/**
 * The conv as one program, or several over row ranges when it exceeds a dispatch dimension.
 * Bindings: x, packed weights (packConvWeights), y, then bias when hasBias.
 */
export function conv2dPrograms(
  p: Conv2dParams,
  variant: GemmVariant,
  maxWorkgroupsPerDimension = 65535,
): KernelProgram[] {
  checkConv(p);
  // The GEMM key already says everything that shapes the WGSL (sizes live in params).
  const programs = gemmPrograms(conv2dGemmProblem(p), variant, maxWorkgroupsPerDimension);
  return renameBindings(programs, { a: 'x', b: 'w', c: 'y' }, 'conv', conv2dLabel(p));
}

/** The GEMM the conv runs: pointwise convs become a plain k-major GEMM per image. */
export function conv2dGemmProblem(p: Conv2dParams): GemmProblem {
  const groupOut = p.outChannels / p.group;
  const groupIn = p.inChannels / p.group;
  const K = groupIn * p.kernelH * p.kernelW;
  const ld = roundUp(groupOut, PACKED_N_MULTIPLE);
  const spatial = p.outH * p.outW;
  const activation = p.activation ?? NO_ACTIVATION;
  if (isPointwise(p)) {
    // y[img][co][pos] = Σ_ci x[img][ci][pos] · w[co][ci]: A is x in [K][M] layout.
    const hw = p.height * p.width;
    return {
      label: conv2dLabel(p),
      batch: p.images,
      M: hw,
      N: p.outChannels,
      K: p.inChannels,
      a: { kind: 'matrix', layout: 'km', batchStride: p.inChannels * hw, ld: hw },
      b: { layout: 'kn', batchStride: 0, ld, padded: true },
      c: { kind: 'matrix', batchStride: p.outChannels * hw, strideM: 1, strideN: hw },
      bias: p.hasBias ? { batchStride: 0, strideM: 0, strideN: 1 } : undefined,
      activation,
    };
  }
  return {
    label: conv2dLabel(p),
    batch: p.group,
    M: p.images * spatial,
    N: groupOut,
    K,
    a: {
      kind: 'im2col',
      conv: {
        images: p.images,
        channels: p.inChannels,
        height: p.height,
        width: p.width,
        groupChannels: groupIn,
        kernelH: p.kernelH,
        kernelW: p.kernelW,
        strideH: p.strideH,
        strideW: p.strideW,
        padTop: p.pads[0],
        padLeft: p.pads[1],
        dilationH: p.dilationH,
        dilationW: p.dilationW,
        outH: p.outH,
        outW: p.outW,
      },
    },
    b: { layout: 'kn', batchStride: K * ld, ld, padded: true },
    c: { kind: 'nchw', spatial, imageStride: p.outChannels * spatial, batchChannelStride: groupOut },
    bias: p.hasBias ? { batchStride: groupOut, strideM: 0, strideN: 1 } : undefined,
    activation,
  };
}

/**
 * Packs ONNX conv weights [Cout][Cin/group][KH][KW] as B[group][K][roundUp(Cout/group, 8)], K in
 * (kh, kw, ci) order, zero-padded; `channelScale` (a folded BatchNormalization) multiplies each
 * output channel's weights, in float64, rounded once. A transpose: written in blocks of
 * PACK_BLOCK output channels, so that every write fills whole cache lines while the reads walk
 * PACK_BLOCK rows of W in order.
 */
export function packConvWeights(
  w: Float32Array,
  p: Pick<Conv2dParams, 'outChannels' | 'inChannels' | 'group' | 'kernelH' | 'kernelW'>,
  channelScale?: Float64Array,
): Float32Array {
  const groupOut = p.outChannels / p.group;
  const groupIn = p.inChannels / p.group;
  const kernel = p.kernelH * p.kernelW;
  const K = groupIn * kernel;
  if (w.length !== p.outChannels * K)
    throw new Error(`conv weights have ${w.length} values; expected ${p.outChannels}·${K}`);
  const ld = roundUp(groupOut, PACKED_N_MULTIPLE);
  const out = new Float32Array(p.group * K * ld);
  const scale = channelScale ?? new Float64Array(p.outChannels).fill(1);
  for (let g = 0; g < p.group; g++) {
    for (let n0 = 0; n0 < groupOut; n0 += PACK_BLOCK) {
      const n1 = Math.min(groupOut, n0 + PACK_BLOCK);
      for (let ci = 0; ci < groupIn; ci++) {
        for (let r = 0; r < kernel; r++) {
          const dst = g * K * ld + (r * groupIn + ci) * ld;
          const src = g * groupOut * K + ci * kernel + r;
          for (let n = n0; n < n1; n++) out[dst + n] = w[src + n * K] * scale[g * groupOut + n];
        }
      }
    }
  }
  return out;
}

/** Output channels packed together: 16 floats, one 64-byte cache line of the packed matrix. */
const PACK_BLOCK = 16;

function isPointwise(p: Conv2dParams): boolean {
  return (
    p.group === 1 &&
    p.kernelH === 1 &&
    p.kernelW === 1 &&
    p.strideH === 1 &&
    p.strideW === 1 &&
    p.pads.every((x) => x === 0) &&
    p.outH === p.height &&
    p.outW === p.width
  );
}

function conv2dLabel(p: Conv2dParams): string {
  const g = p.group > 1 ? ` g${p.group}` : '';
  return `conv ${p.kernelH}x${p.kernelW} s${p.strideH}${g} ${p.inChannels}→${p.outChannels} ${p.height}x${p.width}`;
}

function checkConv(p: Conv2dParams): void {
  if (p.inChannels % p.group !== 0 || p.outChannels % p.group !== 0) {
    throw new Error(`conv: channels ${p.inChannels}→${p.outChannels} are not divisible by group ${p.group}`);
  }
  const span = (k: number, d: number) => (k - 1) * d + 1;
  const oh = Math.floor((p.height + p.pads[0] + p.pads[2] - span(p.kernelH, p.dilationH)) / p.strideH) + 1;
  const ow = Math.floor((p.width + p.pads[1] + p.pads[3] - span(p.kernelW, p.dilationW)) / p.strideW) + 1;
  if (oh !== p.outH || ow !== p.outW)
    throw new Error(`conv: output ${p.outH}x${p.outW} disagrees with the geometry (${oh}x${ow})`);
}
