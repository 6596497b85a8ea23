// A quick A/B probe of batch-1 fully connected layers: the GEMM core against the split-K GEMV
// (default and given variants) and the dot GEMV (weights as stored), GPU timestamps, as a fraction of the copy bandwidth measured in
// the same run; the kernels interleaved round by round so that load from other processes hits
// all alike. Usage: npx tsx bench/probe-dense.ts [--only 4096x4096,...] [--rows 1]
//   [--variants 8@64x1,4@8x16,...: columns per lane @ workgroup size × split K] [--rounds 5]
//   [--reverse: run the GEMM core last in each round]
import os from 'node:os';
import type { GemvVariant } from '../src/kernels/gemv.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { mulberry32 } from '../test/helpers/random.ts';
import { measureCeiling } from './ceiling.ts';
import { denseJob, kernelRunner, type KernelRunner } from './engine-kernels.ts';
import { median, relL2 } from './harness.ts';
import { DENSE_LAYERS, denseBytes } from './workloads.ts';

const argv = process.argv.slice(2);
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const ONLY = option('--only')?.split(',');
const M = Number(option('--rows') ?? 1);
const VARIANTS = (option('--variants') ?? '')
  .split(',')
  .filter(Boolean)
  .map((text): GemvVariant => {
    const m = /^(4|8)@(\d+)x(\d+)$/.exec(text);
    if (!m) throw new Error(`--variants: '${text}' is not <4|8>@<workgroup size>x<split K>`);
    return { colsPerLane: Number(m[1]) as 4 | 8, workgroupSize: Number(m[2]), splitK: Number(m[3]) };
  });
const ROUNDS = Number(option('--rounds') ?? 5);

const random = (n: number, seed: number) => {
  const rng = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng() - 0.5;
  return out;
};

const gpu = await createNodeGpuContext();
try {
  const ceiling = await measureCeiling(gpu);
  for (const t of ceiling.trials) console.log(`  ${t.what}: ${t.ms.toFixed(1)} ms, ${t.rate.toFixed(2)}`);
  console.log(
    `load ${os.loadavg()[0].toFixed(2)}; copy ${ceiling.copyGBps.toFixed(2)} GB/s, FMA ${ceiling.fmaGflops.toFixed(1)} GFLOP/s`,
  );
  for (const layer of DENSE_LAYERS.filter((l) => !ONLY || ONLY.includes(`${l.K}x${l.N}`))) {
    const { K, N } = layer;
    const x = random(M * K, 1);
    const w = random(N * K, 2);
    const bias = random(N, 3);
    const listed = ['gemm', 'gemv', 'dot', ...VARIANTS] as const;
    const kernels = argv.includes('--reverse') ? [...listed].reverse() : listed;
    const runners: { variant: string; runner: KernelRunner }[] = [];
    for (const kernel of kernels) {
      const job = denseJob(gpu, { M, K, N }, { x, w, bias }, kernel);
      const runner = await kernelRunner(gpu, job);
      await runner.run(true);
      runner.gpuMs.length = 0;
      runners.push({ variant: job.variant, runner });
    }
    for (let r = 0; r < ROUNDS; r++) for (const { runner } of runners) await runner.run(false);
    const reference = runners.find((r) => !r.variant.startsWith('gemv'))!.runner.output!;
    for (const { variant, runner } of runners) {
      const ms = median(runner.gpuMs);
      const gbps = denseBytes(M, K, N) / ms / 1e6;
      console.log(
        `${layer.what} M=${M} ${variant.padEnd(36)} ${ms.toFixed(2).padStart(8)} ms  ${gbps.toFixed(2)} GB/s  ${(gbps / ceiling.copyGBps).toFixed(2)} of copy  err ${relL2(runner.output!, reference).toExponential(1)}`,
      );
      runner.dispose();
    }
    console.log(`  (load ${os.loadavg()[0].toFixed(1)})`);
  }
} finally {
  gpu.dispose();
}
process.exit(0);
