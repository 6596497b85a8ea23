// The light model-zoo networks made numerically meaningful: every float weight replaced by a
// seeded random tensor (fan-in-scaled normals; positive BN variances), the final Softmax cut so
// the comparison sees logits, and onnxruntime-node's CPU provider as the reference.
import fs from 'node:fs';
import * as ort from 'onnxruntime-node';
import { encodeModel } from '../../src/graph/codec.ts';
import type { Graph } from '../../src/graph/ir.ts';
import { loadModel } from '../../src/graph/load.ts';
import { mulberry32 } from './random.ts';

export const LIGHT_MODELS = ['bvlc_alexnet', 'vgg19', 'inception_v1', 'resnet50', 'squeezenet'] as const;
export type LightModel = (typeof LIGHT_MODELS)[number];

export function lightModelPath(name: LightModel): string {
  return `/work/shared/models/light/light_${name}.onnx`;
}

/** The model prepared (weights folded from ConstantOfShape), randomised and cut before Softmax. */
export function randomizedLightModel(name: LightModel, seed: number): Graph {
  const file = lightModelPath(name);
  const bytes = fs.readFileSync(file);
  const graph = loadModel(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), { file });
  randomizeWeights(graph, seed);
  cutFinalSoftmax(graph);
  return graph;
}

/**
 * Replaces each float initializer by role: Conv/Gemm/MatMul weights ~ N(0, 2/fan_in), biases
 * ~ N(0, 0.1²), BatchNormalization scale ~ 1 + N(0, 0.1²), B and mean ~ N(0, 0.1²),
 * var ~ U(0.5, 1.5).
 */
export function randomizeWeights(graph: Graph, seed: number): void {
  const rng = mulberry32(seed);
  // Box–Muller using both values of each pair: VGG-19 has 144 M weights.
  const normal = (n: number, std: number, mean = 0) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const r = Math.sqrt(-2 * Math.log(1 - rng())) * std;
      const t = 2 * Math.PI * rng();
      out[i] = mean + r * Math.cos(t);
      if (i + 1 < n) out[i + 1] = mean + r * Math.sin(t);
    }
    return out;
  };
  const done = new Set<string>();
  const set = (name: string, make: (dims: number[], n: number) => Float32Array) => {
    const init = graph.initializers.get(name);
    if (!init || done.has(name) || init.value.dtype !== 'float32') return;
    const n = init.value.dims.reduce((a, b) => a * b, 1);
    graph.setInitializer(
      name,
      { dtype: 'float32', dims: [...init.value.dims], data: make(init.value.dims, n) },
      init.trainable,
    );
    done.add(name);
  };
  for (const node of graph.nodes) {
    const [, w, b] = node.inputs;
    if (node.opType === 'Conv') {
      set(w, (d, n) => normal(n, Math.sqrt(2 / (d[1] * d.slice(2).reduce((x, y) => x * y, 1)))));
      if (b) set(b, (_, n) => normal(n, 0.1));
    } else if (node.opType === 'Gemm') {
      const transB = node.attributes.transB?.type === 'int' && node.attributes.transB.value === 1;
      set(w, (d, n) => normal(n, Math.sqrt(2 / (transB ? d[1] : d[0]))));
      if (b) set(b, (_, n) => normal(n, 0.1));
    } else if (node.opType === 'MatMul') {
      set(w, (d, n) => normal(n, Math.sqrt(2 / d[d.length - 2])));
    } else if (node.opType === 'BatchNormalization') {
      set(node.inputs[1], (_, n) => normal(n, 0.1, 1));
      set(node.inputs[2], (_, n) => normal(n, 0.1));
      set(node.inputs[3], (_, n) => normal(n, 0.1));
      set(node.inputs[4], (_, n) => {
        const v = new Float32Array(n);
        for (let i = 0; i < n; i++) v[i] = 0.5 + rng();
        return v;
      });
    }
  }
  for (const [name, init] of graph.initializers) {
    if (init.value.dtype === 'float32' && !done.has(name))
      throw new Error(`randomizeWeights: no rule for float initializer '${name}'`);
  }
}

/** Drops a final Softmax: the graph output becomes its input (the logits). */
export function cutFinalSoftmax(graph: Graph): void {
  const producers = graph.producers();
  graph.outputs = graph.outputs.map((o) => {
    const node = producers.get(o.name);
    if (node?.opType !== 'Softmax') return o;
    graph.nodes = graph.nodes.filter((n) => n !== node);
    graph.values.delete(o.name);
    const input = node.inputs[0];
    return { ...graph.values.get(input)!, name: input };
  });
}

/** The graph as ONNX bytes that onnxruntime accepts (IR 8, initializers not listed as inputs). */
export function onnxBytesForOrt(graph: Graph): Uint8Array {
  const g = graph.clone();
  g.irVersion = Math.max(g.irVersion, 8);
  g.inputs = g.feedInputs;
  return encodeModel(g);
}

export async function runOrt(
  bytes: Uint8Array,
  feeds: Record<string, { dims: number[]; data: Float32Array }>,
  provider: 'cpu' | 'webgpu' = 'cpu',
): Promise<Record<string, { dims: number[]; data: Float32Array }>> {
  const session = await ort.InferenceSession.create(bytes, { executionProviders: [provider], logSeverityLevel: 3 });
  try {
    const inputs: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) inputs[k] = new ort.Tensor('float32', v.data, v.dims);
    const out = await session.run(inputs);
    const result: Record<string, { dims: number[]; data: Float32Array }> = {};
    for (const [k, v] of Object.entries(out))
      result[k] = { dims: [...v.dims], data: new Float32Array(v.data as Float32Array) };
    return result;
  } finally {
    await session.release();
  }
}

/** Indices of the k largest values, largest first. */
export function topK(data: ArrayLike<number>, k: number): number[] {
  return Array.from(data, (v, i) => [v, i] as const)
    .sort((a, b) => b[0] - a[0])
    .slice(0, k)
    .map(([, i]) => i);
}

/** BatchNormalization on its running statistics in training (scale and bias frozen): per image,
 * so a sliced batch keeps its meaning. Changes `graph` in place and returns it. */
export function freezeBatchNorm(graph: Graph): Graph {
  for (const node of graph.nodes) {
    if (node.opType !== 'BatchNormalization') continue;
    for (const name of node.inputs.slice(1)) {
      const init = graph.initializers.get(name);
      if (init) init.trainable = false;
    }
  }
  return graph;
}
