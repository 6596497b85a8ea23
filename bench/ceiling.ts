/// <reference types="@webgpu/types" />
// The adapter's own limits, measured in the run that reports against them (platform.md: the
// numbers move with the load, so a ceiling from another minute says little):
//  - FMA ceiling: a register-only kernel of independent vec4 FMAs, enough workgroups to give
//    every thread work, timed with pass timestamps; the best of a few sizes.
//  - the same with each trip of its loop doing FMA_UNROLL rounds written out (a constant inner
//    loop that the compiler unrolls): on lavapipe (Mesa 25) a loop costs, per trip and per
//    loop-carried value, a blend with the loop mask (and here a spill: 32 accumulator registers
//    of 8 lanes against AVX2's 16), so the plain loop measures the loop as much as the FMAs;
//    the unrolled form ran 1.5–1.9× faster there. The ceiling is the faster of the two forms
//    (the plain one is kept as fmaLoopGflops: the benchmarks before 2026-12-07 rated against it).
//  - copy bandwidth: a storage-to-storage vec4 copy of a large buffer (bytes read + written).
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import {
  defineProgram,
  input,
  output,
  ParamBlock,
  prepareStep,
  storageUsage,
  type KernelProgram,
  type KernelStep,
} from '../src/kernels/program.ts';
import { dispatch1d } from '../src/kernels/shader.ts';
import { median } from './harness.ts';

export interface Ceiling {
  /** The ceiling: the best FMA throughput over both forms and the sizes tried, GFLOP/s (an FMA counts 2). */
  fmaGflops: number;
  /** The plain loop form's best alone, GFLOP/s: what the fractions were taken against until 2026-12-07. */
  fmaLoopGflops: number;
  /** Copy bandwidth, GB/s (10⁹ bytes: read + written). */
  copyGBps: number;
  /** Every size tried: what, its median GPU ms and its rate. */
  trials: { what: string; ms: number; rate: number }[];
}

/** Independent vec4 accumulators per invocation: enough to hide FMA latency on any CPU or GPU. */
const CHAINS = 8;

/** Rounds of CHAINS FMAs per loop trip in the unrolled form: 4 ran fastest on lavapipe (8 and
 * 16 slower again: the compiler stops unrolling, or spills more). */
export const FMA_UNROLL = 4;

/** Each invocation runs P.iterations × unroll × CHAINS vec4 FMAs, then writes one float (so
 * that none is dead code). */
function fmaProgram(workgroups: number, workgroupSize: number, iterations: number, unroll = 1): KernelProgram {
  const chains = Array.from({ length: CHAINS }, (_, i) => i);
  const round = chains.map((i) => `acc${i} = fma(acc${i}, m, d);`);
  return defineProgram({
    label: `fma ceiling ${workgroups}×${workgroupSize}×${iterations}${unroll > 1 ? `×${unroll}` : ''}`,
    key: `bench-fma|${workgroupSize}|${unroll}`,
    dispatch: dispatch1d(workgroups),
    bindings: [output('out')],
    params: new ParamBlock().u32('iterations', iterations).u32('width', workgroups * workgroupSize),
    workgroupSize,
    builtins: { gid: 'global_invocation_id' },
    body: () =>
      [
        `  let seed = f32(gid.x) * 1e-9;`,
        `  let m = vec4f(0.999, 0.998, 0.997, 0.996) + seed;`,
        `  let d = vec4f(1e-3, 2e-3, 3e-3, 4e-3);`,
        ...chains.map((i) => `  var acc${i} = vec4f(${i + 1}.0) * seed;`),
        `  for (var i = 0u; i < P.iterations; i++) {`,
        ...(unroll > 1
          ? [`    for (var u = 0u; u < ${unroll}u; u++) {`, ...round.map((x) => `      ${x}`), `    }`]
          : round.map((x) => `    ${x}`)),
        `  }`,
        `  let total = ${chains.map((i) => `acc${i}`).join(' + ')};`,
        `  out[(gid.x + gid.y * 65535u * ${workgroupSize}u) % P.width] = total.x + total.y + total.z + total.w;`,
      ].join('\n'),
  });
}

/** dst = src, vec4; each invocation copies `perInvocation` vec4s, a whole dispatch's width apart
 * (so that neighbouring invocations copy neighbouring vec4s). vec4s: a multiple of the invocations. */
function copyProgram(vec4s: number, workgroupSize: number, perInvocation: number): KernelProgram {
  const invocations = vec4s / perInvocation;
  const dispatch = dispatch1d(invocations / workgroupSize);
  return defineProgram({
    label: `copy ${vec4s * 16} bytes, ${perInvocation} vec4 per invocation`,
    key: `bench-copy|${workgroupSize}|${perInvocation}`,
    dispatch,
    bindings: [input('src', { vec4: true }), output('dst', { vec4: true })],
    params: new ParamBlock().u32('invocations', invocations).u32('rowSize', dispatch[0] * workgroupSize),
    workgroupSize,
    builtins: { gid: 'global_invocation_id' },
    guard: { index: { name: 'i', expr: 'gid.x + gid.y * P.rowSize' }, exit: 'i >= P.invocations' },
    body: () =>
      perInvocation === 1
        ? `  dst[i] = src[i];`
        : `  for (var j = 0u; j < ${perInvocation}u; j++) {\n    dst[i + j * P.invocations] = src[i + j * P.invocations];\n  }`,
  });
}

/** Median GPU time (pass timestamps) of `runs` submits of one step, ms; one untimed run first. */
export async function timeSteps(gpu: GpuContext, steps: KernelStep[], runs: number): Promise<number> {
  const device = gpu.device;
  const querySet = device.createQuerySet({ type: 'timestamp', count: 2 });
  const resolved = gpu.createBuffer('timestamps', 16, GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC);
  const read = gpu.createBuffer('timestamps (read)', 16, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
  const ms: number[] = [];
  try {
    for (let r = 0; r <= runs; r++) {
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass({
        timestampWrites: { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
      });
      for (const s of steps) {
        pass.setPipeline(s.pipeline);
        pass.setBindGroup(0, s.bindGroup);
        pass.dispatchWorkgroups(...s.dispatch);
      }
      pass.end();
      encoder.resolveQuerySet(querySet, 0, 2, resolved, 0);
      encoder.copyBufferToBuffer(resolved, 0, read, 0, 16);
      device.queue.submit([encoder.finish()]);
      await read.mapAsync(GPUMapMode.READ);
      const t = new BigUint64Array(read.getMappedRange());
      if (r > 0) ms.push(Number(t[1] - t[0]) / 1e6);
      read.unmap();
    }
  } finally {
    querySet.destroy();
    resolved.destroy();
    read.destroy();
  }
  return median(ms);
}

/**
 * One FMA ceiling size prepared for timing again and again: how bench/probe-kernels.ts
 * interleaves the ceiling with the kernels it rates, so that both see the same load.
 * `measure()` gives GFLOP/s of one timed run (it runs the kernel runsPerMeasure times); `flops`
 * is one run's.
 */
export async function fmaProbe(
  gpu: GpuContext,
  [workgroups, size, iterations]: [number, number, number] = [256, 64, 512],
  unroll = 1,
): Promise<{ measure: () => Promise<number>; flops: number; runsPerMeasure: number; dispose: () => void }> {
  const out = gpu.createBuffer('fma out', 65536 * 4, storageUsage());
  // The unrolled form runs the same FMAs in 1/unroll as many trips.
  const trips = Math.max(1, Math.round(iterations / unroll));
  const step = await prepareStep(gpu, fmaProgram(workgroups, size, trips, unroll), [{ buffer: out }]);
  const flops = workgroups * size * trips * unroll * CHAINS * 4 * 2;
  return {
    measure: async () => flops / (await timeSteps(gpu, [step], 1)) / 1e6,
    flops,
    // timeSteps runs it once untimed first.
    runsPerMeasure: 2,
    dispose: () => {
      out.destroy();
      for (const b of step.owned) b.destroy();
    },
  };
}

/** Measures the FMA ceiling (best of a few sizes) and the copy bandwidth on `gpu`. */
export async function measureCeiling(gpu: GpuContext, runs = 5): Promise<Ceiling> {
  const trials: Ceiling['trials'] = [];
  const created: GPUBuffer[] = [];
  const buffer = (label: string, bytes: number) => {
    const b = gpu.createBuffer(label, bytes, storageUsage());
    created.push(b);
    return b;
  };
  try {
    // Workgroup counts from a few per CPU thread to a GPU's thousands; the iteration count keeps
    // each run long enough (tens of ms on lavapipe) for the timestamps to mean something.
    const sizes: [number, number, number][] = [
      [64, 64, 4096],
      [256, 64, 2048],
      [64, 256, 1024],
      [1024, 64, 1024],
    ];
    const out = buffer('fma out', 65536 * 4);
    for (const unroll of [1, FMA_UNROLL]) {
      for (const [workgroups, size, iterations] of sizes) {
        const trips = iterations / unroll;
        const program = fmaProgram(workgroups, size, trips, unroll);
        const step = await prepareStep(gpu, program, [{ buffer: out }]);
        created.push(...step.owned);
        const ms = await timeSteps(gpu, [step], runs);
        const flops = workgroups * size * iterations * CHAINS * 4 * 2;
        const what = `${unroll > 1 ? `fma-unrolled×${unroll}` : 'fma'} ${workgroups}×${size}×${iterations}`;
        trials.push({ what, ms, rate: flops / ms / 1e6 });
      }
    }
    const copyBytes = 64 * 2 ** 20;
    const src = buffer('copy src', copyBytes);
    const dst = buffer('copy dst', copyBytes);
    for (const [size, perInvocation] of [
      [256, 1],
      [64, 16],
      [64, 64],
    ]) {
      const program = copyProgram(copyBytes / 16, size, perInvocation);
      const step = await prepareStep(gpu, program, [{ buffer: src }, { buffer: dst }]);
      created.push(...step.owned);
      const ms = await timeSteps(gpu, [step], runs);
      trials.push({
        what: `copy ${copyBytes / 2 ** 20} MiB wg${size}×${perInvocation}`,
        ms,
        rate: (2 * copyBytes) / ms / 1e6,
      });
    }
  } finally {
    for (const b of created) b.destroy();
  }
  const best = (prefix: string) => Math.max(...trials.filter((t) => t.what.startsWith(prefix)).map((t) => t.rate));
  const fmaLoopGflops = best('fma ');
  return { fmaGflops: Math.max(fmaLoopGflops, best('fma-unrolled')), fmaLoopGflops, copyGBps: best('copy'), trials };
}
