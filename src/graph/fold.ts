// Constant folding: evaluates, on the host, the nodes whose inputs are all known constants and
// whose op only builds or moves small tensors (weights made by ConstantOfShape, and the
// Shape → Gather → Unsqueeze → Concat → Reshape chains that torch exports emit).
import {
  normalizeAxis,
  sliceParameters,
  sliceRange,
  castTarget,
  resolveReshape,
  broadcastShapes,
  type ShapeContext,
} from './shape-context.ts';
import {
  allocate as allocateUnchecked,
  bytesPerElement,
  fromNumbers,
  invalidDims,
  sizeOf,
  toNumbers,
  type DataType,
  type TensorData,
  type TensorValue,
} from './tensor.ts';

/** Arithmetic is folded only below this many elements: large constant math is real work that
 * belongs on the GPU (and usually means the graph computes something from weights on purpose). */
const MAX_FOLDED_ARITHMETIC = 1 << 20;

/**
 * The most bytes constant folding may materialise for one model. Not a multiple of the file's
 * size: models stored without their weights (ConstantOfShape fills, VGG-19's 575 MB from a
 * 9 KB file) legitimately expand that much; what keeps a corrupt file from allocating is that
 * every shape is checked first (prepareGraph folds large fills only once the graph is sound).
 */
export const MAX_FOLDED_BYTES = 2 ** 31;

/** What folding may still materialise (bytes), shared by the nodes of one pass. */
export interface FoldBudget {
  bytesLeft: number;
}

/** Checks `dims` and takes their bytes of `dtype` from the budget, naming the node when either fails. */
export function spend(ctx: ShapeContext, budget: FoldBudget, dtype: DataType, dims: readonly number[]): void {
  const invalid = invalidDims(dims);
  if (invalid) throw ctx.error(`the folded constant would be ${invalid}`);
  const bytes = sizeOf(dims) * (bytesPerElement(dtype) ?? 8);
  if (bytes > budget.bytesLeft)
    throw ctx.error(
      `folding would materialise ${bytes} bytes ([${dims.join(', ')}] ${dtype}), beyond what is left of the ${MAX_FOLDED_BYTES}-byte budget for constants computed while loading (MAX_FOLDED_BYTES: ${budget.bytesLeft} bytes left)`,
    );
  budget.bytesLeft -= bytes;
}

/** Allocates a folded output after spend() accepted its size. */
type Allocator = (dtype: DataType, dims: readonly number[]) => TensorData;
/** Only spends: for an evaluator that builds its output itself (from numbers). */
type Reserver = (dtype: DataType, dims: readonly number[]) => void;

type Evaluator = (
  ctx: ShapeContext,
  inputs: (TensorValue | undefined)[],
  allocate: Allocator,
  reserve: Reserver,
) => TensorValue[] | undefined;

const HOST_CASTABLE = new Set([
  'float32',
  'float64',
  'int8',
  'int16',
  'int32',
  'int64',
  'uint8',
  'uint16',
  'uint32',
  'uint64',
  'bool',
]);

const EVALUATORS: Record<string, Evaluator> = {
  Constant: (ctx) => [constantValue(ctx)],
  ConstantOfShape: (ctx, [shape], allocate) => {
    const dims = toNumbers(shape!);
    const value = ctx.attrs.tensor('value') ?? fromNumbers('float32', [1], [0]);
    const out = allocate(value.dtype, dims);
    fillWith(out, value.data);
    return [{ dtype: value.dtype, dims, data: out }];
  },
  Identity: (_ctx, [x]) => [x!],
  Shape: (ctx, [x]) => {
    const rank = x!.dims.length;
    const clampIndex = (v: number) => Math.min(rank, Math.max(0, v < 0 ? v + rank : v));
    const dims = x!.dims.slice(clampIndex(ctx.attrs.int('start', 0)), clampIndex(ctx.attrs.int('end', rank)));
    return [fromNumbers('int64', [dims.length], dims)];
  },
  Reshape: (ctx, [x, shape]) => [
    withDims(
      x!,
      resolveReshape(
        ctx,
        x!.dims,
        ctx.opset < 5 ? ctx.attrs.ints('shape') : toNumbers(shape!),
        ctx.attrs.int('allowzero', 0) === 1,
      ) as number[],
    ),
  ],
  Flatten: (ctx, [x]) => {
    let axis = ctx.attrs.int('axis', 1);
    if (axis < 0) axis += x!.dims.length;
    return [withDims(x!, [sizeOf(x!.dims.slice(0, axis)), sizeOf(x!.dims.slice(axis))])];
  },
  Squeeze: (ctx, [x, axesInput]) => {
    const axes =
      ctx.opset < 13 ? (ctx.attrs.has('axes') ? ctx.attrs.ints('axes') : undefined) : axesInput && toNumbers(axesInput);
    const drop = new Set(
      axes ? axes.map((a) => normalizeAxis(ctx, a, x!.dims.length)) : x!.dims.flatMap((d, i) => (d === 1 ? [i] : [])),
    );
    return [
      withDims(
        x!,
        x!.dims.filter((_, i) => !drop.has(i)),
      ),
    ];
  },
  Unsqueeze: (ctx, [x, axesInput]) => {
    const axes = ctx.opset < 13 ? ctx.attrs.ints('axes') : toNumbers(axesInput!);
    const rank = x!.dims.length + axes.length;
    const at = new Set(axes.map((a) => normalizeAxis(ctx, a, rank)));
    const dims: number[] = [];
    let k = 0;
    for (let i = 0; i < rank; i++) dims.push(at.has(i) ? 1 : x!.dims[k++]);
    return [withDims(x!, dims)];
  },
  Cast: (ctx, [x]) => {
    const to = castTarget(ctx);
    // Shape chains cast between integer and float types; 16-bit floats, strings and the like
    // are real work for kernels, not folding.
    if (!HOST_CASTABLE.has(to) || !HOST_CASTABLE.has(x!.dtype)) return undefined;
    const values = toNumbers(x!);
    return [
      fromNumbers(to, x!.dims, to === 'bool' ? values : to.startsWith('float') ? values : values.map(Math.trunc)),
    ];
  },
  Gather: (ctx, [data, indices], allocate) => {
    const axis = normalizeAxis(ctx, ctx.attrs.int('axis', 0), data!.dims.length);
    const size = data!.dims[axis];
    const idx = toNumbers(indices!).map((i) => {
      if (i < -size || i >= size) throw ctx.error(`index ${i} is out of range for axis ${axis} of size ${size}`);
      return i < 0 ? i + size : i;
    });
    const outer = sizeOf(data!.dims.slice(0, axis));
    const inner = sizeOf(data!.dims.slice(axis + 1));
    const dims = [...data!.dims.slice(0, axis), ...indices!.dims, ...data!.dims.slice(axis + 1)];
    const out = allocate(data!.dtype, dims);
    let o = 0;
    for (let a = 0; a < outer; a++)
      for (const i of idx)
        for (let b = 0; b < inner; b++) copyElement(out, o++, data!.data, (a * size + i) * inner + b);
    return [{ dtype: data!.dtype, dims, data: out }];
  },
  Concat: (ctx, inputs, allocate) => {
    const parts = inputs.filter((t): t is TensorValue => !!t);
    const axis = normalizeAxis(ctx, ctx.attrs.int('axis'), parts[0].dims.length);
    const dims = [...parts[0].dims];
    dims[axis] = parts.reduce((s, p) => s + p.dims[axis], 0);
    const outer = sizeOf(dims.slice(0, axis));
    const out = allocate(parts[0].dtype, dims);
    let o = 0;
    for (let a = 0; a < outer; a++) {
      for (const p of parts) {
        const chunk = sizeOf(p.dims.slice(axis));
        for (let j = 0; j < chunk; j++) copyElement(out, o++, p.data, a * chunk + j);
      }
    }
    return [{ dtype: parts[0].dtype, dims, data: out }];
  },
  Slice: (ctx, [x], allocate) => {
    const p = sliceParameters(ctx, x!.dims.length);
    const first = x!.dims.map(() => 0);
    const step = x!.dims.map(() => 1);
    const dims = [...x!.dims];
    p.axes.forEach((a, i) => {
      const r = sliceRange(x!.dims[a], p.starts[i], p.ends[i], p.steps[i]);
      first[a] = r.first;
      step[a] = p.steps[i];
      dims[a] = r.count;
    });
    const strides = stridesOf(x!.dims);
    const out = allocate(x!.dtype, dims);
    const index = dims.map(() => 0);
    for (let o = 0; o < out.length; o++) {
      let src = 0;
      for (let d = 0; d < dims.length; d++) src += (first[d] + index[d] * step[d]) * strides[d];
      copyElement(out, o, x!.data, src);
      for (let d = dims.length - 1; d >= 0 && ++index[d] === dims[d]; d--) index[d] = 0;
    }
    return [{ dtype: x!.dtype, dims, data: out }];
  },
  Transpose: (ctx, [x], allocate) => {
    const rank = x!.dims.length;
    const perm = ctx.attrs.ints(
      'perm',
      x!.dims.map((_, i) => rank - 1 - i),
    );
    const dims = perm.map((p) => x!.dims[p]);
    const strides = stridesOf(x!.dims);
    const out = allocate(x!.dtype, dims);
    const index = dims.map(() => 0);
    for (let o = 0; o < out.length; o++) {
      let src = 0;
      for (let d = 0; d < rank; d++) src += index[d] * strides[perm[d]];
      copyElement(out, o, x!.data, src);
      for (let d = rank - 1; d >= 0 && ++index[d] === dims[d]; d--) index[d] = 0;
    }
    return [{ dtype: x!.dtype, dims, data: out }];
  },
  Range: (ctx, [start, limit, delta], _allocate, reserve) => {
    const [s] = toNumbers(start!);
    const [l] = toNumbers(limit!);
    const [d] = toNumbers(delta!);
    if (d === 0) throw ctx.error('delta is 0: the range would never reach its limit');
    const n = Math.max(0, Math.ceil((l - s) / d));
    reserve(start!.dtype, [n]); // n may be NaN or huge: checked before the values are made
    return [
      fromNumbers(
        start!.dtype,
        [n],
        Array.from({ length: n }, (_, i) => s + i * d),
      ),
    ];
  },
  Add: (ctx, inputs, _allocate, reserve) => [arithmetic(ctx, inputs, reserve, (a, b) => a + b)],
  Sub: (ctx, inputs, _allocate, reserve) => [arithmetic(ctx, inputs, reserve, (a, b) => a - b)],
  Mul: (ctx, inputs, _allocate, reserve) => [arithmetic(ctx, inputs, reserve, (a, b) => a * b)],
  Div: (ctx, inputs, _allocate, reserve) => [arithmetic(ctx, inputs, reserve, (a, b) => a / b)],
};

/** Ops that only move data: folded regardless of size. The rest only while small. */
const DATA_MOVEMENT = new Set([
  'Constant',
  'ConstantOfShape',
  'Identity',
  'Reshape',
  'Flatten',
  'Squeeze',
  'Unsqueeze',
  'Shape',
]);

export function isFoldable(opType: string): boolean {
  return opType in EVALUATORS;
}

/**
 * Evaluates `ctx.node` when every input it reads is constant. Returns undefined (leave the node
 * in the graph) when an input is not constant or the result would be large arithmetic.
 */
export function foldNode(
  ctx: ShapeContext,
  inputs: (TensorValue | undefined)[],
  budget: FoldBudget,
): TensorValue[] | undefined {
  const evaluate = EVALUATORS[ctx.node.opType];
  if (!evaluate || (ctx.node.domain !== '' && ctx.node.domain !== 'ai.onnx')) return undefined;
  if (ctx.node.outputs.length !== 1) return undefined;
  if (ctx.node.inputs.some((name, i) => name !== '' && !inputs[i])) return undefined;
  if (!DATA_MOVEMENT.has(ctx.node.opType) && inputs.some((t) => t && sizeOf(t.dims) > MAX_FOLDED_ARITHMETIC))
    return undefined;
  if (inputs.some((t) => t && t.dtype === 'string')) return undefined;
  const reserve = (dtype: DataType, dims: readonly number[]) => spend(ctx, budget, dtype, dims);
  const allocate = (dtype: DataType, dims: readonly number[]) => {
    reserve(dtype, dims);
    return allocateUnchecked(dtype, sizeOf(dims));
  };
  return evaluate(ctx, inputs, allocate, reserve);
}

function constantValue(ctx: ShapeContext): TensorValue {
  const a = ctx.node.attributes;
  const t = ctx.attrs.tensor('value');
  if (t) return t;
  if (a.value_float?.type === 'float') return fromNumbers('float32', [], [a.value_float.value]);
  if (a.value_int?.type === 'int') return fromNumbers('int64', [], [a.value_int.value]);
  if (a.value_floats?.type === 'floats')
    return fromNumbers('float32', [a.value_floats.value.length], a.value_floats.value);
  if (a.value_ints?.type === 'ints') return fromNumbers('int64', [a.value_ints.value.length], a.value_ints.value);
  throw ctx.error('Constant needs one of value, value_float(s), value_int(s)');
}

function arithmetic(
  ctx: ShapeContext,
  inputs: (TensorValue | undefined)[],
  reserve: Reserver,
  op: (a: number, b: number) => number,
): TensorValue {
  const [a, b] = inputs as TensorValue[];
  const dims = broadcastShapes(ctx, [a.dims, b.dims]) as number[];
  reserve('float64', dims); // the broadcast size, checked before the values are computed
  const av = toNumbers(a);
  const bv = toNumbers(b);
  const isInt = !a.dtype.startsWith('float') && !a.dtype.startsWith('bfloat');
  const out = new Array<number>(sizeOf(dims));
  const index = dims.map(() => 0);
  const aStrides = broadcastStrides(a.dims, dims);
  const bStrides = broadcastStrides(b.dims, dims);
  for (let o = 0; o < out.length; o++) {
    let ai = 0;
    let bi = 0;
    for (let d = 0; d < dims.length; d++) {
      ai += index[d] * aStrides[d];
      bi += index[d] * bStrides[d];
    }
    const r = op(av[ai], bv[bi]);
    out[o] = isInt ? Math.trunc(r) : r;
    for (let d = dims.length - 1; d >= 0 && ++index[d] === dims[d]; d--) index[d] = 0;
  }
  return fromNumbers(a.dtype, dims, out);
}

export function stridesOf(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length);
  let acc = 1;
  for (let i = dims.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= dims[i];
  }
  return s;
}

/** Strides of `dims` read as broadcast to `to` (0 along broadcast axes). */
export function broadcastStrides(dims: readonly number[], to: readonly number[]): number[] {
  const own = stridesOf(dims);
  const offset = to.length - dims.length;
  return to.map((_, i) => (i < offset || dims[i - offset] === 1 ? 0 : own[i - offset]));
}

function withDims(x: TensorValue, dims: number[]): TensorValue {
  return { dtype: x.dtype, dims, data: x.data };
}

function copyElement(out: TensorData, o: number, src: TensorData, i: number): void {
  (out as unknown as unknown[])[o] = (src as unknown as unknown[])[i];
}

function fillWith(out: TensorData, value: TensorData): void {
  const v = (value as unknown as unknown[])[0];
  if (v === undefined) return;
  if (Array.isArray(out)) out.fill(v as Uint8Array);
  else (out as unknown as { fill(v: unknown): void }).fill(v);
}
