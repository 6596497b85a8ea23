// A quick A/B probe of batch-1 fully connected layers: the GEMM core against the split-K GEMV
// (default and given variants), GPU timestamps, as a fraction of the copy bandwidth measured in
// the same run. Usage: npx tsx bench/probe-dense.ts [--only 4096x4096,...] [--rows 1] [--splits 1,4,16] [--runs 5]
import os from 'node:os';
import { createNodeGpuContext } from '../src/node/index.ts';
import { mulberry32 } from '../test/helpers/random.ts';
import { measureCeiling } from './ceiling.ts';
import { denseJob, kernelRunner } from './engine-kernels.ts';
import { median, relL2 } from './harness.ts';
import { DENSE_LAYERS, denseBytes } from './workloads.ts';

const argv = process.argv.slice(2);
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const ONLY = option('--only')?.split(',');
const M = Number(option('--rows') ?? 1);
const SPLITS = (option('--splits') ?? '').split(',').filter(Boolean).map(Number);
const RUNS = Number(option('--runs') ?? 5);

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
    const kernels = [
      'gemm',
      'default',
      ...SPLITS.map((s) => ({ colsPerLane: 8 as const, workgroupSize: 64, splitK: s })),
    ] as const;
    let reference: Float32Array | undefined;
    for (const kernel of kernels) {
      const job = denseJob(gpu, M, K, N, x, w, bias, kernel);
      const runner = await kernelRunner(gpu, job);
      await runner.run(true);
      reference ??= runner.output;
      runner.gpuMs.length = 0;
      for (let r = 0; r < RUNS; r++) await runner.run(false);
      const ms = median(runner.gpuMs);
      const gbps = denseBytes(M, K, N) / ms / 1e6;
      console.log(
        `${layer.what} M=${M} ${job.variant.padEnd(28)} ${ms.toFixed(2).padStart(8)} ms  ${gbps.toFixed(2)} GB/s  ${(gbps / ceiling.copyGBps).toFixed(2)} of copy  err ${relL2(runner.output!, reference!).toExponential(1)}  (load ${os.loadavg()[0].toFixed(1)})`,
      );
      runner.dispose();
    }
  }
} finally {
  gpu.dispose();
}
process.exit(0);
