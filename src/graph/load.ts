// From bytes to a Graph the runtime can compile: decode, validate, fold constants, infer every
// value's dtype and shape, mark state tensors, drop what folding left unused.
import { decodeModel, type DecodeOptions } from './codec.ts';
import { ModelError } from './errors.ts';
import { foldNode, isFoldable } from './fold.ts';
import type { Graph, Node } from './ir.ts';
import { ShapeContext, shapeRuleFor, showShape } from './shape-inference.ts';
import type { TensorValue } from './tensor.ts';

/** The newest default-domain opset whose semantics the engine implements for its ops. */
export const MAX_SUPPORTED_OPSET = 21;

/** Ops whose folded output is the same numbers as their input (or only its dims). */
const RELABELLING_OPS = new Set(['Shape', 'Identity', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze']);
/** Ops whose meaning changed before opset 7 are refused node by node (legacy broadcast
 * attributes, BatchNormalization spatial=0), so older models load when they avoid those. */
export const MIN_SUPPORTED_OPSET = 1;

export interface PrepareOptions {
  /** Concrete shapes for graph inputs, binding symbolic dimensions (a batch size, say). */
  inputShapes?: Record<string, number[]>;
}

export function loadModel(bytes: Uint8Array, options: DecodeOptions & PrepareOptions = {}): Graph {
  return prepareGraph(decodeModel(bytes, options), options);
}

/** Validates, folds and infers shapes in place; returns the same graph. */
export function prepareGraph(graph: Graph, options: PrepareOptions = {}): Graph {
  const file = graph.source;
  if (graph.nodes.length === 0) throw new ModelError('the graph is empty: it has no nodes', { file });
  if (graph.outputs.length === 0) throw new ModelError('the graph declares no outputs', { file });
  const opset = graph.opset;
  if (opset > MAX_SUPPORTED_OPSET) {
    throw new ModelError(
      `default-domain opset ${opset} is newer than supported (${MIN_SUPPORTED_OPSET}…${MAX_SUPPORTED_OPSET}); re-export with opset ≤ ${MAX_SUPPORTED_OPSET}`,
      { file },
    );
  }
  if (opset < MIN_SUPPORTED_OPSET) {
    throw new ModelError(
      `default-domain opset ${opset} is older than supported (${MIN_SUPPORTED_OPSET}…${MAX_SUPPORTED_OPSET}); convert it with onnx.version_converter`,
      { file },
    );
  }
  for (const n of graph.nodes) shapeRuleFor(graph, n); // refuse unknown ops before any work
  bindInputShapes(graph, options.inputShapes);
  graph.sortTopologically();

  // Initializers are constants, also those listed as graph inputs (IR < 4 lists every
  // initializer there): the engine does not let a run override a weight.
  const constant = (name: string): TensorValue | undefined => graph.initializers.get(name)?.value;
  const staticShapeOnly = staticShapeOnlyFor(graph);
  const kept: Node[] = [];
  for (const node of graph.nodes) {
    const ctx = new ShapeContext(graph, node, opset, constant);
    // Arithmetic on a trainable weight stays a node: folding it would freeze what training
    // updates. Pure relabelling (a reshaped weight becomes the trainable weight) folds.
    const readsTrainable =
      !RELABELLING_OPS.has(node.opType) && node.inputs.some((i) => graph.initializers.get(i)?.trainable);
    if (isFoldable(node.opType) && !readsTrainable) {
      const folded = foldNode(
        ctx,
        node.inputs.map((i) => (i ? (constant(i) ?? staticShapeOnly(node, i)) : undefined)),
      );
      if (folded) {
        // A relabelled weight keeps its own trainable flag; other folded floats start trainable.
        const source = RELABELLING_OPS.has(node.opType) ? graph.initializers.get(node.inputs[0]) : undefined;
        node.outputs.forEach((o, i) => graph.setInitializer(o, folded[i], source?.trainable));
        continue;
      }
    }
    const inferred = shapeRuleFor(graph, node)(ctx);
    node.outputs.forEach((o, i) => {
      if (!o || !inferred[i]) return;
      const declared = graph.values.get(o);
      checkDeclared(graph, node, o, declared?.shape, inferred[i].shape);
      graph.values.set(o, { ...declared, name: o, dtype: inferred[i].dtype, shape: inferred[i].shape });
    });
    kept.push(node);
  }
  graph.nodes = kept;
  markStateTensors(graph);
  pruneUnused(graph);
  for (const out of graph.outputs) {
    const v = graph.values.get(out.name);
    if (!v?.shape) throw new ModelError(`cannot infer the shape of graph output '${out.name}'`, { file });
  }
  return graph;
}

/** Shape reads only its input's dims: a value whose shape is fully known folds like a constant
 * (its data left empty, never read). */
function staticShapeOnlyFor(graph: Graph) {
  return (node: Node, name: string): TensorValue | undefined => {
    if (node.opType !== 'Shape') return undefined;
    const v = graph.values.get(name);
    if (!v?.dtype || !v.shape || v.shape.some((d) => typeof d !== 'number')) return undefined;
    return { dtype: v.dtype, dims: v.shape as number[], data: new Float32Array(0) };
  };
}

function bindInputShapes(graph: Graph, shapes: Record<string, number[]> | undefined): void {
  if (!shapes) return;
  for (const [name, dims] of Object.entries(shapes)) {
    const input = graph.feedInputs.find((i) => i.name === name);
    if (!input)
      throw new ModelError(
        `inputShapes names '${name}', which is not a graph input; inputs: ${graph.feedInputs.map((i) => i.name).join(', ')}`,
        { file: graph.source },
      );
    const declared = input.shape;
    if (
      declared &&
      (declared.length !== dims.length || declared.some((d, i) => typeof d === 'number' && d !== dims[i]))
    ) {
      throw new ModelError(
        `input '${name}' is declared ${showShape(declared)}; the shape [${dims}] given does not fit it`,
        { file: graph.source },
      );
    }
    input.shape = [...dims];
    graph.values.set(name, { ...graph.values.get(name), ...input, shape: [...dims] });
  }
}

/** A shape declared in the file must agree with the inferred one wherever both are numbers. */
function checkDeclared(
  graph: Graph,
  node: Node,
  name: string,
  declared: (number | string | null)[] | undefined,
  inferred: (number | string | null)[],
): void {
  if (!declared || declared.length === 0) return;
  const clash =
    declared.length !== inferred.length ||
    declared.some((d, i) => typeof d === 'number' && typeof inferred[i] === 'number' && d !== inferred[i]);
  if (clash) {
    throw new ModelError(
      `output '${name}' is declared ${showShape(declared)} in the file but computes to ${showShape(inferred)}`,
      { file: graph.source, node },
    );
  }
}

/** BatchNormalization's running mean and variance are state, not parameters. */
function markStateTensors(graph: Graph): void {
  for (const n of graph.nodes) {
    if (n.opType !== 'BatchNormalization') continue;
    for (const i of [3, 4]) {
      const init = graph.initializers.get(n.inputs[i]);
      if (init) init.trainable = false;
    }
  }
}

/** Drops initializers and values that no node, and no graph output, reads any more. */
function pruneUnused(graph: Graph): void {
  const used = new Set<string>(graph.outputs.map((o) => o.name));
  for (const n of graph.nodes) for (const i of n.inputs) used.add(i);
  for (const name of [...graph.initializers.keys()]) {
    if (used.has(name)) continue;
    graph.initializers.delete(name);
    graph.values.delete(name);
    graph.inputs = graph.inputs.filter((i) => i.name !== name);
  }
}
