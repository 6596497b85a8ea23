// Another input size after the fact: zoo classifiers are exported for 224×224, and their heads
// hard-code what that size gives (a pooling window equal to the last 7×7 map, a flatten to
// 256·6·6 or 512·7·7 features). These rewrites keep every layer and every weight and make the
// head work at another input size (a smaller one, to train fast on a software adapter).
import { GraphBuilder } from '../builder.ts';
import { ModelError } from '../errors.ts';
import type { Attribute, Graph, Node } from '../ir.ts';
import { forgetShapes, keepUpTo, refresh, shapeOf, showShape } from './common.ts';

export interface ResizeSummary {
  /** AveragePool nodes whose window was the whole map at the original size, now GlobalAveragePool. */
  globalPools: string[];
  /** Flattens now fed by an adaptive average pool back to the original grid: where, from, to. */
  adaptivePools: { before: string; from: [number, number]; to: [number, number]; how: 'AveragePool' | 'MatMul' }[];
}

/**
 * A copy of `graph` whose image input is `size`×`size`, with two exact rewrites of the head:
 *
 * 1. A trailing AveragePool whose window covers the whole feature map at the original size
 *    (output 1×1; no padding counted in the average) becomes GlobalAveragePool. At the original
 *    size both compute the same mean; at any other size the global pool still gives 1×1.
 * 2. A Flatten or 2-D Reshape of a 4-D map (the fc6 input of AlexNet or VGG) is fed by an
 *    adaptive average pool (torch's nn.AdaptiveAvgPool2d windows [⌊i·S/T⌋, ⌈(i+1)·S/T⌉)) from the
 *    map at the new size back to its H×W at the original size, so the classifier's weights keep
 *    their shapes. As torchvision exports it: nothing when the sizes match, an AveragePool with
 *    kernel = stride when the new map is a multiple of the grid, else two MatMuls with constant
 *    (non-trainable) averaging matrices around a Transpose each (every op here has a gradient
 *    rule, so the result trains). A map smaller than the grid is replicated (1×1 → 6×6).
 *
 * Every other layer is unchanged; an input too small for some layer fails shape inference
 * naming that layer. The graph given is untouched.
 */
export function adaptToInputSize(graph: Graph, size: number): { graph: Graph; summary: ResizeSummary } {
  if (!Number.isInteger(size) || size < 1)
    throw new ModelError(`input size must be a positive integer, got ${size}`, { file: graph.source });
  const feeds = graph.feedInputs;
  if (feeds.length !== 1)
    throw new ModelError(`adaptToInputSize needs one image input; this model has ${feeds.length}`, {
      file: graph.source,
    });
  const input = feeds[0];
  const original = input.shape;
  if (!original || original.length !== 4 || typeof original[2] !== 'number' || typeof original[3] !== 'number') {
    throw new ModelError(`adaptToInputSize needs a static N×C×H×W input, '${input.name}' is ${showShape(original)}`, {
      file: graph.source,
    });
  }
  const g = graph.clone();
  const summary: ResizeSummary = { globalPools: [], adaptivePools: [] };
  const fedName = input.name;

  // 1. Whole-map AveragePools (decided on the shapes at the original size).
  for (const node of g.nodes) {
    if (node.opType === 'AveragePool' && coversWholeMap(g, node)) {
      node.opType = 'GlobalAveragePool';
      node.attributes = {};
      summary.globalPools.push(node.name || node.outputs[0]);
    }
  }
  // The grid each flatten of a 4-D map expects (original size).
  const flattens = g.nodes
    .filter((n) => isFlattenOfMap(g, n))
    .map((n) => ({ node: n, grid: (shapeOf(g, n.inputs[0]) as number[]).slice(2) as [number, number] }));

  // The new input size, every shape re-inferred from there.
  const shape = [original[0], original[1], size, size];
  g.inputs = g.inputs.map((i) => (i.name === fedName ? { ...i, shape: [...shape] } : i));
  g.values.set(fedName, { ...g.values.get(fedName), name: fedName, shape: [...shape] });
  const fed = new Set([fedName]);
  forgetShapes(
    g,
    [...g.values.keys()].filter((k) => !fed.has(k)),
  );

  // 2. Adaptive pools before the flattens whose map changed.
  const builder = new GraphBuilder(g);
  for (const { node, grid } of flattens) {
    const x = node.inputs[0];
    const at = keepUpTo(g, x);
    const dims = shapeOf(at, x);
    if (!dims || dims.length !== 4 || dims.slice(2).some((d) => typeof d !== 'number')) {
      throw new ModelError(
        `adaptToInputSize: the map '${x}' flattened by '${node.name}' is ${showShape(dims)} at input ${size}×${size}; a static 4-D map is needed`,
        { file: g.source, node },
      );
    }
    const [h, w] = dims.slice(2) as number[];
    const [th, tw] = grid;
    if (h === th && w === tw) continue;
    const scope = node.name || node.outputs[0];
    let pooled: string;
    let how: 'AveragePool' | 'MatMul';
    if (h % th === 0 && w % tw === 0) {
      pooled = builder.op(
        'AveragePool',
        [x],
        { kernel_shape: [h / th, w / tw], strides: [h / th, w / tw] },
        `${scope}_adaptive_pool`,
      );
      how = 'AveragePool';
    } else {
      const columns = constant(g, builder, `${scope}_adaptive_columns`, [w, tw], averagingMatrix(w, tw));
      const rows = constant(g, builder, `${scope}_adaptive_rows`, [h, th], averagingMatrix(h, th));
      const a = builder.op('MatMul', [x, columns], {}, `${scope}_adaptive_pool_w`); // [N, C, h, tw]
      const b = builder.op('Transpose', [a], { perm: [0, 1, 3, 2] }, `${scope}_adaptive_swap`); // [N, C, tw, h]
      const c = builder.op('MatMul', [b, rows], {}, `${scope}_adaptive_pool_h`); // [N, C, tw, th]
      pooled = builder.op('Transpose', [c], { perm: [0, 1, 3, 2] }, `${scope}_adaptive_unswap`); // [N, C, th, tw]
      how = 'MatMul';
    }
    node.inputs = node.inputs.map((i, k) => (k === 0 ? pooled : i));
    summary.adaptivePools.push({ before: scope, from: [h, w], to: [th, tw], how });
  }
  return { graph: refresh(g), summary };
}

/**
 * Logits of shape [N, C, 1, 1] (SqueezeNet: a global pool over class maps) flattened to [N, C]
 * — the same numbers — with a Flatten inserted before a final Softmax (or as the new output),
 * as the trainer's loss reads [batch, classes]. Returns how many it flattened (0 or 1), in place.
 */
export function flattenLogits(graph: Graph): number {
  if (graph.outputs.length !== 1) return 0;
  const out = graph.outputs[0].name;
  const producer = graph.producers().get(out);
  const softmax = producer?.opType === 'Softmax' ? producer : undefined;
  const logits = softmax ? softmax.inputs[0] : out;
  const dims = shapeOf(graph, logits);
  if (!dims || dims.length !== 4 || dims[2] !== 1 || dims[3] !== 1) return 0;
  const builder = new GraphBuilder(graph);
  const flat = builder.op('Flatten', [logits], { axis: 1 }, `${logits}_flatten`);
  if (softmax) {
    softmax.inputs = [flat];
    softmax.attributes = { ...softmax.attributes, axis: { type: 'int', value: 1 } };
    forgetShapes(graph, softmax.outputs);
  } else {
    graph.outputs = [{ name: flat, dtype: 'float32' }];
  }
  refresh(graph);
  return 1;
}

function ints(node: Node, name: string, fallback: number[]): number[] {
  const a: Attribute | undefined = node.attributes[name];
  return a?.type === 'ints' ? a.value : fallback;
}

function int(node: Node, name: string, fallback: number): number {
  const a: Attribute | undefined = node.attributes[name];
  return a?.type === 'int' ? a.value : fallback;
}

/** An AveragePool whose single window covers the whole 2-D map, padding not counted. */
function coversWholeMap(g: Graph, node: Node): boolean {
  const x = shapeOf(g, node.inputs[0]);
  const y = shapeOf(g, node.outputs[0]);
  if (!x || !y || x.length !== 4 || y[2] !== 1 || y[3] !== 1) return false;
  const auto = node.attributes.auto_pad;
  if (auto && auto.type === 'string' && auto.value !== 'NOTSET') return false;
  const kernel = ints(node, 'kernel_shape', []);
  const pads = ints(node, 'pads', [0, 0, 0, 0]);
  const dilations = ints(node, 'dilations', [1, 1]);
  if (kernel.length !== 2 || dilations.some((d) => d !== 1)) return false;
  if (pads.some((p) => p !== 0) && int(node, 'count_include_pad', 0) !== 0) return false;
  // The one window [−pad_begin, kernel − pad_begin) must hold [0, size).
  return [0, 1].every((a) => typeof x[2 + a] === 'number' && kernel[a] - pads[a] >= (x[2 + a] as number));
}

/** A Flatten (axis 1) or a Reshape to 2-D of a 4-D map (not a weight) with a grid larger than 1×1. */
function isFlattenOfMap(g: Graph, node: Node): boolean {
  if (g.initializers.has(node.inputs[0])) return false;
  const x = shapeOf(g, node.inputs[0]);
  const y = shapeOf(g, node.outputs[0]);
  if (!x || x.length !== 4 || !y || y.length !== 2) return false;
  if (typeof x[2] !== 'number' || typeof x[3] !== 'number' || x[2] * x[3] === 1) return false;
  if (node.opType === 'Flatten') return int(node, 'axis', 1) === 1;
  return node.opType === 'Reshape';
}

function constant(g: Graph, builder: GraphBuilder, name: string, dims: number[], data: Float32Array): string {
  const unique = builder.unique(name);
  g.setInitializer(unique, { dtype: 'float32', dims, data }, false);
  return unique;
}

/** The [size, target] matrix averaging torch's adaptive pooling windows along one axis. */
function averagingMatrix(size: number, target: number): Float32Array {
  const m = new Float32Array(size * target);
  for (let i = 0; i < target; i++) {
    const start = Math.floor((i * size) / target);
    const end = Math.ceil(((i + 1) * size) / target);
    for (let s = start; s < end; s++) m[s * target + i] = 1 / (end - start);
  }
  return m;
}
