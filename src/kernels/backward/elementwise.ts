// Backward of the elementwise family (forward: ../elementwise.ts): unary activations, the
// broadcasting binary ops (gradient reduced over the broadcast axes by one generic
// reduce-to-shape kernel, with the op's local derivative fused in), and Dropout in training
// mode with a counter-based mask that the backward recomputes instead of storing.
import {
  defineProgram,
  dispatch1d,
  elementProgram,
  input,
  output,
  ParamBlock,
  vectorElementProgram,
  type KernelProgram,
} from '../shader.ts';

export type UnaryBackwardOp =
  | { kind: 'relu' }
  | { kind: 'leakyRelu'; alpha: number }
  | { kind: 'clip'; min: number; max: number }
  | { kind: 'sigmoid' }
  | { kind: 'tanh' };

/**
 * dx = dy · f'(·) over `size` elements:
 * - Relu: dy·[x > 0]. Needs saved: x (or y: y > 0 exactly where x > 0, so y may be bound instead).
 * - LeakyRelu: dy·(x ≥ 0 ? 1 : alpha). Needs saved: x.
 * - Clip: dy·[min ≤ x ≤ max] (0 outside the range, 1 on its bounds, as PyTorch). Needs saved: x.
 * - Sigmoid: dy·y·(1 − y). Needs saved: y (the forward output).
 * - Tanh: dy·(1 − y²). Needs saved: y.
 * vec4 units where 4 divides `size` (vectorElementProgram).
 * Bindings: Relu, LeakyRelu, Clip: x, dy, dx, params; Sigmoid, Tanh: y, dy, dx, params.
 */
export function unaryBackwardProgram(op: UnaryBackwardOp, size: number): KernelProgram {
  const fromOutput = op.kind === 'sigmoid' || op.kind === 'tanh';
  const saved = fromOutput ? 'y' : 'x';
  // Expressions of the saved value v and dy's g, both of type T (vec4f or f32).
  let expr: (T: string) => string;
  let params: ((P: ParamBlock) => void) | undefined;
  switch (op.kind) {
    case 'relu':
      expr = (T) => `select(${T}(0.0), g, v > ${T}(0.0))`;
      break;
    case 'leakyRelu':
      params = (P) => P.f32('alpha', op.alpha);
      expr = (T) => `select(g * P.alpha, g, v >= ${T}(0.0))`;
      break;
    case 'clip':
      // Uniform values may be ±Infinity (only WGSL literals may not): an open bound just passes.
      params = (P) => P.f32('lo', op.min).f32('hi', op.max);
      expr = (T) => `select(${T}(0.0), g, (v >= ${T}(P.lo)) & (v <= ${T}(P.hi)))`;
      break;
    case 'sigmoid':
      expr = () => 'g * v * (1.0 - v)';
      break;
    case 'tanh':
      expr = () => 'g * (1.0 - v * v)';
      break;
  }
  return vectorElementProgram({
    label: `${op.kind} backward ${size}`,
    key: `unary-bwd|${op.kind}`,
    total: size,
    inputs: [input(saved), input('dy')],
    params,
    body: (T) => `    let v = ${saved}[i];
    let g = dy[i];
    dx[i] = ${expr(T)};`,
  });
}

export type BroadcastBackwardOp = 'add' | 'sub' | 'mul' | 'div';

/**
 * The gradient of input `which` of a broadcasting binary op y = x0 op x1 (numpy rules; Sum of
 * n inputs: 'add' per input, which = 0 with that input's dims first, or reduceToShapeProgram):
 *   add: dx_w = R(dy);  sub: dx0 = R(dy), dx1 = −R(dy);  mul: dx0 = R(dy·x1), dx1 = R(dy·x0);
 *   div: dx0 = R(dy/x1), dx1 = −R(dy·x0/x1²),
 * R summing over the axes where x_which was broadcast (size 1 or missing) to y's dims.
 * Needs saved: add/sub nothing; mul the other input; div x1, and x0 for dx1.
 * Bindings: dy, then x0 and/or x1 when needed (in that order), dx, params.
 * Targets that reduce ≥ 64 output elements each run one workgroup per target element with a
 * tree reduction; the others one invocation per target element.
 */
export function broadcastBackwardProgram(
  op: BroadcastBackwardOp,
  inputDims: [number[], number[]],
  which: 0 | 1,
  outDims: number[],
): KernelProgram {
  const needs: (0 | 1)[] = op === 'mul' ? [which === 0 ? 1 : 0] : op === 'div' ? (which === 0 ? [1] : [0, 1]) : [];
  const term = {
    add: 'g',
    sub: which === 0 ? 'g' : '-g',
    mul: which === 0 ? 'g * x1[o1]' : 'g * x0[o0]',
    div: which === 0 ? 'g / x1[o1]' : '-g * x0[o0] / (x1[o1] * x1[o1])',
  }[op];
  return reduceGrad(
    `${op}${which}`,
    term,
    inputDims[which],
    needs.map((i) => ({ name: `x${i}`, dims: inputDims[i], offset: `o${i}` })),
    outDims,
    1,
  );
}

/**
 * dx = scale · dy summed over the axes where `toDims` was broadcast to `fromDims` (numpy rules):
 * the gradient of any broadcast (Add, Sum, Expand, a bias; Gemm's C with scale = beta). Needs
 * saved: nothing. Bindings: dy, dx, params.
 */
export function reduceToShapeProgram(fromDims: number[], toDims: number[], o: { scale?: number } = {}): KernelProgram {
  return reduceGrad('reduce', 'g', toDims, [], fromDims, o.scale ?? 1);
}

/** y = a + b (same sizes): how autodiff sums two gradients of one value (vec4 units). Bindings: a, b, y, params. */
export function gradientSumProgram(size: number): KernelProgram {
  return vectorElementProgram({
    label: `gradient sum ${size}`,
    key: 'gradient-sum',
    total: size,
    inputs: [input('a'), input('b')],
    outputs: [output('y')],
    body: () => '    y[i] = a[i] + b[i];',
  });
}

/**
 * Dropout, training mode: keep element i iff hash(seed, first + i) ≥ ratio·2³² (dropoutKeep), then
 * y = x·keep/(1 − ratio); with `writeMask`, mask = 1.0 where kept, else 0.0 (ONNX's mask
 * output, as f32). The seed lives in the params block: a new seed per step shares the pipeline;
 * `first` (0 here) is the index of the dispatch's element 0 in the whole batch, set per slice of
 * a sliced batch so that each slice draws the unsliced step's mask.
 * Bindings: x, y, [mask,] params.
 */
export function dropoutForwardProgram(size: number, ratio: number, seed: number, writeMask = false): KernelProgram {
  return elementProgram({
    label: `dropout ${ratio} ${size}`,
    key: `dropout-fwd|${writeMask ? 'mask' : 'nomask'}`,
    total: size,
    inputs: [input('x')],
    outputs: writeMask ? [output('y'), output('mask')] : [output('y')],
    params: dropoutParams(ratio, seed),
    prelude: HASH_WGSL,
    body: `  let keep = dropoutHash(P.seed, P.first + idx) >= P.threshold;
  y[idx] = select(0.0, x[idx] * P.scale, keep);
  ${writeMask ? 'mask[idx] = select(0.0, 1.0, keep);' : ''}`,
  });
}

/**
 * Dropout backward: dx = dy·keep/(1 − ratio), keep recomputed from (seed, index) exactly as the
 * forward drew it. Needs saved: the seed and ratio only (no mask tensor).
 * Bindings: dy, dx, params.
 */
export function dropoutBackwardProgram(size: number, ratio: number, seed: number): KernelProgram {
  return elementProgram({
    label: `dropout backward ${ratio} ${size}`,
    key: 'dropout-bwd',
    total: size,
    inputs: [input('dy')],
    outputs: [output('dx')],
    params: dropoutParams(ratio, seed),
    prelude: HASH_WGSL,
    body: `  dx[idx] = select(0.0, dy[idx] * P.scale, dropoutHash(P.seed, P.first + idx) >= P.threshold);`,
  });
}

/** Whether Dropout keeps element `index` under `seed` and `ratio`: the kernels' rule, on the host. */
export function dropoutKeep(seed: number, index: number, ratio: number): boolean {
  return dropoutHash(seed >>> 0, index >>> 0) >= dropoutThreshold(ratio);
}

// ---- helpers ----

interface Operand {
  name: string;
  dims: number[];
  /** The WGSL variable holding its flat index. */
  offset: string;
}

/** Reductions at least this long get a workgroup per target element. */
const WG_REDUCE_MIN = 64;
const WG = 64;

/**
 * dx[t] = Σ over the output positions that broadcast from target element t of `term`, where
 * `term` reads g = dy[o] and operands at their own broadcast offsets.
 */
function reduceGrad(
  name: string,
  term: string,
  targetDims: number[],
  operands: Operand[],
  outDims: number[],
  scale: number,
): KernelProgram {
  const rank = outDims.length;
  if (targetDims.length > rank)
    throw new Error(`${name} backward: input [${targetDims}] has more dims than the output [${outDims}]`);
  const outStrides = stridesOf(outDims);
  const operandStrides = operands.map((op) => broadcastStrides(op.dims, outDims, name));
  const target = [...new Array(rank - targetDims.length).fill(1), ...targetDims];
  // Axes of y, each kept (the target has it) or reduced (the target broadcasts over it);
  // neighbours of one class that stay contiguous in y and in every operand merge into one.
  interface Axis {
    reduced: boolean;
    dim: number;
    out: number;
    ops: number[];
  }
  const axes: Axis[] = [];
  for (let d = 0; d < rank; d++) {
    if (outDims[d] === 1) continue;
    if (target[d] !== outDims[d] && target[d] !== 1)
      throw new Error(`${name} backward: input [${targetDims}] does not broadcast to [${outDims}]`);
    const axis: Axis = {
      reduced: target[d] !== outDims[d],
      dim: outDims[d],
      out: outStrides[d],
      ops: operandStrides.map((st) => st[d]),
    };
    const last = axes[axes.length - 1];
    if (
      last &&
      last.reduced === axis.reduced &&
      last.out === axis.out * axis.dim &&
      last.ops.every((v, i) => v === axis.ops[i] * axis.dim)
    ) {
      last.dim *= axis.dim;
      last.out = axis.out;
      last.ops = axis.ops;
    } else axes.push(axis);
  }
  const kept = axes.filter((a) => !a.reduced);
  const reduced = axes.filter((a) => a.reduced);
  const targets = kept.reduce((n, a) => n * a.dim, 1);
  const count = reduced.reduce((n, a) => n * a.dim, 1);
  const byWorkgroup = count >= WG_REDUCE_MIN;

  // The strides of the kept and reduced axes, after size, count and rowSize.
  const strides = (P: ParamBlock): void => {
    P.f32('scale', scale);
    kept.forEach((a, k) => {
      P.u32(`kd${k}`, a.dim).u32(`ko${k}`, a.out);
      a.ops.forEach((v, i) => P.u32(`k${i}_${k}`, v));
    });
    reduced.forEach((a, r) => {
      P.u32(`rd${r}`, a.dim).u32(`ro${r}`, a.out);
      a.ops.forEach((v, i) => P.u32(`r${i}_${r}`, v));
    });
  };

  const base: string[] = ['  var rem = t;', '  var ob = 0u;', ...operands.map((_, i) => `  var b${i} = 0u;`)];
  for (let k = kept.length - 1; k >= 0; k--) {
    base.push(
      `  { let c = rem % P.kd${k}; rem = rem / P.kd${k}; ob += c * P.ko${k};${operands.map((_, i) => ` b${i} += c * P.k${i}_${k};`).join('')} }`,
    );
  }
  const inner: string[] = [
    '    var rr = r;',
    '    var o = ob;',
    ...operands.map((op, i) => `    var ${op.offset} = b${i};`),
  ];
  for (let k = reduced.length - 1; k >= 0; k--) {
    inner.push(
      `    { let c = rr % P.rd${k}; rr = rr / P.rd${k}; o += c * P.ro${k};${operands.map((op, i) => ` ${op.offset} += c * P.r${i}_${k};`).join('')} }`,
    );
  }
  inner.push('    let g = dy[o];', `    acc += ${term};`);

  const inputs = [input('dy'), ...operands.map((op) => input(op.name))];
  const label = `${name} backward [${outDims}]→[${targetDims}]`;
  const key = `broadcast-bwd|${name}|k${kept.length}|r${reduced.length}|${byWorkgroup ? 'wg' : 'th'}`;
  if (!byWorkgroup) {
    // One invocation per target element.
    return elementProgram({
      label,
      key,
      total: targets,
      inputs,
      outputs: [output('dx')],
      params: (P) => {
        P.u32('count', count);
        strides(P);
      },
      body: `  let t = idx;
  var acc = 0.0;
${base.join('\n')}
  for (var r = 0u; r < P.count; r++) {
${inner.join('\n')}
  }
  dx[t] = acc * P.scale;`,
    });
  }
  // One workgroup per target element, with a tree reduction.
  const dispatch = dispatch1d(targets);
  const P = new ParamBlock().u32('size', targets).u32('count', count).u32('rowSize', dispatch[0]);
  strides(P);
  return defineProgram({
    label,
    key,
    dispatch,
    bindings: [...inputs, output('dx')],
    params: P,
    workgroupSize: WG,
    builtins: { wid: 'workgroup_id', lid: 'local_invocation_index' },
    prelude: () => `var<workgroup> partial: array<f32, ${WG}>;`,
    body: () => `  let t = wid.x + wid.y * P.rowSize;
  var acc = 0.0;
  if (t < P.size) {
${base.join('\n')}
    for (var r = lid; r < P.count; r += ${WG}u) {
${inner.join('\n')}
    }
  }
  partial[lid] = acc;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) { partial[lid] += partial[lid + s]; }
    workgroupBarrier();
  }
  if (lid == 0u && t < P.size) {
    dx[t] = partial[0] * P.scale;
  }`,
  });
}

function stridesOf(dims: number[]): number[] {
  const s = new Array(dims.length).fill(1);
  for (let i = dims.length - 2; i >= 0; i--) s[i] = s[i + 1] * dims[i + 1];
  return s;
}

/** Strides of `dims` over the output's coordinates: 0 on broadcast axes. */
function broadcastStrides(dims: number[], outDims: number[], name: string): number[] {
  const rank = outDims.length;
  if (dims.length > rank)
    throw new Error(`${name} backward: input [${dims}] has more dims than the output [${outDims}]`);
  const padded = [...new Array(rank - dims.length).fill(1), ...dims];
  const s = new Array(rank).fill(0);
  let acc = 1;
  for (let d = rank - 1; d >= 0; d--) {
    if (padded[d] !== 1 && padded[d] !== outDims[d])
      throw new Error(`${name} backward: input [${dims}] does not broadcast to [${outDims}]`);
    s[d] = padded[d] === 1 ? 0 : acc;
    acc *= padded[d];
  }
  return s;
}

function dropoutThreshold(ratio: number): number {
  if (!(ratio >= 0 && ratio < 1)) throw new Error(`Dropout ratio ${ratio}: a value in [0, 1) is accepted`);
  return Math.min(0xffffffff, Math.round(ratio * 4294967296));
}

/** Dropout's uniforms after size and rowSize. */
function dropoutParams(ratio: number, seed: number): (P: ParamBlock) => void {
  const threshold = dropoutThreshold(ratio);
  return (P) =>
    P.u32('seed', seed >>> 0)
      .u32('threshold', threshold)
      .f32('scale', 1 / (1 - ratio))
      .u32('first', 0);
}

// A counter-based hash (two rounds of the "lowbias32" integer mix): the same (seed, index)
// gives the same bits on every device, with nothing stored between forward and backward.
const HASH_WGSL = `
fn mix32(v: u32) -> u32 {
  var h = v;
  h ^= h >> 16u; h *= 0x7feb352du;
  h ^= h >> 15u; h *= 0x846ca68bu;
  h ^= h >> 16u;
  return h;
}
fn dropoutHash(seed: u32, i: u32) -> u32 {
  return mix32(mix32(seed ^ 0x9e3779b9u) + i);
}`;

function mix32(v: number): number {
  let h = v >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

function dropoutHash(seed: number, i: number): number {
  return mix32((mix32((seed ^ 0x9e3779b9) >>> 0) + i) >>> 0);
}
