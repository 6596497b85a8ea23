// One full-training step (forward, loss, backward, SGD update: TrainingPlan.step) of an
// architecture with seeded random weights, every parameter trainable: compile time, the first
// step (lavapipe compiles pipelines at first dispatch), then the median of `runs` more steps,
// and the plan's activation bytes.
//
//   npx tsx bench/train-step.ts resnet50 112 8      (ResNet-50, 112×112, batch 8, 1000 classes)
//   npx tsx bench/train-step.ts vgg16-features 112 2 (VGG-16 features, GAP, a 10-class Gemm head)
import { buildArchitecture } from '../src/graph/architectures/index.ts';
import type { Graph } from '../src/graph/ir.ts';
import { graft } from '../src/graph/surgery/graft.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { ConstantStore } from '../src/runtime/plan.ts';
import { createOptimizer } from '../src/train/optimizers.ts';
import { TrainingPlan } from '../src/train/training-plan.ts';

/** ResNet-50 or VGG-16 as built by the architectures module; '-features': the body, GAP and a small head. */
export function trainingGraph(name: string, size: number, batch: number): Graph {
  const [arch, features] = name.endsWith('-features') ? [name.slice(0, -'-features'.length), true] : [name, false];
  if (arch !== 'resnet50' && arch !== 'vgg16')
    throw new Error(`model '${name}': use resnet50, vgg16, resnet50-features or vgg16-features`);
  if (!features) return buildArchitecture(arch, { inputSize: size, batch });
  const body = buildArchitecture(arch, { inputSize: size, batch, includeTop: false, pooling: 'avg' });
  return graft(body, { classes: 10, seed: 1, softmax: false }).graph;
}

async function main(): Promise<void> {
  const [name = 'resnet50', sizeArg = '112', batchArg = '8', runsArg = '2'] = process.argv.slice(2);
  const size = Number(sizeArg);
  const batch = Number(batchArg);
  const runs = Number(runsArg);
  const graph = trainingGraph(name, size, batch);
  const gpu = await createNodeGpuContext();
  const constants = new ConstantStore(gpu);
  let t = performance.now();
  const plan = await TrainingPlan.create(gpu, graph, { constants });
  const compileMs = performance.now() - t;
  const optimizer = await createOptimizer(gpu, { type: 'sgd', lr: 1e-3 });
  const input = graph.feedInputs[0];
  const x = new Float32Array((input.shape as number[]).reduce((a, b) => a * b, 1));
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i * 12.9898) * 0.5;
  const labels = Uint32Array.from({ length: batch }, (_, i) => i % plan.classes);
  const feeds = new Map([[input.name, x]]);
  t = performance.now();
  const first = await plan.step(feeds, labels, optimizer);
  const firstMs = performance.now() - t;
  const times: number[] = [];
  let loss = first.loss;
  for (let i = 0; i < runs; i++) {
    t = performance.now();
    loss = (await plan.step(feeds, labels, optimizer)).loss;
    times.push(performance.now() - t);
  }
  times.sort((a, b) => a - b);
  const s = plan.stats;
  console.log(
    JSON.stringify({
      model: name,
      size,
      batch,
      compileMs: Math.round(compileMs),
      firstStepMs: Math.round(firstMs),
      stepMs: Math.round(times[Math.floor(times.length / 2)]),
      steps: times.map(Math.round),
      loss,
      activationMiB: +(s.activationBytes / 2 ** 20).toFixed(1),
      peakLiveMiB: +(s.peakLiveBytes / 2 ** 20).toFixed(1),
      forwardSteps: s.forwardSteps,
      backwardSteps: s.backwardSteps,
    }),
  );
  plan.dispose();
  constants.dispose();
  gpu.dispose();
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
