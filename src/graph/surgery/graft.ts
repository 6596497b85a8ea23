// Appending a new classifier head: pooling to a feature vector, optional hidden dense layers,
// the final dense layer of `classes` units and a Softmax, laid out as torch exports them
// (Gemm with transB=1 and weight [out, in]) so the runtime sees one convention.
import { GraphBuilder } from '../builder.ts';
import { ModelError } from '../errors.ts';
import type { Graph } from '../ir.ts';
import { initWeights, seedFor, type InitScheme } from '../random.ts';
import { sizeOf } from '../tensor.ts';
import { prune, refresh, shapeOf, showShape } from './common.ts';
import { cutAt } from './cut.ts';

export interface DenseSpec {
  units: number;
  /** Default 'relu'. */
  activation?: 'relu' | 'sigmoid' | 'none';
}

export interface HeadSpec {
  /** How a 4-D feature map becomes a vector: global average or max pooling, or flattening.
   * Leave it out (or 'none') for a 2-D input. */
  pooling?: 'avg' | 'max' | 'flatten' | 'none';
  /** Dropout ratio before every dense layer (0 or absent: no Dropout). */
  dropout?: number;
  /** Hidden dense layers, in order. */
  dense?: DenseSpec[];
  classes: number;
  /** End with Softmax (default true). */
  softmax?: boolean;
  /** Seed of the new weights. */
  seed: number;
  /** Scheme for every new weight matrix. Default: He for hidden ReLU layers, Glorot otherwise
   * (the final layer included). Biases start at zero. */
  init?: 'he' | 'glorot';
  /** Attach the head at this tensor (or node) instead of the current output: the graph is
   * cut there first. */
  at?: string;
  /** Prefix of the new nodes' and weights' names (default 'head'). */
  name?: string;
}

export interface GraftResult {
  /** A new graph; the input graph is not modified. */
  graph: Graph;
  /** The head's output, now the graph's only output. */
  output: string;
  /** The tensor the head reads. */
  input: string;
  /** Names of the nodes added. */
  nodes: string[];
  /** Elements of the new (trainable) weights. */
  parameters: number;
  warnings: string[];
}

/** Appends a classifier head (see HeadSpec); new weights are trainable. */
export function graft(graph: Graph, spec: HeadSpec): GraftResult {
  validateSpec(graph, spec);
  const warnings: string[] = [];
  let g: Graph;
  const current = graph.outputs[0]?.name;
  if (spec.at !== undefined && spec.at !== current) {
    const cut = cutAt(graph, spec.at);
    g = cut.graph;
    warnings.push(...cut.warnings);
  } else {
    g = graph.clone();
    if (g.outputs.length > 1) {
      warnings.push(
        `the graph had ${g.outputs.length} outputs; the head is attached to the first, '${current}', and the others are dropped`,
      );
    }
  }
  const input = g.outputs[0].name;
  const shape = shapeOf(g, input);
  const prefix = spec.name ?? 'head';
  const b = new GraphBuilder(g, spec.seed);
  const before = g.nodes.length;
  let x = input;
  let features: number | string | null | undefined;
  const pooling = spec.pooling ?? 'none';
  if (!shape) throw new ModelError(`cannot attach a head at '${input}': its shape is unknown`, { file: g.source });
  if (shape.length === 4 || shape.length === 3) {
    if (pooling === 'none') {
      const c = shape[1];
      const flat = shape.slice(1).every((d) => typeof d === 'number') ? sizeOf(shape.slice(1) as number[]) : '?';
      throw new ModelError(
        `the head's dense layers need a 2-D [N, features] input, but '${input}' is ${shape.length}-D ${showShape(shape)}: ` +
          `add pooling 'avg' (GlobalAveragePool + Flatten, ${c} features), 'max' (GlobalMaxPool + Flatten, ${c} features) or 'flatten' (Flatten, ${flat} features)`,
        { file: g.source },
      );
    }
    if (pooling === 'avg' || pooling === 'max') {
      x = b.op(pooling === 'avg' ? 'GlobalAveragePool' : 'GlobalMaxPool', [x], {}, `${prefix}_pool`);
      features = shape[1];
    } else {
      features = shape.slice(1).every((d) => typeof d === 'number') ? sizeOf(shape.slice(1) as number[]) : null;
    }
    x = b.op('Flatten', [x], { axis: 1 }, `${prefix}_flatten`);
  } else if (shape.length === 2) {
    if (pooling === 'avg' || pooling === 'max') {
      throw new ModelError(
        `pooling '${pooling}' needs a 4-D [N, C, H, W] feature map, but '${input}' is already 2-D ${showShape(shape)}: leave pooling out`,
        { file: g.source },
      );
    }
    features = shape[1];
  } else {
    throw new ModelError(
      `cannot attach a classifier head at '${input}' ${showShape(shape)}: expected a 4-D feature map [N, C, H, W] or a 2-D [N, features] tensor`,
      { file: g.source },
    );
  }
  if (typeof features !== 'number') {
    throw new ModelError(
      `cannot size the head's first dense layer: the feature count of '${input}' ${showShape(shape)} (after pooling '${pooling}') is not known`,
      { file: g.source },
    );
  }

  let parameters = 0;
  const dense = (label: string, units: number, scheme: InitScheme): string => {
    if (spec.dropout) x = dropout(g, b, x, spec.dropout, `${prefix}_dropout_${label}`);
    const w = weight(g, b, `${prefix}.${label}.weight`, [units, features as number], spec.init ?? scheme, spec.seed);
    const bias = weight(g, b, `${prefix}.${label}.bias`, [units], 'zeros', spec.seed);
    parameters += units * (features as number) + units;
    features = units;
    const output = label === 'classifier' ? `${prefix}_logits` : `${prefix}_${label}_output`;
    return b.node('Gemm', [x, w, bias], { transB: 1 }, { name: `${prefix}_${label}`, outputs: [output] })[0];
  };
  (spec.dense ?? []).forEach((layer, i) => {
    const activation = layer.activation ?? 'relu';
    x = dense(`dense${i + 1}`, layer.units, activation === 'relu' ? 'he' : 'glorot');
    if (activation === 'relu') x = b.op('Relu', [x], {}, `${prefix}_relu${i + 1}`);
    if (activation === 'sigmoid') x = b.op('Sigmoid', [x], {}, `${prefix}_sigmoid${i + 1}`);
  });
  x = dense('classifier', spec.classes, 'glorot');
  if (spec.softmax ?? true)
    x = b.node('Softmax', [x], { axis: 1 }, { name: `${prefix}_softmax`, outputs: [`${prefix}_probabilities`] })[0];

  g.outputs = [{ name: x }];
  prune(g);
  refresh(g);
  return { graph: g, output: x, input, nodes: g.nodes.slice(before).map((n) => n.name), parameters, warnings };
}

function validateSpec(graph: Graph, spec: HeadSpec): void {
  const bad = (what: string) => new ModelError(`head: ${what}`, { file: graph.source });
  if (!Number.isInteger(spec.classes) || spec.classes < 1)
    throw bad(`classes must be a positive integer, got ${spec.classes}`);
  if (!Number.isInteger(spec.seed)) throw bad(`seed must be an integer, got ${spec.seed}`);
  if (spec.pooling !== undefined && !['avg', 'max', 'flatten', 'none'].includes(spec.pooling))
    throw bad(`pooling '${spec.pooling}' is not accepted; accepted: 'avg', 'max', 'flatten' or none`);
  if (spec.dropout !== undefined && !(spec.dropout >= 0 && spec.dropout < 1))
    throw bad(`dropout must be in [0, 1), got ${spec.dropout}`);
  if (spec.init !== undefined && spec.init !== 'he' && spec.init !== 'glorot')
    throw bad(`init '${spec.init}' is not accepted; accepted: 'he' or 'glorot'`);
  for (const [i, d] of (spec.dense ?? []).entries()) {
    if (!Number.isInteger(d.units) || d.units < 1)
      throw bad(`dense layer ${i + 1}: units must be a positive integer, got ${d.units}`);
    if (d.activation !== undefined && !['relu', 'sigmoid', 'none'].includes(d.activation))
      throw bad(
        `dense layer ${i + 1}: activation '${d.activation}' is not accepted; accepted: 'relu', 'sigmoid' or 'none'`,
      );
  }
}

function weight(g: Graph, b: GraphBuilder, name: string, dims: number[], scheme: InitScheme, seed: number): string {
  const unique = b.unique(name);
  g.setInitializer(unique, { dtype: 'float32', dims, data: initWeights(dims, scheme, seedFor(seed, unique)) }, true);
  return unique;
}

/** Dropout as the model's opset spells it: the ratio an attribute before opset 12, an input
 * from 12 on (left out at the default 0.5; otherwise a constant that never trains). */
function dropout(g: Graph, b: GraphBuilder, x: string, ratio: number, name: string): string {
  if (g.opset < 12) return b.op('Dropout', [x], { ratio: { float: ratio } }, name);
  if (ratio === 0.5) return b.op('Dropout', [x], {}, name);
  const r = b.unique(`${name}.ratio`);
  g.setInitializer(r, { dtype: 'float32', dims: [], data: Float32Array.of(ratio) }, false);
  return b.op('Dropout', [x, r], {}, name);
}
