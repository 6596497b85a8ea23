// adaptToInputSize and flattenLogits (src/graph/surgery/resize.ts): exact at the original size,
// torch's adaptive average pooling at another, the same logits flattened; checked against
// onnxruntime (optimisations off) and a host computation, and the engine's forward.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Graph } from '../src/graph/ir.ts';
import { adaptToInputSize, flattenLogits, setBatchSize } from '../src/graph/surgery/index.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Session } from '../src/runtime/session.ts';
import { light, maxAbsDiff, normals, randomizeWeights, runOrt } from './helpers/surgery-support.ts';

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

function image(size: number, seed: number): Float32Array {
  return normals(3 * size * size, seed);
}

describe('adaptToInputSize', () => {
  for (const name of ['resnet50', 'inception_v1']) {
    it(`${name}: the whole-map 7×7 AveragePool becomes GlobalAveragePool, the same logits at 224`, async () => {
      const original = randomizeWeights(light(name), 5);
      const { graph, summary } = adaptToInputSize(original, 224);
      expect(summary.globalPools).toHaveLength(1);
      expect(summary.adaptivePools).toEqual([]);
      const pool = graph.nodes.find((n) => (n.name || n.outputs[0]) === summary.globalPools[0])!;
      expect(pool.opType).toBe('GlobalAveragePool');
      expect(original.nodes.find((n) => n.name === pool.name)!.opType).toBe('AveragePool');
      const x = image(224, 9);
      const [want, got] = [await runOrt(original, x), await runOrt(graph, x)];
      const out = original.outputs[0].name;
      expect(got[out].dims).toEqual(want[out].dims);
      expect(maxAbsDiff(got[out].data, want[out].data)).toBeLessThanOrEqual(1e-5 * Math.max(1, maxAbs(want[out].data)));
    }, 120_000);
  }

  it('AlexNet and VGG-19 at 224 and SqueezeNet at 64: nothing to rewrite', () => {
    for (const [name, size] of [
      ['bvlc_alexnet', 224],
      ['vgg19', 224],
      ['squeezenet', 64],
    ] as const) {
      const { summary } = adaptToInputSize(light(name), size);
      expect(summary, name).toEqual({ globalPools: [], adaptivePools: [] });
    }
  });

  for (const [name, size, from, to] of [
    ['bvlc_alexnet', 64, 1, 6],
    ['vgg19', 64, 2, 7],
  ] as const) {
    it(`${name} at ${size}: fc6 reads torch's adaptive average pool ${from}×${from} → ${to}×${to}`, async () => {
      const { graph, summary } = adaptToInputSize(randomizeWeights(light(name), 6), size);
      expect(summary.adaptivePools).toEqual([
        { before: expect.any(String), from: [from, from], to: [to, to], how: 'MatMul' },
      ]);
      const flatten = graph.nodes.find((n) => n.name === summary.adaptivePools[0].before)!;
      const first = graph.nodes.find((n) => n.name === `${summary.adaptivePools[0].before}_adaptive_pool_w`)!;
      const [map, pooled] = [first.inputs[0], flatten.inputs[0]];
      const out = await runOrt(graph, image(size, 10), [map, pooled]);
      expect(out[graph.outputs[0].name].dims).toEqual([1, 1000]);
      const [, c, h, w] = out[map].dims as number[];
      expect(out[pooled].dims).toEqual([1, c, to, to]);
      // torch: window i along an axis of S is [⌊i·S/T⌋, ⌈(i+1)·S/T⌉).
      const want = new Float32Array(c * to * to);
      for (let k = 0; k < c; k++) {
        for (let i = 0; i < to; i++) {
          for (let j = 0; j < to; j++) {
            const [r0, r1] = [Math.floor((i * h) / to), Math.ceil(((i + 1) * h) / to)];
            const [c0, c1] = [Math.floor((j * w) / to), Math.ceil(((j + 1) * w) / to)];
            let sum = 0;
            for (let r = r0; r < r1; r++) for (let s = c0; s < c1; s++) sum += out[map].data[(k * h + r) * w + s];
            want[(k * to + i) * to + j] = sum / ((r1 - r0) * (c1 - c0));
          }
        }
      }
      expect(maxAbsDiff(out[pooled].data, want)).toBeLessThanOrEqual(1e-5 * Math.max(1, maxAbs(want)));
      // The averaging matrices are constants, not weights.
      for (const n of graph.nodes.filter((m) => m.opType === 'MatMul'))
        expect(graph.initializers.get(n.inputs[1])!.trainable).toBe(false);
    }, 120_000);
  }

  it('an input too small for a layer fails naming that layer', () => {
    expect(() => adaptToInputSize(light('bvlc_alexnet'), 48)).toThrow(/node 'n14' \(MaxPool\).*does not fit/);
  });

  it('leaves the graph it is given untouched', () => {
    const g = light('resnet50');
    const before = g.nodes.map((n) => n.opType).join();
    adaptToInputSize(g, 64);
    expect(g.nodes.map((n) => n.opType).join()).toBe(before);
    expect(g.feedInputs[0].shape).toEqual([1, 3, 224, 224]);
  });
});

describe('flattenLogits', () => {
  it('SqueezeNet: [N, 1000, 1, 1] logits become [N, 1000], the same numbers', async () => {
    const original = randomizeWeights(light('squeezenet'), 7);
    const g: Graph = original.clone();
    expect(flattenLogits(g)).toBe(1);
    expect(g.values.get(g.outputs[0].name)?.shape).toEqual([1, 1000]);
    expect(flattenLogits(g)).toBe(0);
    const x = image(224, 11);
    const [want, got] = [await runOrt(original, x), await runOrt(g, x)];
    expect(maxAbsDiff(got[g.outputs[0].name].data, want[original.outputs[0].name].data)).toBe(0);
  }, 60_000);
});

describe('adapted graphs on the engine', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('AlexNet at 64 (adaptive pool as MatMul + Transpose): the engine forward matches onnxruntime', async () => {
    const { graph } = adaptToInputSize(randomizeWeights(light('bvlc_alexnet'), 8), 64);
    const g = setBatchSize(graph, 2);
    const x = new Float32Array([...image(64, 12), ...image(64, 13)]);
    const want = await runOrt(g, x);
    const session = await Session.create(g, { gpu });
    try {
      const out = g.outputs[0].name;
      const got = await session.run({ [g.feedInputs[0].name]: { dims: [2, 3, 64, 64], data: x } });
      expect(maxAbsDiff(got[out].data, want[out].data)).toBeLessThanOrEqual(1e-3 * Math.max(1, maxAbs(want[out].data)));
    } finally {
      session.dispose();
    }
  }, 120_000);
});
