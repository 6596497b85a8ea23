// Measures, on this machine: GEMM 512³ and 1024³ for every variant of the core, a ResNet-style
// 3×3 conv, and light ResNet-50 (random weights, batch 1) through onnx-graft's Session against
// onnxruntime-node's WebGPU and CPU execution providers. Prints a table, writes JSON to
// bench/results/. Usage: npx tsx bench/inference.ts [--runs N] [--skip-gemm] [--skip-ort-webgpu]
import fs from 'node:fs';
import os from 'node:os';
import * as ort from 'onnxruntime-node';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Autotuner } from '../src/kernels/autotune.ts';
import { conv2dFlops, conv2dProgram, packConvWeights, type Conv2dParams } from '../src/kernels/conv.ts';
import { GEMM_VARIANTS, gemmFlops, gemmProgram, variantKey, type GemmProblem, type GemmVariant } from '../src/kernels/gemm.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { encodeSteps, prepareStep, STORAGE_USAGE, type KernelProgram } from '../src/kernels/program.ts';
import { Session } from '../src/runtime/session.ts';
import { onnxBytesForOrt, randomizedLightModel } from '../test/helpers/reference-models.ts';
import { jsonFileTuningStore } from './tuning-store.ts';

const args = process.argv.slice(2);
const runs = Number(args[args.indexOf('--runs') + 1]) || 5;
const skipGemm = args.includes('--skip-gemm');
const skipOrtWebgpu = args.includes('--skip-ort-webgpu');

interface Row { what: string; engine: string; ms: number; gflops?: number; note?: string }
const rows: Row[] = [];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function timeProgram(gpu: GpuContext, program: KernelProgram, sizes: Record<string, number>, reps: number): Promise<number> {
  const buffers: GPUBuffer[] = [];
  const ranges = program.bindings.filter((b) => b.name !== 'params').map((b) => {
    const floats = sizes[b.name];
    const buffer = gpu.createBuffer(b.name, Math.max(16, floats * 4), STORAGE_USAGE);
    const data = new Float32Array(floats);
    for (let i = 0; i < floats; i++) data[i] = Math.sin(i * 0.37);
    gpu.upload(buffer, data);
    buffers.push(buffer);
    return { buffer };
  });
  const step = await prepareStep(gpu, program, ranges);
  const times: number[] = [];
  for (let r = 0; r <= reps; r++) {
    const t0 = performance.now();
    const encoder = gpu.device.createCommandEncoder();
    encodeSteps(encoder, [step]);
    gpu.device.queue.submit([encoder.finish()]);
    await gpu.device.queue.onSubmittedWorkDone();
    if (r > 0) times.push(performance.now() - t0); // run 0 compiles (lavapipe compiles lazily)
  }
  for (const b of [...buffers, ...step.owned]) b.destroy();
  return median(times);
}

async function benchGemm(gpu: GpuContext): Promise<void> {
  for (const size of [512, 1024]) {
    for (const variant of GEMM_VARIANTS) {
      const p: GemmProblem = {
        batch: 1, M: size, N: size, K: size,
        a: { kind: 'matrix', layout: 'mk', batchStride: 0 },
        b: { layout: 'kn', batchStride: 0, ld: size, padded: true },
        c: { kind: 'matrix', batchStride: 0, strideM: size, strideN: 1 },
      };
      const ms = await timeProgram(gpu, gemmProgram(p, variant), { a: size * size, b: size * size, c: size * size }, size === 512 ? 3 : 2);
      rows.push({ what: `GEMM ${size}³`, engine: `onnx-graft ${variantKey(variant)}`, ms, gflops: gemmFlops(p) / ms / 1e6 });
      log(rows[rows.length - 1]);
    }
  }
  const conv: Conv2dParams = { images: 8, inChannels: 64, height: 56, width: 56, outChannels: 64, group: 1, kernelH: 3, kernelW: 3, strideH: 1, strideW: 1, pads: [1, 1, 1, 1], dilationH: 1, dilationW: 1, outH: 56, outW: 56, hasBias: true, activation: { kind: 'relu' } };
  const variants: GemmVariant[] = [GEMM_VARIANTS[0], GEMM_VARIANTS[1], GEMM_VARIANTS[4], GEMM_VARIANTS[5]];
  for (const variant of variants) {
    const ms = await timeProgram(gpu, conv2dProgram(conv, variant), { x: 8 * 64 * 56 * 56, w: packConvWeights(new Float32Array(64 * 64 * 9), conv).length, y: 8 * 64 * 56 * 56, bias: 64 }, 2);
    rows.push({ what: 'Conv 3×3 64→64 8×56×56', engine: `onnx-graft ${variantKey(variant)}`, ms, gflops: conv2dFlops(conv) / ms / 1e6 });
    log(rows[rows.length - 1]);
  }
}

async function benchResNet(gpu: GpuContext): Promise<void> {
  const graph = randomizedLightModel('resnet50', 42);
  const input = graph.feedInputs[0].name;
  const x = new Float32Array(3 * 224 * 224).map((_, i) => Math.sin(i * 0.01));
  const feeds = { [input]: { dims: [1, 3, 224, 224], data: x } };
  const flops = 2 * 4.1e9; // ≈ 4.1 GMAC for ResNet-50 at 224²

  for (const mode of ['default', 'tune'] as const) {
    const t0 = performance.now();
    const tuner = mode === 'tune' ? new Autotuner(gpu, { store: jsonFileTuningStore('bench/results/tuning.json') }) : undefined;
    const session = await Session.create(graph, { gpu, gemm: mode, tuner });
    const created = performance.now() - t0;
    const t1 = performance.now();
    await session.run(feeds);
    const first = performance.now() - t1;
    const times: number[] = [];
    for (let r = 0; r < runs; r++) {
      const t = performance.now();
      await session.run(feeds);
      times.push(performance.now() - t);
    }
    const ms = median(times);
    rows.push({
      what: 'light ResNet-50 b1', engine: `onnx-graft (gemm: ${mode})`, ms, gflops: flops / ms / 1e6,
      note: `create ${created.toFixed(0)} ms, first run ${first.toFixed(0)} ms, ${session.planStats.steps} steps, ${session.planStats.pipelines} pipelines, activations ${(session.peakActivationBytes / 2 ** 20).toFixed(1)} MiB${tuner ? `, ${tuner.measurements} tuning timings` : ''}`,
    });
    log(rows[rows.length - 1]);
    session.dispose();
  }

  const bytes = onnxBytesForOrt(graph);
  const providers: ('cpu' | 'webgpu')[] = skipOrtWebgpu ? ['cpu'] : ['cpu', 'webgpu'];
  for (const provider of providers) {
    const t0 = performance.now();
    const session = await ort.InferenceSession.create(bytes, { executionProviders: [provider], logSeverityLevel: 3 });
    const created = performance.now() - t0;
    const tensor = new ort.Tensor('float32', x, [1, 3, 224, 224]);
    const t1 = performance.now();
    await session.run({ [input]: tensor });
    const first = performance.now() - t1;
    const times: number[] = [];
    for (let r = 0; r < runs; r++) {
      const t = performance.now();
      await session.run({ [input]: tensor });
      times.push(performance.now() - t);
    }
    const ms = median(times);
    rows.push({ what: 'light ResNet-50 b1', engine: `onnxruntime-node ${provider} EP`, ms, gflops: flops / ms / 1e6, note: `create ${created.toFixed(0)} ms, first run ${first.toFixed(0)} ms` });
    log(rows[rows.length - 1]);
    await session.release();
  }
}

function log(r: Row): void {
  console.log(`${r.what.padEnd(26)} ${r.engine.padEnd(40)} ${r.ms.toFixed(1).padStart(9)} ms ${r.gflops !== undefined ? `${r.gflops.toFixed(2).padStart(7)} GFLOP/s` : ''}${r.note ? `  (${r.note})` : ''}`);
}

const gpu = await createNodeGpuContext();
console.log(`adapter: ${gpu.info.vendor} ${gpu.info.architecture} ${gpu.info.description || gpu.info.device}; ${os.cpus().length} CPUs; load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
try {
  if (!skipGemm) await benchGemm(gpu);
  await benchResNet(gpu);
} finally {
  gpu.dispose();
}
fs.mkdirSync('bench/results', { recursive: true });
const file = `bench/results/inference-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
fs.writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), adapter: gpu.info.description || gpu.info.device, cpus: os.cpus().length, loadavg: os.loadavg(), runs, rows }, null, 2));
console.log(`\n${'what'.padEnd(26)} ${'engine'.padEnd(40)} ${'ms'.padStart(12)} ${'GFLOP/s'.padStart(9)}`);
for (const r of rows) console.log(`${r.what.padEnd(26)} ${r.engine.padEnd(40)} ${r.ms.toFixed(1).padStart(12)} ${r.gflops !== undefined ? r.gflops.toFixed(2).padStart(9) : ''}`);
console.log(`\nwrote ${file}`);
