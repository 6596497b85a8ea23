// ReduceMean: the mean over some axes (all when none are given), keeping them as size 1 or
// dropping them. Axes are an attribute up to opset 17 and a constant input from opset 18, which
// also adds noop_with_empty_axes (no axes: the input unchanged instead of the mean of all).
// Forward and backward reuse the broadcasting reduction and broadcast kernels: the mean is the
// sum of x/n to the kept shape, the gradient dy/n broadcast back to x's shape.
import type { AttributeReader } from '../graph/attributes.ts';
import type { Node } from '../graph/ir.ts';
import { normalizeAxis, type ShapeContext, type ShapeRule } from '../graph/shape-context.ts';
import { sizeOf, toNumbers, type TensorValue } from '../graph/tensor.ts';
import { broadcastBackwardProgram } from '../kernels/backward/index.ts';
import { broadcastProgram, unaryProgram } from '../kernels/elementwise.ts';
import type { ConstantTensor, OpDefinition } from './op.ts';

interface ReduceMeanAttributes {
  /** Normalized, ascending; empty with noop: no reduction at all. */
  axes: number[];
  keepdims: boolean;
  /** The output is the input unchanged (opset 18's noop_with_empty_axes with no axes). */
  noop: boolean;
}

/**
 * ReduceMean's axes and flags for an input of `rank`; `axesInput()` reads the constant axes
 * input (opset 18), undefined when it is absent.
 */
function reduceMeanAttributes(
  attrs: AttributeReader,
  opset: number,
  rank: number,
  axesInput: () => number[] | undefined,
): ReduceMeanAttributes {
  // As onnxruntime reads them: keepdims and noop_with_empty_axes are true only when 1.
  const keepdims = attrs.int('keepdims', 1) === 1;
  const given = opset < 18 ? (attrs.has('axes') ? attrs.ints('axes') : undefined) : axesInput();
  const noopWhenEmpty = opset >= 18 && attrs.int('noop_with_empty_axes', 0) === 1;
  if (!given || given.length === 0) {
    return { axes: noopWhenEmpty ? [] : Array.from({ length: rank }, (_, i) => i), keepdims, noop: noopWhenEmpty };
  }
  const axes = given.map((a) => normalizeAxis(attrs, a, rank));
  if (new Set(axes).size !== axes.length) throw attrs.error(`axes [${given}] repeat an axis`);
  return { axes: axes.sort((p, q) => p - q), keepdims, noop: false };
}

/** x's dims with the reduced axes as size 1: the output's memory layout in either keepdims form. */
function keptDims<D>(dims: readonly D[], axes: readonly number[]): (D | 1)[] {
  return dims.map((d, i) => (axes.includes(i) ? 1 : d));
}

/** The constant n (elements averaged per output) the kernels divide by. */
function countConstant(n: number): ConstantTensor {
  return { key: `reduce-mean count ${n}`, data: Float32Array.of(n) };
}

function attributesFromShape(ctx: ShapeContext): ReduceMeanAttributes {
  const rank = ctx.shape(0).length;
  return reduceMeanAttributes(ctx.attrs, ctx.opset, rank, () =>
    ctx.hasInput(1) ? ctx.constantInts(1, 'axes') : undefined,
  );
}

const reduceMeanShape: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  const p = attributesFromShape(ctx);
  if (p.noop) return [{ dtype: ctx.dtype(0), shape: [...x] }];
  const shape = p.keepdims ? keptDims(x, p.axes) : x.filter((_, i) => !p.axes.includes(i));
  return [{ dtype: ctx.dtype(0), shape }];
};

/** The axes input read from the graph's initializers (lowering and training see only those). */
function initializerAxes(
  node: Node,
  constantOf: (name: string) => TensorValue | undefined,
  error: (m: string) => Error,
): () => number[] | undefined {
  return () => {
    const name = node.inputs[1];
    if (!name) return undefined;
    const t = constantOf(name);
    if (!t) throw error(`axes ('${name}') must be a constant (an initializer)`);
    return toNumbers(t);
  };
}

export const reduceMean: OpDefinition = {
  attributes: [
    { name: 'axes', until: 17, replacedBy: 'the axes input' },
    'keepdims',
    { name: 'noop_with_empty_axes', since: 18 },
  ],
  shape: reduceMeanShape,
  steeringInputs: [1],
  runtime: {
    kind: 'steps',
    lower(ctx) {
      const n = ctx.node;
      const x = ctx.shape(0);
      const axesOf = initializerAxes(
        n,
        (name) => ctx.constantOf(name),
        (m) => ctx.error(m),
      );
      const p = reduceMeanAttributes(ctx.attrs, ctx.opset, x.length, axesOf);
      const refs = [ctx.ref(n.inputs[0])];
      if (p.noop) return [ctx.step(unaryProgram({ kind: 'identity' }, sizeOf(x)), [...refs, { value: n.outputs[0] }])];
      // y = Σ x/n over the reduced axes: the reduction written for broadcast gradients (x as
      // its "dy", the divisor n as its broadcast second operand).
      const kept = keptDims(x, p.axes);
      const count = sizeOf(x) / sizeOf(kept);
      const program = broadcastBackwardProgram('div', [kept, [1]], 0, x);
      return [ctx.step(program, [...refs, { constant: countConstant(count) }, { value: n.outputs[0] }])];
    },
  },
  gradient: {
    nonDifferentiable: [1],
    backward(ctx, [dy]) {
      const n = ctx.node;
      const grads: (string | undefined)[] = n.inputs.map(() => undefined);
      if (!dy || !ctx.wants(0)) return { steps: [], grads };
      const x = ctx.shape(n.inputs[0]);
      const axesOf = initializerAxes(
        n,
        (name) => ctx.graph.initializers.get(name)?.value,
        (m) => ctx.error(m),
      );
      const p = reduceMeanAttributes(ctx.attrs, ctx.graph.opset, x.length, axesOf);
      if (p.noop) {
        grads[0] = dy;
        return { steps: [], grads };
      }
      // dx = dy/n, broadcast from the kept shape back to x's.
      const kept = keptDims(x, p.axes);
      const dx = ctx.temp(`grad ${n.inputs[0]}`, x);
      grads[0] = dx;
      return {
        steps: [
          {
            program: broadcastProgram('div', [kept, [1]], x),
            bind: { x0: dy, y: dx },
            constants: { x1: countConstant(sizeOf(x) / sizeOf(kept)) },
          },
        ],
        grads,
      };
    },
  },
};
