// A copy of part of a graph: some of its nodes, in the graph's order, with the graph's
// initializers and values, and the outputs (and inputs) the caller names.
import type { Graph, Node } from './ir.ts';

export interface SubgraphEnds {
  /** Values the part produces for its users; each gets its dtype float32 and its known shape. */
  outputs: readonly string[];
  /** Values fed to the part (default: the graph's own inputs). */
  inputs?: readonly string[];
}

/** A clone of `graph` keeping only `nodes` (nodes of `graph` itself), ending at `ends.outputs`. */
export function extractSubgraph(graph: Graph, nodes: Iterable<Node>, ends: SubgraphEnds): Graph {
  const keep = new Set(nodes);
  const g = graph.clone();
  // clone() copies the nodes in order: the i-th copy is the i-th original.
  g.nodes = g.nodes.filter((_, i) => keep.has(graph.nodes[i]));
  const info = (name: string) => ({ name, dtype: 'float32' as const, shape: graph.values.get(name)?.shape });
  g.outputs = ends.outputs.map(info);
  if (ends.inputs) g.inputs = ends.inputs.map(info);
  return g;
}
