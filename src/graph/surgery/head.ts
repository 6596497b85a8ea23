// Finding a network's classifier head (Keras's "top") by walking back from the output, and
// removing it. The walk recognises the heads of the model zoo and of torchvision exports:
//   [pooling] [Dropout] Flatten|Reshape (Dense [activation] [Dropout])+ [Softmax]
//   [Dropout] 1×1 Conv [activation] global pooling [Flatten] [Softmax]        (SqueezeNet)
// where Dense is Gemm, or MatMul with an optional bias Add.
import { ModelError } from '../errors.ts';
import type { Dim, Graph, Node } from '../ir.ts';
import { ACTIVATIONS, dataInputs, describeNode, keepUpTo, shapeOf, showShape, type CutResult } from './common.ts';

export interface Head {
  /** The head's nodes in graph order. */
  nodes: Node[];
  /** The tensor the body hands to the head (the include_top=false output). */
  featureTensor: string;
  featureShape: Dim[] | undefined;
  /** The final classifier layer: a Gemm, a MatMul or a 1×1 Conv. */
  classifier: Node;
  /** The Add holding a MatMul classifier's bias, when there is one. */
  classifierBias?: Node;
  /** Every dense (or 1×1 convolution) layer of the head, in graph order. */
  layers: Node[];
  /** The pooling that belongs to the head (global or adaptive pooling before the flatten). */
  pooling: Node[];
  softmax?: Node;
  kind: 'dense' | 'conv';
  /** The graph output the head produces. */
  output: string;
}

const SOFTMAX = new Set(['Softmax', 'LogSoftmax']);
const PASS = new Set(['Dropout', 'Identity']);
const FLATTEN = new Set(['Flatten', 'Reshape', 'Squeeze']);
const AFFINE = new Set(['Add', 'Sub', 'Mul', 'Div']);

/** The classifier head, or an error saying what the graph ends with instead. */
export function headOf(graph: Graph): Head {
  const head = findHead(graph);
  if (head) return head;
  const output = graph.outputs[0]?.name;
  const producer = output ? graph.producers().get(output) : undefined;
  throw new ModelError(
    `no classifier head found: the output '${output}' ${showShape(output ? shapeOf(graph, output) : undefined)} is produced by ${producer ? describeNode(producer) : 'no node'}; ` +
      'a head is a trailing Gemm/MatMul classifier (with its Flatten/Reshape, Dropout, activations, the pooling before it and a Softmax) ' +
      'or a 1×1 Conv classifier followed by global pooling (SqueezeNet)',
    { file: graph.source },
  );
}

/** The classifier head, or undefined when the graph does not end in one (a headless body). */
export function findHead(graph: Graph): Head | undefined {
  const output = graph.outputs[0]?.name;
  if (!output) return undefined;
  const producers = graph.producers();
  const consumers = graph.consumers();
  const rank = (t: string) => graph.values.get(t)?.shape?.length;
  const taken = new Set<Node>();
  const backwards: Node[] = [];
  let t = output;

  // The next node back joins the head only if the head already holds every reader of its
  // outputs and it has exactly one data input (weights and shapes are initializers).
  const next = (): { node: Node; input: string } | undefined => {
    const node = producers.get(t);
    if (!node) return undefined;
    for (const o of node.outputs) for (const c of consumers.get(o) ?? []) if (!taken.has(c)) return undefined;
    if (node.outputs.some((o) => o !== t && graph.outputs.some((g) => g.name === o))) return undefined;
    const data = dataInputs(graph, node);
    return data.length === 1 ? { node, input: data[0] } : undefined;
  };
  const take = (step: { node: Node; input: string }) => {
    taken.add(step.node);
    backwards.push(step.node);
    t = step.input;
  };

  let step = next();
  let softmax: Node | undefined;
  if (step && SOFTMAX.has(step.node.opType)) {
    softmax = step.node;
    take(step);
    step = next();
  }

  // The 2-D part: dense layers, their activations and dropout, down to the flatten.
  const layers: Node[] = [];
  while (step) {
    const r = rank(t);
    if (r === undefined || r > 2) break;
    const op = step.node.opType;
    const isDense = op === 'Gemm' || (op === 'MatMul' && hasConstantOperand(graph, step.node));
    if (isDense) layers.push(step.node);
    else if (!(
      ACTIVATIONS.has(op) ||
      PASS.has(op) ||
      FLATTEN.has(op) ||
      (AFFINE.has(op) && hasConstantOperand(graph, step.node))
    ))
      break;
    take(step);
    step = next();
  }

  // The 4-D part: the pooling that feeds the flatten (and, without dense layers, a 1×1
  // convolution classifier before it).
  const pooling: Node[] = [];
  if ((rank(t) ?? 0) > 2) {
    while (step && PASS.has(step.node.opType)) {
      take(step);
      step = next();
    }
    if (step && isHeadPooling(graph, step.node)) {
      pooling.push(step.node);
      take(step);
      step = next();
      // An adaptive average pool that torch could not export is two MatMuls.
      if (pooling[0].opType === 'MatMul' && step && step.node.opType === 'MatMul' && isHeadPooling(graph, step.node)) {
        pooling.push(step.node);
        take(step);
        step = next();
      }
    }
    if (layers.length === 0 && pooling.length > 0) {
      if (step && ACTIVATIONS.has(step.node.opType)) {
        take(step);
        step = next();
      }
      if (!step || !isPointwiseConv(graph, step.node)) return undefined;
      layers.push(step.node);
      take(step);
      step = next();
      while (step && PASS.has(step.node.opType)) {
        take(step);
        step = next();
      }
    }
  }
  if (layers.length === 0) return undefined;

  const nodes = graph.nodes.filter((n) => taken.has(n));
  const classifier = layers[0];
  let classifierBias: Node | undefined;
  if (classifier.opType === 'MatMul') {
    const readers = consumers.get(classifier.outputs[0]) ?? [];
    if (
      readers.length === 1 &&
      readers[0].opType === 'Add' &&
      taken.has(readers[0]) &&
      hasConstantOperand(graph, readers[0])
    )
      classifierBias = readers[0];
  }
  return {
    nodes,
    featureTensor: t,
    featureShape: shapeOf(graph, t),
    classifier,
    classifierBias,
    layers: [...layers].reverse(),
    pooling: [...pooling].reverse(),
    softmax,
    kind: classifier.opType === 'Conv' ? 'conv' : 'dense',
    output,
  };
}

/** Removes the classifier head: the Keras include_top=False graph, ending at the features. */
export function removeTop(graph: Graph): CutResult & { head: Head } {
  const head = headOf(graph);
  const g = keepUpTo(graph, head.featureTensor);
  return { graph: g, tensor: head.featureTensor, shape: shapeOf(g, head.featureTensor), warnings: [], head };
}

/** includeTop(graph, false) removes the head; includeTop(graph, true) returns a copy as is. */
export function includeTop(graph: Graph, include: boolean): CutResult {
  if (!include) return removeTop(graph);
  const output = graph.outputs[0]?.name ?? '';
  return { graph: graph.clone(), tensor: output, shape: shapeOf(graph, output), warnings: [] };
}

function hasConstantOperand(graph: Graph, node: Node): boolean {
  return node.inputs.some((i) => i && graph.initializers.has(i));
}

/** Pooling that belongs to a head: global pooling, any average pool (torchvision's adaptive
 * avgpool exports as one), a pool down to 1×1, or the MatMuls of a non-exportable adaptive pool. */
function isHeadPooling(graph: Graph, node: Node): boolean {
  const out = shapeOf(graph, node.outputs[0]);
  switch (node.opType) {
    case 'GlobalAveragePool':
    case 'GlobalMaxPool':
    case 'AveragePool':
      return true;
    case 'MaxPool':
    case 'LpPool':
      return !!out && out.length > 2 && out.slice(2).every((d) => d === 1);
    case 'ReduceMean':
    case 'ReduceMax':
      return true;
    case 'MatMul': {
      const data = dataInputs(graph, node)[0];
      return hasConstantOperand(graph, node) && (shapeOf(graph, data)?.length ?? 0) >= 4;
    }
    default:
      return false;
  }
}

function isPointwiseConv(graph: Graph, node: Node): boolean {
  if (node.opType !== 'Conv') return false;
  const w = graph.initializers.get(node.inputs[1]);
  if (!w || w.value.dims.length < 3) return false;
  const group = node.attributes.group;
  return w.value.dims.slice(2).every((d) => d === 1) && (!group || (group.type === 'int' && group.value === 1));
}
