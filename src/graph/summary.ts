// A per-node account of a prepared graph: output shapes, parameters, what trains.
import type { Dim, Graph } from './ir.ts';
import { isFloatType, sizeOf } from './tensor.ts';

export interface NodeSummary {
  name: string;
  opType: string;
  outputShapes: Dim[][];
  /** Elements of float initializers this node reads (first reader only: shared weights count once). */
  parameters: number;
  trainableParameters: number;
  /** 'yes', 'no', 'partly', or '' when the node has no parameters. */
  trainable: 'yes' | 'no' | 'partly' | '';
}

export interface GraphSummary {
  source?: string;
  opset: number;
  inputs: { name: string; dtype?: string; shape?: Dim[] }[];
  outputs: { name: string; dtype?: string; shape?: Dim[] }[];
  nodes: NodeSummary[];
  parameters: number;
  trainableParameters: number;
  /** BatchNormalization running statistics and other non-trainable float tensors. */
  nonTrainableParameters: number;
}

export function summarizeGraph(graph: Graph): GraphSummary {
  const counted = new Set<string>();
  const nodes: NodeSummary[] = graph.nodes.map((n) => {
    let parameters = 0;
    let trainableParameters = 0;
    for (const i of n.inputs) {
      const init = graph.initializers.get(i);
      if (!init || counted.has(i) || !isFloatType(init.value.dtype)) continue;
      counted.add(i);
      const size = sizeOf(init.value.dims);
      parameters += size;
      if (init.trainable) trainableParameters += size;
    }
    const trainable =
      parameters === 0 ? '' : trainableParameters === parameters ? 'yes' : trainableParameters === 0 ? 'no' : 'partly';
    return {
      name: n.name,
      opType: n.opType,
      outputShapes: n.outputs.filter(Boolean).map((o) => graph.values.get(o)?.shape ?? []),
      parameters,
      trainableParameters,
      trainable,
    };
  });
  const parameters = graph.parameterCount();
  const trainableParameters = graph.parameterCount((i) => i.trainable);
  const describe = (v: { name: string }) => ({
    name: v.name,
    dtype: graph.values.get(v.name)?.dtype,
    shape: graph.values.get(v.name)?.shape,
  });
  return {
    source: graph.source,
    opset: graph.opset,
    inputs: graph.feedInputs.map(describe),
    outputs: graph.outputs.map(describe),
    nodes,
    parameters,
    trainableParameters,
    nonTrainableParameters: parameters - trainableParameters,
  };
}
