// What every rewrite needs: name lookup with suggestions, dependency walks, pruning, which float
// initializers are parameters (as opposed to state and constants), and refreshing shapes.
import { ModelError } from '../errors.ts';
import type { Dim, Graph, Node } from '../ir.ts';
import { prepareGraph } from '../load.ts';
import { isFloatType, sizeOf } from '../tensor.ts';

/** What a cut (cutAt, removeTop, includeTop) gives back. */
export interface CutResult {
  /** A new graph; the input graph is not modified. */
  graph: Graph;
  /** The tensor that is now the only output. */
  tensor: string;
  shape: Dim[] | undefined;
  /** Set when the cut ends the graph inside a block (a residual branch, an Inception module). */
  warnings: string[];
}

/** Elementwise activations a classifier head may hold between its layers. */
export const ACTIVATIONS = new Set([
  'Relu',
  'LeakyRelu',
  'Sigmoid',
  'Tanh',
  'Clip',
  'Elu',
  'Selu',
  'HardSigmoid',
  'HardSwish',
  'Softplus',
  'Gelu',
]);

/** A dependency closure: the nodes and tensors some tensors are computed from (themselves included). */
export interface Ancestry {
  nodes: Set<Node>;
  tensors: Set<string>;
}

/** Everything `targets` depend on, walking producers back to graph inputs and initializers. */
export function ancestry(graph: Graph, targets: string[], producers = graph.producers()): Ancestry {
  const nodes = new Set<Node>();
  const tensors = new Set<string>();
  const stack = [...targets];
  while (stack.length) {
    const t = stack.pop()!;
    if (!t || tensors.has(t)) continue;
    tensors.add(t);
    const p = producers.get(t);
    if (p && !nodes.has(p)) {
      nodes.add(p);
      for (const i of p.inputs) if (i) stack.push(i);
    }
  }
  return { nodes, tensors };
}

/** Every node that reads `tensor` directly or indirectly. */
export function descendants(tensor: string, consumers: Map<string, Node[]>): Set<Node> {
  const out = new Set<Node>();
  const stack = [tensor];
  while (stack.length) {
    const t = stack.pop()!;
    for (const c of consumers.get(t) ?? []) {
      if (out.has(c)) continue;
      out.add(c);
      for (const o of c.outputs) if (o) stack.push(o);
    }
  }
  return out;
}

/** Every tensor name and node name in the graph: the vocabulary for "did you mean". */
export function knownNames(graph: Graph): string[] {
  const names = new Set<string>();
  for (const i of graph.inputs) names.add(i.name);
  for (const k of graph.initializers.keys()) names.add(k);
  for (const n of graph.nodes) {
    if (n.name) names.add(n.name);
    for (const o of n.outputs) if (o) names.add(o);
  }
  return [...names];
}

/** The `count` names closest to `name` by edit distance (case-insensitive), closest first. */
export function closestNames(name: string, candidates: Iterable<string>, count = 5): string[] {
  const lower = name.toLowerCase();
  return [...new Set(candidates)]
    .map((c) => ({ c, d: editDistance(lower, c.toLowerCase()) }))
    .sort((a, b) => a.d - b.d || (a.c < b.c ? -1 : a.c > b.c ? 1 : 0))
    .slice(0, count)
    .map((x) => x.c);
}

/** Levenshtein distance. */
export function editDistance(a: string, b: string): number {
  if (a === b) return 0;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}

/** What a user-given name refers to: a tensor, or a node (meaning its first output). */
export interface ResolvedName {
  tensor: string;
  /** Set when the name was a node's name. */
  node?: Node;
}

/** Resolves a tensor or node name; unknown names fail with the five closest known names. */
export function resolveName(graph: Graph, name: string, what: string): ResolvedName {
  if (isTensor(graph, name)) return { tensor: name };
  const node = graph.nodes.find((n) => n.name === name);
  if (node) {
    const first = node.outputs.find(Boolean);
    if (!first) throw new ModelError(`${what}: node '${name}' has no outputs`, { file: graph.source, node });
    return { tensor: first, node };
  }
  const close = closestNames(name, knownNames(graph));
  throw new ModelError(
    `${what}: no tensor or node is named '${name}'; closest names: ${close.map((c) => `'${c}'`).join(', ')}`,
    { file: graph.source },
  );
}

function isTensor(graph: Graph, name: string): boolean {
  if (graph.initializers.has(name) || graph.inputs.some((i) => i.name === name)) return true;
  return graph.nodes.some((n) => n.outputs.includes(name));
}

/**
 * Drops nodes no graph output needs, then initializers, initializer-inputs (IR < 4 lists
 * initializers as graph inputs) and value infos nothing refers to any more. Graph inputs fed at
 * run time stay, used or not: they are the model's interface.
 */
export function prune(graph: Graph): void {
  const needed = ancestry(
    graph,
    graph.outputs.map((o) => o.name),
  ).nodes;
  graph.nodes = graph.nodes.filter((n) => needed.has(n));
  const used = new Set<string>(graph.outputs.map((o) => o.name));
  for (const n of graph.nodes) {
    for (const i of n.inputs) if (i) used.add(i);
    for (const o of n.outputs) if (o) used.add(o);
  }
  const wasInitializer = new Set(graph.initializers.keys());
  for (const k of wasInitializer) if (!used.has(k)) graph.initializers.delete(k);
  graph.inputs = graph.inputs.filter((i) => used.has(i.name) || !wasInitializer.has(i.name));
  for (const i of graph.inputs) used.add(i.name);
  for (const k of [...graph.values.keys()]) if (!used.has(k)) graph.values.delete(k);
}

/** A copy of `graph` with `tensor` as the only output and everything it does not need dropped. */
export function keepUpTo(graph: Graph, tensor: string): Graph {
  const g = graph.clone();
  const existing = g.outputs.find((o) => o.name === tensor);
  const v = g.values.get(tensor);
  g.outputs = [{ ...existing, name: tensor, dtype: v?.dtype, shape: v?.shape && [...v.shape] }];
  prune(g);
  return refresh(g);
}

/** Forgets the inferred shapes of `tensors` (they are about to change), so re-inference does
 * not mistake the old shapes for declared ones. */
export function forgetShapes(graph: Graph, tensors: Iterable<string>): void {
  const names = new Set(tensors);
  for (const t of names) {
    const v = graph.values.get(t);
    if (v && !graph.initializers.has(t)) graph.values.set(t, { ...v, shape: undefined });
  }
  for (const o of graph.outputs) if (names.has(o.name)) o.shape = undefined;
}

/** Re-validates the graph and re-infers every shape after a rewrite; output infos follow. */
export function refresh(graph: Graph): Graph {
  prepareGraph(graph);
  graph.outputs = graph.outputs.map((o) => {
    const v = graph.values.get(o.name);
    return { ...o, dtype: v?.dtype ?? o.dtype, shape: v?.shape ? [...v.shape] : o.shape };
  });
  return graph;
}

export function shapeOf(graph: Graph, tensor: string): Dim[] | undefined {
  return graph.values.get(tensor)?.shape;
}

export function showShape(shape: Dim[] | undefined): string {
  return shape ? `[${shape.map((d) => (d === null ? '?' : String(d))).join(', ')}]` : '[?]';
}

export function describeNode(n: Node): string {
  return `node '${n.name || '(unnamed)'}' (${n.opType})`;
}

// ─── parameters and state ─────────────────────────────────────────────────────────────────

/**
 * Whether input `index` of `node` is state or a structural constant rather than a parameter:
 * BatchNormalization's running mean and variance, Dropout's ratio, and the constant averaging
 * matrices of an adaptive average pool exported as MatMuls over a 4-D map. Training never
 * updates these, and unfreeze never makes them trainable.
 */
export function isStateInput(graph: Graph, node: Node, index: number): boolean {
  if (node.opType === 'BatchNormalization') return index === 3 || index === 4;
  if (node.opType === 'Dropout') return index >= 1;
  if (node.opType === 'MatMul') {
    const other = node.inputs[1 - index];
    const rank = other ? graph.values.get(other)?.shape?.length : undefined;
    return rank !== undefined && rank >= 4 && !graph.initializers.has(other);
  }
  return false;
}

/** Float initializers that are state or constants by the rule above (any reader decides). */
export function stateTensors(graph: Graph): Set<string> {
  const out = new Set<string>();
  for (const n of graph.nodes) {
    n.inputs.forEach((i, k) => {
      if (i && graph.initializers.has(i) && isStateInput(graph, n, k)) out.add(i);
    });
  }
  return out;
}

/** The float initializers a node reads (parameters and state alike), each name once. */
export function floatInitializersOf(graph: Graph, node: Node): string[] {
  const out: string[] = [];
  for (const i of node.inputs) {
    const init = i ? graph.initializers.get(i) : undefined;
    if (init && isFloatType(init.value.dtype) && !out.includes(i)) out.push(i);
  }
  return out;
}

/** Nodes that read at least one parameter (a float initializer that is not state), in graph
 * order: the "layers" of allButLast and reinit. */
export function layersWithParameters(graph: Graph, nodes: Node[] = graph.nodes, state = stateTensors(graph)): Node[] {
  return nodes.filter((n) => floatInitializersOf(graph, n).some((i) => !state.has(i)));
}

/** Elements of the float initializers that `nodes` read, each initializer counted once. */
export function parametersRead(
  graph: Graph,
  nodes: Iterable<Node>,
  filter: (name: string) => boolean = () => true,
): number {
  const seen = new Set<string>();
  let total = 0;
  for (const n of nodes) {
    for (const i of floatInitializersOf(graph, n)) {
      if (seen.has(i) || !filter(i)) continue;
      seen.add(i);
      total += sizeOf(graph.initializers.get(i)!.value.dims);
    }
  }
  return total;
}

/** Names of the graph's data inputs of a node: inputs that are neither empty nor initializers. */
export function dataInputs(graph: Graph, node: Node): string[] {
  return node.inputs.filter((i) => i && !graph.initializers.has(i));
}
