// FLOPs of a prepared graph (every value's shape inferred): 2·MACs of Conv, Gemm and MatMul,
// the convention of the model zoo's GFLOP figures. Everything else (BatchNormalization, pooling,
// LRN, activations, adds) is left out: it is a few percent of a CNN's arithmetic.
import type { Graph, Node } from '../src/graph/ir.ts';

export interface FlopCount {
  /** 2·MACs over all counted nodes. */
  total: number;
  byOp: Record<string, number>;
  /** Nodes counted. */
  nodes: number;
}

export function graphFlops(graph: Graph): FlopCount {
  const byOp: Record<string, number> = {};
  let total = 0;
  let nodes = 0;
  for (const node of graph.nodes) {
    const macs = nodeMacs(graph, node);
    if (macs === undefined) continue;
    byOp[node.opType] = (byOp[node.opType] ?? 0) + 2 * macs;
    total += 2 * macs;
    nodes++;
  }
  return { total, byOp, nodes };
}

function nodeMacs(graph: Graph, node: Node): number | undefined {
  const shape = (name: string): number[] => {
    const dims = graph.initializers.get(name)?.value.dims ?? graph.values.get(name)?.shape;
    if (!dims || dims.some((d) => typeof d !== 'number')) {
      throw new Error(
        `flops: '${name}' (of ${node.opType} '${node.name}') has no static shape; prepare the graph first`,
      );
    }
    return dims as number[];
  };
  const product = (xs: number[]) => xs.reduce((a, b) => a * b, 1);
  const int = (key: string, fallback: number) => {
    const a = node.attributes[key];
    return a?.type === 'int' ? a.value : fallback;
  };
  switch (node.opType) {
    case 'Conv': {
      // out [N, Cout, spatial…] · (Cin/group) · kernel: W is [Cout, Cin/group, kernel…].
      const out = shape(node.outputs[0]);
      const w = shape(node.inputs[1]);
      return product(out) * w[1] * product(w.slice(2));
    }
    case 'Gemm': {
      const a = shape(node.inputs[0]);
      const b = shape(node.inputs[1]);
      const [M, K] = int('transA', 0) ? [a[1], a[0]] : [a[0], a[1]];
      const N = int('transB', 0) ? b[0] : b[1];
      return M * N * K;
    }
    case 'MatMul': {
      const a = shape(node.inputs[0]);
      const out = shape(node.outputs[0]);
      return product(out) * a[a.length - 1];
    }
    default:
      return undefined;
  }
}

/**
 * FLOPs of one training step of a prepared graph, by the same convention: each counted node's
 * forward, plus its weight gradient where that weight (input 1) is trainable, plus its input
 * gradient where a trainable weight lies upstream of its input 0 (the first layer of a fully
 * trained network needs no input gradient; a frozen body needs none at all).
 */
export function trainingFlops(graph: Graph): number {
  const needsGrad = new Set<string>();
  const trainable = (name: string) => graph.initializers.get(name)?.trainable === true;
  let total = 0;
  for (const node of graph.nodes) {
    const macs = nodeMacs(graph, node);
    if (macs !== undefined) {
      total += 2 * macs;
      if (node.inputs[1] && trainable(node.inputs[1])) total += 2 * macs;
      if (needsGrad.has(node.inputs[0])) total += 2 * macs;
    }
    if (node.inputs.some((i) => needsGrad.has(i) || trainable(i))) for (const o of node.outputs) needsGrad.add(o);
  }
  return total;
}
