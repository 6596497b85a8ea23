// The browser benchmark's page (bundled by bench/browser.ts with esbuild; onnxruntime-web stays
// outside the bundle, mapped by the page's import map to the served ort.all.min.mjs). For each row
// of the served manifest it runs onnx-graft, onnxruntime-web's WebGPU and WASM providers and, for
// the kernel rows, TF.js's WebGPU backend on the same input and weights: one run checked against
// the reference output (onnxruntime-node's CPU provider, computed in Node), warm-up runs, then the
// median of timed runs. Every timed run is wall time from host input to host output: upload, run
// and read-back, the same for every engine. The result is left on window.browserBench.
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgpu';
import * as ort from 'onnxruntime-web';
import { GpuContext } from '../src/kernels/gpu-context.ts';
import { Session } from '../src/runtime/session.ts';
import { relL2 } from '../test/helpers/reference-ops.ts';
import type { ConvShape } from './workloads.ts';

export type EngineName = 'onnx-graft' | 'ORT-web WebGPU' | 'ORT-web WASM' | 'TF.js WebGPU';

/** What TF.js runs for a kernel row (files hold float32 little-endian data). */
export type TfjsOp =
  | { op: 'matMul'; m: number; k: number; n: number; weight: string }
  | (ConvShape & { op: 'conv2d'; weight: string; bias: string });

export interface BenchRowSpec {
  what: string;
  section: 'kernel' | 'model';
  /** ONNX bytes (as onnxruntime accepts them), the fed input and the reference output. */
  model: string;
  input: { name: string; dims: number[]; file: string };
  output: { name: string; dims: number[]; file: string };
  tfjs?: TfjsOp;
  /** Runs before timing, the checked first run included. */
  warmup: number;
  /** Timed runs: as many as fit in budgetMs at the last warm-up run's pace, within [minRuns, maxRuns]. */
  minRuns: number;
  maxRuns: number;
  budgetMs: number;
}

export interface BenchManifest {
  rows: BenchRowSpec[];
  /** Agreement bound: relative L2 error of each engine's output against the reference. */
  maxRelL2: number;
}

export interface EngineResult {
  what: string;
  section: BenchRowSpec['section'];
  engine: EngineName;
  /** Median wall ms of the timed runs (absent when the engine failed). */
  ms?: number;
  timesMs?: number[];
  /** The first (checked) run, compilation included. */
  firstMs?: number;
  createMs?: number;
  relL2?: number;
  agrees?: boolean;
  error?: string;
}

export interface BenchPageResult {
  adapter: string;
  userAgent: string;
  crossOriginIsolated: boolean;
  ortWasmThreads: number;
  results: EngineResult[];
}

declare global {
  interface Window {
    browserBench?: BenchPageResult | { error: string };
  }
}

/** One engine prepared for one row and its input: run() uploads the input, runs, reads the output back. */
interface Runner {
  run: () => Promise<Float32Array>;
  /** The output in the reference's layout (TF.js convolutions give NHWC), for the check only. */
  asReference?: (out: Float32Array) => Float32Array;
  dispose: () => Promise<void> | void;
}

async function fetchBytes(file: string): Promise<Uint8Array> {
  const response = await fetch(`data/${file}`);
  if (!response.ok) throw new Error(`${file}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function fetchF32(file: string): Promise<Float32Array> {
  const bytes = await fetchBytes(file);
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** [n, a, b] → [n, b, a] (NCHW ↔ NHWC with a, b = channels, pixels or the reverse). */
function swapInner(x: Float32Array, n: number, a: number, b: number): Float32Array {
  const y = new Float32Array(x.length);
  for (let i = 0; i < n; i++)
    for (let p = 0; p < a; p++) for (let q = 0; q < b; q++) y[(i * b + q) * a + p] = x[(i * a + p) * b + q];
  return y;
}

async function graftRunner(gpu: GpuContext, bytes: Uint8Array, spec: BenchRowSpec, input: Float32Array) {
  const session = await Session.create(bytes, { gpu, file: spec.model });
  const feeds = { [spec.input.name]: { dims: spec.input.dims, data: input } };
  return {
    run: async () => (await session.run(feeds))[spec.output.name].data as Float32Array,
    dispose: () => session.dispose(),
  } satisfies Runner;
}

async function ortRunner(provider: 'webgpu' | 'wasm', bytes: Uint8Array, spec: BenchRowSpec, input: Float32Array) {
  const session = await ort.InferenceSession.create(bytes, { executionProviders: [provider], logSeverityLevel: 3 });
  return {
    run: async () => {
      // A new host tensor per run, as a caller would have; outputs are located on the CPU (the default).
      const result = await session.run({ [spec.input.name]: new ort.Tensor('float32', input, spec.input.dims) });
      const data = new Float32Array(result[spec.output.name].data as Float32Array);
      for (const t of Object.values(result)) t.dispose();
      return data;
    },
    dispose: () => session.release(),
  } satisfies Runner;
}

/** TF.js: weights uploaded once (as the others keep their initializers on the GPU), the input each run. */
async function tfjsRunner(op: TfjsOp, input: Float32Array): Promise<Runner> {
  if (op.op === 'matMul') {
    const w = tf.tensor2d(await fetchF32(op.weight), [op.k, op.n]);
    return {
      run: async () => {
        const y = tf.tidy(() => tf.matMul(tf.tensor2d(input, [op.m, op.k]), w));
        const data = (await y.data()) as Float32Array;
        y.dispose();
        return data;
      },
      dispose: () => w.dispose(),
    };
  }
  const { images: n, inChannels: c, outChannels: o, size, kernel: k, pad: p } = op;
  const weight = await fetchF32(op.weight);
  const filter = tf.tidy(() => tf.tensor4d(weight, [o, c, k, k]).transpose<tf.Tensor4D>([2, 3, 1, 0]));
  const bias = tf.tensor1d(await fetchF32(op.bias));
  const out = Math.floor((size + 2 * p - k) / op.stride) + 1;
  // TF.js convolves NHWC: the input is laid out so once, on the host, before the timed runs.
  const nhwc = swapInner(input, n, c, size * size);
  return {
    run: async () => {
      const y = tf.tidy(() =>
        tf.fused.conv2d({
          x: tf.tensor4d(nhwc, [n, size, size, c]),
          filter,
          bias,
          strides: op.stride,
          pad: [
            [0, 0],
            [p, p],
            [p, p],
            [0, 0],
          ],
        }),
      );
      const data = (await y.data()) as Float32Array;
      y.dispose();
      return data;
    },
    asReference: (y) => swapInner(y, n, out * out, o),
    dispose: () => tf.dispose([filter, bias]),
  };
}

const errText = (e: unknown) =>
  (e instanceof Error ? `${e.name}: ${e.message}` : String(e)).split('\n')[0].slice(0, 240);

async function measureEngine(
  spec: BenchRowSpec,
  engine: EngineName,
  make: () => Promise<Runner>,
  reference: Float32Array,
  maxRelL2: number,
): Promise<EngineResult> {
  const result: EngineResult = { what: spec.what, section: spec.section, engine };
  let runner: Runner | undefined;
  try {
    const t0 = performance.now();
    runner = await make();
    result.createMs = performance.now() - t0;
    const t1 = performance.now();
    const first = await runner.run();
    result.firstMs = performance.now() - t1;
    result.relL2 = relL2(runner.asReference ? runner.asReference(first) : first, reference);
    result.agrees = result.relL2 < maxRelL2;
    console.log(
      `check ${spec.what} | ${engine}: rel L2 ${result.relL2.toExponential(2)} vs onnxruntime-node CPU ${result.agrees ? '<' : '≥'} ${maxRelL2} ${result.agrees ? 'ok' : 'DISAGREES'}`,
    );
    let paceMs = result.firstMs;
    for (let i = 1; i < spec.warmup; i++) {
      const t = performance.now();
      await runner.run();
      paceMs = performance.now() - t;
    }
    const runs = Math.max(spec.minRuns, Math.min(spec.maxRuns, Math.floor(spec.budgetMs / paceMs)));
    const times: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      await runner.run();
      times.push(performance.now() - t);
    }
    result.timesMs = times;
    result.ms = median(times);
    console.log(`time ${spec.what} | ${engine}: median ${result.ms.toFixed(2)} ms of ${times.length}`);
  } catch (e) {
    result.error = errText(e);
    console.log(`error ${spec.what} | ${engine}: ${result.error}`);
  } finally {
    try {
      await runner?.dispose();
    } catch (e) {
      result.error ??= `dispose: ${errText(e)}`;
    }
  }
  return result;
}

async function main(): Promise<BenchPageResult> {
  const manifest = (await (await fetch('data/manifest.json')).json()) as BenchManifest;
  ort.env.wasm.wasmPaths = new URL('ort/', location.href).href;
  // Threads need SharedArrayBuffer, which the server's COOP/COEP headers allow; ORT picks the count.
  ort.env.logLevel = 'error';
  const gpu = await GpuContext.create();
  if (!(await tf.setBackend('webgpu')) || tf.getBackend() !== 'webgpu')
    throw new Error('TF.js: the webgpu backend did not start');
  await tf.ready();
  const results: EngineResult[] = [];
  for (const spec of manifest.rows) {
    const bytes = await fetchBytes(spec.model);
    const input = await fetchF32(spec.input.file);
    const reference = await fetchF32(spec.output.file);
    const makers: [EngineName, () => Promise<Runner>][] = [
      ['onnx-graft', () => graftRunner(gpu, bytes, spec, input)],
      ['ORT-web WebGPU', () => ortRunner('webgpu', bytes, spec, input)],
      ['ORT-web WASM', () => ortRunner('wasm', bytes, spec, input)],
    ];
    const tfjsOp = spec.tfjs;
    if (tfjsOp) makers.push(['TF.js WebGPU', () => tfjsRunner(tfjsOp, input)]);
    for (const [engine, make] of makers)
      results.push(await measureEngine(spec, engine, make, reference, manifest.maxRelL2));
  }
  gpu.dispose();
  const info = gpu.info;
  return {
    adapter: `${info.vendor} ${info.architecture} ${info.description || info.device}`.trim(),
    userAgent: navigator.userAgent,
    crossOriginIsolated,
    ortWasmThreads: ort.env.wasm.numThreads ?? 0,
    results,
  };
}

main().then(
  (result) => {
    window.browserBench = result;
  },
  (error: unknown) => {
    window.browserBench = { error: errText(error) };
  },
);
