// npm run bench -- slices: images/s at batches whose activations exceed one storage binding
// (run as slices of the batch, src/runtime/batch-slices.ts) against batch 8 of the same network
// in the same process, for inference (Session.run) and training (one TrainingPlan step: forward,
// loss, backward, SGD). The batches alternate (8, large, 8, large, …) so that a change of load
// during the run falls on both; each row reports the median over its runs. Networks: ResNet-50
// and VGG-16 in torchvision's layout with seeded weights (src/graph/architectures).
//
// Usage: npm run bench -- slices [--models resnet50,vgg16] [--modes inference,training]
//   [--batches resnet50:64+128,vgg16:32] [--runs N] [--size 224] [--no-md]
//   (--modes also takes training-bn)
// Mode 'training' trains ResNet-50 with BatchNormalization frozen (its running statistics), so
// that its slices run one after another in one slice's memory; mode 'training-bn' trains every
// weight, BatchNormalization in training mode (batch statistics), which holds the slices side by
// side (layer-major, src/train/training-plan.ts). VGG-16 has no BatchNormalization: 'training-bn'
// skips it.
import os from 'node:os';
import { buildArchitecture } from '../src/graph/architectures/index.ts';
import type { Graph } from '../src/graph/ir.ts';
import { seededRandom } from '../src/graph/random.ts';
import { setBatchSize } from '../src/graph/surgery/batch.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import type { BatchSlicing } from '../src/runtime/batch-slices.ts';
import { ConstantStore } from '../src/runtime/plan.ts';
import { Session } from '../src/runtime/session.ts';
import { createOptimizer } from '../src/train/optimizers.ts';
import { TrainingPlan } from '../src/train/training-plan.ts';
import { freezeBatchNorm } from '../test/helpers/reference-models.ts';
import { median } from './harness.ts';
import { machineRecord, writeResults } from './results-file.ts';

type Model = 'resnet50' | 'vgg16';
type Mode = 'inference' | 'training' | 'training-bn';

const argv = process.argv.slice(3);
const option = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const MODELS = (option('--models')?.split(',') ?? ['resnet50', 'vgg16']) as Model[];
const MODES = (option('--modes')?.split(',') ?? ['inference', 'training']) as Mode[];
const RUNS = Number(option('--runs') ?? '2');
const SIZE = Number(option('--size') ?? '224');
const WRITE_MD = !argv.includes('--no-md');
const BATCHES: Record<Model, number[]> = { resnet50: [64, 128], vgg16: [32] };
for (const spec of option('--batches')?.split(',') ?? []) {
  const [model, list] = spec.split(':');
  BATCHES[model as Model] = list.split('+').map(Number);
}
for (const m of MODELS)
  if (!(m in BATCHES)) throw new Error(`--models: '${m}' is not one of ${Object.keys(BATCHES).join(', ')}`);

interface Row {
  model: Model;
  mode: Mode;
  batch: number;
  /** How the batch ran: "whole" or "count × images". */
  slicing: string;
  runsMs: number[];
  imagesPerS: number;
  /** images/s ÷ batch 8's, same model and mode. */
  vsBatch8?: number;
  error?: string;
}

/** One way to run a batch: prepared once, then timed run by run. */
interface Runner {
  slicing: string;
  run(): Promise<void>;
  dispose(): void;
}

function seededInput(length: number, seed: number): Float32Array {
  const random = seededRandom(seed);
  return Float32Array.from({ length }, () => random() * 2 - 1);
}

/** How a batch ran: "count × images" (the last slice's size when it differs; "held" when side by side), or "whole". */
function describeSlicing(s: BatchSlicing | undefined, held = false): string {
  if (!s) return 'whole';
  return `${s.count} × ${s.images}${s.lastImages !== s.images ? ` (last ${s.lastImages})` : ''}${held ? ', held' : ''}`;
}

async function inferenceRunner(gpu: GpuContext, graph: Graph, batch: number): Promise<Runner> {
  const session = await Session.create(setBatchSize(graph, batch), { gpu });
  const name = session.inputNames[0];
  const dims = [batch, 3, SIZE, SIZE];
  const data = seededInput(batch * 3 * SIZE * SIZE, batch);
  return {
    slicing: describeSlicing(session.batchSlicing),
    run: async () => void (await session.run({ [name]: { dims, data } })),
    dispose: () => session.dispose(),
  };
}

async function trainingRunner(gpu: GpuContext, graph: Graph, batch: number): Promise<Runner> {
  const batched = setBatchSize(graph, batch);
  const constants = new ConstantStore(gpu);
  const plan = await TrainingPlan.create(gpu, batched, { constants });
  const optimizer = await createOptimizer(gpu, { type: 'sgd', lr: 1e-4, momentum: 0.9 });
  const feeds = new Map([[batched.feedInputs[0].name, seededInput(batch * 3 * SIZE * SIZE, batch)]]);
  const labels = Uint32Array.from({ length: batch }, (_, i) => (i * 7) % plan.classes);
  return {
    slicing: describeSlicing(plan.slicing, plan.holdsSlices),
    run: async () => void (await plan.step(feeds, labels, optimizer)),
    dispose: () => {
      optimizer.dispose();
      plan.dispose();
      constants.dispose();
    },
  };
}

const rows: Row[] = [];
const startedAt = new Date();
const started = performance.now();
const loadAtStart = os.loadavg();
const gpu = await createNodeGpuContext();
const bindingLimit = gpu.device.limits.maxStorageBufferBindingSize;
console.log(`adapter: ${gpu.info.vendor} ${gpu.info.architecture} ${gpu.info.description || gpu.info.device}`);
try {
  for (const model of MODELS) {
    const base = buildArchitecture(model, { inputSize: SIZE, seed: 3 });
    for (const mode of MODES) {
      if (mode === 'training-bn' && model !== 'resnet50') continue;
      const graph = mode === 'training' && model === 'resnet50' ? freezeBatchNorm(base.clone()) : base;
      const make = mode === 'inference' ? inferenceRunner : trainingRunner;
      for (const batch of BATCHES[model]) {
        console.log(`${model} ${mode}: batch 8 and ${batch}, ${RUNS} runs each, alternating`);
        const row8: Row = { model, mode, batch: 8, slicing: '', runsMs: [], imagesPerS: 0 };
        const rowN: Row = { model, mode, batch, slicing: '', runsMs: [], imagesPerS: 0 };
        let current: Runner | undefined;
        try {
          // One at a time on the device: batch 8 prepared and warmed, timed, disposed; then the
          // large batch; alternating keeps both under the same load without both in memory.
          for (let k = 0; k < RUNS; k++) {
            for (const [row, n] of [
              [row8, 8],
              [rowN, batch],
            ] as const) {
              const runner = (current = await make(gpu, graph, n));
              row.slicing = runner.slicing;
              if (k === 0) await runner.run(); // the first run compiles
              const t = performance.now();
              await runner.run();
              row.runsMs.push(performance.now() - t);
              runner.dispose();
              current = undefined;
              console.log(`  batch ${n} (${runner.slicing}): ${row.runsMs.at(-1)!.toFixed(0)} ms`);
            }
          }
        } catch (e) {
          rowN.error = (e instanceof Error ? e.message : String(e)).split('\n')[0].slice(0, 300);
          console.log(`  failed: ${rowN.error}`);
          current?.dispose();
        }
        for (const row of [row8, rowN]) if (row.runsMs.length) row.imagesPerS = (row.batch * 1000) / median(row.runsMs);
        if (row8.imagesPerS && rowN.imagesPerS) rowN.vsBatch8 = rowN.imagesPerS / row8.imagesPerS;
        rows.push(row8, rowN);
      }
    }
  }
} finally {
  gpu.dispose();
}

const head = ['model', 'mode', 'batch', 'ran as', 'median ms', 'images/s', '÷ batch 8'];
const table = [
  `| ${head.join(' | ')} |`,
  `|${head.map((_, i) => (i >= 4 ? '---:' : '---')).join('|')}|`,
  ...rows.map(
    (r) =>
      `| ${[
        r.model,
        r.mode,
        r.batch,
        r.error ? `failed: ${r.error.replace(/\|/g, '/')}` : r.slicing,
        r.runsMs.length ? median(r.runsMs).toFixed(0) : '',
        r.imagesPerS ? r.imagesPerS.toFixed(3) : '',
        r.vsBatch8 !== undefined ? r.vsBatch8.toFixed(2) : '',
      ].join(' | ')} |`,
  ),
].join('\n');
const targets = rows
  .filter((r) => r.batch !== 8)
  .map(
    (r) =>
      `- ${r.model} ${r.mode} batch ${r.batch}: images/s at least batch 8's — ${r.vsBatch8 !== undefined && r.vsBatch8 >= 1 ? 'met' : 'MISSED'}${r.vsBatch8 !== undefined ? ` (${r.vsBatch8.toFixed(2)}×)` : ''}`,
  );
const totalS = (performance.now() - started) / 1000;
const command = `npm run bench -- slices${argv.length ? ` ${argv.join(' ')}` : ''}`;
const md = [
  '# Batches beyond one binding (latest run)',
  '',
  `- command: \`${command}\``,
  `- date: ${startedAt.toISOString()}; total runtime ${(totalS / 60).toFixed(1)} min; load average at start ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}, at end ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
  `- input ${SIZE}×${SIZE}; ${RUNS} timed runs per batch after one untimed run, batches alternating; maxStorageBufferBindingSize ${bindingLimit} bytes`,
  '',
  table,
  '',
  "How to read it: **ran as** is how the batch was split (`count × images per slice`, or whole); **÷ batch 8** is the row's images/s over batch 8's, same network and mode. Training: one TrainingPlan step (forward, softmax cross-entropy, backward, SGD with momentum) with every weight trainable, except, in mode `training`, ResNet-50's BatchNormalization, frozen (its slices run one after another in one slice's memory); mode `training-bn` trains it too, in training mode (batch statistics), the slices held side by side and combined where BatchNormalization reduces over the batch.",
  '',
  'Targets (issue 12):',
  ...targets,
  '',
].join('\n');
console.log(`\n${table}\n\n${targets.join('\n')}\n\ntotal runtime ${(totalS / 60).toFixed(1)} min`);
writeResults(
  'slices',
  startedAt,
  { date: startedAt.toISOString(), command, totalS, ...machineRecord(gpu, loadAtStart), size: SIZE, runs: RUNS, rows },
  WRITE_MD ? md : undefined,
);
