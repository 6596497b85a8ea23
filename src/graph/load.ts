// From bytes to a Graph the runtime can compile: decode, validate, fold constants, infer every
// value's dtype and shape, mark state tensors, drop what folding left unused.
import { decodeModel, type DecodeOptions } from './codec.ts';
import { ModelError } from './errors.ts';
import { foldNode, isFoldable, MAX_FOLDED_BYTES, spend, type FoldBudget } from './fold.ts';
import type { Dim, Graph, Initializer, Node, ValueInfo } from './ir.ts';
import {
  checkNodeArity,
  checkNodeAttributes,
  ShapeContext,
  shapeRuleFor,
  showShape,
  dimsDisagree,
} from './shape-inference.ts';
import {
  dataTypeFromOnnx,
  invalidDims,
  MAX_TENSOR_ELEMENTS,
  sizeOf,
  type DataType,
  type TensorValue,
} from './tensor.ts';

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

/** One version per domain: a domain imported twice at two versions leaves its ops' meaning open. */
function checkOpsetImports(graph: Graph): void {
  const seen = new Map<string, number>();
  for (const { domain, version } of graph.opsetImports) {
    const key = domain === 'ai.onnx' ? '' : domain;
    const earlier = seen.get(key);
    if (earlier !== undefined && earlier !== version) {
      throw new ModelError(
        `opset_import names domain '${domain || 'ai.onnx'}' twice, at versions ${earlier} and ${version}; accepted: one version per domain`,
        { file: graph.source },
      );
    }
    seen.set(key, version);
  }
}

/** Validates, folds and infers shapes in place; returns the same graph. */
export function prepareGraph(graph: Graph, options: PrepareOptions = {}): Graph {
  const file = graph.source;
  if (graph.nodes.length === 0) throw new ModelError('the graph is empty: it has no nodes', { file });
  if (graph.outputs.length === 0) throw new ModelError('the graph declares no outputs', { file });
  checkOpsetImports(graph);
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
  for (const n of graph.nodes) {
    // Unknown ops and attributes, and input or output counts the op does not take: before any work.
    checkNodeAttributes(graph, n, opset);
    checkNodeArity(graph, n, opset);
  }
  // (After the nodes: a graph of another domain's ops is refused for those ops first.)
  if (!graph.opsetImports.some((o) => o.domain === '' || o.domain === 'ai.onnx'))
    throw new ModelError(
      'the model imports no default-domain (ai.onnx) opset; every ONNX model states the opset its ops follow',
      { file },
    );
  checkValueTypes(graph);
  checkInitializedInputs(graph);
  checkOutputsProduced(graph);
  bindInputShapes(graph, options.inputShapes);
  graph.sortTopologically();

  // Everything is checked before anything large is allocated: a first pass folds only small
  // constants and infers every shape, leaving large ConstantOfShape fills (the weights of
  // models stored without them) as nodes of known shape; a second pass, once the whole graph
  // is known to be sound, materialises them (and folds what reads them).
  const budget: FoldBudget = { bytesLeft: MAX_FOLDED_BYTES };
  const fileInitializers = [...graph.initializers.keys()];
  const placed: string[] = [];
  if (foldAndInfer(graph, budget, true, placed) > 0) {
    foldAndInfer(graph, { bytesLeft: MAX_FOLDED_BYTES }, false);
    // The fills made in the second pass take the places they had in the first: initializers keep
    // the order one pass gives (checkpoint fingerprints and seeded re-initialisation walk it).
    keepInitializerOrder(graph, [...fileInitializers, ...placed]);
  }
  markStateTensors(graph);
  pruneUnused(graph);
  for (const out of graph.outputs) {
    const v = graph.values.get(out.name);
    if (!v?.shape) throw new ModelError(`cannot infer the shape of graph output '${out.name}'`, { file });
  }
  return graph;
}

/** ConstantOfShape fills above this many elements wait for the second pass. */
const DEFER_FILLS_ABOVE = 1 << 16;

/**
 * Folds constant nodes and infers the shapes of the others, in order; with `deferFills`, large
 * ConstantOfShape outputs get only their shape (their bytes counted against the budget).
 * Returns the number of fills deferred.
 */
function foldAndInfer(graph: Graph, budget: FoldBudget, deferFills: boolean, placed: string[] = []): number {
  const opset = graph.opset;
  // Initializers are constants, also those listed as graph inputs (IR < 4 lists every
  // initializer there): the engine does not let a run override a weight.
  const constant = (name: string): TensorValue | undefined => graph.initializers.get(name)?.value;
  const staticShapeOnly = staticShapeOnlyFor(graph);
  const kept: Node[] = [];
  let deferred = 0;
  const wanted = new Set([...graph.nodes.flatMap((n) => n.inputs), ...graph.outputs.map((o) => o.name)]);
  for (const node of graph.nodes) {
    const ctx = new ShapeContext(graph, node, opset, constant);
    // Arithmetic on a trainable weight stays a node: folding it would freeze what training
    // updates. Pure relabelling (a reshaped weight becomes the trainable weight) folds.
    const readsTrainable =
      !RELABELLING_OPS.has(node.opType) && node.inputs.some((i) => graph.initializers.get(i)?.trainable);
    const inputs = node.inputs.map((i) => (i ? (constant(i) ?? staticShapeOnly(node, i)) : undefined));
    const fill = deferFills && node.opType === 'ConstantOfShape' && inputs[0] !== undefined;
    // The shape rule runs first, folded or not: it is what refuses a node whose required inputs
    // are missing or ill-typed, before an evaluator reads them.
    const inferred = shapeRuleFor(graph, node)(ctx);
    node.outputs.forEach((o, i) => {
      if (o && !inferred[i] && wanted.has(o))
        throw ctx.error(`output ${i} ('${o}') is read, but ${node.opType} computes ${inferred.length} output(s) here`);
    });
    if (isFoldable(node.opType) && !readsTrainable && !fill) {
      const folded = foldNode(ctx, inputs, budget);
      if (folded) {
        // A relabelled weight keeps its own trainable flag; other folded floats start trainable.
        const source = RELABELLING_OPS.has(node.opType) ? graph.initializers.get(node.inputs[0]) : undefined;
        node.outputs.forEach((o, i) => graph.setInitializer(o, folded[i], source?.trainable));
        placed.push(...node.outputs);
        continue;
      }
    }
    node.outputs.forEach((o, i) => {
      if (!o || !inferred[i]) return;
      const declared = graph.values.get(o);
      checkDeclared(graph, node, o, declared, inferred[i]);
      checkSize(graph, node, o, inferred[i].shape);
      graph.values.set(o, { ...declared, name: o, dtype: inferred[i].dtype, shape: inferred[i].shape });
    });
    if (fill) {
      const dims = inferred[0].shape as number[];
      if (sizeOf(dims) > DEFER_FILLS_ABOVE) {
        spend(ctx, budget, inferred[0].dtype, dims);
        placed.push(node.outputs[0]);
        deferred++;
      } else {
        const folded = foldNode(ctx, inputs, budget);
        if (folded) {
          graph.setInitializer(node.outputs[0], folded[0]);
          placed.push(node.outputs[0]);
          continue;
        }
      }
    }
    kept.push(node);
  }
  graph.nodes = kept;
  return deferred;
}

/** An inferred shape no tensor can have (a dim that is not a non-negative integer, more than
 * MAX_TENSOR_ELEMENTS elements) is refused before anything is sized by it. */
function checkSize(graph: Graph, node: Node, name: string, shape: Dim[]): void {
  const numeric = shape.map((d) => (typeof d === 'number' ? d : 1));
  const invalid = invalidDims(numeric);
  if (invalid)
    throw new ModelError(`output '${name}' would be ${showShape(shape)}: ${invalid}`, { file: graph.source, node });
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

/** Element types onnxruntime would refuse (a code this codec does not know, kept only so that
 * the file round-trips) and declared dims no tensor can have, on the graph's values. */
function checkValueTypes(graph: Graph): void {
  const file = graph.source;
  const declared = [...graph.inputs, ...graph.outputs, ...((graph.extra.valueInfo as ValueInfo[] | undefined) ?? [])];
  const inputOrOutput = new Set([...graph.inputs, ...graph.outputs]);
  for (const v of declared) {
    const code = v.extra?.elemType;
    // An intermediate value may leave its element type out (0); a graph input or output may not.
    if (code !== undefined && (code !== 0 || inputOrOutput.has(v)))
      throw new ModelError(
        `value '${v.name}' has elem_type ${String(code)}, which is not a tensor element type the engine knows; accepted: ${KNOWN_ELEMENT_TYPES}`,
        { file },
      );
    const numeric = (v.shape ?? []).filter((d): d is number => typeof d === 'number');
    const bad = numeric.find((d) => !Number.isSafeInteger(d) || d < 0 || d > MAX_TENSOR_ELEMENTS);
    if (bad !== undefined)
      throw new ModelError(
        `value '${v.name}' is declared ${showShape(v.shape!)}: dim ${bad} is not an integer in 0…${MAX_TENSOR_ELEMENTS}`,
        { file },
      );
  }
}

/**
 * A graph input that also has an initializer (its default value, as IR < 4 writes every weight)
 * must declare the initializer's element type and dims (onnxruntime refuses a mismatch).
 */
function checkInitializedInputs(graph: Graph): void {
  for (const input of graph.inputs) {
    const init = graph.initializers.get(input.name);
    if (init && input.dtype && input.dtype !== init.value.dtype)
      throw new ModelError(
        `graph input '${input.name}' is declared ${input.dtype} but its initializer is ${init.value.dtype}; the two must agree`,
        { file: graph.source },
      );
    if (!init || !input.shape) continue;
    const dims = init.value.dims;
    if (dimsDisagree(input.shape, dims))
      throw new ModelError(
        `graph input '${input.name}' is declared ${showShape(input.shape)} but its initializer has dims [${dims.join(', ')}]; the two must agree`,
        { file: graph.source },
      );
  }
}

const KNOWN_ELEMENT_TYPES = Array.from({ length: 22 }, (_, i) => `${i + 1} (${dataTypeFromOnnx(i + 1)})`).join(', ');

/** Every graph output must be computed by a node, be a constant or be a graph input
 * (onnxruntime: "Graph output (z) does not exist in the graph"). */
function checkOutputsProduced(graph: Graph): void {
  // Each value has one definition (ONNX graphs are in SSA form; onnxruntime refuses a second):
  // a graph input or initializer (an initializer may also be listed as an input), or one node output.
  const definedBy = new Map<string, string>();
  for (const i of graph.inputs) {
    if (definedBy.has(i.name))
      throw new ModelError(`graph input '${i.name}' is listed twice; each value of a graph has one definition`, {
        file: graph.source,
      });
    definedBy.set(i.name, 'a graph input');
  }
  for (const name of graph.initializers.keys()) if (!definedBy.has(name)) definedBy.set(name, 'an initializer');
  for (const n of graph.nodes) {
    for (const o of n.outputs) {
      if (o === '') continue;
      const earlier = definedBy.get(o);
      if (earlier)
        throw new ModelError(
          `value '${o}' is defined twice: as ${earlier} and as an output of this node; each value of a graph has one definition`,
          { file: graph.source, node: n },
        );
      definedBy.set(o, `an output of node '${n.name || '(unnamed)'}' (${n.opType})`);
    }
  }
  for (const out of graph.outputs) {
    if (!definedBy.has(out.name))
      throw new ModelError(
        `graph output '${out.name}' is not computed by any node, nor a graph input or initializer; outputs must name a value of the graph`,
        { file: graph.source },
      );
  }
}

function bindInputShapes(graph: Graph, shapes: Record<string, number[]> | undefined): void {
  if (!shapes) return;
  if (typeof shapes !== 'object')
    throw new ModelError(`inputShapes must be an object of input name → dims, got ${typeof shapes}`, {
      file: graph.source,
    });
  for (const [name, dims] of Object.entries(shapes)) {
    const invalid = Array.isArray(dims)
      ? invalidDims(dims)
      : `it is ${dims === null ? 'null' : typeof dims}, not a list of dims`;
    if (invalid)
      throw new ModelError(
        `inputShapes['${name}'] = ${Array.isArray(dims) ? `[${dims.join(', ')}]` : String(dims)} is not a shape: ${invalid}; give non-negative integer dims`,
        { file: graph.source },
      );
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
  declared: ValueInfo | undefined,
  inferred: { dtype: DataType; shape: Dim[] },
): void {
  if (declared?.shape?.length && dimsDisagree(declared.shape, inferred.shape)) {
    throw new ModelError(
      `output '${name}' is declared ${showShape(declared.shape)} in the file but computes to ${showShape(inferred.shape)}`,
      { file: graph.source, node },
    );
  }
  if (declared?.dtype && declared.dtype !== inferred.dtype)
    throw new ModelError(
      `output '${name}' is declared ${declared.dtype} in the file but computes to ${inferred.dtype}`,
      {
        file: graph.source,
        node,
      },
    );
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

/** Reorders the graph's initializers: `order` first (names not initializers are skipped), then the rest as they were. */
function keepInitializerOrder(graph: Graph, order: readonly string[]): void {
  const entries = new Map<string, Initializer>();
  for (const name of order) {
    const init = graph.initializers.get(name);
    if (init && !entries.has(name)) entries.set(name, init);
  }
  for (const [name, init] of graph.initializers) if (!entries.has(name)) entries.set(name, init);
  graph.initializers.clear();
  for (const [name, init] of entries) graph.initializers.set(name, init);
}
