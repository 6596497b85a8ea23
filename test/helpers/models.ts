// The embedded light model-zoo files and helpers to give them seeded random weights.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Graph } from '../../src/graph/ir.ts';
import { isFloatType, sizeOf } from '../../src/graph/tensor.ts';
import { mulberry32, randomNormal } from './random.ts';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const LIGHT_DIR = path.join(REPO_ROOT, 'models-onnx', 'light');
export const LIGHT_MODELS = ['bvlc_alexnet', 'vgg19', 'inception_v1', 'resnet50', 'squeezenet'] as const;
export type LightModel = (typeof LIGHT_MODELS)[number];

export function lightModelPath(name: LightModel): string {
  return path.join(LIGHT_DIR, `light_${name}.onnx`);
}

/**
 * Replaces every float initializer by a seeded fan-in-scaled normal (std √(2/fan_in)), which
 * keeps activations finite through 50 layers. BatchNormalization variances become positive.
 */
export function randomizeWeights(graph: Graph, seed: number): void {
  const variances = new Set<string>();
  for (const n of graph.nodes) if (n.opType === 'BatchNormalization' && n.inputs[4]) variances.add(n.inputs[4]);
  let k = 0;
  for (const init of graph.initializers.values()) {
    if (!isFloatType(init.value.dtype) || init.value.dtype !== 'float32') continue;
    const dims = init.value.dims;
    const fanIn = dims.length > 1 ? sizeOf(dims.slice(1)) : 1;
    const rng = mulberry32(seed * 7919 + k++);
    const data = new Float32Array(sizeOf(dims));
    const std = dims.length > 1 ? Math.sqrt(2 / fanIn) : 0.1;
    for (let i = 0; i < data.length; i++) {
      const v = randomNormal(rng) * std;
      data[i] = variances.has(init.name) ? 0.5 + Math.abs(v) : v;
    }
    init.value = { dtype: 'float32', dims: [...dims], data };
  }
}
