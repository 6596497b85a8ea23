// Shared by the surgery and transfer tests: the light models loaded once, seeded random
// weights, onnxruntime runs with optimisations off, and an independent walk over producers.
import * as ort from 'onnxruntime-node';
import { expect } from 'vitest';
import { encodeModel } from '../../src/graph/codec.ts';
import type { Graph, Node } from '../../src/graph/ir.ts';
import { sizeOf } from '../../src/graph/tensor.ts';
import { loadModelFile } from '../../src/node/files.ts';
import { lightModelPath, type LightModel } from './models.ts';
import { mulberry32 } from './random.ts';

const loaded = new Map<string, Graph>();

/** Each light model loaded once (rewrites never modify their input). */
export function light(name: string): Graph {
  if (!loaded.has(name)) loaded.set(name, loadModelFile(lightModelPath(name as LightModel)));
  return loaded.get(name)!;
}

/** Normal samples (Marsaglia's polar method) times `std`. */
export function normals(n: number, seed: number, std = 1): Float32Array {
  const next = mulberry32(seed);
  const out = new Float32Array(n);
  let i = 0;
  while (i < n) {
    const u = next() * 2 - 1;
    const v = next() * 2 - 1;
    const q = u * u + v * v;
    if (q >= 1 || q === 0) continue;
    const f = Math.sqrt((-2 * Math.log(q)) / q) * std;
    out[i++] = u * f;
    if (i < n) out[i++] = v * f;
  }
  return out;
}

/** 2^22 standard normals drawn once; large tensors take a seeded strided walk through them,
 * which keeps randomising VGG's 140M weights to a fraction of a second. */
const POOL = normals(1 << 22, 12345);

export function poolNormals(n: number, seed: number, std: number): Float32Array {
  const next = mulberry32(seed);
  const mask = POOL.length - 1;
  const start = Math.floor(next() * POOL.length);
  const stride = (Math.floor(next() * (POOL.length / 2)) * 2 + 1) & mask; // odd: visits every entry
  const out = new Float32Array(n);
  for (let i = 0, j = start; i < n; i++, j = (j + stride) & mask) out[i] = POOL[j] * std;
  return out;
}

/** A copy whose float initializers are seeded random: fan-in-scaled normals for weights, small
 * normals for biases, BatchNormalization scale and variance in [0.5, 1.5). */
export function randomizeWeights(graph: Graph, seed: number): Graph {
  const g = graph.clone();
  const readers = g.consumers();
  let k = 0;
  for (const init of [...g.initializers.values()]) {
    if (init.value.dtype !== 'float32') continue;
    k++;
    const dims = init.value.dims;
    const n = sizeOf(dims);
    const reader = readers.get(init.name)?.[0];
    const index = reader ? reader.inputs.indexOf(init.name) : -1;
    let data: Float32Array;
    if (reader?.opType === 'BatchNormalization' && (index === 1 || index === 4)) {
      const u = mulberry32(seed + k);
      data = new Float32Array(n).map(() => 0.5 + u());
    } else if (dims.length >= 2) {
      data = poolNormals(n, seed + k, Math.sqrt(2 / sizeOf(dims.slice(1))));
    } else {
      data = poolNormals(n, seed + k, 0.1);
    }
    g.setInitializer(init.name, { dtype: 'float32', dims: [...dims], data }, init.trainable);
  }
  return g;
}

export type Outputs = Record<string, { dims: readonly number[]; data: Float32Array }>;

/** Runs `graph` in onnxruntime (optimisations off, so kept subgraphs compute bit-identically),
 * returning its outputs plus the `extra` tensors made outputs for the run. */
export async function runOrt(graph: Graph, input: Float32Array, extra: string[] = []): Promise<Outputs> {
  const g = graph.clone();
  for (const name of extra) {
    if (!g.outputs.some((o) => o.name === name))
      g.outputs.push({ name, dtype: 'float32', shape: g.values.get(name)?.shape });
  }
  const bytes = encodeModel(g);
  const session = await ort.InferenceSession.create(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'disabled',
    logSeverityLevel: 3,
  });
  try {
    const feed = g.feedInputs[0];
    const dims = feed.shape!.map((d) => (typeof d === 'number' ? d : 1));
    const result = await session.run({ [feed.name]: new ort.Tensor('float32', input, dims) });
    const out: Outputs = {};
    for (const [k, v] of Object.entries(result)) out[k] = { dims: v.dims, data: v.data as Float32Array };
    return out;
  } finally {
    await session.release();
  }
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export /** The nodes `tensor` is computed from, found by walking producers (written here on purpose). */
function nodesBehind(graph: Graph, tensor: string): Node[] {
  const producer = new Map<string, Node>();
  for (const n of graph.nodes) for (const o of n.outputs) producer.set(o, n);
  const seen = new Set<Node>();
  const stack = [tensor];
  while (stack.length) {
    const p = producer.get(stack.pop()!);
    if (!p || seen.has(p)) continue;
    seen.add(p);
    stack.push(...p.inputs);
  }
  return graph.nodes.filter((n) => seen.has(n));
}
