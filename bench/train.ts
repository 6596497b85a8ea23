// Training benchmark (issue: `npm run bench -- train`): images/s of one training step at batch 8
// for ResNet-50 and VGG-16 at 224×224 and a reduced size, three ways to train, onnx-graft's
// Trainer against the same architecture, weights, data and optimizer (SGD, momentum 0.9) in
// TensorFlow.js's WebGPU backend on the same adapter in the same run:
//  - full: a new 10-class last layer (transfer case 3), every weight trains (BN on batch statistics);
//  - head: the same network with everything but that layer frozen; each step runs the frozen
//    body forward (BN on running statistics) and trains the head;
//  - cached: as head, but the body runs once per example and the head trains on its features
//    (onnx-graft's Trainer decides to cache by itself; TF.js predicts the body's features once).
// Prints one table, writes bench/results/train-<ISO date>.json and bench/results/train-latest.md.
//
// Usage: npm run bench -- train [--quick] [--only resnet50,vgg16] [--sizes 224,112]
//   [--modes full,head,cached] [--batch 8] [--skip-tfjs] [--max-time S] [--max-step S] [--no-md]
// --quick runs the reduced size only.
import os from 'node:os';
import type * as tfjs from '@tensorflow/tfjs';
import { buildArchitecture } from '../src/graph/architectures/index.ts';
import type { Graph } from '../src/graph/ir.ts';
import { prepareGraph } from '../src/graph/load.ts';
import { normalSampler, seededRandom } from '../src/graph/random.ts';
import { setBatchSize } from '../src/graph/surgery/batch.ts';
import { freeze, transfer } from '../src/graph/surgery/index.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Trainer, type FitOptions, type FitResult, type TrainBatch } from '../src/train/trainer.ts';
import { measureCeiling, type Ceiling } from './ceiling.ts';
import { trainingFlops } from './flops.ts';
import { defaultSamplesFor, measure, settle, type Timing } from './harness.ts';
import { machineRecord, writeResults } from './results-file.ts';
import { buildTfjsNet, type TfjsArchitecture, type TfjsNet } from './tfjs-models.ts';
import { tfjsWebGpu } from './tfjs-webgpu.ts';

type Tf = typeof tfjs;

// ---- options ----

const argv = process.argv.slice(2).filter((a) => a !== 'train');
const flag = (name: string) => argv.includes(name);
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const ARCHS: TfjsArchitecture[] = ['resnet50', 'vgg16'];
const MODES = ['full', 'head', 'cached'] as const;
type Mode = (typeof MODES)[number];
const REDUCED = 112;
const QUICK = flag('--quick');
const ONLY = (option('--only')?.split(',') ?? ARCHS) as TfjsArchitecture[];
for (const m of ONLY) if (!ARCHS.includes(m)) throw new Error(`--only: unknown model '${m}' (${ARCHS.join(', ')})`);
const SIZES = option('--sizes')?.split(',').map(Number) ?? (QUICK ? [REDUCED] : [224, REDUCED]);
for (const s of SIZES)
  if (!Number.isInteger(s) || s < 32) throw new Error(`--sizes: ${s} is not an integer ≥ 32 (VGG-16's smallest input)`);
const RUN_MODES = (option('--modes')?.split(',') ?? [...MODES]) as Mode[];
for (const m of RUN_MODES)
  if (!MODES.includes(m)) throw new Error(`--modes: unknown mode '${m}' (${MODES.join(', ')})`);
const BATCH = Number(option('--batch') ?? 8);
if (!Number.isInteger(BATCH) || BATCH < 1) throw new Error(`--batch: ${option('--batch')} is not a positive integer`);
const MAX_TIME = Number(option('--max-time') ?? 3);
/** A side whose first step takes longer than this is timed by that step alone (VGG-16's full
 * fine-tune in TF.js takes minutes per step on lavapipe). */
const MAX_STEP_S = Number(option('--max-step') ?? 300);
const RUN_TFJS = !flag('--skip-tfjs');
const WRITE_MD = !flag('--no-md');

const CLASSES = 10;
const LR = 1e-3;
const MOMENTUM = 0.9;
/** Distinct batches the data cycles through; the cached rows' first epoch extracts their features. */
const DISTINCT_BATCHES = 2;

// ---- rows ----

type Engine = 'onnx-graft' | 'TF.js WebGPU';

interface Side {
  engine: Engine;
  ms?: number;
  imagesPerS?: number;
  /** Peak bytes of GPU buffers in use during the row (see the legend for what each side counts). */
  peakBytes?: number;
  samples?: number;
  runs?: number;
  firstMs?: number;
  rme?: number;
  totalS?: number;
  /** Timed by its first step alone (compilation included): that step took over --max-step. */
  firstOnly?: boolean;
  /** Cached rows: images/s of the first epoch's steps after the first (body forward + head step). */
  firstEpochImagesPerS?: number;
  /** Loss of the first step (same weights and batch on both sides). */
  firstLoss?: number;
  trainableParameters?: number;
  notes: string[];
  error?: string;
}

interface Row {
  model: TfjsArchitecture;
  size: number;
  mode: Mode;
  batch: number;
  ours: Side;
  tfjs?: Side;
  /** onnx-graft images/s ÷ TF.js images/s: above 1, onnx-graft is faster. */
  ratio?: number;
  load?: number;
  /** FLOPs of one image's training step (bench/flops.ts trainingFlops); not for cached rows. */
  flopsPerImage?: number;
}

/** The adapter's FMA ceiling, measured at the start and the end of the run (bench/ceiling.ts). */
const ceilings: Ceiling[] = [];
const bestFma = () => (ceilings.length ? Math.max(...ceilings.map((c) => c.fmaGflops)) : undefined);
/** onnx-graft's GFLOP/s in a row as a fraction of the best ceiling measured. */
function ceilingFraction(r: Row): number | undefined {
  const fma = bestFma();
  if (!fma || r.flopsPerImage === undefined || r.ours.imagesPerS === undefined || r.ours.error) return undefined;
  return (r.ours.imagesPerS * r.flopsPerImage) / 1e9 / fma;
}

/** One image's training-step FLOPs of a graph as it trains (its trainable flags). */
function flopsPerImage(graph: Graph): number {
  return trainingFlops(prepareGraph(setBatchSize(graph, 1)));
}

const rows: Row[] = [];
const started = performance.now();
const startedAt = new Date();
const loadAtStart = os.loadavg();
const MiB = 2 ** 20;
const errText = (e: unknown) => (e instanceof Error ? e.message : String(e)).split('\n')[0].slice(0, 300);

/**
 * Times training steps: one untimed first step (it compiles), then Benchmark.js's deferred loop
 * (harness.measure) with samples by the first step's time (2 over a minute, 1 over two); a first
 * step over --max-step is the only one (firstOnly).
 */
async function timeSteps(name: string, step: () => Promise<unknown>): Promise<Partial<Side>> {
  const t0 = performance.now();
  await step();
  const firstMs = performance.now() - t0;
  if (firstMs > MAX_STEP_S * 1000) {
    return {
      ms: firstMs,
      imagesPerS: (BATCH * 1000) / firstMs,
      samples: 1,
      runs: 1,
      firstMs,
      totalS: firstMs / 1000,
      firstOnly: true,
    };
  }
  const samples = firstMs > 120_000 ? 1 : defaultSamplesFor(firstMs);
  const t: Timing = await measure(name, async (warmup) => void (warmup ? undefined : await step()), {
    maxTime: MAX_TIME,
    samplesFor: () => samples,
  });
  return {
    ms: t.ms,
    imagesPerS: (BATCH * 1000) / t.ms,
    samples: t.samples,
    runs: t.runs,
    firstMs,
    rme: t.rme,
    totalS: t.totalS + firstMs / 1000,
  };
}

// ---- data: seeded random images (standard normal, like normalised pixels) and labels ----

interface Data {
  /** NCHW, for onnx-graft. */
  batches: TrainBatch[];
  /** The same images NHWC, for TF.js. */
  nhwc: Float32Array[];
}

function makeData(size: number, batch: number, seed: number): Data {
  const uniform = seededRandom(seed);
  const normal = normalSampler(uniform);
  const batches: TrainBatch[] = [];
  const nhwc: Float32Array[] = [];
  const plane = size * size;
  for (let b = 0; b < DISTINCT_BATCHES; b++) {
    const images = new Float32Array(batch * 3 * plane);
    for (let i = 0; i < images.length; i++) images[i] = normal();
    const labels = Uint32Array.from({ length: batch }, () => Math.floor(uniform() * CLASSES) % CLASSES);
    const indices = Uint32Array.from({ length: batch }, (_, k) => b * batch + k);
    batches.push({ images, labels, size: batch, indices });
    const t = new Float32Array(images.length);
    for (let n = 0; n < batch; n++)
      for (let c = 0; c < 3; c++)
        for (let p = 0; p < plane; p++) t[(n * plane + p) * 3 + c] = images[(n * 3 + c) * plane + p];
    nhwc.push(t);
  }
  return { batches, nhwc };
}

// ---- onnx-graft: GPU memory meter and a Trainer.fit driven one step at a time ----

/** Counts the bytes of every buffer made through the context (all of the engine's: weights,
 * activations, gradients, optimizer moments, staging), live and at peak. */
function meterBuffers(gpu: GpuContext): { live: () => number; resetPeak: () => void; peak: () => number } {
  let live = 0;
  let peak = 0;
  const create = gpu.createBuffer.bind(gpu);
  gpu.createBuffer = (label, size, usage) => {
    const buffer = create(label, size, usage);
    live += buffer.size;
    peak = Math.max(peak, live);
    const destroy = buffer.destroy.bind(buffer);
    let gone = false;
    buffer.destroy = () => {
      if (!gone) live -= buffer.size;
      gone = true;
      destroy();
    };
    return buffer;
  };
  return { live: () => live, resetPeak: () => (peak = live), peak: () => peak };
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * Trainer.fit over an endless epoch whose batches are released one per step(): the benchmark
 * times exactly what fit does per step (checks, feature cache, upload, the training step, the
 * loss readback), with the trainer's own decisions (feature caching) left to it.
 */
class FitDriver {
  #go = deferred<boolean>();
  #stepped: Deferred<number> | undefined;
  readonly #done: Promise<FitResult>;
  readonly log: string[] = [];
  firstLoss: number | undefined;

  constructor(trainer: Trainer, batches: TrainBatch[], options: Omit<FitOptions, 'epochs' | 'callbacks'>) {
    const source = async function* (driver: FitDriver): AsyncGenerator<TrainBatch> {
      for (let i = 0; ; i++) {
        const go = await driver.#go.promise;
        driver.#go = deferred();
        if (!go) return;
        yield batches[i % batches.length];
      }
    };
    this.#done = trainer.fit(() => source(this), {
      ...options,
      epochs: 1,
      callbacks: {
        onStep: ({ loss }) => {
          this.firstLoss ??= loss;
          this.#stepped?.resolve(loss);
        },
        onLog: (m) => this.log.push(m),
      },
    });
    this.#done.catch(() => undefined); // seen through step() and finish()
  }

  /** One optimizer step; resolves with its loss once fit has read it back. */
  step(): Promise<number> {
    const stepped = (this.#stepped = deferred<number>());
    this.#go.resolve(true);
    return Promise.race([
      stepped.promise,
      this.#done.then(() => Promise.reject(new Error('fit ended before the step'))),
    ]);
  }

  finish(): Promise<FitResult> {
    this.#go.resolve(false);
    return this.#done;
  }
}

/** A model and size as onnx-graft trains it: transfer case 3 (all trainable), and that with all but the last layer frozen. */
function ourGraphs(model: TfjsArchitecture, size: number): { full: Graph; head: Graph } {
  const base = buildArchitecture(model, { inputSize: size, seed: 11 });
  const { graph: full } = transfer(base, { case: 3, classes: CLASSES, seed: 12 });
  const head = full.clone();
  freeze(head, { allButLast: 1 });
  return { full, head };
}

async function runOurs(
  gpu: GpuContext,
  meter: ReturnType<typeof meterBuffers>,
  graph: Graph,
  mode: Mode,
  data: Data,
): Promise<Side> {
  const side: Side = { engine: 'onnx-graft', notes: [] };
  side.trainableParameters = graph.parameterCount((i) => i.trainable);
  await settle();
  const baseline = meter.live();
  meter.resetPeak();
  let trainer: Trainer | undefined;
  let driver: FitDriver | undefined;
  try {
    trainer = await Trainer.create(gpu, graph);
    driver = new FitDriver(trainer, data.batches, {
      optimizer: { type: 'sgd', lr: LR, momentum: MOMENTUM },
      featureCache: mode === 'head' ? false : undefined,
      seed: 5,
    });
    const d = driver;
    if (mode === 'cached') {
      // The first epoch: the trainer runs the body on each new example (the first step also compiles).
      const t0 = performance.now();
      await d.step();
      side.firstMs = performance.now() - t0;
      const t1 = performance.now();
      for (let b = 1; b < DISTINCT_BATCHES; b++) await d.step();
      side.firstEpochImagesPerS = ((DISTINCT_BATCHES - 1) * BATCH * 1000) / (performance.now() - t1);
    }
    const firstMs = side.firstMs;
    Object.assign(side, await timeSteps(`${mode} onnx-graft`, () => d.step()));
    if (firstMs !== undefined) side.firstMs = firstMs;
    side.peakBytes = meter.peak() - baseline;
    side.firstLoss = d.firstLoss;
    const result = await d.finish();
    const cacheLine = d.log.find((m) => m.startsWith('feature caching'));
    side.notes.push(`Trainer chose feature caching: ${result.featureCache ? 'yes' : 'no'}`);
    if ((mode === 'cached') !== result.featureCache)
      side.notes.push(`UNEXPECTED: the ${mode} row ${result.featureCache ? 'cached' : 'did not cache'} features`);
    if (mode === 'cached' && cacheLine) side.notes.push(`its log: "${cacheLine.slice(0, 80)}…"`);
  } catch (e) {
    side.error = errText(e);
    side.peakBytes = meter.peak() - baseline;
    await driver?.finish().catch(() => undefined);
  } finally {
    trainer?.dispose();
    await settle();
    const left = meter.live() - baseline;
    if (left > MiB)
      side.notes.push(`${(left / MiB).toFixed(0)} MiB of GPU buffers still alive after Trainer.dispose()`);
  }
  return side;
}

// ---- TF.js ----

/** Tracks the most bytes TF.js's buffer manager has handed out at once (its pool keeps freed buffers for reuse). */
function meterTfjs(tf: Tf): { peak: () => number; pool: () => number } {
  const manager = (
    tf.backend() as unknown as {
      bufferManager: { acquireBuffer: (...a: unknown[]) => GPUBuffer; numBytesUsed: number; numBytesAllocated: number };
    }
  ).bufferManager;
  let peak = manager.numBytesUsed;
  const acquire = manager.acquireBuffer.bind(manager);
  manager.acquireBuffer = (...a: unknown[]) => {
    const buffer = acquire(...a);
    peak = Math.max(peak, manager.numBytesUsed);
    return buffer;
  };
  return { peak: () => peak, pool: () => manager.numBytesAllocated };
}

/** A fresh TF.js WebGPU backend (new device, empty buffer pool): the previous row's pool is freed. */
async function freshTfjs(tf: Tf): Promise<void> {
  const old = (tf.backend() as unknown as { device?: GPUDevice }).device;
  tf.engine().reset();
  old?.destroy();
  if (!(await tf.setBackend('webgpu'))) throw new Error('TF.js: the webgpu backend did not restart');
  await tf.ready();
}

/** Runs `f` inside validation and out-of-memory error scopes of TF.js's device: a WebGPU error fails the step. */
async function scoped<T>(tf: Tf, f: () => Promise<T>): Promise<T> {
  const device = (tf.backend() as unknown as { device: GPUDevice }).device;
  device.pushErrorScope('out-of-memory');
  device.pushErrorScope('validation');
  let result: T | undefined;
  let failure: unknown;
  try {
    result = await f();
  } catch (e) {
    failure = e;
  }
  const validation = await device.popErrorScope();
  const memory = await device.popErrorScope();
  if (failure) throw failure;
  const error = validation ?? memory;
  if (error)
    throw new Error(`WebGPU ${validation ? 'validation' : 'out-of-memory'} error: ${error.message.split('\n')[0]}`);
  return result as T;
}

async function runTfjs(
  tf: Tf,
  model: TfjsArchitecture,
  size: number,
  mode: Mode,
  data: Data,
  weights: Graph,
): Promise<Side> {
  const side: Side = { engine: 'TF.js WebGPU', notes: [] };
  await freshTfjs(tf);
  await settle();
  const meter = meterTfjs(tf);
  let net: TfjsNet | undefined;
  let optimizer: tfjs.MomentumOptimizer | undefined;
  try {
    const limit = (tf.backend() as unknown as { device: GPUDevice }).device.limits.maxStorageBufferBindingSize;
    net = buildTfjsNet(tf, model, size, CLASSES, limit);
    for (const { path, blocks } of net.splits)
      side.notes.push(
        `${path} as ${blocks} Dense blocks + concat (its kernel exceeds the ${limit / MiB} MiB binding limit)`,
      );
    net.load((name) => {
      const init = weights.initializers.get(name);
      if (!init) throw new Error(`TF.js model: the graph has no weight '${name}'`);
      return { dims: init.value.dims, data: init.value.data as Float32Array };
    });
    const n = net;
    const headOnly = mode !== 'full';
    for (const layer of n.model.layers) layer.trainable = !headOnly || layer === n.head;
    const variables = n.model.trainableWeights.map((w) => w.read() as tfjs.Variable);
    side.trainableParameters = n.model.trainableWeights.reduce(
      (s, w) => s + w.shape.reduce((a, b) => (a ?? 1) * (b ?? 1), 1)!,
      0,
    );
    optimizer = tf.train.momentum(LR, MOMENTUM);
    const opt = optimizer;
    const labels = data.batches.map((b) => Int32Array.from(b.labels));
    const train = async (k: number, forward: () => tfjs.Tensor): Promise<number> => {
      const y = tf.oneHot(tf.tensor1d(labels[k], 'int32'), CLASSES);
      const loss = opt.minimize(() => tf.losses.softmaxCrossEntropy(y, forward()) as tfjs.Scalar, true, variables)!;
      const value = (await loss.data())[0];
      tf.dispose([y, loss]);
      return value;
    };
    // One step on batch k: the images uploaded from the host, as onnx-graft's Trainer takes them.
    const imageStep = (k: number) => {
      const x = tf.tensor4d(data.nhwc[k], [BATCH, size, size, 3]);
      return train(k, () => n.model.apply(x, { training: !headOnly }) as tfjs.Tensor).finally(() => x.dispose());
    };
    // Cached: the body's features on the host, uploaded per step, through the head alone.
    const features: Float32Array[] = [];
    const featureStep = (k: number) => {
      const f = tf.tensor2d(features[k], [BATCH, n.features]);
      return train(k, () => n.headModel.apply(f) as tfjs.Tensor).finally(() => f.dispose());
    };
    const firstEpochStep = async (k: number) => {
      const x = tf.tensor4d(data.nhwc[k], [BATCH, size, size, 3]);
      const f = n.body.predict(x) as tfjs.Tensor;
      features[k] = (await f.data()) as Float32Array;
      tf.dispose([x, f]);
      return featureStep(k);
    };
    let step = 0;
    let firstLoss: number | undefined;
    if (mode === 'cached') {
      const t0 = performance.now();
      firstLoss = await scoped(tf, () => firstEpochStep(0));
      side.firstMs = performance.now() - t0;
      const t1 = performance.now();
      for (let b = 1; b < DISTINCT_BATCHES; b++) await scoped(tf, () => firstEpochStep(b));
      side.firstEpochImagesPerS = ((DISTINCT_BATCHES - 1) * BATCH * 1000) / (performance.now() - t1);
      step = DISTINCT_BATCHES;
    }
    const firstMs = side.firstMs;
    Object.assign(
      side,
      await timeSteps(`${mode} TF.js`, async () => {
        const k = step++ % DISTINCT_BATCHES;
        const loss = await scoped(tf, () => (mode === 'cached' ? featureStep(k) : imageStep(k)));
        firstLoss ??= loss;
      }),
    );
    if (firstMs !== undefined) side.firstMs = firstMs;
    side.firstLoss = firstLoss;
    side.peakBytes = meter.peak();
    side.notes.push(`buffer pool ${(meter.pool() / MiB).toFixed(0)} MiB`);
  } catch (e) {
    side.error = errText(e);
    side.peakBytes = meter.peak();
  } finally {
    optimizer?.dispose();
    net?.model.dispose();
    net?.headModel.dispose();
    tf.disposeVariables();
    await settle();
  }
  return side;
}

// ---- the run ----

function describeRow(row: Row): string {
  return `${row.model} ${row.size}×${row.size} b${row.batch} ${row.mode}`;
}

function printRow(row: Row): void {
  const fmt = (s: Side | undefined) =>
    !s
      ? 'not run'
      : s.error
        ? `FAILED ${s.error}`
        : `${s.imagesPerS!.toFixed(2)} img/s (${s.ms!.toFixed(0)} ms/step, ${s.samples} samples, peak ${((s.peakBytes ?? 0) / MiB).toFixed(0)} MiB)`;
  console.log(
    `  ${describeRow(row)} | onnx-graft ${fmt(row.ours)} | TF.js ${fmt(row.tfjs)}${row.ratio !== undefined ? ` | ${row.ratio.toFixed(2)}×` : ''}`,
  );
}

const gpu = await createNodeGpuContext();
const meter = meterBuffers(gpu);
const adapter = `${gpu.info.vendor} ${gpu.info.architecture} ${gpu.info.description || gpu.info.device}`;
console.log(`adapter: ${adapter}; ${os.cpus().length} CPUs; load ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}`);
const tf = RUN_TFJS ? await tfjsWebGpu() : undefined;
ceilings.push(await measureCeiling(gpu));
console.log(
  `FMA ceiling ${ceilings[0].fmaGflops.toFixed(1)} GFLOP/s (plain loop ${ceilings[0].fmaLoopGflops.toFixed(1)})`,
);
try {
  for (const model of ONLY) {
    for (const size of SIZES) {
      console.log(`${model} ${size}×${size}: building (seeded random weights, new ${CLASSES}-class last layer)`);
      let graphs: { full: Graph; head: Graph };
      try {
        graphs = ourGraphs(model, size);
      } catch (e) {
        for (const mode of RUN_MODES)
          rows.push({
            model,
            size,
            mode,
            batch: BATCH,
            ours: { engine: 'onnx-graft', notes: [], error: `building the graph failed: ${errText(e)}` },
          });
        continue;
      }
      const data = makeData(size, BATCH, 1000 + size);
      for (const mode of RUN_MODES) {
        const row: Row = {
          model,
          size,
          mode,
          batch: BATCH,
          ours: await runOurs(gpu, meter, mode === 'full' ? graphs.full : graphs.head, mode, data),
        };
        if (mode !== 'cached') row.flopsPerImage = flopsPerImage(mode === 'full' ? graphs.full : graphs.head);
        if (tf) row.tfjs = await runTfjs(tf, model, size, mode, data, graphs.full);
        const [a, b] = [row.ours, row.tfjs];
        if (a.imagesPerS !== undefined && b?.imagesPerS !== undefined) row.ratio = a.imagesPerS / b.imagesPerS;
        if (a.firstLoss !== undefined && b?.firstLoss !== undefined) {
          const diff = Math.abs(a.firstLoss - b.firstLoss) / Math.max(Math.abs(b.firstLoss), 1e-6);
          a.notes.push(
            `first loss ${a.firstLoss.toFixed(4)} vs TF.js ${b.firstLoss.toFixed(4)}${diff > 1e-3 ? ' MISMATCH' : ''}`,
          );
        }
        if (
          a.trainableParameters !== undefined &&
          b?.trainableParameters !== undefined &&
          a.trainableParameters !== b.trainableParameters
        ) {
          a.notes.push(`MISMATCH: ${a.trainableParameters} trainable parameters, TF.js ${b.trainableParameters}`);
        }
        row.load = os.loadavg()[0];
        rows.push(row);
        printRow(row);
      }
    }
  }
  ceilings.push(await measureCeiling(gpu));
} finally {
  gpu.dispose();
}

// ---- table, files ----

const MODE_TEXT: Record<Mode, string> = {
  full: 'full fine-tune',
  head: 'head only, no cache',
  cached: 'head only, cached features',
};
const fmtRate = (s: Side | undefined) =>
  !s
    ? 'not run'
    : s.error
      ? `failed: ${s.error}`
      : `${s.imagesPerS! >= 10 ? s.imagesPerS!.toFixed(1) : s.imagesPerS!.toFixed(2)}${s.firstOnly ? '‡' : ''}`;
const fmtMem = (s: Side | undefined) =>
  s?.peakBytes !== undefined && !s.error ? `${(s.peakBytes / MiB).toFixed(s.peakBytes < 10 * MiB ? 1 : 0)}` : '';
const fmtSideNotes = (s: Side | undefined, who: string) => {
  if (!s || s.error) return [];
  const notes = [`${s.ms!.toFixed(0)} ms/step`, `first step ${(s.firstMs! / 1000).toFixed(1)} s`];
  if (s.firstEpochImagesPerS !== undefined)
    notes.push(`first epoch (features extracted) ${s.firstEpochImagesPerS.toFixed(2)} img/s`);
  return [`${who}: ${[...notes, ...s.notes].join(', ')}`];
};

function table(): string {
  const head = [
    'model',
    'input',
    'training',
    'onnx-graft img/s',
    'TF.js img/s',
    '× vs TF.js',
    '× FMA ceiling',
    'onnx-graft peak GPU MiB',
    'TF.js peak GPU MiB',
    'timing',
    'notes',
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i >= 3 && i <= 8 ? '---:' : '---')).join('|')}|`];
  for (const r of rows) {
    const cells = [
      r.model,
      `${r.size}×${r.size} b${r.batch}`,
      MODE_TEXT[r.mode],
      fmtRate(r.ours),
      fmtRate(r.tfjs),
      r.ratio !== undefined ? `${r.ratio.toFixed(2)}×${r.ours.firstOnly || r.tfjs?.firstOnly ? '‡' : ''}` : '',
      ceilingFraction(r)?.toFixed(2) ?? '',
      fmtMem(r.ours),
      fmtMem(r.tfjs),
      `wall; samples ${[r.ours, r.tfjs].map((x) => (!x || x.error ? '–' : x.firstOnly ? 'first step only' : String(x.samples))).join(' / ')}`,
      [...fmtSideNotes(r.ours, 'ours'), ...fmtSideNotes(r.tfjs, 'TF.js')].join('; '),
    ];
    lines.push(`| ${cells.map((c) => c.replace(/\|/g, '/')).join(' | ')} |`);
  }
  return lines.join('\n');
}

function targets(): string[] {
  const ceiling = rows
    .filter((r) => r.mode === 'full' && ceilingFraction(r) !== undefined)
    .map((r) => {
      const f = ceilingFraction(r)!;
      return `- ${describeRow(r)}: ≥ 0.7 of the FMA ceiling — ${f >= 0.7 ? 'met' : 'MISSED'} (${f.toFixed(2)})`;
    });
  return ceiling.concat(
    rows.map((r) => {
      const verdict =
        r.ratio === undefined
          ? r.ours.error
            ? 'MISSED (onnx-graft failed)'
            : 'no comparison (TF.js failed or not run)'
          : r.ratio > 1
            ? 'met'
            : 'MISSED';
      return `- ${describeRow(r)}: ahead of TF.js — ${verdict}${r.ratio !== undefined ? ` (${r.ratio.toFixed(2)}×)` : ''}`;
    }),
  );
}

const totalS = (performance.now() - started) / 1000;
const command = `npm run bench -- train${argv.length ? ` ${argv.join(' ')}` : ''}`;
const header = [
  '# Training benchmark (latest run)',
  '',
  `- command: \`${command}\``,
  `- date: ${startedAt.toISOString()}; total runtime ${(totalS / 60).toFixed(1)} min`,
  `- adapter: ${adapter}; ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'CPU'}; load average at start ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}, at end ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
  `- versions: node ${process.version}, TF.js ${tf ? tf.version.tfjs : 'not run'}`,
  `- adapter FMA ceiling (bench/ceiling.ts, best of start and end): ${bestFma()?.toFixed(1)} GFLOP/s (start ${ceilings[0]?.fmaGflops.toFixed(1)}, end ${ceilings[1]?.fmaGflops.toFixed(1)}; the plain loop kernel ${ceilings[0]?.fmaLoopGflops.toFixed(1)} and ${ceilings[1]?.fmaLoopGflops.toFixed(1)}, the ceiling before 2026-12-07)`,
];
const legend = [
  '',
  'How to read it:',
  `- **img/s** = batch ÷ the median wall time of one training step over Benchmark.js samples (deferred async loop, after an untimed first step that compiles pipelines; a first step over 15 s gets 3 samples, over 60 s 2, over 120 s 1). ‡: timed by its first step alone (pipeline compilation included), which took over ${MAX_STEP_S} s (\`--max-step\`). One step, on both sides: the batch uploaded from the host, forward, softmax cross-entropy, backward, the SGD update (lr ${LR}, momentum ${MOMENTUM}, no weight decay) and the loss read back. **× vs TF.js** = onnx-graft img/s ÷ TF.js img/s: above 1, onnx-graft is faster. **timing**: wall clock on both sides (like for like); the Benchmark.js sample counts, onnx-graft / TF.js.`,
  `- Same network, weights and data on both sides: onnx-graft builds torchvision's layout (src/graph/architectures, seeded He-normal weights) and replaces the last layer with a ${CLASSES}-class one (transfer case 3); TF.js builds the same layers channels-last (bench/tfjs-models.ts) and copies those weights in; images are seeded standard-normal, labels seeded uniform over ${CLASSES} classes, ${DISTINCT_BATCHES} distinct batches cycled. "first loss" compares the two engines' losses on the first batch with the initial weights (checks that the networks match). VGG-16 has no dropout on either side (the ONNX-layout graph has none); below 224 its adaptive 7×7 pool is two MatMuls with averaging matrices on both sides.`,
  '- **full fine-tune**: every weight trains; BatchNormalization uses batch statistics (and updates its running ones). onnx-graft: `Trainer.fit`; TF.js: `optimizer.minimize` over `model.apply(x, {training: true})` with every trainable variable.',
  "- **head only, no cache**: everything but the last layer frozen (`freeze(graph, { allButLast: 1 })`; TF.js `layer.trainable = false`); each step runs the frozen body forward, BatchNormalization on running statistics (TF.js `training: false`), and trains the last layer. onnx-graft: `Trainer.fit` with `featureCache: false`; TF.js: `optimizer.minimize` over the whole model with the head's variables only.",
  '- **head only, cached features**: onnx-graft: `Trainer.fit` with dataset indices and no `featureCache` option: the trainer decides by itself to run the frozen body once per example and train the head on the cached features (its log line is quoted); TF.js: `body.predict` once per example, the features read back to the host. Timed steps (both sides): the 8 feature vectors uploaded, the last layer trained. The first epoch (first step excluded: it compiles) is given separately in the notes, body forward included.',
  '- **peak GPU MiB**: onnx-graft: the most bytes of GPU buffers alive at once during the row, counted at GpuContext.createBuffer (weights, gradients, optimizer moments, the pre-step copies kept to undo a diverged step, activations, the feature-extraction session; readback staging excluded); TF.js: the most bytes its buffer manager had handed out at once (its tensors, uniforms and upload staging); the buffer pool it keeps (freed buffers held for reuse) is in the notes. Each TF.js row starts on a fresh backend (new device, empty pool).',
  "- **× FMA ceiling**: onnx-graft img/s × the FLOPs of one image's step ÷ the adapter's FMA ceiling measured in the same run. FLOPs (bench/flops.ts `trainingFlops`): 2·MACs of each Conv, Gemm and MatMul forward, plus its weight gradient where that weight trains, plus its input gradient where a trained weight lies upstream (so full fine-tuning is about 3× the forward, the head-only rows little more than the forward). Target (issue 12): full fine-tuning ≥ 0.7.",
  "- Every row's warm-up time, sample count and total time are in the JSON.",
];
const md = [...header, '', table(), ...legend, '', 'Targets:', ...targets(), ''].join('\n');
console.log(`\n${table()}\n\nTarget:\n${targets().join('\n')}\n\ntotal runtime ${(totalS / 60).toFixed(1)} min`);

writeResults(
  'train',
  startedAt,
  {
    date: startedAt.toISOString(),
    command,
    totalS,
    ...machineRecord(gpu, loadAtStart),
    settings: {
      batch: BATCH,
      classes: CLASSES,
      lr: LR,
      momentum: MOMENTUM,
      distinctBatches: DISTINCT_BATCHES,
      maxTime: MAX_TIME,
      maxStepS: MAX_STEP_S,
    },
    ceiling: { bestFmaGflops: bestFma(), measured: ceilings },
    rows,
  },
  WRITE_MD ? md : undefined,
);
// TF.js holds a Dawn instance for the life of the process.
process.exit(0);
