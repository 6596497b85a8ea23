// Training memory (`npm run bench -- training-memory`): the GPU bytes one full fine-tune step
// holds for ResNet-50 and VGG-16 at batch 8, by kind of buffer. The network is built as the
// training benchmark builds it (torchvision layout, a new 10-class last layer, every weight
// trainable); Trainer.fit runs one SGD step (momentum 0.9) and every buffer made through
// GpuContext.createBuffer is counted, grouped by its label, while the step's plan and optimizer
// are alive. No time is measured: the figures depend only on the plan and the allocator.
// Prints one table, writes bench/results/training-memory-<ISO date>.json.
//
// Usage: npm run bench -- training-memory [--only resnet50,vgg16] [--size 224] [--batch 8]
import os from 'node:os';
import { buildArchitecture } from '../src/graph/architectures/index.ts';
import { normalSampler, seededRandom } from '../src/graph/random.ts';
import { transfer } from '../src/graph/surgery/index.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Trainer, type TrainBatch } from '../src/train/trainer.ts';
import { machineRecord, writeResults } from './results-file.ts';

const argv = process.argv.slice(2).filter((a) => a !== 'training-memory');
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const MODELS = ['resnet50', 'vgg16'] as const;
type Model = (typeof MODELS)[number];
const ONLY = (option('--only')?.split(',') ?? [...MODELS]) as Model[];
for (const m of ONLY) if (!MODELS.includes(m)) throw new Error(`--only: unknown model '${m}' (${MODELS.join(', ')})`);
const SIZE = Number(option('--size') ?? 224);
if (!Number.isInteger(SIZE) || SIZE < 32) throw new Error(`--size: ${option('--size')} is not an integer ≥ 32`);
const BATCH = Number(option('--batch') ?? 8);
if (!Number.isInteger(BATCH) || BATCH < 1) throw new Error(`--batch: ${option('--batch')} is not a positive integer`);
const CLASSES = 10;
const MiB = 2 ** 20;

/** Buffer kinds, recognised by the labels the engine gives its buffers (first match wins). */
const KINDS: { kind: string; matches: (label: string) => boolean }[] = [
  { kind: 'activations and gradients (arenas, pooled)', matches: (l) => l.startsWith('activation') },
  { kind: 'parameters and constants', matches: (l) => l.startsWith('const ') },
  { kind: 'parameters before the step (undo copies)', matches: (l) => l.endsWith('before the step') },
  { kind: 'optimizer state', matches: (l) => l.startsWith('optimizer ') },
  { kind: 'uniform blocks', matches: (l) => l.endsWith(' params') },
  { kind: 'other (labels, staging, loss)', matches: () => true },
];

interface Row {
  model: Model;
  input: string;
  /** Bytes live while the step's plan and optimizer exist, by kind. */
  byKind: Record<string, number>;
  totalBytes: number;
  /** The most bytes live at once during Trainer.fit. */
  peakBytes: number;
  buffers: number;
  error?: string;
}

/** Every buffer made through the context, live, with its label; the peak of their bytes. */
function meterBuffers(gpu: GpuContext): { live: Map<GPUBuffer, string>; peak: () => number } {
  const live = new Map<GPUBuffer, string>();
  let bytes = 0;
  let peak = 0;
  const create = gpu.createBuffer.bind(gpu);
  gpu.createBuffer = (label, size, usage) => {
    const buffer = create(label, size, usage);
    live.set(buffer, label);
    bytes += buffer.size;
    peak = Math.max(peak, bytes);
    const destroy = buffer.destroy.bind(buffer);
    buffer.destroy = () => {
      if (live.delete(buffer)) bytes -= buffer.size;
      destroy();
    };
    return buffer;
  };
  return { live, peak: () => peak };
}

function byKind(live: Map<GPUBuffer, string>): Record<string, number> {
  const sums: Record<string, number> = Object.fromEntries(KINDS.map((k) => [k.kind, 0]));
  for (const [buffer, label] of live) sums[KINDS.find((k) => k.matches(label))!.kind] += buffer.size;
  return sums;
}

function batchOf(seed: number): TrainBatch {
  const uniform = seededRandom(seed);
  const normal = normalSampler(uniform);
  const images = new Float32Array(BATCH * 3 * SIZE * SIZE);
  for (let i = 0; i < images.length; i++) images[i] = normal();
  const labels = Uint32Array.from({ length: BATCH }, () => Math.floor(uniform() * CLASSES) % CLASSES);
  return { images, labels, size: BATCH };
}

async function measureModel(model: Model): Promise<Row> {
  const gpu = await createNodeGpuContext();
  const meter = meterBuffers(gpu);
  const row: Row = { model, input: `${SIZE}×${SIZE} b${BATCH}`, byKind: {}, totalBytes: 0, peakBytes: 0, buffers: 0 };
  let trainer: Trainer | undefined;
  try {
    const { graph } = transfer(buildArchitecture(model, { inputSize: SIZE, seed: 11 }), {
      case: 3,
      classes: CLASSES,
      seed: 12,
    });
    trainer = await Trainer.create(gpu, graph);
    const batch = batchOf(5);
    await trainer.fit(() => [batch], {
      epochs: 1,
      optimizer: { type: 'sgd', lr: 1e-3, momentum: 0.9 },
      featureCache: false,
      callbacks: {
        onStep: () => {
          row.byKind = byKind(meter.live);
          row.buffers = meter.live.size;
        },
      },
    });
    row.totalBytes = Object.values(row.byKind).reduce((a, b) => a + b, 0);
    row.peakBytes = meter.peak();
  } catch (e) {
    row.error = e instanceof Error ? e.message : String(e);
  } finally {
    trainer?.dispose();
    gpu.dispose();
  }
  return row;
}

const startedAt = new Date();
const loadAtStart = os.loadavg();
const rows: Row[] = [];
for (const model of ONLY) {
  const row = await measureModel(model);
  rows.push(row);
  console.log(`${model}: ${row.error ?? `${(row.totalBytes / MiB).toFixed(1)} MiB in ${row.buffers} buffers`}`);
}

const mib = (b: number) => (b / MiB).toFixed(1);
const header = ['model', 'input', ...KINDS.map((k) => k.kind), 'total MiB', 'peak MiB'];
const lines = [
  `| ${header.join(' | ')} |`,
  `|${header.map(() => '---').join('|')}|`,
  ...rows.map((r) =>
    r.error
      ? `| ${r.model} | ${r.input} | error: ${r.error} |`
      : `| ${[r.model, r.input, ...KINDS.map((k) => mib(r.byKind[k.kind])), mib(r.totalBytes), mib(r.peakBytes)].join(' | ')} |`,
  ),
];
console.log(`\nGPU memory of one full fine-tune step (MiB, live during the step)\n${lines.join('\n')}`);

const gpu = await createNodeGpuContext();
const machine = machineRecord(gpu, loadAtStart);
gpu.dispose();
writeResults(
  'training-memory',
  startedAt,
  { command: `npm run bench -- ${process.argv.slice(2).join(' ')}`, date: startedAt.toISOString(), machine, rows },
  undefined,
);
