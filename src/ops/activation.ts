// Element-wise activations (Relu, LeakyRelu, Clip, Sigmoid, Tanh) and Softmax. Relu, LeakyRelu
// and Clip with constant bounds also run as the epilogue of the Conv, Gemm, MatMul or
// element-wise kernel before them.
import type { AttributeReader } from '../graph/attributes.ts';
import type { Node } from '../graph/ir.ts';
import { normalizeAxis, sameShape } from '../graph/shape-context.ts';
import { sizeOf, toNumbers, type TensorValue } from '../graph/tensor.ts';
import { unaryBackwardProgram, type UnaryBackwardOp } from '../kernels/backward/index.ts';
import { softmaxBackwardProgram } from '../kernels/transform.ts';
import { unaryProgram, type UnaryOp } from '../kernels/elementwise.ts';
import type { Activation } from '../kernels/program.ts';
import { softmaxProgram } from '../kernels/transform.ts';
import {
  oneKernelBackward,
  type EpilogueContext,
  type GradientRule,
  type LowerContext,
  type OpDefinition,
  LEGACY_CONSUMED,
  type AttributeSpec,
} from './op.ts';

/** Clip's bounds when the opset has none (float32's range). */
const FLOAT32_MAX = 3.4028234663852886e38;

/**
 * The unary op a node computes: Clip's bounds from its attributes (before opset 11) or its
 * constant inputs, which must then be initializers.
 */
function unaryOpOf(
  node: Node,
  attrs: AttributeReader,
  opset: number,
  constantOf: (name: string) => TensorValue | undefined,
): UnaryOp {
  switch (node.opType) {
    case 'Relu':
      return { kind: 'relu' };
    case 'LeakyRelu':
      return { kind: 'leakyRelu', alpha: attrs.float('alpha', 0.01) };
    case 'Sigmoid':
      return { kind: 'sigmoid' };
    case 'Tanh':
      return { kind: 'tanh' };
    case 'Clip': {
      if (opset < 11)
        return { kind: 'clip', min: attrs.float('min', -FLOAT32_MAX), max: attrs.float('max', FLOAT32_MAX) };
      const bound = (i: number, fallback: number) => {
        const name = node.inputs[i];
        if (!name) return fallback;
        const t = constantOf(name);
        if (!t) throw attrs.error(`Clip ${i === 1 ? 'min' : 'max'} ('${name}') must be a constant (an initializer)`);
        return toNumbers(t)[0];
      };
      // Absent bounds are float32's lowest and max, as onnxruntime has them: ±∞ clip to those.
      return { kind: 'clip', min: bound(1, -FLOAT32_MAX), max: bound(2, FLOAT32_MAX) };
    }
  }
  throw attrs.error(`${node.opType} is not an activation`);
}

function unaryLowering(epilogue: boolean): OpDefinition['runtime'] {
  return {
    kind: 'steps',
    check(ctx) {
      if (ctx.node.opType === 'Clip') unaryOpOf(ctx.node, ctx.attrs, ctx.opset, (n) => ctx.constantOf(n));
    },
    lower(ctx) {
      const op = unaryOpOf(ctx.node, ctx.attrs, ctx.opset, (n) => ctx.constantOf(n));
      const size = sizeOf(ctx.shape(0));
      return [ctx.inputToOutputStep(unaryProgram(op, size))];
    },
    epilogue: epilogue ? activationEpilogue : undefined,
  };
}

/** Relu / LeakyRelu / Clip with constant bounds as a kernel's epilogue. */
function activationEpilogue(ctx: EpilogueContext): Activation | undefined {
  const n = ctx.node;
  if (n.opType === 'Clip' && n.inputs.slice(1).some((i) => i && !ctx.constantOf(i))) return undefined;
  return unaryOpOf(n, ctx.attrs, ctx.graph.opset, (name) => ctx.constantOf(name)) as Activation;
}

function unaryGradient(nonDifferentiable?: readonly number[]): GradientRule {
  return {
    nonDifferentiable,
    backward(ctx, [dy]) {
      const n = ctx.node;
      const grads: (string | undefined)[] = n.inputs.map(() => undefined);
      if (!dy || !ctx.wants(0)) return { steps: [], grads };
      const op = unaryOpOf(n, ctx.attrs, ctx.graph.opset, (name) => ctx.graph.initializers.get(name)?.value);
      const dims = ctx.shape(n.inputs[0]);
      const dx = ctx.temp(`grad ${n.inputs[0]}`, dims);
      // Sigmoid and tanh differentiate from their output, the others from their input.
      const saved: Record<string, string> =
        op.kind === 'sigmoid' || op.kind === 'tanh' ? { y: n.outputs[0] } : { x: n.inputs[0] };
      grads[0] = dx;
      return {
        steps: [{ program: unaryBackwardProgram(op as UnaryBackwardOp, sizeOf(dims)), bind: { ...saved, dy, dx } }],
        grads,
      };
    },
  };
}

/** An elementwise activation: same shape out, one kernel (fused as an epilogue where `epilogue`). */
function activation(
  attributes: readonly AttributeSpec[],
  epilogue: boolean,
  nonDifferentiable?: readonly number[],
): OpDefinition {
  return {
    attributes: [...attributes, LEGACY_CONSUMED],
    shape: sameShape,
    runtime: unaryLowering(epilogue),
    gradient: unaryGradient(nonDifferentiable),
  };
}

export const relu = activation([], true);
export const leakyRelu = activation(['alpha'], true);
export const clip = activation(
  [
    { name: 'min', until: 10, replacedBy: 'the min input' },
    { name: 'max', until: 10, replacedBy: 'the max input' },
  ],
  true,
  [1, 2],
);
export const sigmoid = activation([], false);
export const tanh = activation([], false);

// ---- Softmax ----

interface SoftmaxGeometry {
  outer: number;
  length: number;
  inner: number;
}

/** Softmax's axis, normalized (default 1 before opset 13, -1 from 13). */
function softmaxAxis(attrs: AttributeReader, opset: number, rank: number): number {
  return normalizeAxis(attrs, attrs.int('axis', opset < 13 ? 1 : -1), Math.max(1, rank));
}

/** Rows of Softmax: before opset 13 over every axis from `axis` on (flattened), from 13 over `axis` alone. */
function softmaxGeometry(attrs: AttributeReader, opset: number, dims: number[]): SoftmaxGeometry {
  const axis = softmaxAxis(attrs, opset, dims.length);
  const outer = sizeOf(dims.slice(0, axis));
  const [length, inner] = opset < 13 ? [sizeOf(dims.slice(axis)), 1] : [dims[axis] ?? 1, sizeOf(dims.slice(axis + 1))];
  return { outer, length, inner };
}

export const softmax: OpDefinition = {
  attributes: ['axis'],
  shape: (ctx) => {
    softmaxAxis(ctx.attrs, ctx.opset, ctx.shape(0).length);
    return sameShape(ctx);
  },
  runtime: {
    kind: 'steps',
    lower(ctx: LowerContext) {
      const g = softmaxGeometry(ctx.attrs, ctx.opset, ctx.shape(0));
      return [ctx.inputToOutputStep(softmaxProgram(g.outer, g.length, g.inner))];
    },
  },
  // Softmax inside the network (a final Softmax is the loss's business).
  gradient: {
    backward: (ctx, [dy]) =>
      oneKernelBackward(ctx, dy, (dims) => {
        const g = softmaxGeometry(ctx.attrs, ctx.graph.opset, dims);
        return { program: softmaxBackwardProgram(g.outer, g.length, g.inner), reads: { y: ctx.node.outputs[0] } };
      }),
  },
};
