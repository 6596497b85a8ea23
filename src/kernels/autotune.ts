// A tiny GEMM autotuner: for a shape class (bucketed M, N, K and whether A is an implicit
// im2col), time each candidate variant once on a representative problem, keep the fastest.
// Choices are remembered per adapter in memory and, through an injectable store, wherever the
// host wants (a JSON file in Node, localStorage in a browser): the engine itself touches no files.
import {
  candidateVariants,
  gemmProgram,
  gemmTarget,
  roundUp,
  variantKey,
  variantRuns,
  GEMM_VARIANTS,
  type GemmProblem,
  type GemmVariant,
} from './gemm.ts';
import type { GpuContext } from './gpu-context.ts';
import { encodeSteps, prepareStep, storageUsage, type KernelStep } from './program.ts';

export interface TuningStore {
  /** The choices recorded for an adapter: shape class → variant key. */
  load(adapter: string): Promise<Record<string, string> | undefined> | Record<string, string> | undefined;
  save(adapter: string, choices: Record<string, string>): Promise<void> | void;
}

/** A store that lives as long as the object (the default is one shared per process/page). */
export function memoryTuningStore(): TuningStore {
  const byAdapter = new Map<string, Record<string, string>>();
  return {
    load: (adapter) => {
      const c = byAdapter.get(adapter);
      return c ? { ...c } : undefined;
    },
    save: (adapter, choices) => {
      byAdapter.set(adapter, { ...choices });
    },
  };
}

const processStore = memoryTuningStore();

export interface ShapeQuery {
  /** 'conv': A is an implicit im2col (its loads cost more than a plain matrix's). */
  kind: 'gemm' | 'conv';
  M: number;
  N: number;
  K: number;
}

export interface AutotunerOptions {
  store?: TuningStore;
  /** Timed runs per candidate after one warm-up run; the fastest counts. Default 2. */
  repetitions?: number;
  /** Largest M, N or K of a representative problem (bounds tuning time). Default 512. */
  maxRepresentative?: number;
  /** Override the candidates (default: candidateVariants for the adapter kind). */
  candidates?: (query: ShapeQuery) => GemmVariant[];
}

const sharedTuners = new WeakMap<GpuContext, Autotuner>();

export class Autotuner {
  /** How many candidate timings this tuner has run (a cached choice costs none). */
  measurements = 0;
  readonly adapter: string;
  #choices: Record<string, string> | undefined;
  #pending = new Map<string, Promise<GemmVariant>>();
  #queue: Promise<unknown> = Promise.resolve();

  constructor(
    readonly gpu: GpuContext,
    readonly options: AutotunerOptions = {},
  ) {
    const i = gpu.info;
    this.adapter = [i.vendor, i.architecture, i.device, i.description].join('|');
  }

  /** One tuner per context, backed by the process-wide memory store. */
  static shared(gpu: GpuContext): Autotuner {
    let t = sharedTuners.get(gpu);
    if (!t) sharedTuners.set(gpu, (t = new Autotuner(gpu)));
    return t;
  }

  shapeClass(q: ShapeQuery): string {
    return `${q.kind}:m${bucket(q.M, M_BUCKETS)}:n${bucket(q.N, N_BUCKETS)}:k${bucket(q.K, K_BUCKETS)}`;
  }

  /** The fastest variant for the query's class: from memory, the store, or by timing. */
  async choose(q: ShapeQuery): Promise<GemmVariant> {
    const cls = this.shapeClass(q);
    const choices = await this.#load();
    // A stored choice this device cannot run (a store shared across devices) is tuned again.
    const known =
      choices[cls] && GEMM_VARIANTS.find((v) => variantKey(v) === choices[cls] && variantRuns(v, gemmTarget(this.gpu)));
    if (known) return known;
    let pending = this.#pending.get(cls);
    if (!pending) {
      // Serialised: timings of two classes must not overlap on the device.
      pending = this.#queue.then(() => this.#tune(q, cls));
      this.#queue = pending.catch(() => undefined);
      this.#pending.set(cls, pending);
    }
    return pending;
  }

  async #load(): Promise<Record<string, string>> {
    if (!this.#choices) this.#choices = { ...((await (this.options.store ?? processStore).load(this.adapter)) ?? {}) };
    return this.#choices;
  }

  async #tune(q: ShapeQuery, cls: string): Promise<GemmVariant> {
    const target = gemmTarget(this.gpu);
    const candidates = (this.options.candidates?.(q) ?? candidateVariants(target, q.M)).filter((v) =>
      variantRuns(v, target),
    );
    if (candidates.length === 0) throw new Error(`autotune ${cls}: no candidate variant runs on this device`);
    const problem = representative(q, this.options.maxRepresentative ?? 512);
    const reps = this.options.repetitions ?? 2;
    const buffers = allocate(this.gpu, problem);
    let best: { variant: GemmVariant; ms: number } | undefined;
    try {
      for (const variant of candidates) {
        const program = gemmProgram(problem.gemm, variant);
        const names = program.bindings.filter((b) => b.name !== 'params').map((b) => b.name);
        const step = await prepareStep(this.gpu, program, buffers.ranges(names));
        buffers.own(step.owned);
        const ms = await this.#time(step, reps);
        this.measurements++;
        if (!best || ms < best.ms) best = { variant, ms };
      }
    } finally {
      buffers.destroy();
    }
    const choice = best!.variant;
    const choices = await this.#load();
    choices[cls] = variantKey(choice);
    await (this.options.store ?? processStore).save(this.adapter, choices);
    return choice;
  }

  async #time(step: KernelStep, reps: number): Promise<number> {
    const device = this.gpu.device;
    let best = Infinity;
    for (let r = 0; r <= reps; r++) {
      const t0 = performance.now();
      await this.gpu.scope(`autotune '${step.label}'`, async () => {
        const encoder = device.createCommandEncoder({ label: 'autotune' });
        encodeSteps(encoder, [step], 'autotune');
        device.queue.submit([encoder.finish()]);
        await device.queue.onSubmittedWorkDone();
      });
      if (r > 0) best = Math.min(best, performance.now() - t0); // run 0 warms caches and threads
    }
    return best;
  }
}

const M_BUCKETS = [4, 32, 256];
const N_BUCKETS = [64, 256];
const K_BUCKETS = [64, 576];
const M_REPRESENTATIVE = [1, 16, 196, 1024];
const N_REPRESENTATIVE = [64, 256, 512];
const K_REPRESENTATIVE = [64, 576, 1152];

function bucket(x: number, bounds: number[]): number {
  const i = bounds.findIndex((b) => x <= b);
  return i < 0 ? bounds.length : i;
}

interface Representative {
  gemm: GemmProblem;
  sizes: Record<string, number>;
}

function representative(q: ShapeQuery, cap: number): Representative {
  const M = Math.min(M_REPRESENTATIVE[bucket(q.M, M_BUCKETS)], cap);
  const N = Math.min(N_REPRESENTATIVE[bucket(q.N, N_BUCKETS)], cap);
  const K = Math.min(K_REPRESENTATIVE[bucket(q.K, K_BUCKETS)], cap);
  const ld = roundUp(N, 8);
  if (q.kind === 'conv') {
    // A 3×3, pad 1 conv with about M output positions and K = 9·Cin.
    const side = Math.max(1, Math.round(Math.sqrt(M)));
    const cin = Math.max(1, Math.round(K / 9));
    const k = cin * 9;
    return {
      gemm: {
        batch: 1,
        M: side * side,
        N,
        K: k,
        a: {
          kind: 'im2col',
          conv: {
            images: 1,
            channels: cin,
            height: side,
            width: side,
            groupChannels: cin,
            kernelH: 3,
            kernelW: 3,
            strideH: 1,
            strideW: 1,
            padTop: 1,
            padLeft: 1,
            dilationH: 1,
            dilationW: 1,
            outH: side,
            outW: side,
          },
        },
        b: { layout: 'kn', batchStride: k * ld, ld, padded: true },
        c: { kind: 'nchw', spatial: side * side, imageStride: N * side * side, batchChannelStride: N },
        bias: { batchStride: N, strideM: 0, strideN: 1 },
        activation: { kind: 'relu' },
      },
      sizes: { a: cin * side * side, b: k * ld, c: N * side * side, bias: N },
    };
  }
  return {
    gemm: {
      batch: 1,
      M,
      N,
      K,
      a: { kind: 'matrix', layout: 'mk', batchStride: 0 },
      b: { layout: 'kn', batchStride: 0, ld, padded: true },
      c: { kind: 'matrix', batchStride: 0, strideM: N, strideN: 1 },
      bias: { batchStride: 0, strideM: 0, strideN: 1 },
    },
    sizes: { a: M * K, b: K * ld, c: M * N, bias: N },
  };
}

function allocate(gpu: GpuContext, r: Representative) {
  const buffers = new Map<string, GPUBuffer>();
  let seed = 0x2545f491;
  for (const [name, floats] of Object.entries(r.sizes)) {
    const data = new Float32Array(floats);
    for (let i = 0; i < floats; i++) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      data[i] = seed / 4294967296 - 0.5;
    }
    const buffer = gpu.createBuffer(`autotune ${name}`, Math.max(16, floats * 4), storageUsage());
    gpu.upload(buffer, data);
    buffers.set(name, buffer);
  }
  const owned: GPUBuffer[] = [];
  return {
    ranges: (names: string[]) => names.map((n) => ({ buffer: buffers.get(n)! })),
    own: (more: GPUBuffer[]) => owned.push(...more),
    destroy: () => {
      for (const b of [...buffers.values(), ...owned]) b.destroy();
    },
  };
}
