// Optimizer update kernels (one dispatch per parameter tensor) and the global gradient norm.
//
// Every program here reads two uniform blocks: `Hyper`, shared by all tensors and rewritten each
// step with queue.writeBuffer (learning rate, Adam's bias corrections: the values that change per
// step), and `Tensor`, one per parameter (its size, dispatch row size, where its partial sums of
// g² go, its learning-rate multiplier and weight decay). Nothing that changes per step is baked
// into the WGSL, so each variant compiles once per device.
//
// Gradient clipping is two kernels and no host round trip: gradSquareSumProgram, dispatched per
// gradient tensor, writes one partial Σg² per workgroup into a shared partials buffer; then
// gradNormFinishProgram folds all partials into [Σg², ‖g‖, scale, non-finite] where
// scale = min(1, maxNorm / (‖g‖ + 1e-6)) (PyTorch's clip_grad_norm_). The update kernels
// multiply each gradient by that scale as they read it.
import {
  defineProgram,
  output,
  readOnly,
  uniform,
  type KernelProgram,
  type UniformField,
  type UniformStruct,
} from './shader.ts';

export type UpdateRule = 'sgd' | 'sgd-momentum' | 'sgd-nesterov' | 'adam' | 'adamw';

/** Bytes of the Hyper uniform block (9 f32 words, padded to a 16-byte multiple). */
export const HYPER_BYTES = 48;
/** Bytes of one Tensor uniform block. */
export const TENSOR_BYTES = 32;
/** Bytes of the clip-state buffer: Σg², ‖g‖, scale, non-finite flag (all f32). */
export const CLIP_STATE_BYTES = 16;
/** Gradient elements summed by one workgroup of gradSquareSumProgram: one partial each. */
export const NORM_CHUNK = 4096;
const NORM_WORKGROUP = 256;
const UPDATE_WORKGROUP = 256;
const FINISH_WORKGROUP = 256;

/** Per-step values, written with queue.writeBuffer before each step's dispatches. */
export interface HyperValues {
  /** Learning rate of this step (before each tensor's lrScale). */
  lr: number;
  /** SGD momentum μ. */
  momentum: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Adam: lr / (1 − β1^t), computed on the host in float64. */
  stepSize: number;
  /** Adam: 1 / √(1 − β2^t). */
  invSqrtBias2: number;
}

// 1 − β is passed on its own, computed in float64: in f32, 1 − f32(0.999) is off by 1.3e-5.

/** Per-tensor values: fixed while the tensor's size and options stay the same. */
export interface TensorValues {
  size: number;
  /** Invocations per dispatch row (linear index = gid.x + gid.y · rowSize). */
  rowSize: number;
  /** First slot of this tensor's partial sums in the partials buffer. */
  partialOffset: number;
  /** Workgroups per dispatch row of the norm kernel (workgroup index = wg.x + wg.y · normGroupsX). */
  normGroupsX: number;
  lrScale: number;
  weightDecay: number;
}

export function packHyper(h: HyperValues): ArrayBuffer {
  const out = new ArrayBuffer(HYPER_BYTES);
  const v = new DataView(out);
  [h.lr, h.momentum, h.beta1, h.beta2, 1 - h.beta1, 1 - h.beta2, h.eps, h.stepSize, h.invSqrtBias2].forEach((x, i) =>
    v.setFloat32(i * 4, x, true),
  );
  return out;
}

export function packTensor(t: TensorValues): ArrayBuffer {
  const out = new ArrayBuffer(TENSOR_BYTES);
  const v = new DataView(out);
  v.setUint32(0, t.size, true);
  v.setUint32(4, t.rowSize, true);
  v.setUint32(8, t.partialOffset, true);
  v.setUint32(12, t.normGroupsX, true);
  v.setFloat32(16, t.lrScale, true);
  v.setFloat32(20, t.weightDecay, true);
  return out;
}

/** The layouts packHyper and packTensor write. */
const HYPER: UniformStruct = {
  type: 'Hyper',
  fields: fieldsOf(
    'lr: f32, momentum: f32, beta1: f32, beta2: f32, oneMinusBeta1: f32, oneMinusBeta2: f32, eps: f32, stepSize: f32, invSqrtBias2: f32, pad0: u32, pad1: u32, pad2: u32',
  ),
};
const TENSOR: UniformStruct = {
  type: 'Tensor',
  fields: fieldsOf(
    'size: u32, rowSize: u32, partialOffset: u32, normGroupsX: u32, lrScale: f32, weightDecay: f32, pad0: u32, pad1: u32',
  ),
};
/** packNormParams' layout. */
const NORM_PARAMS: UniformStruct = {
  type: 'Params',
  fields: fieldsOf('count: u32, maxNorm: f32, pad0: u32, pad1: u32'),
};

function fieldsOf(list: string): UniformField[] {
  return list.split(',').map((f) => {
    const [name, type] = f.split(':').map((x) => x.trim());
    return { name, type: type as UniformField['type'] };
  });
}

/** The moment buffers a rule keeps per parameter, by PyTorch's state names. */
export function slotsOf(rule: UpdateRule): ('momentum_buffer' | 'exp_avg' | 'exp_avg_sq')[] {
  switch (rule) {
    case 'sgd':
      return [];
    case 'sgd-momentum':
    case 'sgd-nesterov':
      return ['momentum_buffer'];
    case 'adam':
    case 'adamw':
      return ['exp_avg', 'exp_avg_sq'];
  }
}

/**
 * The fused update for one parameter tensor. Bindings in order: hyper (uniform), tensor
 * (uniform), param (read_write), grad (read), one read_write buffer per slot (slotsOf(rule)),
 * and clip (read, CLIP_STATE_BYTES) when `clip`: then a non-finite ‖g‖ leaves everything as it
 * was (the step is skipped). With g = grad · clip.scale and λ the tensor's
 * weight decay, lr the step's rate times the tensor's lrScale (PyTorch's formulas, dampening 0):
 *   sgd           p −= lr·(g + λp)
 *   sgd-momentum  b = μb + (g + λp);             p −= lr·b
 *   sgd-nesterov  b = μb + (g + λp);             p −= lr·((g + λp) + μb)
 *   adam          g' = g + λp; m = β1m + (1−β1)g'; v = β2v + (1−β2)g'²;
 *                 p −= (lr/(1−β1^t)) · m / (√v/√(1−β2^t) + ε)
 *   adamw         p ·= 1 − lr·λ, then adam's update with g' = g
 */
export function optimizerUpdateProgram(rule: UpdateRule, clip: boolean): KernelProgram {
  const slots = slotsOf(rule);
  return defineProgram({
    label: `optimizer ${rule}${clip ? ' (clipped)' : ''}`,
    key: `optimizer-update-${rule}${clip ? '-clip' : ''}`,
    dispatch: [1, 1, 1], // per tensor: see updateDispatch
    bindings: [
      uniform('hyper', 'H', HYPER),
      uniform('tensor', 'T', TENSOR),
      output('param'),
      readOnly('grad'),
      ...slots.map((slot) => output(slot)),
      ...(clip ? [readOnly('clip', { variable: 'clipState', length: 4 })] : []),
    ],
    workgroupSize: UPDATE_WORKGROUP,
    builtins: { gid: 'global_invocation_id' },
    guard: { index: { name: 'i', expr: 'gid.x + gid.y * T.rowSize' }, exit: 'i >= T.size' },
    // A non-finite gradient norm skips the whole update (parameters and moments kept), so one bad
    // batch cannot write NaN into the weights; the flag is uniform across the dispatch.
    body: () => `${clip ? '  if (clipState[3] != 0.0) { return; }\n' : ''}  let lr = H.lr * T.lrScale;
  let wd = T.weightDecay;
  var p = param[i];
  var g = grad[i]${clip ? ' * clipState[2]' : ''};
${updateBody(rule)}
  param[i] = p;`,
  });
}

function updateBody(rule: UpdateRule): string {
  switch (rule) {
    case 'sgd':
      return `  g = g + wd * p;
  p = p - lr * g;`;
    case 'sgd-momentum':
      return `  g = g + wd * p;
  let b = H.momentum * momentum_buffer[i] + g;
  momentum_buffer[i] = b;
  p = p - lr * b;`;
    case 'sgd-nesterov':
      return `  g = g + wd * p;
  let b = H.momentum * momentum_buffer[i] + g;
  momentum_buffer[i] = b;
  p = p - lr * (g + H.momentum * b);`;
    case 'adam':
    case 'adamw':
      return `${rule === 'adamw' ? '  p = p * (1.0 - lr * wd);' : '  g = g + wd * p;'}
  let m = H.beta1 * exp_avg[i] + H.oneMinusBeta1 * g;
  let v = H.beta2 * exp_avg_sq[i] + H.oneMinusBeta2 * g * g;
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  let denom = sqrt(v) * H.invSqrtBias2 + H.eps;
  p = p - (H.stepSize * T.lrScale) * (m / denom);`;
  }
}

/** Workgroups for an update of `size` elements, and the row size the Tensor block must carry. */
export function updateDispatch(
  size: number,
  maxPerDim = 65535,
): { dispatch: [number, number, number]; rowSize: number } {
  const groups = Math.max(1, Math.ceil(size / UPDATE_WORKGROUP));
  const [x, y] = split(groups, maxPerDim);
  return { dispatch: [x, y, 1], rowSize: x * UPDATE_WORKGROUP };
}

/** Workgroups of gradSquareSumProgram for `size` elements: one per NORM_CHUNK, one partial each. */
export function normDispatch(
  size: number,
  maxPerDim = 65535,
): { dispatch: [number, number, number]; partials: number; groupsX: number } {
  const partials = Math.max(1, Math.ceil(size / NORM_CHUNK));
  const [x, y] = split(partials, maxPerDim);
  return { dispatch: [x, y, 1], partials, groupsX: x };
}

/**
 * Σg² of one gradient tensor, one partial per workgroup of NORM_CHUNK elements, written at
 * partials[T.partialOffset + workgroup]. Bindings: tensor (uniform), grad (read), partials (read_write).
 */
export function gradSquareSumProgram(): KernelProgram {
  const perThread = NORM_CHUNK / NORM_WORKGROUP;
  return defineProgram({
    label: 'gradient Σg² partials',
    key: 'optimizer-grad-square-sum',
    dispatch: [1, 1, 1], // per tensor: see normDispatch
    bindings: [uniform('tensor', 'T', TENSOR), readOnly('grad'), output('partials')],
    workgroupSize: NORM_WORKGROUP,
    builtins: { wg: 'workgroup_id', lid: 'local_invocation_index' },
    prelude: () => `var<workgroup> red: array<f32, ${NORM_WORKGROUP}>;`,
    body: () => `  let group = wg.x + wg.y * T.normGroupsX;
  let start = group * ${NORM_CHUNK}u;
  var s = 0.0;
  for (var k = 0u; k < ${perThread}u; k++) {
    let i = start + k * ${NORM_WORKGROUP}u + lid;
    if (i < T.size) {
      let g = grad[i];
      s += g * g;
    }
  }
  red[lid] = s;
  workgroupBarrier();
  for (var h = ${NORM_WORKGROUP / 2}u; h > 0u; h >>= 1u) {
    if (lid < h) { red[lid] += red[lid + h]; }
    workgroupBarrier();
  }
  if (lid == 0u && start < T.size) { partials[T.partialOffset + group] = red[0]; }`,
  });
}

/** Bytes of gradNormFinishProgram's params: partial count (u32), maxNorm (f32; 0 = no clipping). */
export const NORM_PARAMS_BYTES = 16;

export function packNormParams(partials: number, maxNorm: number): ArrayBuffer {
  const out = new ArrayBuffer(NORM_PARAMS_BYTES);
  const v = new DataView(out);
  v.setUint32(0, partials, true);
  v.setFloat32(4, maxNorm, true);
  return out;
}

/**
 * Folds the partials into clip = [Σg², ‖g‖, scale, non-finite (1.0 or 0.0)], one workgroup.
 * scale = min(1, maxNorm / (‖g‖ + 1e-6)) when maxNorm > 0, else 1.
 * Bindings: partials (read), clip (read_write), params (uniform: count, maxNorm).
 */
export function gradNormFinishProgram(): KernelProgram {
  return defineProgram({
    label: 'gradient global norm',
    key: 'optimizer-grad-norm-finish',
    dispatch: [1, 1, 1],
    bindings: [
      readOnly('partials'),
      output('clip', { variable: 'clipState', length: 4 }),
      uniform('params', 'P', NORM_PARAMS),
    ],
    workgroupSize: FINISH_WORKGROUP,
    builtins: { lid: 'local_invocation_index' },
    prelude: () => `var<workgroup> red: array<f32, ${FINISH_WORKGROUP}>;

fn nonFinite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u; }`,
    body: () => `  var s = 0.0;
  for (var i = lid; i < P.count; i += ${FINISH_WORKGROUP}u) { s += partials[i]; }
  red[lid] = s;
  workgroupBarrier();
  for (var h = ${FINISH_WORKGROUP / 2}u; h > 0u; h >>= 1u) {
    if (lid < h) { red[lid] += red[lid + h]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let total = red[0];
    let norm = sqrt(total);
    var scale = 1.0;
    if (P.maxNorm > 0.0) { scale = min(1.0, P.maxNorm / (norm + 1e-6)); }
    clipState[0] = total;
    clipState[1] = norm;
    clipState[2] = scale;
    clipState[3] = select(0.0, 1.0, nonFinite(total));
  }`,
  });
}

function split(groups: number, maxPerDim: number): [number, number] {
  if (groups <= maxPerDim) return [groups, 1];
  const y = Math.ceil(groups / maxPerDim);
  return [Math.ceil(groups / y), y];
}
