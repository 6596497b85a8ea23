// Timing and memory helpers for the benchmarks. Loops are Benchmark.js (`defer: true`: each
// iteration is async GPU or worker-thread work and resolves its Deferred when done); the first
// call of a workload runs before Benchmark.js starts, since it compiles pipelines (lavapipe
// compiles lazily, at first dispatch) and fills caches.
import fs from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';
import Benchmark from 'benchmark';

export interface Timing {
  /** Median of Benchmark.js's samples (each the mean of one cycle), ms per run. */
  ms: number;
  meanMs: number;
  /** Relative margin of error of the mean, percent (Benchmark.js). */
  rme: number;
  samples: number;
  /** Iterations run inside the timed loop (a cycle may hold several short runs). */
  runs: number;
  /** The untimed first run (compilation included), ms. */
  firstMs: number;
  /** Wall time of the whole measurement, warm-up included, s. */
  totalS: number;
}

export interface MeasureOptions {
  /** Stop once this many samples exist and maxTime has passed (Benchmark.js options). */
  minSamples?: number;
  maxTime?: number;
  /** Overrides minSamples from the first run's time (e.g. fewer repetitions for minute-long runs). */
  samplesFor?: (firstMs: number) => number;
}

/** Repetitions by how long one run takes: a minute-long run (VGG-19 at batch 8 on lavapipe) gets 2. */
export function defaultSamplesFor(firstMs: number): number {
  if (firstMs > 60_000) return 2;
  if (firstMs > 15_000) return 3;
  return 5;
}

/**
 * Runs `iteration` once (untimed), then in a Benchmark.js deferred loop. `iteration` gets
 * whether this is the warm-up run.
 */
export async function measure(
  name: string,
  iteration: (warmup: boolean) => Promise<void>,
  options: MeasureOptions = {},
): Promise<Timing> {
  const start = performance.now();
  await iteration(true);
  const firstMs = performance.now() - start;
  const minSamples = options.samplesFor ? options.samplesFor(firstMs) : (options.minSamples ?? 5);
  let failure: unknown;
  let runs = 0;
  const bench = new Benchmark(name, {
    defer: true,
    minSamples,
    maxTime: options.maxTime ?? 3,
    // Deferred tests are called by reference (no setup/teardown given, so Benchmark.js does not
    // decompile and recompile the function, which would lose its closure).
    fn: (deferred: Benchmark.Deferred) => {
      runs++;
      iteration(false).then(
        () => deferred.resolve(),
        (error: unknown) => {
          failure ??= error;
          bench.abort();
          deferred.resolve();
        },
      );
    },
  });
  await new Promise<void>((resolve) => {
    bench.on('complete', () => resolve());
    bench.on('abort', () => resolve());
    bench.run({ async: true });
  });
  if (failure) throw failure;
  if (bench.error) throw bench.error;
  const sample = bench.stats.sample.map((s) => s * 1000);
  return {
    ms: median(sample),
    meanMs: bench.stats.mean * 1000,
    rme: bench.stats.rme,
    samples: sample.length,
    runs,
    firstMs,
    totalS: (performance.now() - start) / 1000,
  };
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

v8.setFlagsFromString('--expose-gc');
const collect = vm.runInNewContext('gc') as () => void;

/** Full garbage collection (twice: finalizers of GPU and ORT handles free native memory late). */
export async function settle(): Promise<void> {
  collect();
  await new Promise((r) => setTimeout(r, 50));
  collect();
}

/**
 * Peak resident set size while it runs, sampled every 20 ms and on demand, relative to the RSS
 * when it started. On a software adapter GPU buffers live in host memory, so this covers them.
 */
export class RssPeak {
  readonly baseline = process.memoryUsage.rss();
  #peak = this.baseline;
  readonly #timer = setInterval(() => this.sample(), 20);

  constructor() {
    this.#timer.unref();
  }

  sample(): void {
    this.#peak = Math.max(this.#peak, process.memoryUsage.rss());
  }

  /** Stops sampling; returns peak − baseline in bytes. */
  stop(): number {
    this.sample();
    clearInterval(this.#timer);
    return this.#peak - this.baseline;
  }
}

/** Relative L2 error of `got` against `want`. */
export function relL2(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < want.length; i++) {
    const d = got[i] - want[i];
    num += d * d;
    den += want[i] * want[i];
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

/** CPU time (ns) of every thread of this process but the main one: on a software adapter, what
 * its worker threads spent computing, however long the load kept them off a core
 * (/proc/self/task/<tid>/schedstat: time on CPU). Linux only. */
export function workerCpuNs(): number {
  let ns = 0;
  for (const tid of fs.readdirSync('/proc/self/task')) {
    if (Number(tid) === process.pid) continue;
    try {
      ns += Number(fs.readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended between readdir and read
    }
  }
  return ns;
}
