/// <reference types="@webgpu/types" />
// onnx-graft's GEMM and conv kernels alone, as the runtime would lower a single MatMul or Conv
// node with constant weights (same problem, packing and default variant as src/runtime/lower.ts),
// run on our own command encoder so that the compute pass carries timestampWrites: Session and
// Plan encode their own pass and take no timestamp writes.
import { conv2dGemmProblem, conv2dPrograms, packConvWeights, type Conv2dParams } from '../src/kernels/conv.ts';
import {
  defaultVariant,
  gemmPrograms,
  gemmTarget,
  variantKey,
  type GemmProblem,
  type GemmTarget,
  type GemmVariant,
} from '../src/kernels/gemm.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import {
  DEFAULT_DOT_GEMV,
  defaultGemvVariant,
  dotGemvProgram,
  gemvKey,
  gemvPrograms,
  gemvUnsupported,
  type GemvVariant,
} from '../src/kernels/gemv.ts';
import { columnChunk, gemmOpProblem, matmulProblem, packB, storedRowChunk } from '../src/kernels/linear.ts';
import {
  prepareStep,
  renameBindings,
  storageUsage,
  type KernelProgram,
  type KernelStep,
} from '../src/kernels/program.ts';
import { SubmitPacer } from '../src/kernels/submit-pacer.ts';
import type { ConvShape } from './workloads.ts';

export interface KernelJob {
  label: string;
  variant: string;
  programs: KernelProgram[];
  /** Data per binding name; the activation input is re-uploaded every run. */
  inputs: Record<string, Float32Array>;
  activation: string;
  output: { name: string; floats: number };
  /** Floats of scratch bindings the programs need (neither input nor output). */
  scratch?: Record<string, number>;
}

/** A variant, or the target whose default variant to take (the device's when absent): how
 * bench/probe-kernels.ts compares variants and defaults. */
export type VariantChoice = GemmVariant | GemmTarget | undefined;

function choose(gpu: GpuContext, problem: GemmProblem, choice: VariantChoice): GemmVariant {
  if (choice && 'kind' in choice) return choice;
  return defaultVariant(problem, choice ?? gemmTarget(gpu));
}

export function matmulJob(
  gpu: GpuContext,
  M: number,
  K: number,
  N: number,
  x: Float32Array,
  w: Float32Array,
  choice?: VariantChoice,
): KernelJob {
  const problem = matmulProblem([M, K], [K, N], true);
  const variant = choose(gpu, problem, choice);
  return {
    label: problem.label ?? 'matmul',
    variant: variantKey(variant),
    programs: gemmPrograms(problem, variant, gpu.device.limits.maxComputeWorkgroupsPerDimension),
    inputs: { a: x, b: packB(w, K, N, false) },
    activation: 'a',
    output: { name: 'c', floats: M * N },
  };
}

/**
 * A fully connected layer Y[M, N] = X[M, K] · Wᵀ + bias (W [N, K], constant, as an ONNX Gemm with
 * transB = 1 stores it), lowered as src/ops/gemm.ts lowers it: W packed as [K][N'] in column
 * chunks that each fit one binding, each chunk a GEMV when M is small (or the GEMM core: `kernel`
 * forces one or the other, or a GEMV variant); on a software adapter by default the dot GEMV over W as stored. Chunk c binds its weights as 'b<c>'.
 */
export function denseJob(
  gpu: GpuContext,
  { M, K, N }: { M: number; K: number; N: number },
  data: { x: Float32Array; w: Float32Array; bias: Float32Array },
  kernel: 'default' | 'gemm' | 'gemv' | 'dot' | GemvVariant = 'default',
): KernelJob {
  const { x, w, bias } = data;
  // 'default' is what a Session picks: the dot GEMV on a software adapter, else the split-K GEMV.
  if (kernel === 'dot' || (kernel === 'default' && gpu.info.isSoftware)) return dotDenseJob(gpu, { M, K, N }, data);
  const chunk = columnChunk(K, N, gpu.device.limits.maxStorageBufferBindingSize);
  const params = { M, N, K, transA: false, transB: true, alpha: 1, beta: 1, cDims: [N] };
  const programs: KernelProgram[] = [];
  const inputs: Record<string, Float32Array> = { a: x, bias };
  const scratch: Record<string, number> = {};
  let variant = '';
  for (let n0 = 0, c = 0; n0 < N; n0 += chunk, c++) {
    const columns = Math.min(chunk, N - n0);
    const problem = gemmOpProblem(params, { packed: true, nOffset: n0, columns });
    inputs[`b${c}`] = packB(w, K, N, true, n0, columns);
    const names = { b: `b${c}`, partial: `partial${c}` };
    if (kernel !== 'gemm' && gemvUnsupported(problem) === undefined) {
      const v = kernel === 'default' || kernel === 'gemv' ? defaultGemvVariant(problem) : kernel;
      const plan = gemvPrograms(problem, v);
      if (plan.partialFloats) scratch[`partial${c}`] = plan.partialFloats;
      programs.push(...renameBindings(plan.programs, names, 'dense'));
      variant = `${gemvKey(v)}${v.splitK > 1 ? `×${v.splitK}` : ''}`;
    } else {
      const v = defaultVariant(problem, gemmTarget(gpu));
      programs.push(
        ...renameBindings(gemmPrograms(problem, v, gpu.device.limits.maxComputeWorkgroupsPerDimension), names, 'dense'),
      );
      variant = variantKey(v);
    }
  }
  const chunks = Math.ceil(N / chunk);
  return {
    label: `dense ${M}×${K}→${N}`,
    variant: chunks > 1 ? `${variant}, ${chunks} column chunks` : variant,
    programs,
    inputs,
    activation: 'a',
    output: { name: 'c', floats: M * N },
    scratch,
  };
}

/** A dense layer on the dot GEMV: W [N][K] bound as stored, in chunks of whole rows that each fit one binding. */
function dotDenseJob(
  gpu: GpuContext,
  { M, K, N }: { M: number; K: number; N: number },
  { x, w, bias }: { x: Float32Array; w: Float32Array; bias: Float32Array },
): KernelJob {
  const rowsPerChunk = storedRowChunk(K, N, gpu.device.limits.maxStorageBufferBindingSize);
  const params = { M, N, K, transA: false, transB: true, alpha: 1, beta: 1, cDims: [N] };
  const programs: KernelProgram[] = [];
  const inputs: Record<string, Float32Array> = { a: x, bias };
  let chunks = 0;
  for (let n0 = 0; n0 < N; n0 += rowsPerChunk, chunks++) {
    const rows = Math.min(rowsPerChunk, N - n0);
    const problem = gemmOpProblem(params, { packed: false, nOffset: n0, columns: rows });
    inputs[`b${chunks}`] = w.subarray(n0 * K, (n0 + rows) * K);
    programs.push(...renameBindings([dotGemvProgram(problem)], { b: `b${chunks}` }, 'dense'));
  }
  const variant = `dot-gemv${DEFAULT_DOT_GEMV.rowsPerLane}@${DEFAULT_DOT_GEMV.workgroupSize}`;
  return {
    label: `dense ${M}×${K}→${N}`,
    variant: chunks > 1 ? `${variant}, ${chunks} row chunks` : variant,
    programs,
    inputs,
    activation: 'a',
    output: { name: 'c', floats: M * N },
    scratch: {},
  };
}

export function convJob(
  gpu: GpuContext,
  s: ConvShape,
  x: Float32Array,
  w: Float32Array,
  bias: Float32Array,
  choice?: VariantChoice,
): KernelJob {
  const out = Math.floor((s.size + 2 * s.pad - s.kernel) / s.stride) + 1;
  const p: Conv2dParams = {
    images: s.images,
    inChannels: s.inChannels,
    height: s.size,
    width: s.size,
    outChannels: s.outChannels,
    group: 1,
    kernelH: s.kernel,
    kernelW: s.kernel,
    strideH: s.stride,
    strideW: s.stride,
    pads: [s.pad, s.pad, s.pad, s.pad],
    dilationH: 1,
    dilationW: 1,
    outH: out,
    outW: out,
    hasBias: true,
  };
  const variant = choose(gpu, conv2dGemmProblem(p), choice);
  return {
    label: `conv ${s.kernel}x${s.kernel} s${s.stride} ${s.inChannels}→${s.outChannels} @${s.size}`,
    variant: variantKey(variant),
    programs: conv2dPrograms(p, variant, gpu.device.limits.maxComputeWorkgroupsPerDimension),
    inputs: { x, w: packConvWeights(w, p), bias },
    activation: 'x',
    output: { name: 'y', floats: s.images * s.outChannels * out * out },
  };
}

export interface KernelRunner {
  /** Uploads the activation, runs every program in one timestamped pass, reads the output back. */
  run(keepOutput: boolean): Promise<void>;
  /** GPU time of each run (end − beginning of pass timestamps), ms. */
  readonly gpuMs: number[];
  output: Float32Array | undefined;
  /** Bytes of the GPU buffers the kernel binds (inputs, weights, output, uniforms). */
  readonly bytes: number;
  dispose(): void;
}

/** `pace`: wait for the submit as Plan.execute does (SubmitPacer: a timer first on a software
 * adapter under Node, where dawn.node spins while a map is pending); false maps right away. */
export async function kernelRunner(gpu: GpuContext, job: KernelJob, pace = true): Promise<KernelRunner> {
  if (!gpu.hasFeature('timestamp-query'))
    throw new Error('the adapter has no timestamp-query: time kernels by wall clock instead');
  const device = gpu.device;
  const created: GPUBuffer[] = [];
  const buffers = new Map<string, GPUBuffer>();
  let bytes = 0;
  const names = new Set(job.programs.flatMap((p) => p.bindings.filter((b) => b.name !== 'params').map((b) => b.name)));
  for (const name of names) {
    const floats =
      job.inputs[name]?.length ?? (name === job.output.name ? job.output.floats : undefined) ?? job.scratch?.[name];
    if (floats === undefined) throw new Error(`${job.label}: no data for binding '${name}'`);
    const size = Math.ceil(Math.max(16, floats * 4) / 16) * 16;
    const buffer = gpu.createBuffer(`${job.label}:${name}`, size, storageUsage());
    if (job.inputs[name]) gpu.upload(buffer, job.inputs[name]);
    created.push(buffer);
    buffers.set(name, buffer);
    bytes += size;
  }
  const steps: KernelStep[] = [];
  for (const program of job.programs) {
    const step = await prepareStep(
      gpu,
      program,
      program.bindings.filter((b) => b.name !== 'params').map((b) => ({ buffer: buffers.get(b.name)! })),
    );
    for (const b of step.owned) bytes += b.size;
    created.push(...step.owned);
    steps.push(step);
  }
  const querySet = device.createQuerySet({ type: 'timestamp', count: 2 });
  const resolved = gpu.createBuffer(
    `${job.label}:timestamps`,
    16,
    GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  );
  const stamps = gpu.createBuffer(
    `${job.label}:timestamps (read)`,
    16,
    GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  );
  const outBytes = job.output.floats * 4;
  const staging = gpu.createBuffer(
    `${job.label}:output (read)`,
    Math.ceil(outBytes / 16) * 16,
    GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  );
  created.push(resolved, stamps, staging);
  const input = buffers.get(job.activation)!;
  const output = buffers.get(job.output.name)!;
  const gpuMs: number[] = [];
  const pacer = pace ? SubmitPacer.forAdapter(gpu.info.isSoftware) : new SubmitPacer({ enabled: false });
  const runner: KernelRunner = {
    gpuMs,
    output: undefined,
    bytes,
    async run(keepOutput: boolean) {
      gpu.upload(input, job.inputs[job.activation]);
      const encoder = device.createCommandEncoder({ label: job.label });
      const pass = encoder.beginComputePass({
        label: job.label,
        timestampWrites: { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
      });
      for (const s of steps) {
        pass.setPipeline(s.pipeline);
        pass.setBindGroup(0, s.bindGroup);
        pass.dispatchWorkgroups(s.dispatch[0], s.dispatch[1], s.dispatch[2]);
      }
      pass.end();
      encoder.resolveQuerySet(querySet, 0, 2, resolved, 0);
      encoder.copyBufferToBuffer(resolved, 0, stamps, 0, 16);
      encoder.copyBufferToBuffer(output, 0, staging, 0, outBytes);
      const submitted = performance.now();
      device.queue.submit([encoder.finish()]);
      await pacer.beforeMap(submitted);
      await Promise.all([stamps.mapAsync(GPUMapMode.READ), staging.mapAsync(GPUMapMode.READ, 0, outBytes)]);
      pacer.done(submitted);
      const t = new BigUint64Array(stamps.getMappedRange());
      gpuMs.push(Number(t[1] - t[0]) / 1e6);
      stamps.unmap();
      if (keepOutput) runner.output = new Float32Array(staging.getMappedRange(0, outBytes).slice(0));
      staging.unmap();
    },
    dispose() {
      for (const b of created) b.destroy();
      querySet.destroy();
    },
  };
  return runner;
}
