// Output dtype and shape of each op from its inputs' dtypes, shapes and (where the op reads
// them) constant values. One rule per op; opset differences are handled inside the rule.
import { AttributeReader } from './attributes.ts';
import { ModelError } from './errors.ts';
import { windowGeometry } from './geometry.ts';
import type { Dim, Graph, Node, ValueInfo } from './ir.ts';
import { dataTypeFromOnnx, toNumbers, type DataType, type TensorValue } from './tensor.ts';

export interface InferredValue {
  dtype: DataType;
  shape: Dim[];
}

export class ShapeContext {
  readonly attrs: AttributeReader;

  constructor(
    readonly graph: Graph,
    readonly node: Node,
    readonly opset: number,
    private readonly constants: (name: string) => TensorValue | undefined,
  ) {
    this.attrs = new AttributeReader(node, graph.source);
  }

  get inputCount(): number {
    return this.node.inputs.length;
  }

  /** Whether optional input i is given (present and not the empty name). */
  hasInput(i: number): boolean {
    return i < this.node.inputs.length && this.node.inputs[i] !== '';
  }

  info(i: number): ValueInfo {
    const name = this.node.inputs[i];
    if (!this.hasInput(i)) throw this.error(`input ${i} is required`);
    const v = this.graph.values.get(name);
    if (!v) throw this.error(`input ${i} ('${name}') has no known type`);
    return v;
  }

  shape(i: number): Dim[] {
    const v = this.info(i);
    if (!v.shape) throw this.error(`cannot infer the output shape: the shape of input ${i} ('${v.name}') is unknown`);
    return v.shape;
  }

  /** A shape whose every dimension must be a known number. */
  staticShape(i: number, why: string): number[] {
    const s = this.shape(i);
    if (s.some((d) => typeof d !== 'number'))
      throw this.error(
        `input ${i} ('${this.node.inputs[i]}') has shape ${showShape(s)}, but ${why} needs every dimension known`,
      );
    return s as number[];
  }

  dtype(i: number): DataType {
    const v = this.info(i);
    if (!v.dtype) throw this.error(`input ${i} ('${v.name}') has no known dtype`);
    return v.dtype;
  }

  constant(i: number): TensorValue | undefined {
    return this.hasInput(i) ? this.constants(this.node.inputs[i]) : undefined;
  }

  /** The values of a constant integer input, or an error saying the op needs it constant. */
  constantInts(i: number, what: string): number[] {
    const c = this.constant(i);
    if (!c) {
      const symbolic = this.graph.feedInputs.find((v) => v.shape?.some((d) => typeof d !== 'number'));
      const hint = symbolic
        ? `; input '${symbolic.name}' has symbolic dimensions ${showShape(symbolic.shape!)}: bind them with inputShapes (graft inspect --input)`
        : '';
      throw this.error(
        `${what} (input ${i}, '${this.node.inputs[i]}') must be a constant (an initializer or foldable from one) so that the output shape is known${hint}`,
      );
    }
    return toNumbers(c);
  }

  error(message: string): ModelError {
    return new ModelError(message, { file: this.graph.source, node: this.node });
  }
}

export type ShapeRule = (ctx: ShapeContext) => InferredValue[];

export function showDim(d: Dim): string {
  return d === null ? '?' : String(d);
}

export function showShape(dims: readonly Dim[]): string {
  return `[${dims.map(showDim).join(', ')}]`;
}

/** Normalises a possibly negative axis into [0, rank), naming the node on failure. */
export function normalizeAxis(ctx: ShapeContext, axis: number, rank: number): number {
  if (axis < -rank || axis >= rank)
    throw ctx.error(`axis ${axis} is out of range for rank ${rank} (accepted: ${-rank} … ${rank - 1})`);
  return axis < 0 ? axis + rank : axis;
}

function mulDims(dims: Dim[]): Dim {
  let p = 1;
  for (const d of dims) {
    if (typeof d !== 'number') return dims.length === 1 ? d : null;
    p *= d;
  }
  return p;
}

const same: ShapeRule = (ctx) => [{ dtype: ctx.dtype(0), shape: [...ctx.shape(0)] }];

/** numpy broadcasting of any number of shapes. */
export function broadcastShapes(ctx: ShapeContext, shapes: Dim[][]): Dim[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const e = s[s.length - rank + i] ?? 1;
      if (e === 1) continue;
      if (d === 1) d = e;
      else if (typeof d === 'number' && typeof e === 'number' && d !== e) {
        throw ctx.error(
          `shapes ${shapes.map((s) => `${showShape(s)}`).join(' and ')} cannot be broadcast together (dimension ${i} of the result: ${d} vs ${e})`,
        );
      } else if (d !== e && typeof e === 'number') d = e; // a known size wins over a symbol
    }
    out.push(d);
  }
  return out;
}

const elementwise: ShapeRule = (ctx) => {
  if (ctx.attrs.has('broadcast') || ctx.attrs.has('axis')) {
    throw ctx.error(
      'legacy broadcast/axis attributes (opset < 7) are not supported; re-export the model with opset 7 or newer',
    );
  }
  const shapes: Dim[][] = [];
  for (let i = 0; i < ctx.inputCount; i++) shapes.push(ctx.shape(i));
  if (shapes.length === 0) throw ctx.error('needs at least one input');
  return [{ dtype: ctx.dtype(0), shape: broadcastShapes(ctx, shapes) }];
};

const conv: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  const w = ctx.staticShape(1, 'Conv');
  if (x.length < 3) throw ctx.error(`input X has rank ${x.length}; Conv needs [N, C, spatial…]`);
  if (w.length !== x.length)
    throw ctx.error(`weight W has shape [${w}] of rank ${w.length}; it must match X's rank ${x.length}`);
  const group = ctx.attrs.int('group', 1);
  const channels = x[1];
  if (typeof channels === 'number' && channels !== w[1] * group) {
    throw ctx.error(`X has ${channels} channels but W [${w}] with group=${group} expects ${w[1] * group}`);
  }
  if (w[0] % group !== 0) throw ctx.error(`W has ${w[0]} output channels, not divisible by group=${group}`);
  if (ctx.hasInput(2)) {
    const b = ctx.shape(2);
    if (b.length !== 1 || b[0] !== w[0]) throw ctx.error(`bias B has shape ${showShape(b)}; expected [${w[0]}]`);
  }
  const kernel = ctx.attrs.ints('kernel_shape', w.slice(2));
  if (kernel.some((k, i) => k !== w[2 + i]))
    throw ctx.error(`kernel_shape [${kernel}] disagrees with W's spatial shape [${w.slice(2)}]`);
  const spatial = x.slice(2);
  if (spatial.some((d) => typeof d !== 'number'))
    throw ctx.error(`X's spatial dims ${showShape(spatial)} must be known`);
  const g = windowGeometry(ctx.attrs, spatial as number[], kernel);
  return [{ dtype: ctx.dtype(0), shape: [x[0], w[0], ...g.output] }];
};

const pool: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  if (x.length < 3) throw ctx.error(`input X has rank ${x.length}; pooling needs [N, C, spatial…]`);
  const kernel = ctx.attrs.ints('kernel_shape');
  const spatial = x.slice(2);
  if (spatial.some((d) => typeof d !== 'number'))
    throw ctx.error(`X's spatial dims ${showShape(spatial)} must be known`);
  const g = windowGeometry(ctx.attrs, spatial as number[], kernel, ctx.attrs.int('ceil_mode', 0) === 1);
  const shape = [x[0], x[1], ...g.output];
  const out: InferredValue[] = [{ dtype: ctx.dtype(0), shape }];
  if (ctx.node.opType === 'MaxPool' && ctx.node.outputs.length > 1) out.push({ dtype: 'int64', shape: [...shape] });
  return out;
};

const globalPool: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  if (x.length < 3) throw ctx.error(`input X has rank ${x.length}; global pooling needs [N, C, spatial…]`);
  return [{ dtype: ctx.dtype(0), shape: [x[0], x[1], ...x.slice(2).map(() => 1)] }];
};

const batchNorm: ShapeRule = (ctx) => {
  if (ctx.opset < 9 && ctx.attrs.int('spatial', 1) !== 1) {
    throw ctx.error('spatial=0 (per-activation statistics, opset < 9) is not supported; accepted: spatial=1');
  }
  const x = ctx.shape(0);
  const c = x.length > 1 ? x[1] : 1;
  for (let i = 1; i <= 4; i++) {
    const s = ctx.shape(i);
    if (s.length !== 1 || (typeof c === 'number' && typeof s[0] === 'number' && s[0] !== c)) {
      throw ctx.error(
        `input ${i} ('${ctx.node.inputs[i]}') has shape ${showShape(s)}; expected [${showDim(c)}] (one value per channel)`,
      );
    }
  }
  const out: InferredValue[] = [{ dtype: ctx.dtype(0), shape: [...x] }];
  for (let i = 1; i < ctx.node.outputs.length; i++) out.push({ dtype: ctx.dtype(0), shape: [c] });
  return out;
};

const concat: ShapeRule = (ctx) => {
  const first = ctx.shape(0);
  const axis = normalizeAxis(ctx, ctx.attrs.int('axis', ctx.opset < 4 ? 1 : undefined), first.length);
  const shape = [...first];
  for (let i = 1; i < ctx.inputCount; i++) {
    const s = ctx.shape(i);
    if (s.length !== first.length)
      throw ctx.error(`input ${i} has rank ${s.length}, input 0 has rank ${first.length}; Concat needs equal ranks`);
    s.forEach((d, k) => {
      if (k === axis) return;
      if (typeof d === 'number' && typeof shape[k] === 'number' && d !== shape[k]) {
        throw ctx.error(
          `input ${i} has shape ${showShape(s)}, input 0 ${showShape(first)}; they may differ only on axis ${axis}`,
        );
      }
    });
    const a = shape[axis];
    shape[axis] = typeof a === 'number' && typeof s[axis] === 'number' ? a + (s[axis] as number) : null;
  }
  return [{ dtype: ctx.dtype(0), shape }];
};

const gemm: ShapeRule = (ctx) => {
  const a = ctx.shape(0);
  const b = ctx.shape(1);
  if (a.length !== 2 || b.length !== 2)
    throw ctx.error(`A ${showShape(a)} and B ${showShape(b)} must both be 2-D (add a Flatten before Gemm)`);
  const transA = ctx.attrs.int('transA', 0);
  const transB = ctx.attrs.int('transB', 0);
  const [m, ka] = transA ? [a[1], a[0]] : [a[0], a[1]];
  const [kb, n] = transB ? [b[1], b[0]] : [b[0], b[1]];
  if (typeof ka === 'number' && typeof kb === 'number' && ka !== kb) {
    throw ctx.error(
      `inner dimensions differ: A${transA ? 'ᵀ' : ''} is [${showDim(m)}, ${ka}], B${transB ? 'ᵀ' : ''} is [${kb}, ${showDim(n)}]`,
    );
  }
  if (ctx.hasInput(2)) broadcastShapes(ctx, [[m, n], ctx.shape(2)]);
  return [{ dtype: ctx.dtype(0), shape: [m, n] }];
};

const matmul: ShapeRule = (ctx) => {
  let a = ctx.shape(0);
  let b = ctx.shape(1);
  const aVector = a.length === 1;
  const bVector = b.length === 1;
  if (aVector) a = [1, a[0]];
  if (bVector) b = [b[0], 1];
  const k1 = a[a.length - 1];
  const k2 = b[b.length - 2];
  if (typeof k1 === 'number' && typeof k2 === 'number' && k1 !== k2)
    throw ctx.error(`inner dimensions differ: ${showShape(a)} × ${showShape(b)}`);
  const batch = broadcastShapes(ctx, [a.slice(0, -2), b.slice(0, -2)]);
  const shape = [...batch];
  if (!aVector) shape.push(a[a.length - 2]);
  if (!bVector) shape.push(b[b.length - 1]);
  return [{ dtype: ctx.dtype(0), shape }];
};

const flatten: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  let axis = ctx.attrs.int('axis', 1);
  if (axis < 0) axis += x.length;
  if (axis < 0 || axis > x.length)
    throw ctx.error(`axis ${ctx.attrs.int('axis', 1)} is out of range for rank ${x.length}`);
  return [{ dtype: ctx.dtype(0), shape: [mulDims(x.slice(0, axis)), mulDims(x.slice(axis))] }];
};

/** Reshape's target with 0 (copy) and -1 (infer) resolved. */
export function resolveReshape(ctx: ShapeContext, input: Dim[], target: number[], allowZero: boolean): Dim[] {
  const out: Dim[] = target.map((t, i) => (t === 0 && !allowZero ? (input[i] ?? null) : t));
  const unknown = out.filter((d) => d === -1).length;
  if (unknown > 1) throw ctx.error(`target shape [${target}] has more than one -1`);
  if (out.some((d) => typeof d === 'number' && d < -1))
    throw ctx.error(`target shape [${target}] has a negative size other than -1`);
  if (target.some((t, i) => t === 0 && !allowZero && i >= input.length))
    throw ctx.error(`target shape [${target}] copies (0) a dimension the input ${showShape(input)} does not have`);
  const total = mulDims(input);
  if (unknown === 1) {
    const known = mulDims(out.filter((d) => d !== -1));
    const at = out.indexOf(-1);
    if (typeof total === 'number' && typeof known === 'number') {
      if (known === 0 || total % known !== 0)
        throw ctx.error(`cannot reshape ${showShape(input)} (${total} elements) to [${target}]`);
      out[at] = total / known;
    } else {
      out[at] = null;
    }
  } else if (typeof total === 'number') {
    const n = mulDims(out);
    if (typeof n === 'number' && n !== total)
      throw ctx.error(`cannot reshape ${showShape(input)} (${total} elements) to [${target}] (${n} elements)`);
  }
  return out;
}

const reshape: ShapeRule = (ctx) => {
  const target = ctx.opset < 5 ? ctx.attrs.ints('shape') : ctx.constantInts(1, 'the target shape');
  return [
    { dtype: ctx.dtype(0), shape: resolveReshape(ctx, ctx.shape(0), target, ctx.attrs.int('allowzero', 0) === 1) },
  ];
};

const transpose: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  const perm = ctx.attrs.ints(
    'perm',
    x.map((_, i) => x.length - 1 - i),
  );
  if (perm.length !== x.length || [...perm].sort((p, q) => p - q).some((p, i) => p !== i)) {
    throw ctx.error(`perm [${perm}] is not a permutation of 0…${x.length - 1}`);
  }
  return [{ dtype: ctx.dtype(0), shape: perm.map((p) => x[p]) }];
};

/** Axes from the attribute (before opset 13) or the optional second input (13 and later). */
function axesOf(ctx: ShapeContext, sinceOpset = 13): number[] | undefined {
  if (ctx.opset < sinceOpset) return ctx.attrs.has('axes') ? ctx.attrs.ints('axes') : undefined;
  return ctx.hasInput(1) ? ctx.constantInts(1, 'axes') : undefined;
}

const squeeze: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  const axes = axesOf(ctx);
  if (!axes) {
    if (x.some((d) => typeof d !== 'number'))
      throw ctx.error(`Squeeze without axes needs every dimension known; input is ${showShape(x)}`);
    return [{ dtype: ctx.dtype(0), shape: x.filter((d) => d !== 1) }];
  }
  const drop = new Set(axes.map((a) => normalizeAxis(ctx, a, x.length)));
  for (const a of drop)
    if (typeof x[a] === 'number' && x[a] !== 1)
      throw ctx.error(`cannot squeeze axis ${a} of size ${x[a]} (only size-1 axes)`);
  return [{ dtype: ctx.dtype(0), shape: x.filter((_, i) => !drop.has(i)) }];
};

const unsqueeze: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  const axes = axesOf(ctx);
  if (!axes) throw ctx.error('axes are required');
  const rank = x.length + axes.length;
  const at = new Set(axes.map((a) => normalizeAxis(ctx, a, rank)));
  if (at.size !== axes.length) throw ctx.error(`axes [${axes}] repeat an axis`);
  const out: Dim[] = [];
  let k = 0;
  for (let i = 0; i < rank; i++) out.push(at.has(i) ? 1 : x[k++]);
  return [{ dtype: ctx.dtype(0), shape: out }];
};

const pad: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  const mode = ctx.attrs.oneOf('mode', ['constant', 'reflect', 'edge', 'wrap'] as const, 'constant');
  void mode;
  let pads: number[];
  let axes = x.map((_, i) => i);
  if (ctx.opset < 11) {
    pads = ctx.attrs.ints(ctx.opset < 2 ? 'paddings' : 'pads');
  } else {
    pads = ctx.constantInts(1, 'pads');
    if (ctx.hasInput(3)) axes = ctx.constantInts(3, 'axes').map((a) => normalizeAxis(ctx, a, x.length));
  }
  if (pads.length !== 2 * axes.length)
    throw ctx.error(
      `pads [${pads}] must have ${2 * axes.length} entries (begin and end for each of ${axes.length} axes)`,
    );
  const out = [...x];
  axes.forEach((a, i) => {
    const d = out[a];
    out[a] = typeof d === 'number' ? d + pads[i] + pads[i + axes.length] : null;
    if (typeof out[a] === 'number' && (out[a] as number) < 0)
      throw ctx.error(`pads [${pads}] remove more than axis ${a} holds`);
  });
  return [{ dtype: ctx.dtype(0), shape: out }];
};

const dropout: ShapeRule = (ctx) => {
  const out: InferredValue[] = [{ dtype: ctx.dtype(0), shape: [...ctx.shape(0)] }];
  if (ctx.node.outputs.length > 1)
    out.push({ dtype: ctx.opset >= 10 ? 'bool' : ctx.dtype(0), shape: [...ctx.shape(0)] });
  return out;
};

const softmax: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  normalizeAxis(ctx, ctx.attrs.int('axis', ctx.opset < 13 ? 1 : -1), Math.max(x.length, 1));
  return same(ctx);
};

const shape: ShapeRule = (ctx) => {
  const rank = ctx.shape(0).length;
  const clampIndex = (v: number) => Math.min(rank, Math.max(0, v < 0 ? v + rank : v));
  const start = clampIndex(ctx.attrs.int('start', 0));
  const end = clampIndex(ctx.attrs.int('end', rank));
  return [{ dtype: 'int64', shape: [Math.max(0, end - start)] }];
};

const gather: ShapeRule = (ctx) => {
  const data = ctx.shape(0);
  const indices = ctx.shape(1);
  const axis = normalizeAxis(ctx, ctx.attrs.int('axis', 0), data.length);
  return [{ dtype: ctx.dtype(0), shape: [...data.slice(0, axis), ...indices, ...data.slice(axis + 1)] }];
};

const constantOfShape: ShapeRule = (ctx) => {
  const dims = ctx.constantInts(0, 'the shape');
  const value = ctx.attrs.tensor('value');
  return [{ dtype: value?.dtype ?? 'float32', shape: dims }];
};

const constant: ShapeRule = (ctx) => {
  const a = ctx.node.attributes;
  const t = ctx.attrs.tensor('value');
  if (t) return [{ dtype: t.dtype, shape: [...t.dims] }];
  if (a.value_float) return [{ dtype: 'float32', shape: [] }];
  if (a.value_int) return [{ dtype: 'int64', shape: [] }];
  if (a.value_floats && a.value_floats.type === 'floats')
    return [{ dtype: 'float32', shape: [a.value_floats.value.length] }];
  if (a.value_ints && a.value_ints.type === 'ints') return [{ dtype: 'int64', shape: [a.value_ints.value.length] }];
  throw ctx.error(
    'Constant needs one of value, value_float(s), value_int(s) (sparse and string values are not supported)',
  );
};

export function castTarget(ctx: ShapeContext): DataType {
  const a = ctx.node.attributes.to;
  const dtype = a?.type === 'int' ? dataTypeFromOnnx(a.value) : undefined;
  if (!dtype)
    throw ctx.error(
      `Cast 'to' must be an ONNX TensorProto.DataType code (1 = FLOAT, 7 = INT64, …); got ${a?.type === 'int' ? a.value : 'none'}`,
    );
  return dtype;
}

const cast: ShapeRule = (ctx) => [{ dtype: castTarget(ctx), shape: [...ctx.shape(0)] }];

/** Slice's starts/ends/axes/steps from attributes (opset < 10) or constant inputs. */
export function sliceParameters(ctx: ShapeContext, rank: number) {
  let starts: number[], ends: number[], axes: number[] | undefined, steps: number[] | undefined;
  if (ctx.opset < 10) {
    starts = ctx.attrs.ints('starts');
    ends = ctx.attrs.ints('ends');
    axes = ctx.attrs.has('axes') ? ctx.attrs.ints('axes') : undefined;
  } else {
    starts = ctx.constantInts(1, 'starts');
    ends = ctx.constantInts(2, 'ends');
    axes = ctx.hasInput(3) ? ctx.constantInts(3, 'axes') : undefined;
    steps = ctx.hasInput(4) ? ctx.constantInts(4, 'steps') : undefined;
  }
  axes ??= starts.map((_, i) => i);
  steps ??= starts.map(() => 1);
  if (ends.length !== starts.length || axes.length !== starts.length || steps.length !== starts.length) {
    throw ctx.error('starts, ends, axes and steps must have the same length');
  }
  if (steps.some((s) => s === 0)) throw ctx.error('steps must not be 0');
  return { starts, ends, axes: axes.map((a) => normalizeAxis(ctx, a, rank)), steps };
}

/** The first index and element count that a slice takes along an axis of `size`. */
export function sliceRange(size: number, start: number, end: number, step: number): { first: number; count: number } {
  const clampTo = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));
  if (step > 0) {
    const s = clampTo(start < 0 ? start + size : start, 0, size);
    const e = clampTo(end < 0 ? end + size : end, 0, size);
    return { first: s, count: Math.max(0, Math.ceil((e - s) / step)) };
  }
  const s = clampTo(start < 0 ? start + size : start, -1, size - 1);
  const e = clampTo(end < 0 ? end + size : end, -1, size - 1);
  return { first: s, count: Math.max(0, Math.ceil((s - e) / -step)) };
}

const slice: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  const p = sliceParameters(ctx, x.length);
  const out = [...x];
  p.axes.forEach((a, i) => {
    const d = x[a];
    out[a] = typeof d === 'number' ? sliceRange(d, p.starts[i], p.ends[i], p.steps[i]).count : null;
  });
  return [{ dtype: ctx.dtype(0), shape: out }];
};

const range: ShapeRule = (ctx) => {
  const [start] = ctx.constantInts(0, 'start');
  const [limit] = ctx.constantInts(1, 'limit');
  const [delta] = ctx.constantInts(2, 'delta');
  return [{ dtype: ctx.dtype(0), shape: [Math.max(0, Math.ceil((limit - start) / delta))] }];
};

const RULES: Record<string, ShapeRule> = {
  Conv: conv,
  MaxPool: pool,
  AveragePool: pool,
  GlobalAveragePool: globalPool,
  GlobalMaxPool: globalPool,
  BatchNormalization: batchNorm,
  LRN: same,
  Relu: same,
  LeakyRelu: same,
  Clip: same,
  Sigmoid: same,
  Tanh: same,
  Identity: same,
  Add: elementwise,
  Sub: elementwise,
  Mul: elementwise,
  Div: elementwise,
  Sum: elementwise,
  Concat: concat,
  Gemm: gemm,
  MatMul: matmul,
  Flatten: flatten,
  Reshape: reshape,
  Transpose: transpose,
  Squeeze: squeeze,
  Unsqueeze: unsqueeze,
  Pad: pad,
  Dropout: dropout,
  Softmax: softmax,
  Shape: shape,
  Gather: gather,
  ConstantOfShape: constantOfShape,
  Constant: constant,
  Cast: cast,
  Slice: slice,
  Range: range,
};

export const SUPPORTED_OPS: readonly string[] = Object.keys(RULES).sort();

/** The rule for an op of the default domain, or an error listing the supported ops. */
export function shapeRuleFor(graph: Graph, node: Node): ShapeRule {
  const rule = node.domain === '' || node.domain === 'ai.onnx' ? RULES[node.opType] : undefined;
  if (!rule) {
    const where = node.domain && node.domain !== 'ai.onnx' ? ` in domain '${node.domain}'` : '';
    throw new ModelError(
      `op ${node.opType}${where} is not supported; supported ops (default domain): ${SUPPORTED_OPS.join(', ')}`,
      { file: graph.source, node },
    );
  }
  return rule;
}
