// Choosing which weights train: freeze, unfreeze and re-initialise by selector. These change
// flags and replace tensors in the graph they are given (tensor data is never written in place)
// and return counts; a selector that matches nothing is an error, never a silent no-op.
import { ModelError } from '../errors.ts';
import type { Graph, Node } from '../ir.ts';
import { normalSampler, seedFor, seededRandom } from '../random.ts';
import { isFloatType, sizeOf, type TensorValue } from '../tensor.ts';
import {
  ancestry,
  closestNames,
  floatInitializersOf,
  isStateInput,
  layersWithParameters,
  resolveName,
  stateTensors,
} from './common.ts';

/**
 * Which weights: every float initializer ('all'); those whose name, or whose node's name,
 * matches a pattern (a string is a regular expression); everything a tensor depends on
 * ({ before }); or all but the last N layers with parameters, in graph order ({ allButLast }).
 */
export type Selector = 'all' | { pattern: RegExp | string } | { before: string } | { allButLast: number };

export interface SelectionCounts {
  /** Float initializers selected. */
  initializers: number;
  /** Their elements. */
  parameters: number;
  /** Initializers whose trainable flag (or, for reinit, whose values) changed. */
  changed: number;
  /** Nodes that read a selected initializer. */
  layers: number;
}

/** Marks the selected float initializers not trainable. */
export function freeze(graph: Graph, selector: Selector): SelectionCounts {
  const names = selectInitializers(graph, selector, 'freeze');
  let changed = 0;
  for (const name of names) {
    const init = graph.initializers.get(name)!;
    if (init.trainable) changed++;
    init.trainable = false;
  }
  return counts(graph, names, changed);
}

/** Marks the selected float initializers trainable, except state (BatchNormalization running
 * statistics and other constants), which never trains. */
export function unfreeze(graph: Graph, selector: Selector): SelectionCounts {
  const state = stateTensors(graph);
  const selected = selectInitializers(graph, selector, 'unfreeze');
  const names = selected.filter((n) => !state.has(n));
  if (names.length === 0) {
    throw new ModelError(
      `unfreeze ${describeSelector(selector)}: it selects only state (${selected
        .slice(0, 3)
        .map((n) => `'${n}'`)
        .join(
          ', ',
        )}${selected.length > 3 ? ', …' : ''}: BatchNormalization running statistics or constants), which never trains`,
      { file: graph.source },
    );
  }
  let changed = 0;
  for (const name of names) {
    const init = graph.initializers.get(name)!;
    if (!init.trainable) changed++;
    init.trainable = true;
  }
  return counts(graph, names, changed);
}

/**
 * Fresh weights for the selected layers (every node reading a selected initializer): He normal
 * for convolution and dense weights, zero biases, BatchNormalization gamma 1, beta 0, running
 * mean 0, running variance 1. Trainable flags stay as they are.
 */
export function reinit(graph: Graph, selector: Selector, options: { seed: number }): SelectionCounts {
  const names = new Set(selectInitializers(graph, selector, 'reinit'));
  const layers = graph.nodes.filter((n) => floatInitializersOf(graph, n).some((i) => names.has(i)));
  return reinitLayers(graph, layers, options.seed);
}

/** Re-initialises every float initializer the given nodes read (constants excepted). */
export function reinitLayers(graph: Graph, layers: Node[], seed: number): SelectionCounts {
  const done = new Set<string>();
  let parameters = 0;
  for (const node of layers) {
    node.inputs.forEach((name, index) => {
      const init = name ? graph.initializers.get(name) : undefined;
      if (!init || done.has(name) || !isFloatType(init.value.dtype)) return;
      const fill = initialValue(graph, node, index, init.value.dims);
      if (!fill) return;
      done.add(name);
      parameters += sizeOf(init.value.dims);
      graph.setInitializer(name, tensorOf(graph, init.value, fill, seedFor(seed, name)), init.trainable);
    });
  }
  return { initializers: done.size, parameters, changed: done.size, layers: layers.length };
}

/** The float initializers a selector picks, or an error saying why it picks none. */
export function selectInitializers(graph: Graph, selector: Selector, what: string): string[] {
  const floats = [...graph.initializers.values()].filter((i) => isFloatType(i.value.dtype)).map((i) => i.name);
  const fail = (why: string) => new ModelError(`${what} ${describeSelector(selector)}: ${why}`, { file: graph.source });
  let names: string[];
  if (selector === 'all') {
    names = floats;
    if (!names.length) throw fail('the graph has no float initializers');
    return names;
  }
  if ('pattern' in selector) {
    let re: RegExp;
    try {
      re = typeof selector.pattern === 'string' ? new RegExp(selector.pattern) : selector.pattern;
    } catch (e) {
      throw fail(`not a valid regular expression (${(e as Error).message})`);
    }
    const test = (s: string) => {
      re.lastIndex = 0;
      return re.test(s);
    };
    const picked = new Set(floats.filter(test));
    for (const n of graph.nodes)
      if (n.name && test(n.name)) for (const i of floatInitializersOf(graph, n)) picked.add(i);
    names = floats.filter((f) => picked.has(f));
    if (!names.length) {
      const source = typeof selector.pattern === 'string' ? selector.pattern : selector.pattern.source;
      const candidates = [
        ...floats,
        ...graph.nodes
          .filter((n) => floatInitializersOf(graph, n).length)
          .map((n) => n.name)
          .filter(Boolean),
      ];
      throw fail(
        `matches no float initializer and no node with weights; closest names: ${closestNames(source, candidates)
          .map((c) => `'${c}'`)
          .join(', ')}`,
      );
    }
    return names;
  }
  if ('before' in selector) {
    const { tensor } = resolveName(graph, selector.before, `${what} before`);
    const nodes = ancestry(graph, [tensor]).nodes;
    const picked = new Set<string>();
    for (const n of nodes) for (const i of floatInitializersOf(graph, n)) picked.add(i);
    names = floats.filter((f) => picked.has(f));
    if (!names.length)
      throw fail(
        `nothing with weights computes '${tensor}'${graph.feedInputs.some((i) => i.name === tensor) ? ' (it is a graph input)' : ''}`,
      );
    return names;
  }
  if ('allButLast' in selector) {
    const n = selector.allButLast;
    if (!Number.isInteger(n) || n < 0) throw fail(`N must be a non-negative integer, got ${n}`);
    const layers = layersWithParameters(graph);
    if (n >= layers.length)
      throw fail(`the graph has ${layers.length} layers with parameters, so all but the last ${n} is none of them`);
    const last = new Set<string>();
    for (const l of layers.slice(layers.length - n)) for (const i of floatInitializersOf(graph, l)) last.add(i);
    const picked = new Set<string>();
    for (const l of layers.slice(0, layers.length - n))
      for (const i of floatInitializersOf(graph, l)) if (!last.has(i)) picked.add(i);
    return floats.filter((f) => picked.has(f));
  }
  throw fail(`unknown selector ${JSON.stringify(selector)}; accepted: 'all', { pattern }, { before }, { allButLast }`);
}

export function describeSelector(selector: Selector): string {
  if (selector === 'all') return 'all';
  if ('pattern' in selector)
    return `pattern ${selector.pattern instanceof RegExp ? String(selector.pattern) : `/${selector.pattern}/`}`;
  if ('before' in selector) return `before '${selector.before}'`;
  if ('allButLast' in selector) return `all but the last ${selector.allButLast} layers`;
  return JSON.stringify(selector);
}

function counts(graph: Graph, names: string[], changed: number): SelectionCounts {
  const set = new Set(names);
  return {
    initializers: names.length,
    parameters: names.reduce((s, n) => s + sizeOf(graph.initializers.get(n)!.value.dims), 0),
    changed,
    layers: graph.nodes.filter((n) => n.inputs.some((i) => set.has(i))).length,
  };
}

type Fill = { kind: 'constant'; value: number } | { kind: 'he'; fanIn: number };

/** How input `index` of `node` starts out; undefined for constants that are not re-initialised
 * (Dropout's ratio, the averaging matrices of an adaptive pool). */
function initialValue(graph: Graph, node: Node, index: number, dims: number[]): Fill | undefined {
  const receptive = sizeOf(dims.slice(2));
  const zeros: Fill = { kind: 'constant', value: 0 };
  const ones: Fill = { kind: 'constant', value: 1 };
  switch (node.opType) {
    case 'BatchNormalization':
      return [undefined, ones, zeros, zeros, ones][index];
    case 'Conv':
    case 'ConvTranspose':
      if (index === 1)
        return { kind: 'he', fanIn: node.opType === 'Conv' ? (dims[1] ?? 1) * receptive : (dims[0] ?? 1) * receptive };
      return index === 2 ? zeros : undefined;
    case 'Gemm': {
      const trans = node.attributes[index === 0 ? 'transA' : 'transB'];
      const transposed = trans?.type === 'int' && trans.value === 1;
      if (index === 2) return zeros;
      if (dims.length !== 2) return undefined;
      // B is [K, N] ([N, K] transposed): the fan-in is K. A constant A is [M, K].
      return { kind: 'he', fanIn: index === 1 ? (transposed ? dims[1] : dims[0]) : transposed ? dims[0] : dims[1] };
    }
    case 'MatMul':
      if (isStateInput(graph, node, index) || dims.length < 2) return undefined;
      return { kind: 'he', fanIn: index === 1 ? dims[dims.length - 2] : dims[dims.length - 1] };
    case 'Add':
    case 'Sub':
      return zeros;
    case 'Mul':
    case 'Div':
      return ones;
    case 'PRelu':
      return { kind: 'constant', value: 0.25 };
    case 'Dropout':
      return undefined;
    default:
      return dims.length >= 2 ? { kind: 'he', fanIn: dims[1] * receptive } : zeros;
  }
}

function tensorOf(graph: Graph, like: TensorValue, fill: Fill, seed: number): TensorValue {
  const n = sizeOf(like.dims);
  let data: Float32Array | Float64Array;
  if (like.dtype === 'float32') data = new Float32Array(n);
  else if (like.dtype === 'float64') data = new Float64Array(n);
  else
    throw new ModelError(`reinit supports float32 and float64 weights; this one is ${like.dtype}`, {
      file: graph.source,
    });
  if (fill.kind === 'constant') data.fill(fill.value);
  else {
    const normal = normalSampler(seededRandom(seed));
    const std = Math.sqrt(2 / Math.max(1, fill.fanIn));
    for (let i = 0; i < n; i++) data[i] = normal() * std;
  }
  return { dtype: like.dtype, dims: [...like.dims], data };
}
