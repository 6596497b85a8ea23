// The five light model-zoo networks end to end: random fan-in-scaled weights, random inputs, at
// batch 1 and batch 4; the logits (Softmax cut) must match onnxruntime-node's CPU provider to
// relative L2 < 1e-4, and every sample must have the same top-5 classes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Graph } from '../src/graph/ir.ts';
import { setBatchSize } from '../src/graph/surgery/batch.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { Session } from '../src/runtime/session.ts';
import {
  LIGHT_MODELS,
  onnxBytesForOrt,
  randomizedLightModel,
  runOrt,
  topK,
  type LightModel,
} from './helpers/reference-models.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { relL2 } from './helpers/reference-ops.ts';

const BATCHES = [1, 4];
const LAST_BATCH = BATCHES[BATCHES.length - 1];
const CLASSES = 1000;

describe('light model-zoo networks vs onnxruntime (CPU)', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  // Randomising VGG-19's 144 M weights takes seconds: once per model, shared by its batches.
  const graphs = new Map<LightModel, Graph>();
  const randomized = (name: LightModel, index: number): Graph => {
    let g = graphs.get(name);
    if (!g) graphs.set(name, (g = randomizedLightModel(name, 1000 + index)));
    return g;
  };

  LIGHT_MODELS.forEach((name, index) => {
    for (const batch of BATCHES) {
      it(`${name}, batch ${batch}`, async () => {
        const light = randomized(name, index);
        // The zoo files fix the batch to 1 (input and flattening Reshape); rewrite it for others.
        const graph = batch === 1 ? light : setBatchSize(light, batch);
        if (batch === LAST_BATCH) graphs.delete(name); // let VGG's weights go
        const input = graph.feedInputs[0];
        const dims = [batch, 3, 224, 224];
        const feeds = {
          [input.name]: { dims, data: randomFloat32Array(batch * 3 * 224 * 224, 2000 + index + 100 * (batch - 1)) },
        };
        const t0 = performance.now();
        const want = await runOrt(onnxBytesForOrt(graph), feeds, 'cpu');
        const t1 = performance.now();
        const session = await Session.create(graph, { gpu });
        try {
          const got = await session.run(feeds);
          const t2 = performance.now();
          const output = graph.outputs[0].name;
          const error = relL2(got[output].data, want[output].data);
          console.log(
            `${name}, batch ${batch}: relative L2 ${error.toExponential(2)}; onnxruntime ${((t1 - t0) / 1000).toFixed(1)} s, create + run ${((t2 - t1) / 1000).toFixed(1)} s`,
          );
          expect(got[output].dims).toEqual(want[output].dims);
          // [N, 1000] (SqueezeNet: [N, 1000, 1, 1]).
          expect([want[output].dims[0], want[output].data.length]).toEqual([batch, batch * CLASSES]);
          expect(error).toBeLessThan(1e-4);
          for (let s = 0; s < batch; s++) {
            const row = (data: Float32Array) => data.subarray(s * CLASSES, (s + 1) * CLASSES);
            expect(relL2(row(got[output].data), row(want[output].data)), `sample ${s}: relative L2`).toBeLessThan(1e-4);
            expect(topK(row(got[output].data), 5), `sample ${s}: top-5`).toEqual(topK(row(want[output].data), 5));
          }
          // Liveness reuse: the pool holds less than every activation at once would.
          let everyActivation = 0;
          for (const node of graph.nodes) {
            for (const o of node.outputs)
              everyActivation +=
                4 * ((graph.values.get(o)?.shape as number[] | undefined) ?? []).reduce((a, b) => a * b, 1);
          }
          expect(session.peakActivationBytes).toBeGreaterThan(0);
          expect(session.peakActivationBytes).toBeLessThan(everyActivation / 2);
        } finally {
          session.dispose();
        }
      }, 120_000);
    }
  });
});
