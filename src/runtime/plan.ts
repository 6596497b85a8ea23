/// <reference types="@webgpu/types" />
// A Plan: the kernel steps of one graph at one set of input shapes, with its activations placed
// by liveness, and readback buffers for the outputs. One command encoder, one compute pass and
// one submit per run.
//
// Activations live in one shared arena (more when they exceed maxBufferSize), each at an offset
// packed ahead of time over the values' lifetimes, so that values alive at the same step never
// overlap and memory freed by a dead value is reused by any later value that fits, whatever
// its size (GoogLeNet's inception modules keep many small tensors beside large ones). A step
// binds its inputs and output as ranges of one buffer: WebGPU allows that for writable
// bindings at non-overlapping ranges, which is why the forward kernels declare their
// activation inputs read_write (ProgramBinding.writes tells what a step really writes). Values
// bound read-only anywhere (backward kernels), and those handed out whole (bufferOf: external,
// keep, and feeds and outputs unless packed), get whole buffers from a pool instead (a buffer
// returns to the pool after its value's last reader).
//
// A value may exceed maxStorageBufferBindingSize (a VGG fc6 weight gradient is 411 MB; buffers
// may be up to maxBufferSize) when every step binds it in pieces: a step's binding may be a
// view, a byte range of a value or constant (BindingRef.view). Every binding is checked against
// the limit, and every view's offset against minStorageBufferOffsetAlignment, before any buffer
// is made.
import { ModelError } from '../graph/errors.ts';
import type { Graph } from '../graph/ir.ts';
import type { GpuContext } from '../kernels/gpu-context.ts';
import {
  bindingWrites,
  encodeSteps,
  prepareStep,
  storageUsage,
  type BufferRange,
  type KernelStep,
} from '../kernels/program.ts';
import { SubmitPacer } from '../kernels/submit-pacer.ts';
import {
  BindingLimitError,
  resolveAlias,
  type BindingView,
  type ConstantBands,
  type ConstantTensor,
  type Lowered,
  type StepSpec,
} from './lower.ts';
import { originId, SharedConstants, type SharedUpload } from './shared-constants.ts';

/** The host data of a constant once uploaded and released (see ConstantStore.uploadAndRelease). */
const RELEASED = new Float32Array(0);

/** Uploaded constants, shared by every plan of a session (keyed by their packed form); with
 * `share`, also by every other sharing store of the GPU context (see shared-constants.ts). */
export class ConstantStore {
  readonly #buffers = new Map<string, GPUBuffer>();
  /** The host bytes of each uploaded tensor (its buffer may be rounded up). */
  readonly #lengths = new Map<string, number>();
  /** key → the id of the context-wide upload it holds (constants with an origin, when sharing). */
  readonly #sharedIds = new Map<string, string>();
  readonly #heldIds = new Set<string>();
  readonly #shared: SharedConstants | undefined;
  readonly #fingerprints = new WeakMap<Float32Array, string>();
  bytes = 0;

  /** `share`: only for stores whose constants nothing writes (inference sessions). */
  constructor(
    readonly gpu: GpuContext,
    options: { share?: boolean } = {},
  ) {
    this.#shared = options.share ? SharedConstants.of(gpu) : undefined;
  }

  get(c: ConstantTensor): GPUBuffer {
    const known = this.#buffers.get(c.key);
    if (known) return known;
    const upload = (): SharedUpload => {
      const data = c.data;
      const byteLength = data.length * 4;
      const buffer = this.gpu.createBuffer(`const ${c.key}`, roundUp(Math.max(16, byteLength), 16), storageUsage());
      if (data instanceof Float32Array) this.gpu.upload(buffer, data);
      else uploadBands(this.gpu, buffer, data);
      return { buffer, byteLength };
    };
    let made: SharedUpload;
    if (this.#shared && c.origin) {
      const base = originId(c.origin, this.#fingerprints);
      // Two keys of one store never share a buffer (one step may bind both, one writable).
      let id = base;
      for (let n = 1; this.#heldIds.has(id); n++) id = `${base}#${n}`;
      made = this.#shared.acquire(id, upload);
      this.#sharedIds.set(c.key, id);
      this.#heldIds.add(id);
    } else {
      made = upload();
    }
    this.#buffers.set(c.key, made.buffer);
    this.#lengths.set(c.key, made.byteLength);
    this.bytes += made.buffer.size;
    return made.buffer;
  }

  /** Uploads `c` (unless its key is already there) and empties its host data, which `c`
   * need not keep any more: get() finds the upload by key, byteLengthOf() its size. */
  uploadAndRelease(c: ConstantTensor): void {
    this.get(c);
    c.data = RELEASED;
    c.origin = undefined;
  }

  /** The bytes of `c`: as uploaded when it was, else its host data's. */
  byteLengthOf(c: ConstantTensor): number {
    return this.#lengths.get(c.key) ?? c.data.length * 4;
  }

  /** Drops an uploaded tensor (its next get() uploads afresh): new host weights for a key. */
  forget(key: string): void {
    const buffer = this.#buffers.get(key);
    if (!buffer) return;
    this.#buffers.delete(key);
    this.#lengths.delete(key);
    this.bytes -= buffer.size;
    this.#drop(key, buffer);
  }

  dispose(): void {
    for (const [key, buffer] of this.#buffers) this.#drop(key, buffer);
    this.#buffers.clear();
    this.#lengths.clear();
    this.bytes = 0;
  }

  /** Destroys a buffer of this store's own, or lets go of its hold on a shared one. */
  #drop(key: string, buffer: GPUBuffer): void {
    const id = this.#sharedIds.get(key);
    if (id === undefined) {
      buffer.destroy();
      return;
    }
    this.#sharedIds.delete(key);
    this.#heldIds.delete(id);
    this.#shared!.release(id);
  }
}

/** Uploads a tensor made band by band through one band-sized host buffer. */
function uploadBands(gpu: GpuContext, buffer: GPUBuffer, bands: ConstantBands): void {
  const band = new Float32Array(Math.min(bands.bandLength, bands.length));
  for (let i = 0, start = 0; start < bands.length; i++, start += bands.bandLength) {
    const out = band.subarray(0, Math.min(bands.bandLength, bands.length - start));
    bands.fill(i, out);
    gpu.upload(buffer, out, start * 4);
  }
}

export interface PlanInput {
  name: string;
  dims: number[];
  buffer: GPUBuffer;
  /** Byte offset of the input in `buffer` (0 unless feeds are packed into the arena). */
  offset: number;
}

export interface PlanOutput {
  name: string;
  dims: number[];
  /** Where the output lives on the GPU (at `offset` bytes), or its value when the graph folded
   * it to a constant. */
  source: { buffer: GPUBuffer; offset: number; bytes: number } | { host: Float32Array };
  staging?: GPUBuffer;
}

/** Training's additions to a plan, and inference's packing of feeds and outputs (all optional). */
export interface PlanCompileOptions {
  /** Values written outside the plan's steps before they run (a loss gradient): buffers live
   * from the start to the end, like feeds, but are not fed by execute(). */
  external?: string[];
  /** Values kept alive to the end without a readback (parameter gradients for the optimizer,
   * saved activations a check pass reads). */
  keep?: string[];
  /**
   * Sub-allocate graph inputs and outputs in the shared activation arena like any other value
   * (inference: execute() uploads and reads back at their offsets). Without it they get buffers
   * of their own, so that bufferOf() and PlanInput.buffer address them at offset 0 (training
   * binds the logits and uploads feeds itself).
   */
  packFeedsAndOutputs?: boolean;
  /**
   * The most bytes one storage binding may cover, when lower than the device's
   * maxStorageBufferBindingSize (tests force the split paths on small shapes with it).
   */
  maxBindingBytes?: number;
  /**
   * A plan of the same graph at a larger batch (or any plan): when this plan's steps give every
   * value the same lifetime as there, and no value is larger than there, this plan binds that
   * plan's activation buffers at its offsets instead of allocating its own (memoryOwner tells
   * which happened). Both then must not run at once, and that plan must outlive this one.
   */
  shareMemoryWith?: Plan;
}

/** Where a value lives: a whole pooled buffer (offset 0) or a range of an arena. */
interface Placement {
  buffer: GPUBuffer;
  offset: number;
  /** True when the buffer is the value's own for its lifetime (bufferOf() may hand it out). */
  whole: boolean;
  /** Bytes from offset the value may use: its arena slot, or its whole buffer. */
  room: number;
}

/** When each value is written first and read last (step indices), and which get whole buffers. */
interface ActivationSchedule {
  def: ReadonlyMap<string, number>;
  last: ReadonlyMap<string, number>;
  whole: ReadonlySet<string>;
}

/** The activation buffers of a plan and the schedule they were placed for. */
interface ActivationMemory {
  schedule: ActivationSchedule;
  placements: ReadonlyMap<string, Placement>;
  /** Bytes of the arenas and whole buffers. */
  bytes: number;
}

export class Plan {
  #memory: ActivationMemory | undefined;
  #disposed = false;
  #memoryOwner: Plan = this;
  #placement: (name: string) => Placement | undefined = () => undefined;
  #bytes: (name: string) => number = () => 0;
  /** Waits for a run's submit without spinning the CPU that a software adapter computes on. */
  readonly #pacer: SubmitPacer;

  private constructor(
    readonly gpu: GpuContext,
    readonly inputs: PlanInput[],
    readonly outputs: PlanOutput[],
    readonly steps: KernelStep[],
    /** Bytes of GPU buffers the plan holds for activations: the arenas plus the whole buffers
     * of pooled values (graph inputs and outputs included); those of memoryOwner when shared. */
    readonly peakActivationBytes: number,
    /** The most bytes of activations alive at once (a lower bound for any allocator). */
    readonly peakLiveBytes: number,
    readonly pipelines: number,
    readonly ownedBuffers: GPUBuffer[],
  ) {
    this.#pacer = SubmitPacer.forAdapter(gpu.info.isSoftware);
  }

  static async compile(
    gpu: GpuContext,
    graph: Graph,
    lowered: Lowered,
    constants: ConstantStore,
    options: PlanCompileOptions = {},
  ): Promise<Plan> {
    const root = (name: string) => resolveAlias(lowered.aliases, name);
    const bytesOf = (name: string): number => {
      const dims = lowered.temporaries.get(name) ?? (graph.values.get(name)?.shape as number[] | undefined);
      if (!dims || dims.some((d) => typeof d !== 'number'))
        throw new ModelError(`value '${name}' has no static shape`, { file: graph.source });
      return 4 * dims.reduce((a, b) => a * b, 1);
    };
    const limits = gpu.device.limits;
    const align = Math.max(16, limits.minStorageBufferOffsetAlignment);

    // Lifetimes over step indices (graph inputs live from -1, graph outputs to the end).
    const feedNames = graph.feedInputs.map((i) => i.name);
    const def = new Map<string, number>();
    const last = new Map<string, number>();
    for (const name of feedNames) def.set(name, -1);
    for (const name of options.external ?? []) def.set(root(name), -1);
    /** Values bound somewhere to a read-only binding: they cannot share a buffer with a value
     * the same dispatch writes, so they get whole pooled buffers. */
    const readOnly = new Set<string>();
    const accessOf = (s: StepSpec) => s.program.bindings.filter((b) => b.name !== 'params');
    lowered.steps.forEach((step, i) => {
      const access = accessOf(step);
      const bound = new Map<string, number>();
      step.refs.forEach((ref, k) => {
        if (!('value' in ref)) return;
        const v = root(ref.value);
        const b = access[k];
        if (bound.has(v) && (b.access === 'read_write' || access[bound.get(v)!].access === 'read_write')) {
          // Two writable bindings of one range are refused by WebGPU (the lowering copies such inputs).
          throw new ModelError(
            `internal: step ${i} (${step.program.label}) binds value '${v}' to '${access[bound.get(v)!].name}' and '${b.name}', one of them writable`,
            { file: graph.source, node: step.node },
          );
        }
        bound.set(v, k);
        if (b.access !== 'read_write') readOnly.add(v);
        if (bindingWrites(b)) {
          if (!def.has(v)) def.set(v, i);
        } else if (!def.has(v)) {
          throw new ModelError(
            `internal: value '${v}' is read by step ${i} (${step.program.label}) before anything writes it`,
            { file: graph.source, node: step.node },
          );
        }
        last.set(v, Math.max(last.get(v) ?? -1, i));
      });
    });
    const end = lowered.steps.length;
    const outputRoots = new Set<string>();
    for (const out of graph.outputs) {
      const v = root(out.name);
      if (def.has(v)) {
        last.set(v, end);
        outputRoots.add(v);
      }
    }
    const pinned = new Set<string>();
    for (const name of [...(options.external ?? []), ...(options.keep ?? [])]) {
      const v = root(name);
      if (def.has(v)) {
        last.set(v, end);
        pinned.add(v);
      }
    }
    for (const name of feedNames) if (!last.has(name)) last.set(name, -1);

    // Every binding within the binding limit, and every view aligned and inside its value: a
    // value larger than one binding is fine when each step binds it in pieces (views). Checked
    // before any buffer is made.
    const deviceMax = limits.maxStorageBufferBindingSize;
    const maxBinding = Math.min(deviceMax, options.maxBindingBytes ?? deviceMax);
    const limitText =
      maxBinding < deviceMax
        ? `the binding limit of ${maxBinding} bytes (maxBindingBytes; the device allows ${deviceMax})`
        : `this device's maxStorageBufferBindingSize of ${maxBinding} bytes`;
    lowered.steps.forEach((step, i) => {
      const names = accessOf(step).map((b) => b.name);
      step.refs.forEach((ref, k) => {
        const what = 'value' in ref ? `value '${root(ref.value)}'` : `constant '${ref.constant.key}'`;
        const bytes = 'value' in ref ? bytesOf(root(ref.value)) : constants.byteLengthOf(ref.constant);
        const fail = (message: string) =>
          new ModelError(`${message} (step ${i}, '${step.program.label}', binding '${names[k]}')`, {
            file: graph.source,
            node: step.node,
          });
        const view = ref.view;
        if (!view) {
          if (roundUp(Math.max(16, bytes), 16) > maxBinding) {
            throw new BindingLimitError(
              `${what} takes ${bytes} bytes, over ${limitText}, and this step binds it whole (step ${i}, '${step.program.label}', binding '${names[k]}')`,
              { file: graph.source, node: step.node },
              bytes,
              maxBinding,
            );
          }
          return;
        }
        if (
          !Number.isInteger(view.offset) ||
          view.offset < 0 ||
          view.offset % limits.minStorageBufferOffsetAlignment !== 0 ||
          !Number.isInteger(view.bytes) ||
          view.bytes <= 0 ||
          view.bytes % 4 !== 0 ||
          view.offset + view.bytes > roundUp(Math.max(16, bytes), 16)
        ) {
          throw fail(
            `internal: view [${view.offset}, +${view.bytes}) of ${what} (${bytes} bytes) is not a range of it at a multiple of ${limits.minStorageBufferOffsetAlignment} bytes`,
          );
        }
        if (view.bytes > maxBinding)
          throw fail(`a ${view.bytes}-byte view of ${what} (${bytes} bytes) is over ${limitText}`);
      });
    });

    // Whole pooled buffers for values handed out by bufferOf() (feeds and outputs unless packed,
    // external, keep) and for values bound read-only; every other value is sub-allocated in the
    // shared arena, at offsets packed over the lifetimes.
    const io = options.packFeedsAndOutputs ? [] : [...feedNames, ...outputRoots];
    const wholeValues = new Set<string>([...io, ...pinned, ...[...readOnly].filter((v) => def.has(v))]);
    // A plan of another batch size whose steps give every value the same lifetime packs the
    // values at the same offsets, each no larger here: bind its memory instead of allocating.
    const host = options.shareMemoryWith;
    const schedule: ActivationSchedule = { def, last, whole: wholeValues };
    const hostMemory = host ? host.#memory : undefined;
    const shared =
      hostMemory &&
      sameSchedule(hostMemory.schedule, schedule) &&
      [...def.keys()].every((v) => roundUp(Math.max(16, bytesOf(v)), 16) <= hostMemory.placements.get(v)!.room)
        ? hostMemory
        : undefined;
    const placements = new Map<string, Placement>(shared?.placements);

    // Pooled values: greedy best fit in step order; outputs of a step are placed before its dying
    // inputs are released, so no dispatch ever reads and writes one pooled buffer.
    const pool = new BufferPool(gpu);
    const byDef = new Map<number, string[]>();
    const byLast = new Map<number, string[]>();
    for (const [v, i] of def) byDef.set(i, [...(byDef.get(i) ?? []), v]);
    for (const [v, i] of last) byLast.set(i, [...(byLast.get(i) ?? []), v]);
    let live = 0;
    let peakLive = 0;
    for (let i = -1; i <= end; i++) {
      const born = (byDef.get(i) ?? []).sort((a, b) => bytesOf(b) - bytesOf(a));
      for (const v of born) {
        if (wholeValues.has(v) && !shared) {
          const buffer = pool.acquire(v, bytesOf(v));
          placements.set(v, { buffer, offset: 0, whole: true, room: buffer.size });
        }
        live += bytesOf(v);
      }
      peakLive = Math.max(peakLive, live);
      for (const v of byLast.get(i) ?? []) {
        if (i === end || !def.has(v)) continue;
        if (wholeValues.has(v) && !shared) pool.release(placements.get(v)!.buffer);
        live -= bytesOf(v);
      }
    }

    const arenas: GPUBuffer[] = [];
    if (!shared) {
      const packed = packArenas(
        [...def.keys()]
          .filter((v) => !wholeValues.has(v))
          .map((v) => ({
            value: v,
            bytes: roundUp(Math.max(16, bytesOf(v)), align),
            from: def.get(v)!,
            to: last.get(v)!,
          })),
        Math.floor(limits.maxBufferSize / align) * align,
      );
      for (const [k, size] of packed.sizes.entries())
        arenas.push(
          gpu.createBuffer(`activation arena ${k} (${packed.counts[k]} values)`, Math.max(align, size), storageUsage()),
        );
      for (const [v, slot] of packed.slots)
        placements.set(v, {
          buffer: arenas[slot.arena],
          offset: slot.offset,
          whole: false,
          room: roundUp(Math.max(16, bytesOf(v)), align),
        });
    }
    const memory: ActivationMemory = shared ?? {
      schedule,
      placements,
      bytes: pool.totalBytes + arenas.reduce((sum, b) => sum + b.size, 0),
    };

    const range = (name: string, view?: BindingView): BufferRange => {
      const v = root(name);
      const place = placements.get(v);
      if (!place) throw new ModelError(`internal: value '${v}' has no buffer`, { file: graph.source });
      if (view) return { buffer: place.buffer, offset: place.offset + view.offset, size: view.bytes };
      return { buffer: place.buffer, offset: place.offset, size: roundUp(Math.max(16, bytesOf(v)), 16) };
    };

    const owned: GPUBuffer[] = [...arenas];
    const steps: KernelStep[] = [];
    const keys = new Set<string>();
    // Compile concurrently: Dawn and the driver may overlap the work.
    const prepared = await Promise.all(
      lowered.steps.map((s) => {
        keys.add(s.program.key);
        const ranges = s.refs.map((ref): BufferRange => {
          if ('value' in ref) return range(ref.value, ref.view);
          const buffer = constants.get(ref.constant);
          return ref.view ? { buffer, offset: ref.view.offset, size: ref.view.bytes } : { buffer };
        });
        return prepareStep(gpu, s.program, ranges).catch((e: unknown) => {
          throw new ModelError(`cannot prepare kernel '${s.program.label}': ${(e as Error).message}`, {
            file: graph.source,
            node: s.node,
          });
        });
      }),
    );
    for (const p of prepared) {
      steps.push(p);
      owned.push(...p.owned);
    }

    const inputs: PlanInput[] = feedNames.map((name) => {
      const place = placements.get(name)!;
      return { name, dims: graph.values.get(name)!.shape as number[], buffer: place.buffer, offset: place.offset };
    });
    const outputs: PlanOutput[] = graph.outputs.map((o) => {
      const dims = graph.values.get(o.name)!.shape as number[];
      const v = root(o.name);
      const constant = graph.initializers.get(v);
      if (constant && !placements.has(v)) {
        const data =
          constant.value.data instanceof Float32Array
            ? constant.value.data
            : Float32Array.from(constant.value.data as ArrayLike<number>);
        return { name: o.name, dims, source: { host: data } };
      }
      const bytes = bytesOf(v);
      const staging = gpu.createBuffer(
        `${o.name} (readback)`,
        roundUp(Math.max(16, bytes), 16),
        GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      );
      owned.push(staging);
      const { buffer, offset } = range(o.name);
      return { name: o.name, dims, source: { buffer, offset: offset ?? 0, bytes: roundUp(bytes, 4) }, staging };
    });
    owned.push(...pool.all());
    const plan = new Plan(gpu, inputs, outputs, steps, memory.bytes, peakLive, keys.size, owned);
    plan.#memory = memory;
    if (shared) plan.#memoryOwner = host!.#memoryOwner;
    plan.#placement = (name) => placements.get(root(name));
    plan.#bytes = (name) => bytesOf(root(name));
    return plan;
  }

  /** The whole buffer holding a value (after aliases), or undefined when it has none of its own
   * (a value sub-allocated in the arena: see rangeOf). Only values alive at the point of interest
   * hold their data: feeds, outputs, external and keep, which get buffers of their own unless
   * packFeedsAndOutputs packed the feeds and outputs. */
  bufferOf(name: string): GPUBuffer | undefined {
    const place = this.#placement(name);
    return place?.whole ? place.buffer : undefined;
  }

  /** The buffer range holding a value (after aliases), wherever it lives. */
  rangeOf(name: string): Required<BufferRange> | undefined {
    const place = this.#placement(name);
    return place && { buffer: place.buffer, offset: place.offset, size: roundUp(Math.max(16, this.#bytes(name)), 16) };
  }

  /** Uploads feeds, runs every step in one pass, reads the outputs back: one submit. */
  async execute(feeds: Map<string, Float32Array>): Promise<Map<string, Float32Array>> {
    const gpu = this.gpu;
    return gpu.scope('run plan', async () => {
      for (const input of this.inputs) gpu.upload(input.buffer, feeds.get(input.name)!, input.offset);
      const device = gpu.device;
      const encoder = device.createCommandEncoder({ label: 'onnx-graft run' });
      encodeSteps(encoder, this.steps, 'forward');
      for (const o of this.outputs) {
        if ('buffer' in o.source)
          encoder.copyBufferToBuffer(o.source.buffer, o.source.offset, o.staging!, 0, o.source.bytes);
      }
      const submitted = performance.now();
      device.queue.submit([encoder.finish()]);
      const results = new Map<string, Float32Array>();
      const mapped = this.outputs.some((o) => 'buffer' in o.source);
      // One output's readback tells when the submit is done: every copy is at its end.
      const probe = this.outputs.find((o) => 'buffer' in o.source)?.staging;
      if (mapped) await this.#pacer.beforeMap(submitted, probe);
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
      if (mapped) this.#pacer.done(submitted);
      return results;
    });
  }

  /** Destroys the plan's own buffers (activation memory it shares stays with its owner). */
  dispose(): void {
    this.#disposed = true;
    for (const b of this.ownedBuffers) b.destroy();
  }

  /** The plan whose activation buffers this one binds: itself, or options.shareMemoryWith's owner. */
  get memoryOwner(): Plan {
    return this.#memoryOwner;
  }

  /** Whether `other`'s steps give every value the lifetime this plan's give it (true for plans
   * of one graph at two batch sizes unless a size changes the steps, a GEMM variant say). */
  sameScheduleAs(other: Plan): boolean {
    return sameSchedule(this.#memory!.schedule, other.#memory!.schedule);
  }

  get disposed(): boolean {
    return this.#disposed;
  }
}

function sameSchedule(a: ActivationSchedule, b: ActivationSchedule): boolean {
  const sameMap = (x: ReadonlyMap<string, number>, y: ReadonlyMap<string, number>) =>
    x.size === y.size && [...x].every(([k, v]) => y.get(k) === v);
  return (
    sameMap(a.def, b.def) &&
    sameMap(a.last, b.last) &&
    a.whole.size === b.whole.size &&
    [...a.whole].every((v) => b.whole.has(v))
  );
}

/** A value to place in an arena: its size (aligned) and the steps it lives over, inclusive. */
export interface ArenaItem {
  value: string;
  bytes: number;
  from: number;
  to: number;
}

export interface ArenaPacking {
  /** value → its arena and byte offset there. */
  slots: Map<string, { arena: number; offset: number }>;
  /** Bytes each arena needs. */
  sizes: number[];
  /** Values per arena. */
  counts: number[];
}

/**
 * Offsets for values over known lifetimes, largest first, each at the lowest-waste gap among
 * the values already placed that overlap it in time (best fit), else above them: values alive
 * at the same step never overlap in memory. An arena stops at `capacity` bytes (maxBufferSize);
 * what does not fit goes to the next arena. Sizes must be multiples of the offset alignment.
 */
export function packArenas(items: readonly ArenaItem[], capacity: number): ArenaPacking {
  const order = [...items].sort(
    (a, b) =>
      b.bytes - a.bytes || a.from - b.from || b.to - a.to || (a.value < b.value ? -1 : a.value > b.value ? 1 : 0),
  );
  const arenas: { placed: { offset: number; bytes: number; from: number; to: number }[]; size: number }[] = [];
  const slots = new Map<string, { arena: number; offset: number }>();
  for (const item of order) {
    if (item.bytes > capacity)
      throw new Error(
        `internal: value '${item.value}' (${item.bytes} bytes) exceeds the arena capacity of ${capacity} bytes`,
      );
    for (let k = 0; ; k++) {
      if (k === arenas.length) arenas.push({ placed: [], size: 0 });
      const arena = arenas[k];
      const overlapping = arena.placed
        .filter((p) => p.from <= item.to && item.from <= p.to)
        .sort((a, b) => a.offset - b.offset);
      let best = -1;
      let bestGap = Infinity;
      let top = 0;
      for (const p of overlapping) {
        const gap = p.offset - top;
        if (gap >= item.bytes && gap < bestGap) {
          best = top;
          bestGap = gap;
        }
        top = Math.max(top, p.offset + p.bytes);
      }
      const offset = best >= 0 ? best : top;
      if (offset + item.bytes > capacity) continue;
      arena.placed.push({ offset, bytes: item.bytes, from: item.from, to: item.to });
      arena.size = Math.max(arena.size, offset + item.bytes);
      slots.set(item.value, { arena: k, offset });
      break;
    }
  }
  return { slots, sizes: arenas.map((a) => a.size), counts: arenas.map((a) => a.placed.length) };
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
    const buffer = this.gpu.createBuffer(`activation ${this.#all.length} (first: ${label})`, size, storageUsage());
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
