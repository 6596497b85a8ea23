// The one list of ops the engine supports (default ONNX domain). Shape inference, constant
// folding's fallback, the runtime's lowering and autodiff all look ops up here; adding an op is
// its file under src/ops/ plus one line below.
import { arityAt } from './onnx-arity.ts';
import { ModelError } from '../graph/errors.ts';
import type { Graph, Node } from '../graph/ir.ts';
import { clip, leakyRelu, relu, sigmoid, softmax, tanh } from './activation.ts';
import { cast, constant, constantOfShape, gather, range, shape, slice } from './constant.ts';
import { conv } from './conv.ts';
import { dropout } from './dropout.ts';
import { add, div, mul, sub, sum } from './elementwise.ts';
import { gemm, matmul } from './gemm.ts';
import { batchNormalization, lrn } from './normalization.ts';
import type { AttributeSpec, GradientRule, OpDefinition } from './op.ts';
import { averagePool, globalAveragePool, globalMaxPool, maxPool } from './pool.ts';
import { reduceMean } from './reduce-mean.ts';
import { concat, flatten, identity, pad, reshape, squeeze, transpose, unsqueeze } from './shape-ops.ts';

export const OPS: Readonly<Record<string, OpDefinition>> = {
  Conv: conv,
  MaxPool: maxPool,
  AveragePool: averagePool,
  GlobalAveragePool: globalAveragePool,
  GlobalMaxPool: globalMaxPool,
  BatchNormalization: batchNormalization,
  LRN: lrn,
  Relu: relu,
  LeakyRelu: leakyRelu,
  Clip: clip,
  Sigmoid: sigmoid,
  Tanh: tanh,
  Softmax: softmax,
  Add: add,
  Sub: sub,
  Mul: mul,
  Div: div,
  Sum: sum,
  Gemm: gemm,
  MatMul: matmul,
  Identity: identity,
  Flatten: flatten,
  Reshape: reshape,
  Squeeze: squeeze,
  Unsqueeze: unsqueeze,
  Dropout: dropout,
  Transpose: transpose,
  Pad: pad,
  Concat: concat,
  Shape: shape,
  Gather: gather,
  ConstantOfShape: constantOfShape,
  Constant: constant,
  Cast: cast,
  Slice: slice,
  Range: range,
  ReduceMean: reduceMean,
};

export const SUPPORTED_OPS: readonly string[] = Object.keys(OPS).sort();

/** Ops the runtime runs (the others only fold to constants). */
export const RUNTIME_SUPPORTED_OPS: readonly string[] = SUPPORTED_OPS.filter((op) => OPS[op].runtime.kind !== 'folded');

/** Ops with a gradient rule. */
export const DIFFERENTIABLE_OPS: readonly string[] = SUPPORTED_OPS.filter((op) => 'backward' in OPS[op].gradient);

const isDefaultDomain = (node: Node) => node.domain === '' || node.domain === 'ai.onnx';

/** The definition of a node's op, or undefined when the engine does not support it. */
export function findOp(node: Node): OpDefinition | undefined {
  return isDefaultDomain(node) && Object.hasOwn(OPS, node.opType) ? OPS[node.opType] : undefined;
}

/** The definition of a node's op, or an error naming the node and listing the supported ops. */
export function opDefinition(graph: Graph, node: Node): OpDefinition {
  const op = findOp(node);
  if (!op) {
    const where = isDefaultDomain(node) ? '' : ` in domain '${node.domain}'`;
    throw new ModelError(
      `op ${node.opType}${where} is not supported; supported ops (default domain): ${SUPPORTED_OPS.join(', ')}`,
      { file: graph.source, node },
    );
  }
  return op;
}

/**
 * Refuses a node of an unsupported op, or with an attribute its op's schema does not define at
 * this opset (onnxruntime: "Unrecognized attribute"): a misspelt alpha must not run as the
 * default alpha.
 */
export function checkNodeAttributes(graph: Graph, node: Node, opset: number): void {
  const op = opDefinition(graph, node);
  const accepted = op.attributes.filter((a) => typeof a === 'string' || inOpset(a, opset)).map(attributeName);
  for (const name of Object.keys(node.attributes)) {
    if (accepted.includes(name)) continue;
    const other = op.attributes.find((a) => attributeName(a) === name);
    const list = accepted.length ? `${node.opType} accepts ${accepted.join(', ')}` : `${node.opType} has no attributes`;
    const replaced = other && typeof other !== 'string' && other.replacedBy && opset > (other.until ?? Infinity);
    throw new ModelError(
      replaced
        ? `the ${name} attribute was replaced by ${other.replacedBy} in opset ${other.until! + 1}; ${list}`
        : other
          ? `attribute '${name}' is not part of ${node.opType} at opset ${opset}; ${list}`
          : `unknown attribute '${name}'; ${list}`,
      { file: graph.source, node },
    );
  }
}

/**
 * Refuses a node with more or fewer inputs or outputs than its op takes at this opset (ONNX's
 * schema, as onnxruntime enforces it): before shape inference reads an input that is not there.
 */
export function checkNodeArity(graph: Graph, node: Node, opset: number): void {
  const arity = arityAt(node.opType, opset);
  if (!arity) return;
  const [, minIn, maxIn, minOut, maxOut] = arity;
  const range = (min: number, max: number) =>
    min === max ? `${min}` : max >= 2 ** 31 - 1 ? `${min} or more` : `${min}…${max}`;
  if (node.inputs.length < minIn || node.inputs.length > maxIn)
    throw new ModelError(
      `${node.inputs.length} inputs; ${node.opType} at opset ${opset} takes ${range(minIn, maxIn)}`,
      { file: graph.source, node },
    );
  if (node.outputs.length < minOut || node.outputs.length > maxOut)
    throw new ModelError(
      `${node.outputs.length} outputs; ${node.opType} at opset ${opset} gives ${range(minOut, maxOut)}`,
      { file: graph.source, node },
    );
}

function attributeName(a: AttributeSpec): string {
  return typeof a === 'string' ? a : a.name;
}

function inOpset(a: Exclude<AttributeSpec, string>, opset: number): boolean {
  return opset >= (a.since ?? 1) && opset <= (a.until ?? Infinity);
}

/** The gradient rule of an op (default domain), or undefined when it has none. */
export function gradientRule(opType: string): GradientRule | undefined {
  const gradient = Object.hasOwn(OPS, opType) ? OPS[opType].gradient : undefined;
  return gradient && 'backward' in gradient ? gradient : undefined;
}

/** Why an op has no gradient rule (unsupported, or the registry's stated reason). */
export function whyNotDifferentiable(opType: string): string {
  if (!Object.hasOwn(OPS, opType)) return 'it is not a supported op';
  const gradient = OPS[opType].gradient;
  return 'notDifferentiable' in gradient ? gradient.notDifferentiable : 'it has a gradient rule';
}
