// A small API to add nodes and weights to a Graph with unique names: used by the architecture
// builders and by graph surgery's heads, so both emit the same layout.
import type { Attribute, Graph, Node } from './ir.ts';
import { initWeights, seedFor, type InitScheme } from './random.ts';
import { fromNumbers, type TensorValue } from './tensor.ts';

export type AttributeInput = number | string | number[] | { floats: number[] } | { float: number } | TensorValue;

export class GraphBuilder {
  private readonly taken = new Set<string>();

  constructor(
    readonly graph: Graph,
    readonly seed = 0,
  ) {
    for (const n of graph.nodes) {
      if (n.name) this.taken.add(n.name);
      for (const o of n.outputs) this.taken.add(o);
    }
    for (const k of graph.initializers.keys()) this.taken.add(k);
    for (const v of [...graph.inputs, ...graph.outputs]) this.taken.add(v.name);
  }

  /** `base`, or `base_1`, `base_2`, … whichever is not yet used in the graph. */
  unique(base: string): string {
    let name = base;
    for (let i = 1; this.taken.has(name); i++) name = `${base}_${i}`;
    this.taken.add(name);
    return name;
  }

  /** Appends a node; returns its output names (one unless `outputs` > 1). */
  node(
    opType: string,
    inputs: string[],
    attributes: Record<string, AttributeInput> = {},
    options: { name?: string; outputs?: number | string[] } = {},
  ): string[] {
    const name = this.unique(options.name ?? opType.toLowerCase());
    const outputs = Array.isArray(options.outputs)
      ? options.outputs.map((o) => this.unique(o))
      : Array.from({ length: options.outputs ?? 1 }, (_, i) =>
          this.unique(i === 0 ? `${name}_output` : `${name}_output_${i}`),
        );
    const node: Node = { name, opType, domain: '', inputs, outputs, attributes: toAttributes(attributes) };
    this.graph.nodes.push(node);
    return outputs;
  }

  /** Shorthand for a single-output node. */
  op(opType: string, inputs: string[], attributes: Record<string, AttributeInput> = {}, name?: string): string {
    return this.node(opType, inputs, attributes, { name })[0];
  }

  /** A new float weight initialised by `scheme` from the builder's seed and the weight's name. */
  weight(name: string, dims: number[], scheme: InitScheme, trainable = true): string {
    const unique = this.unique(name);
    this.graph.setInitializer(
      unique,
      { dtype: 'float32', dims, data: initWeights(dims, scheme, seedFor(this.seed, unique)) },
      trainable,
    );
    return unique;
  }

  /** A constant int64 tensor (shapes, axes, pads). */
  int64(name: string, values: number[]): string {
    const unique = this.unique(name);
    this.graph.setInitializer(unique, fromNumbers('int64', [values.length], values), false);
    return unique;
  }
}

function toAttributes(input: Record<string, AttributeInput>): Record<string, Attribute> {
  const out: Record<string, Attribute> = {};
  for (const [k, v] of Object.entries(input)) {
    if (typeof v === 'number') out[k] = Number.isInteger(v) ? { type: 'int', value: v } : { type: 'float', value: v };
    else if (typeof v === 'string') out[k] = { type: 'string', value: v };
    else if (Array.isArray(v)) out[k] = { type: 'ints', value: v };
    else if ('floats' in v) out[k] = { type: 'floats', value: v.floats };
    else if ('float' in v) out[k] = { type: 'float', value: v.float };
    else out[k] = { type: 'tensor', value: v };
  }
  return out;
}
