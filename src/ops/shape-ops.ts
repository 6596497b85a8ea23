// Ops that move or relabel data: the views (Flatten, Reshape, Squeeze, Unsqueeze, Identity: the
// output shares the input's buffer, the gradient passes through), Transpose, Pad and Concat.
import type { AttributeReader } from '../graph/attributes.ts';
import type { Dim } from '../graph/ir.ts';
import {
  axesOf,
  mulDims,
  normalizeAxis,
  resolveReshape,
  sameShape,
  showShape,
  type InferredValue,
  type ShapeContext,
  type ShapeRule,
} from '../graph/shape-context.ts';
import { sizeOf, toNumbers } from '../graph/tensor.ts';
import { concatBackwardPrograms, padBackwardProgram, transposeBackwardProgram } from '../kernels/backward/index.ts';
import { concatSliceProgram, MAX_RANK, padProgram, transposeProgram } from '../kernels/transform.ts';
import {
  oneKernelBackward,
  passThroughGradient,
  type LowerContext,
  type OpDefinition,
  type RuleStep,
  type StepSpec,
  type AttributeSpec,
} from './op.ts';

// ---- views ----

export const flatten = viewOp(['axis'], (ctx) => {
  const x = ctx.shape(0);
  let axis = ctx.attrs.int('axis', 1);
  // Negative axes arrived with opset 11; Flatten 1 and 9 take [0, rank].
  if (axis < 0 && ctx.opset < 11)
    throw ctx.error(`axis ${axis} is negative; before opset 11 it must be in [0, ${x.length}]`);
  if (axis < 0) axis += x.length;
  if (axis < 0 || axis > x.length)
    throw ctx.error(`axis ${ctx.attrs.int('axis', 1)} is out of range for rank ${x.length}`);
  return [{ dtype: ctx.dtype(0), shape: [mulDims(x.slice(0, axis)), mulDims(x.slice(axis))] }];
});

export const reshape = viewOp(
  [
    { name: 'shape', until: 4, replacedBy: 'the shape input' },
    { name: 'consumed_inputs', until: 4 },
    { name: 'allowzero', since: 14 },
  ],
  (ctx) => {
    const target = ctx.opset < 5 ? ctx.attrs.ints('shape') : ctx.constantInts(1, 'the target shape');
    return [
      { dtype: ctx.dtype(0), shape: resolveReshape(ctx, ctx.shape(0), target, ctx.attrs.int('allowzero', 0) === 1) },
    ];
  },
  { shapeInput: true },
);

export const squeeze = axesView((ctx, x, axes) => {
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
});

export const unsqueeze = axesView((ctx, x, axes) => {
  if (!axes) throw ctx.error('axes are required');
  const rank = x.length + axes.length;
  const at = new Set(axes.map((a) => normalizeAxis(ctx, a, rank)));
  if (at.size !== axes.length) throw ctx.error(`axes [${axes}] repeat an axis`);
  const out: Dim[] = [];
  let k = 0;
  for (let i = 0; i < rank; i++) out.push(at.has(i) ? 1 : x[k++]);
  return [{ dtype: ctx.dtype(0), shape: out }];
});

export const identity = viewOp([], sameShape);

/**
 * An op whose output is its input's buffer under other dims (row-major order unchanged): no
 * kernel forward, and its gradient is the upstream gradient itself. `shapeInput`: input 1 is
 * the target shape or the axes, an integer tensor that only steers the output's dims.
 */
function viewOp(
  attributes: readonly AttributeSpec[],
  shape: ShapeRule,
  options: { shapeInput?: boolean } = {},
): OpDefinition {
  return {
    attributes,
    shape,
    ...(options.shapeInput ? { steeringInputs: [1] } : {}),
    runtime: { kind: 'view' },
    gradient: passThroughGradient,
  };
}

/** Squeeze and Unsqueeze: views whose axes are an attribute until opset 12, an input from 13. */
function axesView(rule: (ctx: ShapeContext, x: Dim[], axes: number[] | undefined) => InferredValue[]): OpDefinition {
  return viewOp(
    [{ name: 'axes', until: 12, replacedBy: 'the axes input' }],
    (ctx) => rule(ctx, ctx.shape(0), axesOf(ctx)),
    { shapeInput: true },
  );
}

// ---- Transpose ----

/** Transpose's permutation (default: the axes reversed), checked against the rank. */
function permutationOf(attrs: AttributeReader, rank: number): number[] {
  const perm = attrs.ints(
    'perm',
    Array.from({ length: rank }, (_, i) => rank - 1 - i),
  );
  if (perm.length !== rank || [...perm].sort((p, q) => p - q).some((p, i) => p !== i))
    throw attrs.error(`perm [${perm}] is not a permutation of 0…${rank - 1}`);
  return perm;
}

export const transpose: OpDefinition = {
  attributes: ['perm'],
  shape: (ctx) => {
    const x = ctx.shape(0);
    return [{ dtype: ctx.dtype(0), shape: permutationOf(ctx.attrs, x.length).map((p) => x[p]) }];
  },
  runtime: {
    kind: 'steps',
    check(ctx) {
      if (ctx.rank(0) > MAX_RANK) throw ctx.error(`rank ${ctx.rank(0)} > ${MAX_RANK}`);
    },
    lower(ctx) {
      const x = ctx.shape(0);
      return [ctx.inputToOutputStep(transposeProgram(x, permutationOf(ctx.attrs, x.length)))];
    },
  },
  gradient: {
    backward: (ctx, [dy]) =>
      oneKernelBackward(ctx, dy, (dims) => ({
        program: transposeBackwardProgram(dims, permutationOf(ctx.attrs, dims.length)),
      })),
  },
};

// ---- Pad ----

const PAD_MODES = ['constant', 'reflect', 'edge', 'wrap'] as const;

/**
 * Pad's begin and end amounts for every axis ([b0…b(r-1), e0…e(r-1)]), from the attribute
 * (before opset 11) or the constant inputs pads and axes; `constantInts(i, what)` reads input i
 * (undefined when absent).
 */
function padAmounts(
  attrs: AttributeReader,
  opset: number,
  rank: number,
  constantInts: (i: number, what: string) => number[] | undefined,
): number[] {
  let given: number[];
  let axes = Array.from({ length: rank }, (_, i) => i);
  if (opset < 11) {
    given = attrs.ints(opset < 2 ? 'paddings' : 'pads');
  } else {
    given = constantInts(1, 'pads') ?? [];
    const listed = constantInts(3, 'axes');
    if (listed) {
      axes = listed.map((a) => normalizeAxis(attrs, a, rank));
    }
  }
  if (given.length !== 2 * axes.length)
    throw attrs.error(
      `pads [${given}] must have ${2 * axes.length} entries (begin and end for each of ${axes.length} axes)`,
    );
  const pads = new Array<number>(2 * rank).fill(0);
  axes.forEach((a, i) => {
    pads[a] = given[i];
    pads[a + rank] = given[i + axes.length];
  });
  return pads;
}

/** Refuses the modes the engine only infers shapes for. */
function constantModeOnly(attrs: AttributeReader, where: string): void {
  const mode = attrs.oneOf('mode', PAD_MODES, 'constant');
  if (mode !== 'constant') throw attrs.error(`Pad mode '${mode}' is not supported${where}; accepted: 'constant'`);
}

function lowerPad(ctx: LowerContext): StepSpec[] {
  const n = ctx.node;
  const x = ctx.shape(0);
  const pads = padAmounts(ctx.attrs, ctx.opset, x.length, (i, what) =>
    n.inputs[i] ? ctx.intsConstant(n.inputs[i], what) : undefined,
  );
  let value = 0;
  if (ctx.opset < 11) value = ctx.attrs.float('value', 0);
  else if (n.inputs[2]) {
    const v = ctx.constantOf(n.inputs[2]);
    if (!v) throw ctx.error('constant_value must be a constant');
    value = toNumbers(v)[0] ?? 0;
  }
  return [ctx.step(padProgram(x, pads, value), [ctx.ref(n.inputs[0]), { value: n.outputs[0] }])];
}

export const pad: OpDefinition = {
  attributes: [
    'mode',
    { name: 'paddings', until: 1 },
    { name: 'pads', since: 2, until: 10, replacedBy: 'the pads input' },
    { name: 'value', until: 10, replacedBy: 'the constant_value input' },
  ],
  shape: (ctx) => {
    const x = ctx.shape(0);
    ctx.attrs.oneOf('mode', PAD_MODES, 'constant');
    const pads = padAmounts(ctx.attrs, ctx.opset, x.length, (i, what) =>
      ctx.hasInput(i) ? ctx.constantInts(i, what) : undefined,
    );
    const out = x.map((d, a) => (typeof d === 'number' ? d + pads[a] + pads[a + x.length] : null));
    out.forEach((d, a) => {
      if (typeof d === 'number' && d < 0) throw ctx.error(`pads [${pads}] remove more than axis ${a} holds`);
    });
    return [{ dtype: ctx.dtype(0), shape: out }];
  },
  steeringInputs: [1, 3],
  runtime: {
    kind: 'steps',
    check(ctx) {
      constantModeOnly(ctx.attrs, '');
      if (ctx.rank(0) > MAX_RANK) throw ctx.error(`rank ${ctx.rank(0)} > ${MAX_RANK}`);
    },
    lower: lowerPad,
  },
  gradient: {
    nonDifferentiable: [1, 2, 3],
    backward(ctx, [dy]) {
      const n = ctx.node;
      const grads: (string | undefined)[] = n.inputs.map(() => undefined);
      if (!dy || !ctx.wants(0)) return { steps: [], grads };
      constantModeOnly(ctx.attrs, ' in training');
      const dims = ctx.shape(n.inputs[0]);
      const pads = padAmounts(ctx.attrs, ctx.graph.opset, dims.length, (i, what) => {
        const name = n.inputs[i];
        if (!name) return undefined;
        const init = ctx.graph.initializers.get(name);
        if (!init) throw ctx.error(`${what} ('${name}') must be an initializer to train through Pad`);
        return toNumbers(init.value);
      });
      const dx = ctx.temp(`grad ${n.inputs[0]}`, dims);
      grads[0] = dx;
      return { steps: [{ program: padBackwardProgram(dims, pads), bind: { dy, dx } }], grads };
    },
  },
};

// ---- Concat ----

/** Concat's axis, normalized (required from opset 4; 1 before). */
function concatAxis(attrs: AttributeReader, opset: number, rank: number): number {
  return normalizeAxis(attrs, attrs.int('axis', opset < 4 ? 1 : undefined), rank);
}

const concatShape: ShapeRule = (ctx) => {
  const first = ctx.shape(0);
  const axis = concatAxis(ctx.attrs, ctx.opset, first.length);
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

function lowerConcat(ctx: LowerContext): StepSpec[] {
  const n = ctx.node;
  const out = ctx.outputShape();
  const axis = concatAxis(ctx.attrs, ctx.opset, out.length);
  const outer = sizeOf(out.slice(0, axis));
  const outInner = sizeOf(out.slice(axis));
  const steps: StepSpec[] = [];
  let offset = 0;
  for (const input of n.inputs) {
    if (!input) continue;
    const inner = sizeOf(ctx.shape(input).slice(axis));
    if (inner > 0)
      steps.push(
        ctx.step(concatSliceProgram('forward', outer, inner, outInner, offset), [
          ctx.ref(input),
          { value: n.outputs[0] },
        ]),
      );
    offset += inner;
  }
  return steps;
}

export const concat: OpDefinition = {
  attributes: ['axis'],
  shape: concatShape,
  runtime: { kind: 'steps', lower: lowerConcat },
  gradient: {
    backward(ctx, [dy]) {
      const n = ctx.node;
      const grads: (string | undefined)[] = n.inputs.map(() => undefined);
      if (!dy) return { steps: [], grads };
      const dims = n.inputs.map((i) => ctx.shape(i));
      const programs = concatBackwardPrograms(dims, concatAxis(ctx.attrs, ctx.graph.opset, dims[0].length));
      const steps: RuleStep[] = [];
      n.inputs.forEach((input, i) => {
        if (!ctx.wants(i)) return;
        const dx = ctx.temp(`grad ${input}`, dims[i]);
        steps.push({ program: programs[i], bind: { dy, dx } });
        grads[i] = dx;
      });
      return { steps, grads };
    },
  },
};
