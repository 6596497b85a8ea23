/// <reference types="@webgpu/types" />
// A Plan: the kernel steps of one graph at one set of input shapes, over GPU buffers assigned by
// liveness (a value's buffer goes back to the pool after its last reader and is reused by a
// later value), with persistent input, output and readback buffers. One command encoder, one
// compute pass and one submit per run.
import { ModelError } from '../graph/errors.ts';
import type { Graph } from '../graph/ir.ts';
import type { GpuContext } from '../kernels/gpu-context.ts';
import { encodeSteps, prepareStep, STORAGE_USAGE, type BufferRange, type KernelStep } from '../kernels/program.ts';
import type { ConstantTensor, Lowered, StepSpec } from './lower.ts';

/** Uploaded constants, shared by every plan of a session (keyed by their packed form). */
export class ConstantStore {
  readonly #buffers = new Map<string, GPUBuffer>();
  bytes = 0;

  constructor(readonly gpu: GpuContext) {}

  get(c: ConstantTensor): GPUBuffer {
    let buffer = this.#buffers.get(c.key);
    if (!buffer) {
      const size = roundUp(Math.max(16, c.data.byteLength), 16);
      buffer = this.gpu.createBuffer(`const ${c.key}`, size, STORAGE_USAGE);
      this.gpu.upload(buffer, c.data);
      this.#buffers.set(c.key, buffer);
      this.bytes += size;
    }
    return buffer;
  }

  /** Drops an uploaded tensor (its next get() uploads afresh): new host weights for a key. */
  forget(key: string): void {
    const buffer = this.#buffers.get(key);
    if (!buffer) return;
    this.#buffers.delete(key);
    this.bytes -= buffer.size;
    buffer.destroy();
  }

  dispose(): void {
    for (const b of this.#buffers.values()) b.destroy();
    this.#buffers.clear();
    this.bytes = 0;
  }
}

export interface PlanInput {
  name: string;
  dims: number[];
  buffer: GPUBuffer;
}

export interface PlanOutput {
  name: string;
  dims: number[];
  /** Where the output lives on the GPU, or its value when the graph folded it to a constant. */
  source: { buffer: GPUBuffer; bytes: number } | { host: Float32Array };
  staging?: GPUBuffer;
}

/** Training's additions to a plan (all optional; inference passes none). */
export interface PlanCompileOptions {
  /** Values written outside the plan's steps before they run (a loss gradient): buffers live
   * from the start to the end, like feeds, but are not fed by execute(). */
  external?: string[];
  /** Values kept alive to the end without a readback (parameter gradients for the optimizer,
   * saved activations a check pass reads). */
  keep?: string[];
}

export class Plan {
  #buffers: (name: string) => GPUBuffer | undefined = () => undefined;

  private constructor(
    readonly gpu: GpuContext,
    readonly inputs: PlanInput[],
    readonly outputs: PlanOutput[],
    readonly steps: KernelStep[],
    /** Bytes of all activation buffers the plan holds (pooled values, inputs, outputs). */
    readonly peakActivationBytes: number,
    /** The most bytes of activations alive at once (a lower bound for any allocator). */
    readonly peakLiveBytes: number,
    readonly pipelines: number,
    readonly ownedBuffers: GPUBuffer[],
  ) {}

  static async compile(gpu: GpuContext, graph: Graph, lowered: Lowered, constants: ConstantStore, options: PlanCompileOptions = {}): Promise<Plan> {
    const root = (name: string): string => {
      let n = name;
      for (let guard = 0; lowered.aliases.has(n) && guard < 10000; guard++) n = lowered.aliases.get(n)!;
      return n;
    };
    const bytesOf = (name: string): number => {
      const dims = lowered.temporaries.get(name) ?? (graph.values.get(name)?.shape as number[] | undefined);
      if (!dims || dims.some((d) => typeof d !== 'number')) throw new ModelError(`value '${name}' has no static shape`, { file: graph.source });
      return 4 * dims.reduce((a, b) => a * b, 1);
    };

    // Lifetimes over step indices (graph inputs live from -1, graph outputs to the end).
    const feedNames = graph.feedInputs.map((i) => i.name);
    const def = new Map<string, number>();
    const last = new Map<string, number>();
    for (const name of feedNames) def.set(name, -1);
    for (const name of options.external ?? []) def.set(root(name), -1);
    const accessOf = (s: StepSpec) => s.program.bindings.filter((b) => b.name !== 'params');
    lowered.steps.forEach((step, i) => {
      const access = accessOf(step);
      step.refs.forEach((ref, k) => {
        if (!('value' in ref)) return;
        const v = root(ref.value);
        if (access[k].access === 'read_write') {
          if (!def.has(v)) def.set(v, i);
        } else if (!def.has(v)) {
          throw new ModelError(`internal: value '${v}' is read by step ${i} (${step.program.label}) before anything writes it`, { file: graph.source, node: step.node });
        }
        last.set(v, Math.max(last.get(v) ?? -1, i));
      });
    });
    const end = lowered.steps.length;
    for (const out of graph.outputs) {
      const v = root(out.name);
      if (def.has(v)) last.set(v, end);
    }
    for (const name of [...(options.external ?? []), ...(options.keep ?? [])]) {
      const v = root(name);
      if (def.has(v)) last.set(v, end);
    }
    for (const name of feedNames) if (!last.has(name)) last.set(name, -1);

    // Greedy best-fit assignment: outputs of a step are placed before its dying inputs are
    // released, so no dispatch ever reads and writes one buffer.
    const pool = new BufferPool(gpu);
    const assigned = new Map<string, GPUBuffer>();
    const byDef = new Map<number, string[]>();
    const byLast = new Map<number, string[]>();
    for (const [v, i] of def) byDef.set(i, [...(byDef.get(i) ?? []), v]);
    for (const [v, i] of last) byLast.set(i, [...(byLast.get(i) ?? []), v]);
    let live = 0;
    let peakLive = 0;
    for (let i = -1; i <= end; i++) {
      const born = (byDef.get(i) ?? []).sort((a, b) => bytesOf(b) - bytesOf(a));
      for (const v of born) {
        assigned.set(v, pool.acquire(v, bytesOf(v)));
        live += bytesOf(v);
      }
      peakLive = Math.max(peakLive, live);
      for (const v of byLast.get(i) ?? []) {
        if (i === end || !assigned.has(v)) continue;
        pool.release(assigned.get(v)!);
        live -= bytesOf(v);
      }
    }

    const range = (name: string): BufferRange => {
      const v = root(name);
      const buffer = assigned.get(v);
      if (!buffer) throw new ModelError(`internal: value '${v}' has no buffer`, { file: graph.source });
      return { buffer, offset: 0, size: roundUp(Math.max(16, bytesOf(v)), 16) };
    };

    const owned: GPUBuffer[] = [];
    const steps: KernelStep[] = [];
    const keys = new Set<string>();
    // Compile concurrently: Dawn and the driver may overlap the work.
    const prepared = await Promise.all(
      lowered.steps.map((s) => {
        keys.add(s.program.key);
        const ranges = s.refs.map((ref) => ('value' in ref ? range(ref.value) : { buffer: constants.get(ref.constant) }));
        return prepareStep(gpu, s.program, ranges).catch((e: unknown) => {
          throw new ModelError(`cannot prepare kernel '${s.program.label}': ${(e as Error).message}`, { file: graph.source, node: s.node });
        });
      }),
    );
    for (const p of prepared) {
      steps.push(p);
      owned.push(...p.owned);
    }

    const inputs: PlanInput[] = feedNames.map((name) => ({
      name,
      dims: graph.values.get(name)!.shape as number[],
      buffer: assigned.get(name)!,
    }));
    const outputs: PlanOutput[] = graph.outputs.map((o) => {
      const dims = graph.values.get(o.name)!.shape as number[];
      const v = root(o.name);
      const constant = graph.initializers.get(v);
      if (constant && !assigned.has(v)) {
        const data = constant.value.data instanceof Float32Array ? constant.value.data : Float32Array.from(constant.value.data as ArrayLike<number>);
        return { name: o.name, dims, source: { host: data } };
      }
      const bytes = bytesOf(v);
      const staging = gpu.createBuffer(`${o.name} (readback)`, roundUp(Math.max(16, bytes), 16), 0x01 /* MAP_READ */ | 0x08 /* COPY_DST */);
      owned.push(staging);
      return { name: o.name, dims, source: { buffer: range(o.name).buffer, bytes: roundUp(bytes, 4) }, staging };
    });
    owned.push(...pool.all());
    const plan = new Plan(gpu, inputs, outputs, steps, pool.totalBytes, peakLive, keys.size, owned);
    plan.#buffers = (name) => assigned.get(root(name));
    return plan;
  }

  /** The pooled buffer holding a value (after aliases), or undefined when it has none. Only
   * values alive at the point of interest hold their data: feeds, outputs, external and keep. */
  bufferOf(name: string): GPUBuffer | undefined {
    return this.#buffers(name);
  }

  /** Uploads feeds, runs every step in one pass, reads the outputs back: one submit. */
  async execute(feeds: Map<string, Float32Array>): Promise<Map<string, Float32Array>> {
    const gpu = this.gpu;
    return gpu.scope('run plan', async () => {
      for (const input of this.inputs) gpu.upload(input.buffer, feeds.get(input.name)!);
      const device = gpu.device;
      const encoder = device.createCommandEncoder({ label: 'onnx-graft run' });
      encodeSteps(encoder, this.steps, 'forward');
      for (const o of this.outputs) {
        if ('buffer' in o.source) encoder.copyBufferToBuffer(o.source.buffer, 0, o.staging!, 0, o.source.bytes);
      }
      device.queue.submit([encoder.finish()]);
      const results = new Map<string, Float32Array>();
      await Promise.all(
        this.outputs.map(async (o) => {
          if ('host' in o.source) {
            results.set(o.name, o.source.host.slice());
            return;
          }
          await o.staging!.mapAsync(GPUMapMode.READ, 0, o.source.bytes);
          results.set(o.name, new Float32Array(o.staging!.getMappedRange(0, o.source.bytes).slice(0)));
          o.staging!.unmap();
        }),
      );
      return results;
    });
  }

  dispose(): void {
    for (const b of this.ownedBuffers) b.destroy();
  }
}

/** Activation buffers by best fit; sizes rounded to 256 bytes so near sizes can share. */
class BufferPool {
  readonly #free: GPUBuffer[] = [];
  readonly #all: GPUBuffer[] = [];
  totalBytes = 0;

  constructor(readonly gpu: GpuContext) {}

  acquire(label: string, bytes: number): GPUBuffer {
    const size = roundUp(Math.max(16, bytes), 256);
    let best = -1;
    for (let i = 0; i < this.#free.length; i++) {
      const s = this.#free[i].size;
      if (s >= size && (best < 0 || s < this.#free[best].size)) best = i;
    }
    if (best >= 0) return this.#free.splice(best, 1)[0];
    const buffer = this.gpu.createBuffer(`activation ${this.#all.length} (first: ${label})`, size, STORAGE_USAGE);
    this.#all.push(buffer);
    this.totalBytes += size;
    return buffer;
  }

  release(buffer: GPUBuffer): void {
    this.#free.push(buffer);
  }

  all(): GPUBuffer[] {
    return [...this.#all];
  }
}

function roundUp(x: number, m: number): number {
  return Math.ceil(x / m) * m;
}
