// The five light model-zoo networks end to end: random fan-in-scaled weights, a random input,
// batch 1; the logits (Softmax cut) must match onnxruntime-node's CPU provider to relative L2
// < 1e-4 with the same top-5 classes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeGpuContext } from '../src/node/index.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { Session } from '../src/runtime/session.ts';
import { LIGHT_MODELS, onnxBytesForOrt, randomizedLightModel, runOrt, topK } from './helpers/reference-models.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { relL2 } from './helpers/reference-ops.ts';

describe('light model-zoo networks vs onnxruntime (CPU)', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  LIGHT_MODELS.forEach((name, index) => {
    it(name, async () => {
      const graph = randomizedLightModel(name, 1000 + index);
      const input = graph.feedInputs[0];
      const feeds = { [input.name]: { dims: [1, 3, 224, 224], data: randomFloat32Array(3 * 224 * 224, 2000 + index) } };
      const want = await runOrt(onnxBytesForOrt(graph), feeds, 'cpu');
      const session = await Session.create(graph, { gpu });
      try {
        const got = await session.run(feeds);
        const output = graph.outputs[0].name;
        expect(got[output].dims).toEqual(want[output].dims);
        expect(relL2(got[output].data, want[output].data)).toBeLessThan(1e-4);
        expect(topK(got[output].data, 5)).toEqual(topK(want[output].data, 5));
        // Liveness reuse: the pool holds less than every activation at once would.
        let everyActivation = 0;
        for (const node of graph.nodes) {
          for (const o of node.outputs) everyActivation += 4 * ((graph.values.get(o)?.shape as number[] | undefined) ?? []).reduce((a, b) => a * b, 1);
        }
        expect(session.peakActivationBytes).toBeGreaterThan(0);
        expect(session.peakActivationBytes).toBeLessThan(everyActivation / 2);
      } finally {
        session.dispose();
      }
    }, 120_000);
  });
});
