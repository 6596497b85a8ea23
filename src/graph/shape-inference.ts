// Output dtype and shape of each op from its inputs' dtypes, shapes and (where the op reads
// them) constant values. The rules live with their ops (src/ops/, one registry); what a rule
// sees and the shared shape arithmetic are in shape-context.ts, re-exported here.
import type { Graph, Node } from './ir.ts';
import { opDefinition } from '../ops/registry.ts';
import type { ShapeRule } from './shape-context.ts';

export * from './shape-context.ts';
export { SUPPORTED_OPS, checkNodeArity, checkNodeAttributes } from '../ops/registry.ts';

/** The rule for an op of the default domain, or an error listing the supported ops. */
export function shapeRuleFor(graph: Graph, node: Node): ShapeRule {
  return opDefinition(graph, node).shape;
}
