// Kernels over N × C × S data ([N, C, spatial…]) that work per channel: reductions over a
// channel's N·S values (BatchNormalization's statistics and parameter gradients, a conv bias
// gradient) and element-wise maps with per-channel coefficients (BatchNormalization's normalise
// and dx). Lanes read contiguous runs of a plane and per-channel values are read once per
// channel or plane, never per element: no index division per element.
import { defineProgram, dispatch1d, ParamBlock, type KernelProgram, type ProgramBinding } from '../shader.ts';

export interface ChannelShape {
  images: number;
  channels: number;
  /** ∏ of the dims after C (1 for [N, C]). */
  spatial: number;
}

/**
 * Lanes of the per-channel kernels: one SIMD vector of lavapipe (a workgroup runs as one
 * CPU thread over vectors of 8 floats), so a channel's reduction needs a single barrier over 8
 * partial sums (a wide workgroup per channel pays a barrier per tree level, which a CPU
 * implementation runs as a costly thread synchronisation).
 */
const LANES = 8;

/** Elements a plane kernel's workgroup aims to cover (whole planes), amortising its start-up. */
const PLANE_GROUP_ELEMENTS = 2048;

export interface ChannelKernelSpec {
  label: string;
  key: string;
  /** The tensors read (see input()), then those written (see output()), in binding order. */
  reads: ProgramBinding[];
  writes: ProgramBinding[];
  /** The program's own uniforms, after the shape's. */
  params?: (P: ParamBlock) => ParamBlock;
}

/** Bindings indexed per element (the rest are per channel): vec4 arrays when S % 4 = 0, by WGSL variable. */
const TENSORS = new Set(['x', 'dy', 'y', 'dx']);

/**
 * The uniforms (the shape, P.units, P.groupsX, P.invCount = 1/(N·S)) and declarations every
 * per-channel kernel starts with; the key gets the element type. A plane's S elements are
 * P.units values of T: vec4f when 4 divides S (on lavapipe a lane's vec4 load costs about what
 * a scalar one does), else f32.
 */
function channelProgram(
  p: ChannelShape,
  spec: ChannelKernelSpec,
  groups: number,
  extra: (P: ParamBlock) => void,
  main: { prelude: string; body: (T: string) => string },
): KernelProgram {
  const width = p.spatial % 4 === 0 ? 4 : 1;
  const T = width === 4 ? 'vec4f' : 'f32';
  const dispatch = dispatch1d(groups);
  const P = new ParamBlock()
    .u32('images', p.images)
    .u32('channels', p.channels)
    .u32('spatial', p.spatial)
    .u32('units', p.spatial / width)
    .u32('groupsX', dispatch[0])
    .f32('invCount', 1 / (p.images * p.spatial));
  extra(P);
  spec.params?.(P);
  const sum = width === 4 ? 'v.x + v.y + v.z + v.w' : 'v';
  return defineProgram({
    label: spec.label,
    key: `${spec.key}|${T}`,
    dispatch,
    bindings: [...spec.reads, ...spec.writes].map((b) => ({
      ...b,
      vec4: width === 4 && TENSORS.has(b.variable ?? b.name),
    })),
    params: P,
    workgroupSize: LANES,
    builtins: { wid: 'workgroup_id', lid: 'local_invocation_index' },
    prelude: () => `fn hsum(v: ${T}) -> f32 { return ${sum}; }
fn firstOf(v: ${T}) -> f32 { return ${width === 4 ? 'v.x' : 'v'}; }
${main.prelude}`,
    body: () => main.body(T),
  });
}

/**
 * A per-channel reduction: one workgroup of LANES per channel c, the lanes reading each image's
 * run of the channel contiguously (no index division), accumulating `acc0` and `acc1` (of the
 * element type) by `element` with the index `i`; then one barrier, and the first lane runs
 * `after` on the channel's totals `acc: vec2f`. `before` runs per channel first (uniform:
 * channel values are read once, not per lane).
 */
export function channelReduceProgram(
  p: ChannelShape,
  spec: ChannelKernelSpec & { before: string; element: string; after: string },
): KernelProgram {
  return channelProgram(p, spec, p.channels, () => {}, {
    prelude: `var<workgroup> partial: array<vec2f, ${LANES}>;`,
    body: (T) => `  let c = wid.x + wid.y * P.groupsX;
  if (c >= P.channels) { return; }
  ${spec.before}
  // Per-image subtotals keep each f32 running sum short (a 112×112 plane: 392 vec4 terms a lane).
  var total = vec2f(0.0);
  for (var n = 0u; n < P.images; n++) {
    let base = (n * P.channels + c) * P.units;
    var acc0 = ${T}(0.0);
    var acc1 = ${T}(0.0);
    for (var s = lid; s < P.units; s += ${LANES}u) {
      let i = base + s;
      ${spec.element}
    }
    total += vec2f(hsum(acc0), hsum(acc1));
  }
  partial[lid] = total;
  workgroupBarrier();
  if (lid != 0u) { return; }
  var acc = partial[0];
  for (var l = 1u; l < ${LANES}u; l++) { acc += partial[l]; }
${spec.after}`,
  });
}

/**
 * An element-wise kernel over N × C × S by planes (one (image, channel) run of S): each
 * workgroup of LANES takes whole consecutive planes, runs `channel` once per plane with `c` its
 * channel (per-channel values read once, not per element), then `element` for each index `i`
 * of the plane, lanes on neighbouring elements.
 */
export function planeProgram(
  p: ChannelShape,
  spec: ChannelKernelSpec & { channel: string; element: string },
): KernelProgram {
  const planes = p.images * p.channels;
  const perGroup = Math.max(1, Math.floor(PLANE_GROUP_ELEMENTS / p.spatial));
  const extra = (P: ParamBlock) => P.u32('planes', planes).u32('planesPerGroup', perGroup);
  return channelProgram(p, spec, Math.ceil(planes / perGroup), extra, {
    prelude: '',
    body: () => `  let first = (wid.x + wid.y * P.groupsX) * P.planesPerGroup;
  let last = min(first + P.planesPerGroup, P.planes);
  for (var plane = first; plane < last; plane++) {
    let c = plane % P.channels;
    ${spec.channel}
    let base = plane * P.units;
    for (var s = lid; s < P.units; s += ${LANES}u) {
      let i = base + s;
      ${spec.element}
    }
  }`,
  });
}
