// Inference benchmark (issue 3), all in one run on this machine's adapter:
//  - kernels: GEMM 512³ and 1024³ (also on an f16 variant, where the adapter has 'shader-f16'),
//    every distinct 3×3 convolution of ResNet-50 at batch 1 and the fully connected layers of
//    VGG-16, AlexNet and ResNet-50 at batch 1, for onnx-graft's kernels, onnxruntime-node (CPU
//    and WebGPU execution providers, single-node ONNX models) and TensorFlow.js's WebGPU backend;
//  - models: each light model-zoo network (seeded random weights) at batch 1 and 8, for
//    onnx-graft's Session and onnxruntime-node's CPU and WebGPU providers.
// Prints one table, writes bench/results/inference-<ISO date>.json and bench/results/inference-latest.md.
//
// Usage: npm run bench -- inference [--skip-kernels] [--skip-models] [--models resnet50,vgg19]
//   [--batches 1,8] [--kernels gemm,conv,dense] [--skip-ort-webgpu] [--skip-tfjs] [--max-time S] [--no-md]
// The adapter's FMA ceiling and copy bandwidth (bench/ceiling.ts) are measured at the start and
// the end of the run; compute-bound rows get their fraction of the ceiling, batch-1 dense
// (fully connected) rows their fraction of the copy bandwidth.
import fs from 'node:fs';
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { loadModel } from '../src/graph/load.ts';
import type { Graph } from '../src/graph/ir.ts';
import {
  defaultVariant,
  F16_GEMM_VARIANTS,
  gemmTarget,
  variantKey,
  variantRuns,
  type GemmProblem,
  type GemmTarget,
  type GemmVariant,
} from '../src/kernels/gemm.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { matmulProblem } from '../src/kernels/linear.ts';
import { createNodeGpuContext, writeTextAtomic } from '../src/node/index.ts';
import { Session } from '../src/runtime/session.ts';
import {
  LIGHT_MODELS,
  lightModelPath,
  onnxBytesForOrt,
  randomizedLightModel,
  type LightModel,
} from '../test/helpers/reference-models.ts';
import { measureCeiling, type Ceiling } from './ceiling.ts';
import { convJob, denseJob, kernelRunner, matmulJob, type KernelJob } from './engine-kernels.ts';
import { graphFlops } from './flops.ts';
import { defaultSamplesFor, measure, median, relL2, RssPeak, settle, type Timing } from './harness.ts';
import { tfjsHasTimestamps, tfjsWebGpu } from './tfjs-webgpu.ts';
import {
  convModel,
  DENSE_LAYERS,
  denseBytes,
  denseModel,
  distinctConvs,
  matmulModel,
  withBatch,
  type ConvShape,
  type SingleNode,
} from './workloads.ts';

// ---- options ----

const argv = process.argv.slice(2).filter((a) => a !== 'inference');
const flag = (name: string) => argv.includes(name);
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const MODELS = (option('--models')?.split(',') ?? [...LIGHT_MODELS]) as LightModel[];
for (const m of MODELS)
  if (!LIGHT_MODELS.includes(m)) throw new Error(`--models: unknown model '${m}' (${LIGHT_MODELS.join(', ')})`);
const BATCHES = option('--batches')?.split(',').map(Number) ?? [1, 8];
const MAX_TIME = Number(option('--max-time') ?? 3);
const RUN_KERNELS = !flag('--skip-kernels');
const RUN_MODELS = !flag('--skip-models');
const RUN_ORT_WEBGPU = !flag('--skip-ort-webgpu');
const RUN_TFJS = !flag('--skip-tfjs');
const WRITE_MD = !flag('--no-md');
const KERNEL_GROUPS = option('--kernels')?.split(',') ?? ['gemm', 'conv', 'dense'];
for (const k of KERNEL_GROUPS)
  if (!['gemm', 'conv', 'dense'].includes(k)) throw new Error(`--kernels: unknown group '${k}' (gemm, conv, dense)`);

// ---- rows ----

type EngineName = 'onnx-graft' | 'ORT CPU' | 'ORT WebGPU' | 'TF.js WebGPU';
type Method = 'gpu' | 'wall';

interface Ratio {
  /** Rival ms ÷ onnx-graft ms: above 1, onnx-graft is faster. */
  value: number;
  /** Both sides timed the same way (GPU timestamps on both, or wall clock on both). */
  likeForLike: boolean;
  /** The rival's output is wrong (its relative error against onnxruntime CPU): no ratio means anything. */
  wrong?: number;
}

/** Above this relative error against onnxruntime CPU an output is wrong, not rounded differently. */
const WRONG_OUTPUT = 1e-3;

interface Row {
  section: 'kernel' | 'model';
  what: string;
  engine: EngineName;
  method: Method;
  /** How the time was taken, for the table. */
  timing: string;
  ms?: number;
  gflops?: number;
  flops: number;
  /** Bytes and what they count. */
  memory?: { bytes: number; kind: string };
  samples?: number;
  runs?: number;
  firstMs?: number;
  rme?: number;
  /** Wall time of the whole measurement (warm-up included), s; 1-minute load average after it. */
  totalS?: number;
  load?: number;
  notes: string[];
  error?: string;
  ratios?: { ortWebgpu?: Ratio; ortCpu?: Ratio; tfjs?: Ratio };
  /** Memory-bound rows (batch-1 dense layers): the bytes they must move (weights + input + output). */
  bytesMoved?: number;
  /** GFLOP/s ÷ the adapter's FMA ceiling (compute-bound rows on the adapter). */
  ofCeiling?: number;
  /** Bytes moved per second ÷ the adapter's copy bandwidth (memory-bound rows on the adapter). */
  ofCopy?: number;
  /** Relative L2 error of the output against onnxruntime CPU's (from the row's note). */
  relErr?: number;
}

const rows: Row[] = [];
/** Memory-bound workloads by `what`: the bytes each must move. */
const bytesMovedOf = new Map<string, number>();
/** The adapter's ceiling, measured at the start and at the end of the run. */
const ceilings: Ceiling[] = [];
const started = performance.now();
const startedAt = new Date();
const loadAtStart = os.loadavg();

function add(row: Row): Row {
  if (row.ms !== undefined) row.gflops = row.flops / row.ms / 1e6;
  const err = /rel\.err vs ORT CPU (\S+)/.exec(row.notes.join('; '));
  if (err) row.relErr = Number(err[1]);
  row.load = os.loadavg()[0];
  rows.push(row);
  const ms = row.ms !== undefined ? `${row.ms.toFixed(1)} ms` : 'failed';
  const gf = row.gflops !== undefined ? ` ${row.gflops.toFixed(2)} GFLOP/s` : '';
  console.log(
    `  ${row.what} | ${row.engine} | ${row.method}: ${ms}${gf}${row.error ? ` ERROR ${row.error}` : ''}${row.notes.length ? ` (${row.notes.join('; ')})` : ''}`,
  );
  return row;
}

function fromTiming(t: Timing): Pick<Row, 'ms' | 'samples' | 'runs' | 'firstMs' | 'rme' | 'totalS'> {
  return { ms: t.ms, samples: t.samples, runs: t.runs, firstMs: t.firstMs, rme: t.rme, totalS: t.totalS };
}

const MiB = 2 ** 20;
const errText = (e: unknown) => (e instanceof Error ? e.message : String(e)).split('\n')[0].slice(0, 200);
const sinInput = (n: number) => {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.sin(i * 0.01);
  return x;
};

// ---- onnxruntime (both providers): wall time around session.run, inputs uploaded and outputs
// read back every run (onnxruntime-node offers no GPU-resident I/O or GPU timer) ----

async function ortRows(
  section: Row['section'],
  what: string,
  graph: Graph,
  feed: { name: string; dims: number[]; data: Float32Array },
  flops: number,
  reference: Float32Array | undefined,
  providers: ('cpu' | 'webgpu')[],
  maxTime: number,
): Promise<Float32Array | undefined> {
  const bytes = onnxBytesForOrt(graph);
  for (const provider of providers) {
    const engine: EngineName = provider === 'cpu' ? 'ORT CPU' : 'ORT WebGPU';
    const timing = 'wall: session.run (upload + run + readback)';
    await settle();
    const rss = new RssPeak();
    let session: ort.InferenceSession | undefined;
    try {
      const t0 = performance.now();
      session = await ort.InferenceSession.create(bytes, { executionProviders: [provider], logSeverityLevel: 3 });
      const createMs = performance.now() - t0;
      const tensor = new ort.Tensor('float32', feed.data, feed.dims);
      let out: Float32Array | undefined;
      const s = session;
      const t = await measure(
        `${what} ${engine}`,
        async (warmup) => {
          const result = await s.run({ [feed.name]: tensor });
          rss.sample();
          const first = result[s.outputNames[0]];
          if (warmup) out = new Float32Array(first.data as Float32Array);
          for (const v of Object.values(result)) v.dispose();
        },
        { maxTime, samplesFor: defaultSamplesFor },
      );
      const notes = [`create ${createMs.toFixed(0)} ms`, `first run ${t.firstMs.toFixed(0)} ms`];
      if (t.samples < 5) notes.push(`only ${t.samples} samples: first run took ${(t.firstMs / 1000).toFixed(0)} s`);
      if (reference && out) notes.push(`rel.err vs ORT CPU ${relL2(out, reference).toExponential(1)}`);
      add({
        section,
        what,
        engine,
        method: 'wall',
        timing,
        flops,
        ...fromTiming(t),
        memory: { bytes: rss.stop(), kind: 'RSS Δ' },
        notes,
      });
      if (provider === 'cpu' && !reference) reference = out;
    } catch (e) {
      rss.stop();
      add({ section, what, engine, method: 'wall', timing, flops, notes: [], error: errText(e) });
    } finally {
      await session?.release();
    }
  }
  return reference;
}

// ---- kernels ----

interface KernelWorkload {
  what: string;
  model: SingleNode;
  /** A memory-bound workload: the bytes it must move. */
  bytesMoved?: number;
  job: (gpu: GpuContext) => KernelJob;
  /** The same workload on a 'shader-f16' GEMM variant, where the device has the feature. */
  f16Job?: (gpu: GpuContext) => KernelJob | undefined;
  tfjs: (tf: typeof import('@tensorflow/tfjs')) => {
    op: () => import('@tensorflow/tfjs').Tensor;
    toNchw?: (y: Float32Array) => Float32Array;
    dispose: () => void;
  };
}

/** The f16 GEMM row's variant: the default f32 variant's tile with f16 arithmetic and f16 sums
 * (the one a GPU runs at the f16 rate), when shipped and the device runs it. */
function f16GemmVariant(problem: GemmProblem, target: GemmTarget): GemmVariant | undefined {
  const key = variantKey({ ...defaultVariant(problem, target), f16: 'f16-accumulate' });
  return F16_GEMM_VARIANTS.find((v) => variantKey(v) === key && variantRuns(v, target));
}

function gemmWorkload(n: number): KernelWorkload {
  const model = matmulModel(n, n, n, n);
  const w = model.graph.initializers.get(model.graph.nodes[0].inputs[1])!.value.data as Float32Array;
  return {
    what: `GEMM ${n}³`,
    model,
    job: (gpu) => matmulJob(gpu, n, n, n, model.input.data, w),
    f16Job: (gpu) => {
      const variant = f16GemmVariant(matmulProblem([n, n], [n, n], true), gemmTarget(gpu));
      return variant && matmulJob(gpu, n, n, n, model.input.data, w, variant);
    },
    tfjs: (tf) => {
      const a = tf.tensor2d(model.input.data, [n, n]);
      const b = tf.tensor2d(w, [n, n]);
      return { op: () => tf.matMul(a, b), dispose: () => tf.dispose([a, b]) };
    },
  };
}

function denseWorkload(layer: { what: string; K: number; N: number }): KernelWorkload {
  const { K, N } = layer;
  const model = denseModel(K, N, K + N);
  const node = model.graph.nodes[0];
  const w = model.graph.initializers.get(node.inputs[1])!.value.data as Float32Array;
  const bias = model.graph.initializers.get(node.inputs[2])!.value.data as Float32Array;
  return {
    what: `dense ${layer.what} ${K}→${N} b1`,
    model,
    bytesMoved: denseBytes(1, K, N),
    job: (gpu) => denseJob(gpu, { M: 1, K, N }, { x: model.input.data, w, bias }),
    tfjs: (tf) => {
      const x = tf.tensor2d(model.input.data, [1, K]);
      const wt = tf.tensor2d(w, [N, K]);
      const b = tf.tensor1d(bias);
      return {
        op: () => tf.tidy(() => tf.add(tf.matMul(x, wt, false, true), b)),
        dispose: () => tf.dispose([x, wt, b]),
      };
    },
  };
}

function convWorkload(s: ConvShape): KernelWorkload {
  const model = convModel(s, s.inChannels * 100 + s.size + s.stride);
  const node = model.graph.nodes[0];
  const w = model.graph.initializers.get(node.inputs[1])!.value.data as Float32Array;
  const bias = model.graph.initializers.get(node.inputs[2])!.value.data as Float32Array;
  const out = Math.floor((s.size + 2 * s.pad - s.kernel) / s.stride) + 1;
  return {
    what: `conv ${s.kernel}×${s.kernel} ${s.inChannels}→${s.outChannels} @${s.size}${s.stride > 1 ? ` s${s.stride}` : ''} b${s.images}`,
    model,
    job: (gpu) => convJob(gpu, s, model.input.data, w, bias),
    tfjs: (tf) => {
      const x = tf.tidy(
        () =>
          tf
            .tensor4d(model.input.data, [s.images, s.inChannels, s.size, s.size])
            .transpose([0, 2, 3, 1]) as import('@tensorflow/tfjs').Tensor4D,
      );
      const filter = tf.tidy(
        () =>
          tf
            .tensor4d(w, [s.outChannels, s.inChannels, s.kernel, s.kernel])
            .transpose([2, 3, 1, 0]) as import('@tensorflow/tfjs').Tensor4D,
      );
      const b = tf.tensor1d(bias);
      const p = s.pad;
      return {
        op: () =>
          tf.fused.conv2d({
            x,
            filter,
            bias: b,
            strides: s.stride,
            pad: [
              [0, 0],
              [p, p],
              [p, p],
              [0, 0],
            ],
          }),
        toNchw: (y) => {
          const hw = out * out;
          const nchw = new Float32Array(y.length);
          for (let i = 0; i < s.images; i++) {
            for (let q = 0; q < hw; q++) {
              for (let c = 0; c < s.outChannels; c++)
                nchw[(i * s.outChannels + c) * hw + q] = y[(i * hw + q) * s.outChannels + c];
            }
          }
          return nchw;
        },
        dispose: () => tf.dispose([x, filter, b]),
      };
    },
  };
}

/** onnx-graft's rows of one kernel workload (GPU time and wall time) for the job `makeJob` builds. */
async function graftKernelRows(
  gpu: GpuContext,
  what: string,
  makeJob: (gpu: GpuContext) => KernelJob,
  flops: number,
  reference: Float32Array | undefined,
): Promise<void> {
  // onnx-graft: one loop, two readings: pass timestamps (GPU) and Benchmark.js wall time
  // (upload of the activation + dispatch + readback of the output, like session.run).
  await settle();
  try {
    const job = makeJob(gpu);
    const runner = await kernelRunner(gpu, job);
    try {
      const t = await measure(`${what} onnx-graft`, (warmup) => runner.run(warmup), { maxTime: MAX_TIME });
      const gpuMs = runner.gpuMs.slice(1); // run 0 is the warm-up (compiles)
      const err =
        reference && runner.output
          ? `rel.err vs ORT CPU ${relL2(runner.output, reference).toExponential(1)}`
          : undefined;
      const memory = { bytes: runner.bytes, kind: 'GPU buffers' };
      const common = [
        `variant ${job.variant}`,
        ...(job.programs.length > 1 ? [`${job.programs.length} dispatches`] : []),
      ];
      add({
        section: 'kernel',
        what,
        engine: 'onnx-graft',
        method: 'gpu',
        timing: `GPU: pass timestamps (median of ${gpuMs.length} runs)`,
        flops,
        ms: median(gpuMs),
        samples: gpuMs.length,
        runs: gpuMs.length,
        firstMs: t.firstMs,
        memory,
        notes: [...common, ...(err ? [err] : [])],
      });
      add({
        section: 'kernel',
        what,
        engine: 'onnx-graft',
        method: 'wall',
        timing: 'wall: upload + dispatch + readback',
        flops,
        ...fromTiming(t),
        memory,
        notes: [...common, `first run ${t.firstMs.toFixed(0)} ms`],
      });
    } finally {
      runner.dispose();
    }
  } catch (e) {
    add({
      section: 'kernel',
      what,
      engine: 'onnx-graft',
      method: 'wall',
      timing: 'wall',
      flops,
      notes: [],
      error: errText(e),
    });
  }
}

async function benchKernels(gpu: GpuContext): Promise<void> {
  const resnet = loadModel(new Uint8Array(fs.readFileSync(lightModelPath('resnet50'))), {
    file: lightModelPath('resnet50'),
  });
  const convs = distinctConvs(resnet, 3);
  console.log(
    `ResNet-50's distinct 3×3 convolutions at batch 1: ${convs.map((c) => `${c.inChannels}→${c.outChannels}@${c.size}${c.stride > 1 ? ` s${c.stride}` : ''}`).join(', ')}`,
  );
  const workloads = [
    ...(KERNEL_GROUPS.includes('gemm') ? [gemmWorkload(512), gemmWorkload(1024)] : []),
    ...(KERNEL_GROUPS.includes('conv') ? convs.map(convWorkload) : []),
    ...(KERNEL_GROUPS.includes('dense') ? DENSE_LAYERS.map(denseWorkload) : []),
  ];
  const tf = RUN_TFJS ? await tfjsWebGpu() : undefined;
  const tfTimestamps = tf ? tfjsHasTimestamps(tf) : false;

  for (const wl of workloads) {
    console.log(`${wl.what}`);
    if (wl.bytesMoved !== undefined) bytesMovedOf.set(wl.what, wl.bytesMoved);
    const flops = graphFlops(wl.model.graph).total;
    const providers: ('cpu' | 'webgpu')[] = RUN_ORT_WEBGPU ? ['cpu', 'webgpu'] : ['cpu'];
    const reference = await ortRows(
      'kernel',
      wl.what,
      wl.model.graph,
      wl.model.input,
      flops,
      undefined,
      providers,
      MAX_TIME,
    );

    await graftKernelRows(gpu, wl.what, wl.job, flops, reference);
    // An f16 variant of the same GEMM where the device has 'shader-f16' (not a default anywhere:
    // its own row, compared with the f32 FMA ceiling, error against ORT CPU in its notes).
    const f16Job = wl.f16Job?.(gpu);
    if (f16Job) await graftKernelRows(gpu, `${wl.what} f16`, () => f16Job, flops, reference);

    // TF.js WebGPU: tf.time gives kernelMs from timestamp queries (GPU); Benchmark.js's wall time
    // covers dispatch + readback (await data()); inputs stay on the GPU.
    if (tf) {
      await settle();
      let setup: ReturnType<KernelWorkload['tfjs']> | undefined;
      try {
        setup = wl.tfjs(tf);
        const kernelMs: number[] = [];
        let out: Float32Array | undefined;
        let pool = 0;
        const s = setup;
        const t = await measure(
          `${wl.what} TF.js`,
          async (warmup) => {
            let y: import('@tensorflow/tfjs').Tensor | undefined;
            const info = await tf.time(() => {
              y = s.op();
            });
            const data = (await y!.data()) as Float32Array;
            pool = Math.max(pool, (tf.memory() as { numBytesAllocatedInGPU?: number }).numBytesAllocatedInGPU ?? 0);
            y!.dispose();
            if (warmup) out = s.toNchw ? s.toNchw(data) : data;
            else kernelMs.push(info.kernelMs as number);
          },
          { maxTime: MAX_TIME },
        );
        const err = reference && out ? [`rel.err vs ORT CPU ${relL2(out, reference).toExponential(1)}`] : [];
        const memory = { bytes: pool, kind: 'TF.js GPU pool' };
        if (tfTimestamps) {
          add({
            section: 'kernel',
            what: wl.what,
            engine: 'TF.js WebGPU',
            method: 'gpu',
            timing: `GPU: tf.time kernelMs (timestamps, median of ${kernelMs.length})`,
            flops,
            ms: median(kernelMs),
            samples: kernelMs.length,
            runs: kernelMs.length,
            firstMs: t.firstMs,
            memory,
            notes: err,
          });
        }
        add({
          section: 'kernel',
          what: wl.what,
          engine: 'TF.js WebGPU',
          method: 'wall',
          timing: 'wall: dispatch + readback (tf.time + data())',
          flops,
          ...fromTiming(t),
          memory,
          notes: [`first run ${t.firstMs.toFixed(0)} ms`, ...(tfTimestamps ? [] : err)],
        });
      } catch (e) {
        add({
          section: 'kernel',
          what: wl.what,
          engine: 'TF.js WebGPU',
          method: 'wall',
          timing: 'wall',
          flops,
          notes: [],
          error: errText(e),
        });
      } finally {
        setup?.dispose();
      }
    }
  }
}

// ---- models ----

async function benchModels(gpu: GpuContext): Promise<void> {
  for (const name of MODELS) {
    const t0 = performance.now();
    let base: Graph;
    try {
      base = randomizedLightModel(name, 42);
    } catch (e) {
      for (const batch of BATCHES)
        add({
          section: 'model',
          what: `${name} b${batch}`,
          engine: 'onnx-graft',
          method: 'wall',
          timing: 'not run',
          flops: NaN,
          notes: [],
          error: `loading the model failed: ${errText(e)}`,
        });
      continue;
    }
    console.log(`${name}: loaded and randomised in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    for (const batch of BATCHES) {
      const what = `${name} b${batch}`;
      console.log(what);
      let graph: Graph;
      let flops: number;
      try {
        graph = batch === 1 ? base : withBatch(base, batch);
        flops = graphFlops(graph).total;
      } catch (e) {
        add({
          section: 'model',
          what,
          engine: 'onnx-graft',
          method: 'wall',
          timing: 'not run',
          flops: NaN,
          notes: [],
          error: `preparing batch ${batch} failed: ${errText(e)}`,
        });
        continue;
      }
      const feedInfo = graph.feedInputs[0];
      const dims = feedInfo.shape as number[];
      const feed = { name: feedInfo.name, dims, data: sinInput(dims.reduce((a, b) => a * b, 1)) };
      const reference = await ortRows('model', what, graph, feed, flops, undefined, ['cpu'], 4);

      await settle();
      const rss = new RssPeak();
      let session: Session | undefined;
      const timing = 'wall: Session.run (upload + run + readback)';
      try {
        const c0 = performance.now();
        session = await Session.create(graph, { gpu });
        const createMs = performance.now() - c0;
        let out: Float32Array | undefined;
        const s = session;
        const t = await measure(
          `${what} onnx-graft`,
          async (warmup) => {
            const result = await s.run({ [feed.name]: { dims, data: feed.data } });
            rss.sample();
            if (warmup) out = result[s.outputNames[0]].data;
          },
          { maxTime: 4, samplesFor: defaultSamplesFor },
        );
        const gpuBytes = session.peakActivationBytes + session.weightBytes;
        const rssDelta = rss.stop();
        const notes = [
          `create ${createMs.toFixed(0)} ms`,
          `first run ${t.firstMs.toFixed(0)} ms`,
          `activations ${(session.peakActivationBytes / MiB).toFixed(0)} + weights ${(session.weightBytes / MiB).toFixed(0)} MiB`,
          `RSS Δ ${(rssDelta / MiB).toFixed(0)} MiB`,
          `${session.planStats.steps} steps`,
        ];
        if (t.samples < 5) notes.push(`only ${t.samples} samples: first run took ${(t.firstMs / 1000).toFixed(0)} s`);
        if (reference && out) notes.push(`rel.err vs ORT CPU ${relL2(out, reference).toExponential(1)}`);
        add({
          section: 'model',
          what,
          engine: 'onnx-graft',
          method: 'wall',
          timing,
          flops,
          ...fromTiming(t),
          memory: { bytes: gpuBytes, kind: 'GPU: activations + weights' },
          notes,
        });
      } catch (e) {
        rss.stop();
        add({
          section: 'model',
          what,
          engine: 'onnx-graft',
          method: 'wall',
          timing,
          flops,
          notes: [],
          error: errText(e),
        });
      } finally {
        session?.dispose();
      }

      if (RUN_ORT_WEBGPU) await ortRows('model', what, graph, feed, flops, reference, ['webgpu'], 4);
    }
  }
}

// ---- ratios, table, files ----

/** The best of the ceilings measured in this run (each an underestimate of what the adapter can do). */
function bestCeiling(): { fmaGflops: number; copyGBps: number } | undefined {
  if (ceilings.length === 0) return undefined;
  return {
    fmaGflops: Math.max(...ceilings.map((c) => c.fmaGflops)),
    copyGBps: Math.max(...ceilings.map((c) => c.copyGBps)),
  };
}

function computeRatios(): void {
  const ceiling = bestCeiling();
  for (const row of rows) {
    // ORT CPU runs natively, not on the adapter: the adapter's ceiling says nothing about it.
    if (!ceiling || row.ms === undefined || row.engine === 'ORT CPU') continue;
    const bytes = bytesMovedOf.get(row.what);
    if (bytes !== undefined) {
      row.bytesMoved = bytes;
      row.ofCopy = bytes / row.ms / 1e6 / ceiling.copyGBps;
    } else if (row.gflops !== undefined) {
      row.ofCeiling = row.gflops / ceiling.fmaGflops;
    }
  }
  for (const row of rows) {
    if (row.engine !== 'onnx-graft' || row.ms === undefined) continue;
    const rival = (engine: EngineName): Ratio | undefined => {
      const candidates = rows.filter((r) => r.what === row.what && r.engine === engine && r.ms !== undefined);
      const same = candidates.find((r) => r.method === row.method);
      const other = same ?? candidates.find((r) => r.method === 'wall');
      if (!other) return undefined;
      // The rival's GPU-time and wall rows come from one output; the error is noted on one of them.
      const wrong = candidates.find((r) => r.relErr !== undefined && r.relErr > WRONG_OUTPUT)?.relErr;
      return { value: other.ms! / row.ms!, likeForLike: other.method === row.method, wrong };
    };
    row.ratios = { ortWebgpu: rival('ORT WebGPU'), ortCpu: rival('ORT CPU'), tfjs: rival('TF.js WebGPU') };
  }
}

const fmtMs = (ms: number) => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2));
/** A target of at least `times` a rival: met, missed, or no comparison when the rival's output is wrong. */
const verdict = (r: Ratio, times: number) =>
  r.wrong !== undefined ? "no comparison (the rival's output is wrong)" : r.value >= times ? 'met' : 'MISSED';
const fmtRatio = (r: Ratio | undefined) =>
  !r
    ? ''
    : r.wrong !== undefined
      ? `wrong output (rel.err ${r.wrong.toExponential(1)})`
      : `${r.value >= 10 ? r.value.toFixed(1) : r.value.toFixed(2)}×${r.likeForLike ? '' : '†'}`;
const fmtMem = (m: Row['memory']) =>
  m ? `${(m.bytes / MiB).toFixed(m.bytes < 10 * MiB ? 1 : 0)} MiB ${m.kind}` : 'n/a';

/** Workloads in the order run; within one: onnx-graft, ORT WebGPU, ORT CPU, TF.js; GPU time before wall. */
function orderedRows(): Row[] {
  const whats = [...new Set(rows.map((r) => r.what))];
  const engines: EngineName[] = ['onnx-graft', 'ORT WebGPU', 'ORT CPU', 'TF.js WebGPU'];
  const key = (r: Row) => whats.indexOf(r.what) * 100 + engines.indexOf(r.engine) * 10 + (r.method === 'gpu' ? 0 : 1);
  return [...rows].sort((a, b) => key(a) - key(b));
}

function table(): string {
  const head = [
    'what',
    'engine',
    'ms',
    'GFLOP/s',
    '× FMA ceiling',
    '× copy BW',
    'peak memory',
    '× vs ORT WebGPU',
    '× vs ORT CPU',
    '× vs TF.js',
    'timing method',
    'notes',
  ];
  const lines = [
    `| ${head.join(' | ')} |`,
    `|${head.map((h, i) => (i >= 2 && i <= 9 && i !== 6 ? '---:' : '---')).join('|')}|`,
  ];
  for (const r of orderedRows()) {
    const tfjs = r.section === 'model' && r.engine === 'onnx-graft' ? 'n/a' : fmtRatio(r.ratios?.tfjs);
    const cells = [
      r.what,
      r.engine,
      r.ms !== undefined ? fmtMs(r.ms) : `failed: ${r.error}`,
      r.gflops !== undefined ? r.gflops.toFixed(2) : '',
      r.ofCeiling !== undefined ? r.ofCeiling.toFixed(2) : '',
      r.ofCopy !== undefined ? r.ofCopy.toFixed(2) : '',
      fmtMem(r.memory),
      fmtRatio(r.ratios?.ortWebgpu),
      fmtRatio(r.ratios?.ortCpu),
      tfjs,
      r.timing,
      r.notes.join('; '),
    ];
    lines.push(`| ${cells.map((c) => c.replace(/\|/g, '/')).join(' | ')} |`);
  }
  return lines.join('\n');
}

function targets(): string[] {
  const out: string[] = [];
  const engineRows = rows.filter((r) => r.engine === 'onnx-graft' && r.ms !== undefined);
  const kernelWhats = [...new Set(engineRows.filter((r) => r.section === 'kernel').map((r) => r.what))];
  for (const what of kernelWhats) {
    const wall = engineRows.find((r) => r.what === what && r.method === 'wall')?.ratios?.ortWebgpu;
    const gpu = engineRows.find((r) => r.what === what && r.method === 'gpu')?.ratios?.ortWebgpu;
    if (!wall) continue;
    out.push(
      `- ${what}: ≥ 2× ORT WebGPU — ${verdict(wall, 2)} (${fmtRatio(wall)} wall vs wall; ${gpu ? `${fmtRatio(gpu)} onnx-graft GPU time vs ORT wall` : 'no GPU time'})`,
    );
  }
  for (const r of engineRows.filter((x) => x.section === 'model')) {
    const v = r.ratios?.ortWebgpu;
    if (v) out.push(`- ${r.what}: faster than ORT WebGPU — ${verdict(v, 1)} (${fmtRatio(v)})`);
  }
  // Issue 12: against the adapter's own limits, GPU time where there is one.
  // The f16 GEMM rows are no target: the ceiling is an f32 one, and f16 is never a default.
  const adapterRows = [...new Set(engineRows.map((r) => r.what).filter((what) => !what.endsWith(' f16')))].map(
    (what) => engineRows.find((r) => r.what === what && r.method === 'gpu') ?? engineRows.find((r) => r.what === what)!,
  );
  for (const r of adapterRows) {
    if (r.ofCopy !== undefined)
      out.push(
        `- ${r.what}: ≥ 0.6 of the copy bandwidth — ${r.ofCopy >= 0.6 ? 'met' : 'MISSED'} (${r.ofCopy.toFixed(2)}, ${r.method})`,
      );
    else if (r.ofCeiling !== undefined && (r.section === 'kernel' || / b8$/.test(r.what)))
      out.push(
        `- ${r.what}: ≥ 0.8 of the FMA ceiling — ${r.ofCeiling >= 0.8 ? 'met' : 'MISSED'} (${r.ofCeiling.toFixed(2)}, ${r.method})`,
      );
  }
  return out;
}

const gpu = await createNodeGpuContext();
const adapter = `${gpu.info.vendor} ${gpu.info.architecture} ${gpu.info.description || gpu.info.device}`;
console.log(
  `adapter: ${adapter}; timestamp-query: ${gpu.hasFeature('timestamp-query')}; ${os.cpus().length} CPUs; load ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}`,
);
const ceilingRun = async (when: string) => {
  const c = await measureCeiling(gpu);
  ceilings.push(c);
  console.log(
    `ceiling (${when}): FMA ${c.fmaGflops.toFixed(1)} GFLOP/s (plain loop ${c.fmaLoopGflops.toFixed(1)}), copy ${c.copyGBps.toFixed(2)} GB/s (${c.trials.map((t) => `${t.what} ${t.rate.toFixed(1)}`).join('; ')}); load ${os.loadavg()[0].toFixed(2)}`,
  );
};
try {
  await ceilingRun('start');
  if (RUN_KERNELS) await benchKernels(gpu);
  if (RUN_MODELS) await benchModels(gpu);
  await ceilingRun('end');
} finally {
  gpu.dispose();
}
computeRatios();

const totalS = (performance.now() - started) / 1000;
const command = `npm run bench -- inference${argv.length ? ` ${argv.join(' ')}` : ''}`;
const header = [
  `# Inference benchmark (latest run)`,
  '',
  `- command: \`${command}\``,
  `- date: ${startedAt.toISOString()}; total runtime ${(totalS / 60).toFixed(1)} min`,
  `- adapter: ${adapter} (timestamp-query: ${gpu.info.features.includes('timestamp-query')}); ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'CPU'}; load average at start ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}, at end ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
  `- adapter ceiling (best of start and end, bench/ceiling.ts): FMA ${bestCeiling()?.fmaGflops.toFixed(1)} GFLOP/s (start ${ceilings[0]?.fmaGflops.toFixed(1)}, end ${ceilings[1]?.fmaGflops.toFixed(1)}; the plain loop kernel ${ceilings[0]?.fmaLoopGflops.toFixed(1)} and ${ceilings[1]?.fmaLoopGflops.toFixed(1)}, the ceiling before 2026-12-07); copy ${bestCeiling()?.copyGBps.toFixed(2)} GB/s (start ${ceilings[0]?.copyGBps.toFixed(2)}, end ${ceilings[1]?.copyGBps.toFixed(2)})`,
  `- versions: node ${process.version}, onnxruntime-node ${ort.env.versions.common}, TF.js ${RUN_TFJS ? (await import('@tensorflow/tfjs')).version.tfjs : 'not run'}`,
];
const legend = [
  '',
  'How to read it:',
  "- **ms** is the median per run over Benchmark.js samples (deferred async loop; a first, untimed run compiles pipelines), or over the runs' GPU timestamps for `GPU:` rows.",
  "- **× vs X** = X's ms ÷ onnx-graft's ms on that workload: above 1, onnx-graft is faster. Ratios compare like with like (GPU time with GPU time, wall with wall) where the rival has that reading; † marks a ratio of onnx-graft's GPU time against the rival's wall time (onnxruntime-node exposes no GPU timer), which flatters onnx-graft by the upload/readback and submit overhead.",
  '- **GFLOP/s** counts 2·MACs of Conv/Gemm/MatMul from the graph (bench/flops.ts).',
  "- **× FMA ceiling**: GFLOP/s ÷ the adapter's FMA ceiling (a register-only kernel of independent vec4 FMAs, best of a few sizes, GPU timestamps; bench/ceiling.ts), measured at the start and end of this run, the better of the two; for every row run on the adapter (not ORT CPU). **× copy BW**: for the batch-1 dense rows, (weight + bias + input + output bytes) ÷ ms ÷ the adapter's copy bandwidth (a vec4 storage-to-storage copy of 64 MiB, read + written bytes).",
  '- **peak memory**: onnx-graft reports its own GPU buffers (models: Session.peakActivationBytes + weightBytes; kernels: bound buffers); onnxruntime reports no memory, so its column is the process RSS growth from before session create to the peak during runs (on lavapipe GPU memory is host memory, so it is counted; memory freed by earlier rows and reused can hide some of it); TF.js: its GPU buffer pool (tf.memory().numBytesAllocatedInGPU).',
  "- Kernel rows: onnx-graft runs the kernels the runtime would pick for a single MatMul / Conv node (src/runtime/lower.ts's packing and default variant) on its own encoder with timestampWrites, and waits for the submit as Session.run does (src/kernels/submit-pacer.ts: on a software adapter it sleeps through most of the expected time before mapping, since dawn.node spins the JS thread while a map is pending and that takes CPU from lavapipe); onnxruntime runs single-node ONNX models built with GraphBuilder; TF.js runs tf.matMul / tf.fused.conv2d (NHWC, bias) on resident tensors.",
  `- Repetitions: Benchmark.js with minSamples 5 and maxTime ${MAX_TIME} s (kernels) / 4 s (models); a row whose first run takes over 15 s gets 3 samples, over 60 s 2 (the brief's rule for VGG-19 at batch 8). Every row's warm-up run, sample count and total time are in the JSON.`,
  "- rel.err: relative L2 distance of the output from onnxruntime's CPU provider on the same input. A rival whose output is off by more than 1e-3 gets 'wrong output' instead of a ratio, and no target counts against it.",
];
const md = [...header, '', table(), ...legend, '', 'Targets (issue 3):', ...targets(), ''].join('\n');
console.log(`\n${table()}\n\nTargets:\n${targets().join('\n')}\n\ntotal runtime ${(totalS / 60).toFixed(1)} min`);

fs.mkdirSync('bench/results', { recursive: true });
const file = `bench/results/inference-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`;
writeTextAtomic(
  file,
  JSON.stringify(
    {
      date: startedAt.toISOString(),
      command,
      totalS,
      adapter,
      adapterInfo: gpu.info,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      loadavg: { start: loadAtStart, end: os.loadavg() },
      ceiling: { best: bestCeiling(), measured: ceilings },
      rows,
    },
    null,
    2,
  ),
);
console.log(`wrote ${file}`);
if (WRITE_MD) {
  writeTextAtomic('bench/results/inference-latest.md', md);
  console.log('wrote bench/results/inference-latest.md');
}
// TF.js holds a Dawn instance for the life of the process; onnxruntime's threads may linger too.
process.exit(0);
