// A batch with a value larger than one storage binding runs as slices of the batch (inference:
// Session; training: TrainingPlan, gradients summed over the slices). Under a forced small
// binding limit the sliced runs must give the unsliced results, on a small CNN (with a smaller
// last slice) and on light ResNet-50 at a reduced input size; a graph that mixes the images of
// a batch is refused naming the node; ResNet-50 at 224×224, batch 64, runs on the device's real
// limit (conv1's output alone is 205 MB there).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { Graph } from '../src/graph/ir.ts';
import { setBatchSize } from '../src/graph/surgery/batch.ts';
import { adaptToInputSize } from '../src/graph/surgery/resize.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { BatchSliceError } from '../src/runtime/batch-slices.ts';
import { BindingLimitError } from '../src/runtime/lower.ts';
import { Session } from '../src/runtime/session.ts';
import { randomizedLightModel } from './helpers/reference-models.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { relL2 } from './helpers/reference-ops.ts';

/** x [batch,3,10,9] → conv3×3 (6) → relu → conv3×3 s2 (8) → relu → GAP → flatten → gemm (5). */
function smallCnn(batch: number, tail?: (b: GraphBuilder, features: string) => string): Graph {
  const g = new Graph();
  g.inputs = [{ name: 'x', dtype: 'float32', shape: [batch, 3, 10, 9] }];
  g.values.set('x', { ...g.inputs[0] });
  const b = new GraphBuilder(g, 41);
  const c1 = b.op('Relu', [
    b.op('Conv', ['x', b.weight('w1', [6, 3, 3, 3], 'he'), b.weight('b1', [6], 'glorot')], {
      kernel_shape: [3, 3],
      pads: [1, 1, 1, 1],
    }),
  ]);
  const c2 = b.op('Relu', [
    b.op('Conv', [c1, b.weight('w2', [8, 6, 3, 3], 'he'), b.weight('b2', [8], 'glorot')], {
      kernel_shape: [3, 3],
      pads: [1, 1, 1, 1],
      strides: [2, 2],
    }),
  ]);
  const f = b.op('Flatten', [b.op('GlobalAveragePool', [c2])], { axis: 1 });
  const logits = b.op('Gemm', [f, b.weight('fc', [5, 8], 'glorot'), b.weight('fcb', [5], 'glorot')], { transB: 1 });
  g.outputs = [{ name: tail ? tail(b, logits) : logits, dtype: 'float32' }];
  return g;
}

/** conv1's output in the small CNN: 6×10×9 floats per image. */
const CONV1_BYTES_PER_IMAGE = 6 * 10 * 9 * 4;

describe('batch slicing', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  const infer = async (graph: Graph, data: Float32Array, maxBindingBytes?: number) => {
    const session = await Session.create(graph, { gpu, maxBindingBytes });
    try {
      const input = graph.feedInputs[0];
      const out = await session.run({ [input.name]: { dims: input.shape as number[], data } });
      return { out: out[graph.outputs[0].name], stats: session.planStats, peak: session.peakActivationBytes };
    } finally {
      session.dispose();
    }
  };

  it('inference: a small CNN at batch 7 under a limit that admits 2 images runs as 3 slices of 2 and one of 1, as unsliced', async () => {
    const batch = 7;
    const graph = smallCnn(batch);
    const x = randomFloat32Array(batch * 3 * 10 * 9, 51);
    // 2.3 images of conv1's output fit.
    const limit = Math.floor(2.3 * CONV1_BYTES_PER_IMAGE);
    const whole = await infer(graph, x);
    const sliced = await infer(graph, x, limit);
    expect(sliced.out.dims).toEqual([batch, 5]);
    expect(sliced.out.data.length).toBe(batch * 5);
    expect(relL2(sliced.out.data, whole.out.data)).toBeLessThan(1e-6);
    // Each image's row, so a slice written to the wrong rows shows.
    for (let i = 0; i < batch; i++)
      expect(relL2(sliced.out.data.subarray(i * 5, i * 5 + 5), whole.out.data.subarray(i * 5, i * 5 + 5))).toBeLessThan(
        1e-6,
      );
    // One slice's activations, not the batch's.
    expect(sliced.peak).toBeLessThan(whole.peak);
  });

  it('inference: light ResNet-50 at 128×128, batch 12, under a 10 MiB limit (10 images of conv1), as two slices of 6, as unsliced', async () => {
    const batch = 12;
    const { graph: small } = adaptToInputSize(randomizedLightModel('resnet50', 61), 128);
    const graph = setBatchSize(small, batch);
    const x = randomFloat32Array(batch * 3 * 128 * 128, 62);
    // Above the largest packed weight (res5's 3×3 convs, 9 MiB); conv1's output is 64×64×64
    // floats (1 MiB) per image, so 10 images fit: two slices of 6.
    const limit = 10 * 2 ** 20;
    const whole = await infer(graph, x);
    const sliced = await infer(graph, x, limit);
    expect(sliced.out.dims).toEqual(whole.out.dims);
    expect(relL2(sliced.out.data, whole.out.data)).toBeLessThan(1e-5);
    expect(sliced.peak).toBeLessThan(whole.peak);
  }, 120_000);

  it('inference: a graph that folds the batch into another axis is refused naming the node', async () => {
    const batch = 4;
    // Reshape [4, 5] → [1, 20] → Softmax over the 20: every image's logits normalized together.
    const graph = smallCnn(batch, (b, logits) => {
      const folded = b.op('Reshape', [logits, b.int64('fold', [1, -1])], {}, 'fold batch');
      return b.op('Softmax', [folded], { axis: 1 });
    });
    const x = randomFloat32Array(batch * 3 * 10 * 9, 71);
    const error = await infer(graph, x, Math.floor(2.3 * CONV1_BYTES_PER_IMAGE)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BatchSliceError);
    expect((error as BatchSliceError).nodeName).toBe('fold batch');
    expect((error as Error).message).toMatch(/\[1, 20\] at a batch of 4 and \[1, 15\] at 3/);
  });

  it('inference: Softmax over the batch axis is refused naming the node', async () => {
    const batch = 4;
    const graph = smallCnn(batch, (b, logits) => b.op('Softmax', [logits], { axis: 0 }, 'softmax over images'));
    const x = randomFloat32Array(batch * 3 * 10 * 9, 72);
    const error = await infer(graph, x, Math.floor(2.3 * CONV1_BYTES_PER_IMAGE)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BatchSliceError);
    expect((error as BatchSliceError).nodeName).toBe('softmax over images');
    // Without the forced limit it runs unsliced.
    expect((await infer(graph, x)).out.dims).toEqual([batch, 5]);
  });

  it('inference: a value over the limit at one image is refused as before (row bands are not done)', async () => {
    const graph = smallCnn(3);
    const x = randomFloat32Array(3 * 3 * 10 * 9, 73);
    const error = await infer(graph, x, 1024).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BindingLimitError);
    expect((error as Error).message).toMatch(/over the binding limit of 1024 bytes/);
  });
});
