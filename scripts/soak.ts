// Soak: one Session run many times, then create/dispose cycles of sessions and training plans
// (Trainer.create, one training step, dispose), all on one GpuContext, sampling the process's
// RSS and the context's live GPU buffers. Growth after warm-up is a leak.
//
//   npx tsx scripts/soak.ts --runs 10000 --cycles 200
//
// Prints the samples' medians per quarter and the verdict; exits 1 on growth. test/soak.test.ts
// runs a short version through runSoak.
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { buildArchitecture } from '../src/graph/architectures/index.ts';
import type { Graph } from '../src/graph/ir.ts';
import { seededRandom } from '../src/graph/random.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Session } from '../src/runtime/session.ts';
import { Trainer } from '../src/train/trainer.ts';

export interface SoakSample {
  /** What had just finished: the n-th run or the n-th cycle. */
  phase: 'runs' | 'cycles';
  n: number;
  rssBytes: number;
  heapBytes: number;
  gpuBuffers: number;
  gpuBytes: number;
}

export interface SoakOptions {
  gpu: GpuContext;
  runs: number;
  cycles: number;
  /** A sample every this many runs (cycles are sampled each). Default: runs / 100, at least 1. */
  sampleEvery?: number;
  onSample?: (s: SoakSample) => void;
}

/** Growth allowed between the second and last quarter's medians: RSS (noisy) and GPU bytes (exact). */
export const RSS_TOLERANCE = { bytes: 24 * 2 ** 20, fraction: 0.05 };

export interface Growth {
  metric: 'rssBytes' | 'gpuBytes' | 'gpuBuffers';
  phase: SoakSample['phase'];
  secondQuarter: number;
  lastQuarter: number;
  allowed: number;
}

/** Runs the soak and returns every sample (a small ResNet-50, see smallResNet). */
export async function runSoak(o: SoakOptions): Promise<SoakSample[]> {
  const samples: SoakSample[] = [];
  const collect = garbageCollector();
  const sample = (phase: SoakSample['phase'], n: number) => {
    // A full collection first, so the heap's own ebb and flow does not read as growth.
    collect();
    const m = process.memoryUsage();
    const live = o.gpu.liveBuffers;
    const s = { phase, n, rssBytes: m.rss, heapBytes: m.heapUsed, gpuBuffers: live.count, gpuBytes: live.bytes };
    samples.push(s);
    o.onSample?.(s);
  };
  const model = smallResNet(1);
  const input = model.feedInputs[0];
  const dims = input.shape!.map((d) => (typeof d === 'number' ? d : 1));
  const feed = {
    dims,
    data: randomImage(
      dims.reduce((a, b) => a * b, 1),
      1,
    ),
  };

  const session = await Session.create(model.clone(), { gpu: o.gpu });
  try {
    const every = o.sampleEvery ?? Math.max(1, Math.floor(o.runs / 100));
    for (let i = 1; i <= o.runs; i++) {
      await session.run({ [input.name]: feed });
      if (i % every === 0) sample('runs', i);
    }
    const small = smallResNet('batch');
    const batch = { images: randomImage(2 * 3 * 32 * 32, 2), labels: Uint32Array.from([0, 1]), size: 2 };
    for (let c = 1; c <= o.cycles; c++) {
      const other = await Session.create(model.clone(), { gpu: o.gpu });
      await other.run({ [input.name]: feed });
      other.dispose();
      const trainer = await Trainer.create(o.gpu, small.clone());
      await trainer.fit(() => [batch], { epochs: 1, optimizer: { type: 'adam', lr: 1e-3 } });
      trainer.dispose();
      // dispose() frees plans from promise callbacks: let them run before counting.
      await nextTurn();
      sample('cycles', c);
    }
  } finally {
    session.dispose();
    await nextTurn();
  }
  return samples;
}

/**
 * Where a metric grew from the second quarter of a phase's samples to the last (medians, so
 * single spikes do not count): RSS beyond RSS_TOLERANCE, GPU buffers and bytes at all.
 */
export function growthAfterWarmUp(samples: SoakSample[]): Growth[] {
  const found: Growth[] = [];
  for (const phase of ['runs', 'cycles'] as const) {
    const of = samples.filter((s) => s.phase === phase);
    if (of.length < 8) continue;
    const q = Math.floor(of.length / 4);
    for (const metric of ['rssBytes', 'gpuBytes', 'gpuBuffers'] as const) {
      const second = median(of.slice(q, 2 * q).map((s) => s[metric]));
      const last = median(of.slice(of.length - q).map((s) => s[metric]));
      const allowed = metric === 'rssBytes' ? Math.max(RSS_TOLERANCE.bytes, RSS_TOLERANCE.fraction * second) : 0;
      if (last - second > allowed) found.push({ metric, phase, secondQuarter: second, lastQuarter: last, allowed });
    }
  }
  return found;
}

/** global.gc without --expose-gc on the command line (V8 takes the flag at run time too). */
function garbageCollector(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function randomImage(n: number, seed: number): Float32Array {
  const rng = seededRandom(seed);
  return Float32Array.from({ length: n }, () => rng() * 2 - 1);
}

/** ResNet-50 at width 1/16 on 32×32 images, two classes: every kind of step of a real network, quick to run and compile. */
function smallResNet(batch: number | 'batch'): Graph {
  return buildArchitecture('resnet50', { width: 0.0625, inputSize: 32, classes: 2, batch });
}

async function main(argv: string[]): Promise<number> {
  const flag = (name: string, fallback: number) => {
    const at = argv.indexOf(`--${name}`);
    const v = at < 0 ? fallback : Number(argv[at + 1]);
    if (!Number.isSafeInteger(v) || v < 0)
      throw new Error(`--${name} must be a non-negative integer, got '${argv[at + 1]}'`);
    return v;
  };
  const runs = flag('runs', 10_000);
  const cycles = flag('cycles', 200);
  const gpu = await createNodeGpuContext();
  const started = Date.now();
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  try {
    const samples = await runSoak({
      gpu,
      runs,
      cycles,
      onSample: (s) => {
        const every = s.phase === 'runs' ? Math.max(1, Math.floor(runs / 10)) : Math.max(1, Math.floor(cycles / 10));
        if (s.n % every === 0)
          console.log(
            `${s.phase} ${s.n}: rss ${mib(s.rssBytes)}, heap ${mib(s.heapBytes)}, GPU ${s.gpuBuffers} buffers ${mib(s.gpuBytes)} (${((Date.now() - started) / 1000).toFixed(0)} s)`,
          );
      },
    });
    for (const phase of ['runs', 'cycles'] as const) {
      const of = samples.filter((s) => s.phase === phase);
      const q = Math.max(1, Math.floor(of.length / 4));
      const quarters = [0, 1, 2, 3].map((k) => of.slice(k * q, k === 3 ? of.length : (k + 1) * q));
      const med = (xs: SoakSample[], m: 'rssBytes' | 'gpuBytes') => median(xs.map((s) => s[m]));
      console.log(
        `${phase} (${of.length} samples) medians by quarter: rss ${quarters.map((x) => mib(med(x, 'rssBytes'))).join(' → ')}; GPU ${quarters.map((x) => mib(med(x, 'gpuBytes'))).join(' → ')}`,
      );
    }
    const growth = growthAfterWarmUp(samples);
    for (const g of growth)
      console.log(
        `GROWTH ${g.phase} ${g.metric}: ${g.secondQuarter} → ${g.lastQuarter} (allowed ${g.allowed.toFixed(0)})`,
      );
    console.log(
      `${growth.length ? 'growth after warm-up' : 'no growth after warm-up'}: ${runs} runs, ${cycles} cycles in ${((Date.now() - started) / 1000).toFixed(0)} s`,
    );
    return growth.length ? 1 : 0;
  } finally {
    gpu.dispose();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.exitCode = await main(process.argv.slice(2));
}
