// The benchmark's workloads as Graphs: the light models at another batch size, and single-node
// MatMul / Conv models (built with the project's GraphBuilder) for onnxruntime. Every graph comes
// back prepared (shapes inferred), so bench/flops.ts can count it.
import { GraphBuilder } from '../src/graph/builder.ts';
import { Graph } from '../src/graph/ir.ts';
import { prepareGraph } from '../src/graph/load.ts';
import { fromNumbers, toNumbers } from '../src/graph/tensor.ts';
import { mulberry32 } from '../test/helpers/random.ts';

/**
 * The prepared model at batch `batch`: the feed's leading dim and the leading 1 of each
 * Reshape target (the light models flatten with a constant [1, features]) become `batch`, and
 * the shapes inferred at batch 1 are dropped so that preparing infers them again.
 */
export function withBatch(prepared: Graph, batch: number): Graph {
  const g = prepared.clone();
  const feeds = new Set(g.feedInputs.map((i) => i.name));
  const rebatch = (shape: (number | string | null)[] | undefined) =>
    shape && shape.length ? [batch, ...shape.slice(1)] : shape;
  g.inputs = g.inputs.map((i) => (feeds.has(i.name) ? { ...i, shape: rebatch(i.shape) } : i));
  g.outputs = g.outputs.map((o) => ({ ...o, shape: rebatch(o.shape) }));
  for (const name of [...g.values.keys()]) {
    if (g.initializers.has(name)) continue;
    if (feeds.has(name)) g.values.set(name, { ...g.values.get(name)!, shape: rebatch(g.values.get(name)!.shape) });
    else g.values.delete(name);
  }
  for (const node of g.nodes) {
    if (node.opType !== 'Reshape') continue;
    const target = g.initializers.get(node.inputs[1]);
    if (!target)
      throw new Error(`withBatch: Reshape '${node.name}' has a computed shape; only constant targets are rewritten`);
    const dims = toNumbers(target.value);
    if (dims[0] === 1)
      g.setInitializer(
        node.inputs[1],
        fromNumbers(target.value.dtype, [...target.value.dims], [batch, ...dims.slice(1)]),
        false,
      );
  }
  return prepareGraph(g);
}

function normal(n: number, std: number, seed: number): Float32Array {
  const rng = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - rng())) * std;
    const t = 2 * Math.PI * rng();
    out[i] = r * Math.cos(t);
    if (i + 1 < n) out[i + 1] = r * Math.sin(t);
  }
  return out;
}

export interface SingleNode {
  graph: Graph;
  /** The fed input's name and dims, and seeded data for it. */
  input: { name: string; dims: number[]; data: Float32Array };
  output: string;
}

function newGraph(name: string, inputDims: number[]): { g: Graph; b: GraphBuilder } {
  const g = new Graph();
  g.name = name;
  g.irVersion = 8;
  g.opsetImports = [{ domain: '', version: 17 }];
  g.inputs = [{ name: 'x', dtype: 'float32', shape: [...inputDims] }];
  g.values.set('x', { name: 'x', dtype: 'float32', shape: [...inputDims] });
  return { g, b: new GraphBuilder(g) };
}

function finish(g: Graph, output: string, inputDims: number[], seed: number): SingleNode {
  g.outputs = [{ name: output, dtype: 'float32' }];
  const size = inputDims.reduce((a, c) => a * c, 1);
  const graph = prepareGraph(g);
  graph.outputs = graph.outputs.map((o) => ({ ...o, shape: graph.values.get(o.name)?.shape }));
  return { graph, input: { name: 'x', dims: inputDims, data: normal(size, 1, seed) }, output };
}

/** Y[M, N] = X[M, K] · W[K, N], W a constant (a layer's weight). */
export function matmulModel(M: number, K: number, N: number, seed = 1): SingleNode {
  const { g, b } = newGraph(`matmul ${M}x${K}x${N}`, [M, K]);
  const w = b.unique('w');
  g.setInitializer(w, { dtype: 'float32', dims: [K, N], data: normal(K * N, Math.sqrt(1 / K), seed + 1) });
  return finish(g, b.op('MatMul', ['x', w]), [M, K], seed);
}

export interface ConvShape {
  images: number;
  inChannels: number;
  outChannels: number;
  size: number;
  kernel: number;
  stride: number;
  pad: number;
}

/** Y = Conv(X, W, B), NCHW, square kernel, symmetric padding: weights and bias constants. */
export function convModel(s: ConvShape, seed = 1): SingleNode {
  const dims = [s.images, s.inChannels, s.size, s.size];
  const { g, b } = newGraph(
    `conv ${s.kernel}x${s.kernel} s${s.stride} ${s.inChannels}→${s.outChannels} @${s.size}`,
    dims,
  );
  const w = b.unique('w');
  const bias = b.unique('b');
  const fanIn = s.inChannels * s.kernel * s.kernel;
  g.setInitializer(w, {
    dtype: 'float32',
    dims: [s.outChannels, s.inChannels, s.kernel, s.kernel],
    data: normal(s.outChannels * fanIn, Math.sqrt(2 / fanIn), seed + 1),
  });
  g.setInitializer(bias, { dtype: 'float32', dims: [s.outChannels], data: normal(s.outChannels, 0.1, seed + 2) });
  const y = b.op('Conv', ['x', w, bias], {
    kernel_shape: [s.kernel, s.kernel],
    strides: [s.stride, s.stride],
    pads: [s.pad, s.pad, s.pad, s.pad],
  });
  return finish(g, y, dims, seed);
}

/** The distinct square-kernel convolutions of a prepared graph (with its own batch), first-seen order. */
export function distinctConvs(graph: Graph, kernel: number): ConvShape[] {
  const seen = new Map<string, ConvShape>();
  for (const node of graph.nodes) {
    if (node.opType !== 'Conv') continue;
    const w = graph.initializers.get(node.inputs[1])?.value.dims;
    const x = graph.values.get(node.inputs[0])?.shape as number[] | undefined;
    if (!w || !x || w[2] !== kernel || w[3] !== kernel) continue;
    const ints = (k: string, d: number[]) => {
      const a = node.attributes[k];
      return a?.type === 'ints' ? a.value : d;
    };
    const group = node.attributes.group?.type === 'int' ? node.attributes.group.value : 1;
    const strides = ints('strides', [1, 1]);
    const pads = ints('pads', [0, 0, 0, 0]);
    const dilations = ints('dilations', [1, 1]);
    if (
      group !== 1 ||
      x[2] !== x[3] ||
      strides[0] !== strides[1] ||
      new Set(pads).size !== 1 ||
      dilations.some((d) => d !== 1)
    ) {
      throw new Error(
        `distinctConvs: conv '${node.name}' is not a plain square one (group ${group}, strides ${strides}, pads ${pads})`,
      );
    }
    const shape: ConvShape = {
      images: x[0],
      inChannels: w[1],
      outChannels: w[0],
      size: x[2],
      kernel,
      stride: strides[0],
      pad: pads[0],
    };
    seen.set(JSON.stringify(shape), shape);
  }
  return [...seen.values()];
}

/** The fully connected layers of the classic CNNs, [K inputs → N outputs]. */
export const DENSE_LAYERS: readonly { what: string; K: number; N: number }[] = [
  { what: 'VGG-16 fc6', K: 25088, N: 4096 },
  { what: 'VGG-16 fc7', K: 4096, N: 4096 },
  { what: 'VGG-16 fc8', K: 4096, N: 1000 },
  { what: 'ResNet-50 fc', K: 2048, N: 1000 },
  { what: 'AlexNet fc6', K: 9216, N: 4096 },
];

/** Bytes a dense layer of M rows must move at least: its weights and bias, its input and output (float32). */
export function denseBytes(M: number, K: number, N: number): number {
  return 4 * (K * N + N + M * K + M * N);
}

/** Y[1, N] = X[1, K] · Wᵀ + B, as an ONNX Gemm with transB = 1 (W [N, K], B [N] constants): a batch-1 fully connected layer. */
export function denseModel(K: number, N: number, seed = 1): SingleNode {
  const { g, b } = newGraph(`dense ${K}→${N}`, [1, K]);
  const w = b.unique('w');
  const bias = b.unique('b');
  g.setInitializer(w, { dtype: 'float32', dims: [N, K], data: normal(N * K, Math.sqrt(1 / K), seed + 1) });
  g.setInitializer(bias, { dtype: 'float32', dims: [N], data: normal(N, 0.1, seed + 2) });
  return finish(g, b.op('Gemm', ['x', w, bias], { transB: 1 }), [1, K], seed);
}
