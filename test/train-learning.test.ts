// Full fine-tuning of each light zoo topology (every weight trainable, BatchNormalization in
// training mode, seeded fan-in-scaled random weights): the training loss on ONE fixed batch goes
// down by ≥ 90% within 50 steps.
//
// Input size: 224 is too slow on a software adapter (ResNet-50 ≈ 20 s per step on lavapipe), so
// each model is trained at 64×64 after adaptToInputSize (src/graph/surgery/resize.ts), which keeps
// every layer and weight: ResNet-50's and Inception-v1's whole-map 7×7 AveragePool becomes
// GlobalAveragePool (2×2 map at 64), AlexNet's and VGG-19's fc6 input is an adaptive average pool
// of the last map (1×1 and 2×2 at 64) back to the 6×6 / 7×7 grid fc6 was built for. SqueezeNet
// needs no rewrite at 64; flattenLogits turns its [N, 1000, 1, 1] logits into [N, 1000].
// 64 is the smallest size every topology takes: at 48 AlexNet's pool5 and Inception-v1's
// pool4 get a map smaller than their 3×3 window (checked below).
//
// Dropout is off (dropout: false) so the fixed batch sees the same function each step.
// A model that cannot run here belongs in EXCLUDED with its reason, which the test re-checks
// (the exact error); nothing is skipped silently. AlexNet's and VGG-19's fc6 weight (151 MB and
// 411 MB) exceeds lavapipe's 128 MiB storage binding: the Gemm rule and the optimizer bind it,
// its gradient and its moments in blocks (see test/train-large-weights.test.ts).
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Graph } from '../src/graph/ir.ts';
import { loadModel } from '../src/graph/load.ts';
import { adaptToInputSize, flattenLogits } from '../src/graph/surgery/index.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import type { OptimizerConfig } from '../src/train/optimizers.ts';
import { fit, type TrainBatch } from '../src/train/trainer.ts';
import { LIGHT_MODELS, lightModelPath, randomizeWeights, type LightModel } from './helpers/models.ts';
import { mulberry32, randomFloat32Array } from './helpers/random.ts';

const STEPS = 50;
/** The loss must fall to this fraction of the first step's (a 90% drop). */
const TARGET = 0.1;
const SIZE = 64;

interface Case {
  size: number;
  batch: number;
  optimizer: OptimizerConfig;
}

/**
 * Per topology: input size, batch, optimizer. The BN networks converge with Adam 1e-3, AlexNet
 * and VGG-19 (no BN, 4096-wide fc layers) with Adam 1e-4 (measured on lavapipe).
 */
const CASES: Record<LightModel, Case> = {
  bvlc_alexnet: { size: SIZE, batch: 2, optimizer: { type: 'adam', lr: 1e-4 } },
  vgg19: { size: SIZE, batch: 2, optimizer: { type: 'adam', lr: 1e-4 } },
  inception_v1: { size: SIZE, batch: 2, optimizer: { type: 'adam', lr: 1e-3 } },
  resnet50: { size: SIZE, batch: 2, optimizer: { type: 'adam', lr: 1e-3 } },
  squeezenet: { size: SIZE, batch: 2, optimizer: { type: 'adam', lr: 1e-3 } },
};

/**
 * Models that cannot run on some devices, each with the reason and a check that it still holds
 * on this one (the exact error plan creation throws). Where `applies` is false (a device with a
 * larger limit) the model trains like the others. Never a silent skip. None at present.
 */
const EXCLUDED: Partial<Record<LightModel, { reason: string; applies: (gpu: GpuContext) => boolean; error: string }>> =
  {};

function loadLight(name: LightModel): Graph {
  const file = lightModelPath(name);
  const bytes = fs.readFileSync(file);
  return loadModel(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), { file });
}

/** The model with seeded random weights, adapted to `size`, logits [N, classes], all trainable. */
function prepared(name: LightModel, size: number): Graph {
  const g = loadLight(name);
  randomizeWeights(g, 11);
  const { graph } = adaptToInputSize(g, size);
  flattenLogits(graph);
  return graph;
}

describe('full fine-tuning of each light topology on one fixed batch', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('64 is the smallest input every topology takes (48 is too small for AlexNet and Inception-v1)', () => {
    expect(() => adaptToInputSize(loadLight('bvlc_alexnet'), 48)).toThrow(/MaxPool.*does not fit/);
    expect(() => adaptToInputSize(loadLight('inception_v1'), 48)).toThrow(/MaxPool.*does not fit/);
  });

  for (const name of LIGHT_MODELS) {
    const c = CASES[name];
    const excluded = EXCLUDED[name];
    if (excluded) {
      it(`${name}: excluded where ${excluded.reason}; checks that the reason holds, else trains`, async () => {
        if (!excluded.applies(gpu)) return train(gpu, name, c);
        const graph = loadLight(name);
        const { graph: adapted } = adaptToInputSize(graph, c.size);
        const images = new Float32Array(c.batch * 3 * c.size * c.size);
        const started = Date.now();
        await expect(
          fit(gpu, adapted, () => [{ images, labels: new Uint32Array(c.batch), size: c.batch }], {
            epochs: 1,
            optimizer: c.optimizer,
            dropout: false,
          }),
        ).rejects.toThrow(excluded.error);
        console.log(
          `${name}: EXCLUDED on this device (maxStorageBufferBindingSize ${gpu.device.limits.maxStorageBufferBindingSize}): ${excluded.reason}; plan creation still throws "${excluded.error} …" (${((Date.now() - started) / 1000).toFixed(1)} s)`,
        );
      }, 300_000);
      continue;
    }
    it(
      `${name}: loss on one fixed batch down ≥ 90% within ${STEPS} steps at ${c.size}×${c.size}`,
      () => train(gpu, name, c),
      300_000,
    );
  }
});

/**
 * Trains `name` on one fixed batch, every step on the same images and labels, until the loss is
 * ≤ 10% of the first step's or STEPS steps have run (fit is stopped through its signal at the
 * step the target is reached: "within 50 steps" is decided there). Fails when the target is not
 * reached.
 */
async function train(gpu: GpuContext, name: LightModel, c: Case): Promise<void> {
  const graph = prepared(name, c.size);
  // Every weight trains: the float initializers that do not are BN running statistics and the
  // adaptive pools' averaging matrices (constants, not weights).
  const constants = new Set(
    graph.nodes.flatMap((n) =>
      n.opType === 'BatchNormalization' ? n.inputs.slice(3) : n.opType === 'MatMul' ? [n.inputs[1]] : [],
    ),
  );
  const frozen = [...graph.initializers.values()].filter(
    (i) => i.value.dtype === 'float32' && !i.trainable && !constants.has(i.name),
  );
  expect(frozen.map((i) => i.name)).toEqual([]);
  const rng = mulberry32(3);
  const labels = Uint32Array.from({ length: c.batch }, () => Math.floor(rng() * 1000));
  const images = randomFloat32Array(c.batch * 3 * c.size * c.size, 5);
  const batch: TrainBatch = { images, labels, size: c.batch };
  const losses: number[] = [];
  const reached = () => losses.length > 0 && losses.at(-1)! <= TARGET * losses[0];
  const started = Date.now();
  const stop = new AbortController();
  const { trainer } = await fit(gpu, graph, () => [batch], {
    epochs: STEPS,
    optimizer: c.optimizer,
    dropout: false,
    featureCache: false,
    signal: stop.signal,
    callbacks: {
      onStep: (s) => {
        losses.push(s.loss);
        if (reached()) stop.abort();
      },
    },
  });
  trainer.dispose();
  const seconds = (Date.now() - started) / 1000;
  const first = losses[0];
  const last = losses.at(-1)!;
  console.log(
    `${name}: input ${c.size}×${c.size}, batch ${c.batch}, ${c.optimizer.type} lr ${c.optimizer.lr}, ${losses.length} steps, ` +
      `loss ${first.toFixed(4)} → ${last.toFixed(4)} (${(100 * (1 - last / first)).toFixed(1)}% down${reached() ? `, target reached at step ${losses.length}` : ', TARGET NOT REACHED'}), ${seconds.toFixed(1)} s`,
  );
  expect(losses.length).toBeLessThanOrEqual(STEPS);
  expect(last).toBeLessThanOrEqual(TARGET * first);
}
