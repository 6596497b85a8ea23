// Ops that build shapes and constants (Shape, Gather, Slice, Cast, Range, ConstantOfShape,
// Constant): constant folding (graph/fold.ts) evaluates them on the host; the runtime never
// runs them, so a graph where one survives folding is refused.
import { castTarget, normalizeAxis, sliceParameters, sliceRange, type ShapeRule } from '../graph/shape-context.ts';
import { FOLDED_NOT_DIFFERENTIABLE, type AttributeSpec, type OpDefinition } from './op.ts';

function folded(attributes: readonly AttributeSpec[], shape: ShapeRule): OpDefinition {
  return { attributes, shape, runtime: { kind: 'folded' }, gradient: FOLDED_NOT_DIFFERENTIABLE };
}

export const shape = folded(
  [
    { name: 'start', since: 15 },
    { name: 'end', since: 15 },
  ],
  (ctx) => {
    const rank = ctx.shape(0).length;
    const clampIndex = (v: number) => Math.min(rank, Math.max(0, v < 0 ? v + rank : v));
    const start = clampIndex(ctx.attrs.int('start', 0));
    const end = clampIndex(ctx.attrs.int('end', rank));
    return [{ dtype: 'int64', shape: [Math.max(0, end - start)] }];
  },
);

export const gather = folded(['axis'], (ctx) => {
  const data = ctx.shape(0);
  const indices = ctx.shape(1);
  const axis = normalizeAxis(ctx, ctx.attrs.int('axis', 0), data.length);
  return [{ dtype: ctx.dtype(0), shape: [...data.slice(0, axis), ...indices, ...data.slice(axis + 1)] }];
});

export const constantOfShape = folded(['value'], (ctx) => {
  const dims = ctx.constantInts(0, 'the shape');
  const value = ctx.attrs.tensor('value');
  // The spec's "one-element tensor", as onnxruntime reads it: one dimension of size 1.
  if (value && (value.dims.length !== 1 || value.dims[0] !== 1))
    throw ctx.attrs.error(`value has dims [${value.dims}]; accepted: a tensor of dims [1]`);
  return [{ dtype: value?.dtype ?? 'float32', shape: dims }];
});

export const constant = folded(
  ['value', 'sparse_value', 'value_float', 'value_floats', 'value_int', 'value_ints', 'value_string', 'value_strings'],
  (ctx) => {
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
  },
);

export const cast = folded(['to', { name: 'saturate', since: 19 }], (ctx) => [
  { dtype: castTarget(ctx), shape: [...ctx.shape(0)] },
]);

export const slice = folded(
  [
    { name: 'starts', until: 9, replacedBy: 'the starts input' },
    { name: 'ends', until: 9, replacedBy: 'the ends input' },
    { name: 'axes', until: 9, replacedBy: 'the axes input' },
  ],
  (ctx) => {
    const x = ctx.shape(0);
    const p = sliceParameters(ctx, x.length);
    const out = [...x];
    p.axes.forEach((a, i) => {
      const d = x[a];
      out[a] = typeof d === 'number' ? sliceRange(d, p.starts[i], p.ends[i], p.steps[i]).count : null;
    });
    return [{ dtype: ctx.dtype(0), shape: out }];
  },
);

export const range = folded([], (ctx) => {
  const [start] = ctx.constantInts(0, 'start');
  const [limit] = ctx.constantInts(1, 'limit');
  const [delta] = ctx.constantInts(2, 'delta');
  return [{ dtype: ctx.dtype(0), shape: [Math.max(0, Math.ceil((limit - start) / delta))] }];
});
