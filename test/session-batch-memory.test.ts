// One set of activation buffers per session across batch sizes: a plan for a batch smaller than
// the largest seen binds the largest plan's buffers (Session.activationBytesHeld counts each set
// once); a larger batch takes over and the older plans are compiled again onto its buffers when
// asked for. Results at every batch are checked against onnxruntime-node (light ResNet-50) or
// the float64 reference (a small classifier).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { Graph } from '../src/graph/ir.ts';
import { setBatchSize } from '../src/graph/surgery/batch.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Session } from '../src/runtime/session.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { onnxBytesForOrt, randomizedLightModel, runOrt } from './helpers/reference-models.ts';
import { gemmRef, relL2 } from './helpers/reference-ops.ts';

/** x [N, 1024] → Gemm (48) → Relu → Gemm (10): two dense layers, weights seeded. */
function denseClassifier(): { graph: Graph; reference: (x: Float32Array, batch: number) => Float64Array } {
  const g = new Graph();
  g.opsetImports = [{ domain: '', version: 17 }];
  g.inputs = [{ name: 'x', dtype: 'float32', shape: ['N', 1024] }];
  g.values.set('x', { ...g.inputs[0] });
  const b = new GraphBuilder(g, 11);
  const w1 = b.weight('w1', [48, 1024], 'he');
  const b1 = b.weight('b1', [48], 'glorot');
  const w2 = b.weight('w2', [10, 48], 'glorot');
  const b2 = b.weight('b2', [10], 'glorot');
  const hidden = b.op('Relu', [b.op('Gemm', ['x', w1, b1], { transB: 1 })]);
  const logits = b.node('Gemm', [hidden, w2, b2], { transB: 1 }, { outputs: ['logits'] })[0];
  g.outputs = [{ name: logits, dtype: 'float32' }];
  const data = (name: string) => g.initializers.get(name)!.value.data as Float32Array;
  const reference = (x: Float32Array, batch: number) => {
    const c = (name: string, n: number) => ({ data: data(name), dims: [n] });
    const hidden = gemmRef(x, data(w1), {
      M: batch,
      N: 48,
      K: 1024,
      transB: true,
      c: c(b1, 48),
      act: { kind: 'relu' },
    });
    return gemmRef(hidden, data(w2), { M: batch, N: 10, K: 48, transB: true, c: c(b2, 10) });
  };
  return { graph: g, reference };
}

describe('one activation memory for every batch size up to the largest seen', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('light ResNet-50 at batch 8, then 5, 3 and 1: one arena, the batch-8 plan’s; each batch matches onnxruntime', async () => {
    const graph = setBatchSize(randomizedLightModel('resnet50', 3), 'N');
    const ortBytes = onnxBytesForOrt(graph);
    const input = graph.feedInputs[0].name;
    const output = graph.outputs[0].name;
    const session = await Session.create(graph, { gpu });
    try {
      let held8 = 0;
      for (const batch of [8, 5, 3, 1]) {
        const feeds = {
          [input]: { dims: [batch, 3, 224, 224], data: randomFloat32Array(batch * 3 * 224 * 224, 40 + batch) },
        };
        const got = (await session.run(feeds))[output];
        const want = (await runOrt(ortBytes, feeds))[output];
        expect(got.dims).toEqual([batch, 1000]);
        expect(relL2(got.data, want.data), `batch ${batch}`).toBeLessThan(1e-4);
        if (batch === 8) held8 = session.activationBytesHeld;
        expect(session.activationBytesHeld, `after batch ${batch}`).toBe(held8);
        expect(session.peakActivationBytes).toBe(held8);
      }
      expect(held8).toBeGreaterThan(0);
    } finally {
      session.dispose();
    }
  });

  it('a larger batch takes over the memory; smaller batches then run on its buffers and still match', async () => {
    const { graph, reference } = denseClassifier();
    const session = await Session.create(graph, { gpu, denseKernel: 'gemm' });
    const run = async (batch: number) => {
      const x = randomFloat32Array(batch * 1024, 70 + batch);
      const out = await session.run({ x: { dims: [batch, 1024], data: x } });
      expect(relL2(out.logits.data, reference(x, batch)), `batch ${batch}`).toBeLessThan(1e-5);
    };
    try {
      await run(6);
      const held6 = session.activationBytesHeld;
      await run(2);
      expect(session.activationBytesHeld).toBe(held6);
      const live = gpu.liveBuffers.bytes;
      await run(24);
      const held24 = session.activationBytesHeld;
      expect(held24).toBeGreaterThan(held6);
      // The batch-6 arena (and the batch-2 plan on it) went when the batch-24 plan took over.
      expect(held24).toBe(session.peakActivationBytes);
      expect(gpu.liveBuffers.bytes).toBeLessThan(live + held24);
      for (const batch of [6, 2, 24, 1]) {
        await run(batch);
        expect(session.activationBytesHeld, `after batch ${batch}`).toBe(held24);
      }
    } finally {
      session.dispose();
    }
  });

  it('a smaller batch whose steps differ (a split-K GEMV at batch 1) keeps buffers of its own and still matches', async () => {
    const { graph, reference } = denseClassifier();
    const session = await Session.create(graph, { gpu, denseKernel: 'gemv' });
    try {
      const x8 = randomFloat32Array(8 * 1024, 81);
      const out8 = await session.run({ x: { dims: [8, 1024], data: x8 } });
      expect(relL2(out8.logits.data, reference(x8, 8))).toBeLessThan(1e-5);
      const held8 = session.activationBytesHeld;
      const x1 = randomFloat32Array(1024, 82);
      const out1 = await session.run({ x: { dims: [1, 1024], data: x1 } });
      expect(relL2(out1.logits.data, reference(x1, 1))).toBeLessThan(1e-5);
      expect(session.activationBytesHeld).toBe(held8 + session.peakActivationBytes);
      const again = await session.run({ x: { dims: [8, 1024], data: x8 } });
      expect(relL2(again.logits.data, reference(x8, 8))).toBeLessThan(1e-5);
    } finally {
      session.dispose();
    }
  });
});
