// The batch dimension after the fact: zoo models often fix it to 1, in the input declaration and
// in the flatten before the classifier (Reshape to [1, C·H·W]); training needs other sizes.
import { GraphBuilder } from '../builder.ts';
import { ModelError } from '../errors.ts';
import type { Dim, Graph } from '../ir.ts';
import { fromNumbers, toNumbers } from '../tensor.ts';
import { forgetShapes, refresh, shapeOf } from './common.ts';

/**
 * Rewrites each Reshape that flattens a 4-D map with the batch size written into its target
 * ([1, 25088]) to copy the batch dimension instead ([0, 25088]); the same numbers at that batch
 * size, and any other batch size now fits. Returns how many it rewrote (in place).
 */
export function makeBatchFlexible(graph: Graph): number {
  if (graph.opset < 5) return 0;
  const consumers = graph.consumers();
  let count = 0;
  for (const node of graph.nodes) {
    if (node.opType !== 'Reshape') continue;
    const name = node.inputs[1];
    const target = name ? graph.initializers.get(name) : undefined;
    if (!target || target.value.dtype !== 'int64') continue;
    const dims = toNumbers(target.value);
    const x = shapeOf(graph, node.inputs[0]);
    if (!x || x.length !== 4 || dims.length !== 2 || typeof x[0] !== 'number' || dims[0] !== x[0] || dims[0] <= 0)
      continue;
    const flexible = fromNumbers('int64', [2], [0, dims[1]]);
    if ((consumers.get(name) ?? []).length === 1) {
      graph.setInitializer(name, flexible, false);
    } else {
      const unique = new GraphBuilder(graph).unique(`${name}_any_batch`);
      graph.setInitializer(unique, flexible, false);
      node.inputs = node.inputs.map((i, k) => (k === 1 ? unique : i));
    }
    count++;
  }
  return count;
}

/** A copy of `graph` whose data inputs have batch size `batch` (a number, or a name for a
 * symbolic dimension), with every shape re-inferred. */
export function setBatchSize(graph: Graph, batch: number | string): Graph {
  if (typeof batch === 'number' && (!Number.isInteger(batch) || batch < 1)) {
    throw new ModelError(`batch size must be a positive integer or a symbolic name, got ${batch}`, {
      file: graph.source,
    });
  }
  const g = graph.clone();
  makeBatchFlexible(g);
  const fed = new Set(g.feedInputs.map((i) => i.name));
  for (const input of g.inputs) {
    if (!fed.has(input.name) || !input.shape?.length) continue;
    const shape: Dim[] = [batch, ...input.shape.slice(1)];
    input.shape = shape;
    g.values.set(input.name, { ...g.values.get(input.name), name: input.name, shape: [...shape] });
  }
  forgetShapes(
    g,
    [...g.values.keys()].filter((k) => !fed.has(k)),
  );
  return refresh(g);
}
