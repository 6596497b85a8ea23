// What a shape rule sees of its node (dtypes, shapes, constant inputs, attributes) and the shape
// arithmetic several ops and constant folding share. The rules themselves live with their ops
// (src/ops/); shape-inference.ts finds them through the registry.
import { AttributeReader } from './attributes.ts';
import { ModelError } from './errors.ts';
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

/** Two shapes disagree when their ranks differ or a dim is a number in both and differs. */
export function dimsDisagree(a: readonly Dim[], b: readonly Dim[]): boolean {
  return a.length !== b.length || a.some((d, i) => typeof d === 'number' && typeof b[i] === 'number' && d !== b[i]);
}

/** Normalises a possibly negative axis into [0, rank), naming the node on failure (through a ShapeContext or an AttributeReader). */
export function normalizeAxis(ctx: { error(message: string): Error }, axis: number, rank: number): number {
  if (axis < -rank || axis >= rank)
    throw ctx.error(`axis ${axis} is out of range for rank ${rank} (accepted: ${-rank} … ${rank - 1})`);
  return axis < 0 ? axis + rank : axis;
}

export function mulDims(dims: Dim[]): Dim {
  let p = 1;
  for (const d of dims) {
    if (typeof d !== 'number') return dims.length === 1 ? d : null;
    p *= d;
  }
  return p;
}

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

/** Axes from the attribute (before opset 13) or the optional second input (13 and later). */
export function axesOf(ctx: ShapeContext, sinceOpset = 13): number[] | undefined {
  if (ctx.opset < sinceOpset) return ctx.attrs.has('axes') ? ctx.attrs.ints('axes') : undefined;
  return ctx.hasInput(1) ? ctx.constantInts(1, 'axes') : undefined;
}

export function castTarget(ctx: ShapeContext): DataType {
  const a = ctx.node.attributes.to;
  const dtype = a?.type === 'int' ? dataTypeFromOnnx(a.value) : undefined;
  if (!dtype)
    throw ctx.error(
      `Cast 'to' must be an ONNX TensorProto.DataType code (1 = FLOAT, 7 = INT64, …); got ${a?.type === 'int' ? a.value : 'none'}`,
    );
  return dtype;
}

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

/** The output is input 0's dtype and shape (activations, LRN, Identity). */
export const sameShape: ShapeRule = (ctx) => [{ dtype: ctx.dtype(0), shape: [...ctx.shape(0)] }];
