// A quick A/B probe of the inference benchmark's kernel rows (GEMM 512³/1024³ and ResNet-50's
// 3×3 convs): onnx-graft's kernels (one or more variants) against onnxruntime-node's WebGPU
// provider, timed the way bench/inference.ts times them (wall: our activation upload + dispatch +
// readback; ORT: session.run, which uploads the input and reads the output back), in one process
// with the engines interleaved round by round so that load from other processes hits all alike.
//
// Usage: npx tsx bench/probe-kernels.ts [--only gemm512,gemm1024,gemm8x4096x1024,conv,conv128@28,...]
//   [--variants default,default-nosg,reg16x8@8x1,...] [--wait paced,spin] [--rounds 6] [--per-round 3] [--no-ort]
//   [--ceiling] [--ceiling-loop]
// --only also takes conv shapes: c<kernel>:<in>-<out>@<size>[s<stride>]b<images>, e.g. c3:64-64@56b8
// (padding kernel ÷ 2). --ceiling times the adapter's FMA ceiling kernel (bench/ceiling.ts) right
// before each of our runs and gives the median over runs of (run's GPU-time rate ÷ that ceiling),
// with its quartiles: paired, so that the load, which moves from second to second, cancels out.
// The ceiling kernel is the unrolled form (bench/ceiling.ts, FMA_UNROLL), which on lavapipe runs
// 1.5–1.9× faster than the plain loop; --ceiling-loop rates against the plain loop instead, as
// the figures before 2026-12-07 were.
import fs from 'node:fs';
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { loadModel } from '../src/graph/load.ts';
import { F16_GEMM_VARIANTS, GEMM_VARIANTS, variantKey } from '../src/kernels/gemm.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { lightModelPath, onnxBytesForOrt } from '../test/helpers/reference-models.ts';
import {
  convJob,
  kernelRunner,
  matmulJob,
  type KernelJob,
  type KernelRunner,
  type VariantChoice,
} from './engine-kernels.ts';
import { FMA_UNROLL, fmaProbe } from './ceiling.ts';
import { graphFlops } from './flops.ts';
import { median, relL2, workerCpuNs } from './harness.ts';
import { convModel, distinctConvs, matmulModel, type ConvShape, type SingleNode } from './workloads.ts';

const argv = process.argv.slice(2);
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const ONLY = option('--only')?.split(',');
const VARIANTS = (option('--variants') ?? 'default').split(',');
const ROUNDS = Number(option('--rounds') ?? 6);
const PER_ROUND = Number(option('--per-round') ?? 3);
const RUN_ORT = !argv.includes('--no-ort');
const CEILING_LOOP = argv.includes('--ceiling-loop');
const CEILING = argv.includes('--ceiling') || CEILING_LOOP;
/** How our runner waits for its submit: paced (SubmitPacer, the runtime's way) and/or mapping at once. */
const WAITS = (option('--wait') ?? 'paced').split(',') as ('paced' | 'spin')[];
for (const w of WAITS) if (w !== 'paced' && w !== 'spin') throw new Error(`--wait: 'paced' or 'spin', got '${w}'`);

/** 'default': the device's default; 'default-nosg': the default without subgroups (the kernels
 * before the subgroup variants); else a variant key. */
function variantByKey(gpu: GpuContext, key: string): VariantChoice {
  if (key === 'default') return undefined;
  if (key === 'default-nosg') return { software: gpu.info.isSoftware };
  const known = [...GEMM_VARIANTS, ...F16_GEMM_VARIANTS];
  const v = known.find((x) => variantKey(x) === key);
  if (!v)
    throw new Error(
      `--variants: unknown variant '${key}' (default, default-nosg, ${known.map(variantKey).join(', ')})`,
    );
  return v;
}

interface Workload {
  id: string;
  what: string;
  model: SingleNode;
  job: (gpu: GpuContext, v: VariantChoice) => KernelJob;
}

function gemm(M: number, K = M, N = M): Workload {
  const model = matmulModel(M, K, N, M);
  const w = model.graph.initializers.get(model.graph.nodes[0].inputs[1])!.value.data as Float32Array;
  const square = M === K && K === N;
  return {
    id: square ? `gemm${M}` : `gemm${M}x${K}x${N}`,
    what: square ? `GEMM ${M}³` : `GEMM ${M}×${K}×${N}`,
    model,
    job: (gpu, v) => matmulJob(gpu, M, K, N, model.input.data, w, v),
  };
}

function conv(s: ConvShape): Workload {
  // Same seed as bench/inference.ts's convWorkload.
  const model = convModel(s, s.inChannels * 100 + s.size + s.stride);
  const node = model.graph.nodes[0];
  const w = model.graph.initializers.get(node.inputs[1])!.value.data as Float32Array;
  const bias = model.graph.initializers.get(node.inputs[2])!.value.data as Float32Array;
  const stride = s.stride > 1 ? ` s${s.stride}` : '';
  return {
    id: `conv${s.inChannels}@${s.size}${s.stride > 1 ? `s${s.stride}` : ''}`,
    what: `conv ${s.kernel}×${s.kernel} ${s.inChannels}→${s.outChannels} @${s.size}${stride} b${s.images}`,
    model,
    job: (gpu, v) => convJob(gpu, s, model.input.data, w, bias, v),
  };
}

const wanted = (id: string) =>
  !ONLY ||
  ONLY.some((o) => id === o || (o === 'conv' && id.startsWith('conv')) || (o === 'gemm' && id.startsWith('gemm')));
const resnet = loadModel(new Uint8Array(fs.readFileSync(lightModelPath('resnet50'))), {
  file: lightModelPath('resnet50'),
});
// --only gemmMxKxN adds a GEMM of that shape (X[M, K] · W[K, N], W constant).
const extraGemms = (ONLY ?? [])
  .map((o) => /^gemm(\d+)x(\d+)x(\d+)$/.exec(o))
  .filter((m) => m !== null)
  .map((m) => ({ ...gemm(+m[1], +m[2], +m[3]), id: m[0] }));
// --only c<kernel>:<in>-<out>@<size>[s<stride>]b<images> adds a conv of that shape.
const extraConvs = (ONLY ?? [])
  .map((o) => /^c(\d+):(\d+)-(\d+)@(\d+)(?:s(\d+))?b(\d+)$/.exec(o))
  .filter((m) => m !== null)
  .map((m) => {
    const kernel = +m[1];
    const shape: ConvShape = {
      images: +m[6],
      inChannels: +m[2],
      outChannels: +m[3],
      size: +m[4],
      kernel,
      stride: m[5] ? +m[5] : 1,
      pad: Math.floor(kernel / 2),
    };
    return { ...conv(shape), id: m[0] };
  });
const workloads = [gemm(512), gemm(1024), ...distinctConvs(resnet, 3).map(conv), ...extraGemms, ...extraConvs].filter(
  (w) => wanted(w.id),
);

interface Engine {
  name: string;
  run: () => Promise<void>;
  wall: number[];
  runner?: KernelRunner;
  /** --ceiling: the FMA ceiling measured right before each run, GFLOP/s. */
  ceilings?: number[];
  /** CPU time of the process's threads but the main one (lavapipe's workers) in each ceiling run and each of our runs, ns. */
  ceilingCpuNs?: number[];
  cpuNs?: number[];
  /** The first run (pipeline compile included), ms. */
  firstMs?: number;
  dispose: () => Promise<void> | void;
}

const gpu = await createNodeGpuContext();
console.log(
  `load ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}; rounds ${ROUNDS} × ${PER_ROUND} runs per engine`,
);
const summary: string[] = [];
const fma = CEILING ? await fmaProbe(gpu, undefined, CEILING_LOOP ? 1 : FMA_UNROLL) : undefined;

/** FLOP per CPU-second of our runs over the ceiling's: efficiency independent of the load (it
 * misses idle threads: a dispatch with too few workgroups for every worker looks no worse; our
 * runs' time includes the driver's upload and readback copies, a few percent on small problems). */
function cpuText(flops: number, cpuNs: number[], ceilingFlops: number, ceilingCpuNs: number[]): string {
  const ours = flops / median(cpuNs);
  const ceiling = ceilingFlops / median(ceilingCpuNs);
  return ` CPU-time ratio ${(ours / ceiling).toFixed(2)} (ceiling ${ceiling.toFixed(1)}, ours ${ours.toFixed(1)} GFLOP/CPU-s)`;
}

/** Each run's GPU rate over the ceiling measured just before it: the median ratio, its quartiles,
 * and the median rates of the ceiling and of the kernel. */
function ceilingText(flops: number, gpuMs: number[], ceilings: number[]): string {
  const ratios = gpuMs.map((ms, i) => flops / ms / 1e6 / ceilings[i]).sort((a, b) => a - b);
  const q = (f: number) => ratios[Math.min(ratios.length - 1, Math.floor(f * ratios.length))].toFixed(2);
  return `  ${median(ratios).toFixed(2)} × ceiling [q ${q(0.25)}–${q(0.75)}, ${ratios.length} pairs; ceiling ${median(ceilings).toFixed(1)}, ours ${(flops / median(gpuMs) / 1e6).toFixed(1)} GFLOP/s]`;
}
try {
  for (const wl of workloads) {
    const flops = graphFlops(wl.model.graph).total;
    const engines: Engine[] = [];
    let ortOut: Float32Array | undefined;
    if (RUN_ORT) {
      const session = await ort.InferenceSession.create(onnxBytesForOrt(wl.model.graph), {
        executionProviders: ['webgpu'],
        logSeverityLevel: 3,
      });
      const tensor = new ort.Tensor('float32', wl.model.input.data, wl.model.input.dims);
      const run = async (keep: boolean) => {
        const result = await session.run({ [wl.model.input.name]: tensor });
        if (keep) ortOut = new Float32Array(result[session.outputNames[0]].data as Float32Array);
        for (const v of Object.values(result)) v.dispose();
      };
      await run(true);
      engines.push({ name: 'ORT WebGPU', run: () => run(false), wall: [], dispose: () => session.release() });
    }
    for (const [key, wait] of VARIANTS.flatMap((k) => WAITS.map((w) => [k, w] as const))) {
      const job = wl.job(gpu, variantByKey(gpu, key));
      const runner = await kernelRunner(gpu, job, wait === 'paced');
      const t0 = performance.now();
      await runner.run(true);
      const firstMs = performance.now() - t0;
      const err =
        ortOut && runner.output ? ` rel.err vs ORT WebGPU ${relL2(runner.output, ortOut).toExponential(1)}` : '';
      if (err && relL2(runner.output!, ortOut!) > 1e-4)
        throw new Error(`${wl.what} ${job.variant}: wrong result:${err}`);
      runner.gpuMs.length = 0;
      engines.push({
        name: `ours ${key.startsWith('default') ? `${job.variant} (${key})` : key}${WAITS.length > 1 ? ` ${wait}` : ''}`,
        run: () => runner.run(false),
        wall: [],
        runner,
        ceilings: [],
        ceilingCpuNs: [],
        cpuNs: [],
        firstMs,
        dispose: () => runner.dispose(),
      });
    }
    for (let r = 0; r < ROUNDS; r++) {
      for (let e = 0; e < engines.length; e++) {
        const engine = engines[(e + r) % engines.length];
        for (let i = 0; i < PER_ROUND; i++) {
          // The ceiling right before each of our runs: each run's rate over it is one ratio.
          if (fma && engine.runner) {
            const c0 = workerCpuNs();
            engine.ceilings!.push(await fma.measure());
            engine.ceilingCpuNs!.push((workerCpuNs() - c0) / fma.runsPerMeasure);
          }
          const c0 = workerCpuNs();
          const t0 = performance.now();
          await engine.run();
          engine.wall.push(performance.now() - t0);
          engine.cpuNs?.push(workerCpuNs() - c0);
        }
      }
    }
    const ortMs = engines.find((e) => e.name === 'ORT WebGPU')
      ? median(engines.find((e) => e.name === 'ORT WebGPU')!.wall)
      : undefined;
    console.log(`${wl.what} (load ${os.loadavg()[0].toFixed(2)})`);
    for (const e of engines) {
      const wall = median(e.wall);
      const gpuMs = e.runner ? median(e.runner.gpuMs) : undefined;
      const ofCeiling =
        e.runner && e.ceilings && e.ceilings.length > 0
          ? ceilingText(flops, e.runner.gpuMs, e.ceilings) + cpuText(flops, e.cpuNs!, fma!.flops, e.ceilingCpuNs!)
          : '';
      const ratio =
        ofCeiling +
        (ortMs && e.runner ? `  ×${(ortMs / wall).toFixed(2)} wall (×${(ortMs / gpuMs!).toFixed(2)}† GPU)` : '') +
        (e.firstMs !== undefined ? `  first ${e.firstMs.toFixed(0)} ms` : '');
      const line = `  ${e.name.padEnd(34)} wall ${wall.toFixed(1).padStart(6)} ms${gpuMs !== undefined ? `  GPU ${gpuMs.toFixed(1).padStart(6)} ms` : '                '}  ${(flops / wall / 1e6).toFixed(2).padStart(6)} GFLOP/s${ratio}`;
      console.log(line);
      if (e.runner) summary.push(`${wl.what.padEnd(28)} ${line.trim()}`);
      await e.dispose();
    }
  }
} finally {
  fma?.dispose();
  gpu.dispose();
}
console.log(
  `\nsummary (load ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}):\n${summary.join('\n')}`,
);
process.exit(0);
