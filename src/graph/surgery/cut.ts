// Cutting a network at a tensor: what the cut keeps, what it refuses, and the places worth
// cutting (block boundaries), found from the graph's structure rather than from layer names.
import { ModelError } from '../errors.ts';
import type { Dim, Graph, Node } from '../ir.ts';
import { isFloatType } from '../tensor.ts';
import {
  ACTIVATIONS,
  ancestry,
  dataInputs,
  describeNode,
  descendants,
  keepUpTo,
  layersWithParameters,
  parametersRead,
  resolveName,
  shapeOf,
  showShape,
  stateTensors,
  type CutResult,
} from './common.ts';
import { findHead } from './head.ts';

export type { CutResult } from './common.ts';

/**
 * Keeps what `name` (a tensor, or a node meaning its first output) depends on and makes it the
 * graph's only output. Refuses graph inputs, weights and shape computations; a cut inside a block
 * is made but comes back with a warning.
 */
export function cutAt(graph: Graph, name: string): CutResult {
  const { tensor } = resolveName(graph, name, 'cutAt');
  refuseUncuttable(graph, tensor);
  const warnings: string[] = [];
  const inBlock = inBlockWarning(graph, tensor);
  if (inBlock) warnings.push(inBlock);
  const g = keepUpTo(graph, tensor);
  return { graph: g, tensor, shape: shapeOf(g, tensor), warnings };
}

/** Throws, with the reason and an alternative, when `tensor` cannot be a cut. */
export function refuseUncuttable(graph: Graph, tensor: string): void {
  const consumers = graph.consumers();
  const readers = consumers.get(tensor) ?? [];
  const file = graph.source;
  if (graph.feedInputs.some((i) => i.name === tensor)) {
    const next = readers[0]?.outputs.find(Boolean);
    throw new ModelError(
      `cannot cut at '${tensor}': it is a graph input, so the cut would keep no layers${next ? `; the earliest cut is '${next}' (the output of ${describeNode(readers[0])})` : ''}`,
      { file },
    );
  }
  const shapeReader = shapeUse(graph, tensor, consumers);
  if (shapeReader) {
    const data = dataInputs(graph, shapeReader).find((i) => i !== tensor);
    throw new ModelError(
      `cannot cut at '${tensor}': it is a shape computation (an integer tensor read only as the shape or axes input of ${describeNode(shapeReader)}), not a feature map${data ? `; cut at a data tensor instead, e.g. '${data}' (that node's data input)` : ''}`,
      { file },
    );
  }
  const init = graph.initializers.get(tensor);
  if (init) {
    const reader = readers[0];
    const kind = isFloatType(init.value.dtype) ? 'a weight' : 'a constant';
    const out = reader?.outputs.find(Boolean);
    throw new ModelError(
      `cannot cut at '${tensor}': it is ${kind} (an initializer${reader ? ` read by ${describeNode(reader)}` : ''}), not a computed tensor${out ? `; cut at that node's output '${out}' instead` : ''}`,
      { file },
    );
  }
}

/** Where the kept graph would end inside a block: another branch reads a tensor from before
 * the cut. Undefined when `tensor` separates everything before it from everything after. */
export interface Bypass {
  /** A tensor from before the cut that a node after the cut also reads. */
  tensor: string;
  /** That node. */
  reader: Node;
  /** Where the cut branch and the bypassing branch meet again (the residual Add, the Concat). */
  merge?: Node;
}

export function findBypass(
  graph: Graph,
  tensor: string,
  producers = graph.producers(),
  consumers = graph.consumers(),
): Bypass | undefined {
  const before = ancestry(graph, [tensor], producers);
  for (const n of graph.nodes) {
    if (!before.nodes.has(n)) continue;
    for (const t of [...n.inputs, ...n.outputs]) {
      if (!t || t === tensor || graph.initializers.has(t)) continue;
      const reader = (consumers.get(t) ?? []).find((c) => !before.nodes.has(c));
      if (!reader) continue;
      const afterCut = descendants(tensor, consumers);
      const afterReader = new Set([reader]);
      for (const o of reader.outputs) if (o) for (const d of descendants(o, consumers)) afterReader.add(d);
      const merge = graph.nodes.find((m) => afterCut.has(m) && afterReader.has(m));
      return { tensor: t, reader, merge };
    }
  }
  return undefined;
}

function inBlockWarning(graph: Graph, tensor: string): string | undefined {
  const bypass = findBypass(graph, tensor);
  if (!bypass) return undefined;
  const what =
    bypass.merge?.opType === 'Concat'
      ? 'a module (parallel branches joined by a Concat)'
      : bypass.merge && ['Add', 'Sum'].includes(bypass.merge.opType)
        ? 'a residual block'
        : 'a block';
  let nearby = '';
  try {
    const points = cutPoints(graph);
    const before = ancestry(graph, [tensor]).tensors;
    const earlier = points.filter((p) => before.has(p.tensor)).pop();
    const later = points.find((p) => !before.has(p.tensor));
    const options = [earlier && `'${earlier.tensor}' (before)`, later && `'${later.tensor}' (after)`].filter(Boolean);
    if (options.length) nearby = `; the nearest block boundaries are ${options.join(' and ')}`;
  } catch {
    // No cut points (an unusual graph): the warning stands without suggestions.
  }
  return `'${tensor}' is inside ${what}: ${describeNode(bypass.reader)} also reads '${bypass.tensor}' from before the cut${bypass.merge ? ` and that branch rejoins at ${describeNode(bypass.merge)}` : ''}, so the cut graph ends partway through the block and drops the other branch${nearby}`;
}

/** Inputs of ops that are shapes, axes or sizes rather than data. */
const SHAPE_INPUTS: Record<string, number[]> = {
  Reshape: [1],
  Expand: [1],
  Tile: [1],
  ConstantOfShape: [0],
  Slice: [1, 2, 3, 4],
  Pad: [1, 3],
  Squeeze: [1],
  Unsqueeze: [1],
  Resize: [1, 2, 3],
  Upsample: [1],
  TopK: [1],
  Range: [0, 1, 2],
  OneHot: [1],
  Split: [1],
  ReduceMean: [1],
  ReduceSum: [1],
  ReduceMax: [1],
  ReduceMin: [1],
  ReduceProd: [1],
  CumSum: [1],
  Gather: [],
};
const INTEGER_TYPES = new Set(['int64', 'int32', 'int16', 'int8', 'uint64', 'uint32', 'uint16', 'uint8']);

/** The node that finally reads `tensor` as a shape, when every use of it (directly or through
 * integer arithmetic such as Shape → Gather → Concat) is a shape input. */
function shapeUse(graph: Graph, tensor: string, consumers: Map<string, Node[]>, depth = 0): Node | undefined {
  const dtype = graph.initializers.get(tensor)?.value.dtype ?? graph.values.get(tensor)?.dtype;
  if (!dtype || !INTEGER_TYPES.has(dtype) || depth > 32) return undefined;
  const readers = consumers.get(tensor) ?? [];
  if (readers.length === 0) return undefined;
  let found: Node | undefined;
  for (const r of readers) {
    const positions = r.inputs.map((i, k) => (i === tensor ? k : -1)).filter((k) => k >= 0);
    if (positions.every((k) => SHAPE_INPUTS[r.opType]?.includes(k))) {
      found ??= r;
      continue;
    }
    const outputs = r.outputs.filter(Boolean);
    const further = outputs.map((o) => shapeUse(graph, o, consumers, depth + 1));
    if (outputs.length === 0 || further.some((f) => !f)) return undefined;
    found ??= further[0];
  }
  return found;
}

// ─── cut points ───────────────────────────────────────────────────────────────────────────

export interface CutPoint {
  tensor: string;
  /** The node producing the tensor. */
  node: string;
  opType: string;
  /** pool: a pooling output; residual: a residual merge (Add/Sum, with its activation);
   * concat: an Inception module or SqueezeNet fire output; features: what the head reads. */
  kind: 'pool' | 'residual' | 'concat' | 'features';
  shape: Dim[] | undefined;
  /** Float initializer elements the cut keeps (BatchNormalization statistics included). */
  parameters: number;
  /** Layers with parameters the cut keeps. */
  layers: number;
  /** The last block of a run of same-sized blocks (a ResNet stage, an Inception group). */
  stageEnd: boolean;
  /** The tensor the body hands to the classifier head: the include_top=false cut. */
  features: boolean;
}

const POOLS = new Set(['MaxPool', 'AveragePool', 'LpPool', 'GlobalMaxPool', 'GlobalAveragePool']);
const MERGES = new Set(['Add', 'Sum', 'Concat']);
// A merge followed by one of these ends its block after the activation.
const BLOCK_ACTIVATIONS = new Set([...ACTIVATIONS, 'PRelu', 'Mish']);

/**
 * Places a user can cut for transfer learning: pooling outputs, residual block outputs (after
 * the Add/Sum and its ReLU), module outputs (the Concat of an Inception module or SqueezeNet
 * fire module), and the body's final feature map. Only places that separate the network (no
 * branch crosses them) and that keep at least one parameter are offered.
 */
export function cutPoints(graph: Graph): CutPoint[] {
  const producers = graph.producers();
  const consumers = graph.consumers();
  const head = findHead(graph);
  const featureTensor = head?.featureTensor ?? graph.outputs[0]?.name;
  if (!featureTensor) return [];
  const body = ancestry(graph, [featureTensor], producers).nodes;
  const state = stateTensors(graph);
  const candidates: { tensor: string; node: Node; kind: CutPoint['kind'] }[] = [];
  for (const n of graph.nodes) {
    if (!body.has(n)) continue;
    let kind: CutPoint['kind'] | undefined;
    if (POOLS.has(n.opType)) kind = 'pool';
    else if (MERGES.has(n.opType) && dataInputs(graph, n).length >= 2)
      kind = n.opType === 'Concat' ? 'concat' : 'residual';
    if (!kind) continue;
    let tensor = n.outputs[0];
    let node = n;
    const readers = consumers.get(tensor) ?? [];
    if (kind !== 'pool' && readers.length === 1 && BLOCK_ACTIVATIONS.has(readers[0].opType) && body.has(readers[0])) {
      node = readers[0];
      tensor = node.outputs[0];
    }
    candidates.push({ tensor, node, kind });
  }
  if (!candidates.some((c) => c.tensor === featureTensor)) {
    const node = producers.get(featureTensor);
    if (node) candidates.push({ tensor: featureTensor, node, kind: 'features' });
  }
  const points: CutPoint[] = [];
  for (const c of candidates) {
    if (findBypass(graph, c.tensor, producers, consumers)) continue;
    const kept = ancestry(graph, [c.tensor], producers).nodes;
    const parameters = parametersRead(graph, kept);
    if (parameters === 0) continue;
    const keptOrdered = graph.nodes.filter((n) => kept.has(n));
    points.push({
      tensor: c.tensor,
      node: c.node.name,
      opType: c.node.opType,
      kind: c.kind,
      shape: shapeOf(graph, c.tensor),
      parameters,
      layers: layersWithParameters(graph, keptOrdered, state).length,
      stageEnd: false,
      features: c.tensor === featureTensor,
    });
  }
  const spatial = (s: Dim[] | undefined) => JSON.stringify(s?.slice(2) ?? null);
  points.forEach((p, i) => {
    const next = points.slice(i + 1).find((q) => q.kind === p.kind);
    p.stageEnd = p.kind === 'pool' || p.features || !next || spatial(next.shape) !== spatial(p.shape);
  });
  return points;
}

/** A cut about half-way through the body (by layers with parameters): case 2's default. */
export function defaultCutPoint(graph: Graph, points = cutPoints(graph)): CutPoint | undefined {
  const inner = points.filter((p) => !p.features);
  const body = points.find((p) => p.features);
  if (!inner.length) return undefined;
  const half = (body?.layers ?? Math.max(...inner.map((p) => p.layers))) / 2;
  let best = inner[0];
  for (const p of inner) if (Math.abs(p.layers - half) <= Math.abs(best.layers - half)) best = p;
  return best;
}

/** A table of cut points for `graft inspect`. */
export function formatCutPoints(points: CutPoint[]): string {
  if (!points.length) return 'cut points: none found (no pooling, residual or module boundaries)\n';
  const rows = points.map((p, i) => [
    String(i),
    p.tensor,
    `${p.node || '(unnamed)'} (${p.opType})`,
    p.features
      ? `${p.kind === 'features' ? '' : `${p.kind}, `}features`
      : p.stageEnd && p.kind !== 'pool'
        ? `${p.kind}, stage end`
        : p.kind,
    showShape(p.shape),
    String(p.layers),
    p.parameters.toLocaleString('en-US'),
  ]);
  const header = ['#', 'tensor', 'after node', 'kind', 'shape', 'layers kept', 'parameters kept'];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (r: string[]) =>
    r
      .map((cell, c) => (c >= 5 ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd();
  return (
    [
      'cut points (graft rewrite --cut TENSOR):',
      line(header),
      line(widths.map((w) => '-'.repeat(w))),
      ...rows.map(line),
    ].join('\n') + '\n'
  );
}
