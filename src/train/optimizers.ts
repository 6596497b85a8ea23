/// <reference types="@webgpu/types" />
// Optimizers as fused GPU update kernels: SGD (momentum, Nesterov), Adam and AdamW, L2 or
// decoupled weight decay, and global-norm gradient clipping, all recorded into the caller's
// command encoder with no host round trip. The moment buffers live on the GPU beside the
// parameters; state()/loadState() move them to and from the host for checkpoints.
//
// Per step: one compute pass holding [Σg² partials per gradient, the norm fold] when clipping or
// reporting the norm, then one update dispatch per parameter tensor (a tensor larger than one
// storage binding is summed and updated in chunks, each bound at its offset). The learning rate
// and Adam's bias corrections go into one small uniform buffer through queue.writeBuffer, which the
// queue orders before the next submit: so step() must be followed by submitting its encoder
// before the next step() (two steps recorded into one encoder would both see the second step's
// values; step() refuses an encoder it has already seen).
import type { GpuContext } from '../kernels/gpu-context.ts';
import {
  CLIP_STATE_BYTES,
  gradNormFinishProgram,
  gradSquareSumProgram,
  HYPER_BYTES,
  normDispatch,
  NORM_PARAMS_BYTES,
  optimizerUpdateProgram,
  packHyper,
  packNormParams,
  packTensor,
  slotsOf,
  TENSOR_BYTES,
  updateDispatch,
  type TensorValues,
  type UpdateRule,
} from '../kernels/optimizer-kernels.ts';
import { pipelineFor, storageUsage } from '../kernels/program.ts';

export type OptimizerType = 'sgd' | 'adam' | 'adamw';

export interface OptimizerConfig {
  type: OptimizerType;
  /** Base learning rate: step() uses it when called without one (a schedule passes its own). */
  lr: number;
  /** SGD momentum μ (default 0: plain SGD, no state). */
  momentum?: number;
  /** SGD: Nesterov momentum (needs momentum > 0). */
  nesterov?: boolean;
  /** Adam/AdamW (defaults 0.9, 0.999, 1e-8). */
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** SGD and Adam: L2 penalty added to the gradient; AdamW: decoupled decay p −= lr·λ·p. Default 0 (AdamW: 0.01, as PyTorch). */
  weightDecay?: number;
  /** Clip the global L2 norm of all gradients of a step to this (PyTorch clip_grad_norm_). */
  clipNorm?: number;
  /** Compute the global gradient norm each step even without clipping, for readGradNorm(). */
  reportGradNorm?: boolean;
}

export type ResolvedOptimizerConfig = Required<Omit<OptimizerConfig, 'clipNorm'>> & { clipNorm: number | null };

/** One parameter tensor for step(): its buffer, its gradient's buffer, and its element count. */
export interface ParamBinding {
  /** Stable across steps: the optimizer's moment buffers are kept by this name. */
  name: string;
  param: GPUBuffer;
  grad: GPUBuffer;
  /** float32 elements. */
  size: number;
  /** Byte offsets into pooled buffers (multiples of the device's minStorageBufferOffsetAlignment). */
  paramOffset?: number;
  gradOffset?: number;
  /** Multiplies the step's learning rate for this tensor (default 1): per-layer rates, 0 to hold it still. */
  lrScale?: number;
  /** Overrides the configured weight decay for this tensor (e.g. 0 for biases and norm scales). */
  weightDecay?: number;
  /**
   * The most bytes one binding of this tensor (or its gradient or moments) may cover, when lower
   * than the device's maxStorageBufferBindingSize. A tensor larger than that is updated (and its
   * Σg² summed) in chunks of a multiple of 64 floats, each bound at its own offset.
   */
  maxBindingBytes?: number;
}

export type SlotName = 'momentum_buffer' | 'exp_avg' | 'exp_avg_sq';

/** Everything needed to resume: the moment buffers (PyTorch's names), by parameter, and the step count. */
export interface OptimizerState {
  type: OptimizerType;
  /** Steps taken: Adam's bias corrections continue from here. */
  step: number;
  config: ResolvedOptimizerConfig;
  slots: Map<string, Partial<Record<SlotName, Float32Array>>>;
}

export interface GradNormReport {
  /** Σg² over every gradient of the last step, before clipping. */
  sumSquares: number;
  norm: number;
  /** The factor applied to every gradient (1 when under clipNorm or not clipping). */
  scale: number;
  nonFinite: boolean;
}

export interface Optimizer {
  readonly config: ResolvedOptimizerConfig;
  /** The update kernel variant in use. */
  readonly rule: UpdateRule;
  /** Steps recorded so far (Adam's t of the last step). */
  readonly stepCount: number;
  /**
   * Records one update of every tensor in params into encoder (one compute pass). lr defaults to
   * config.lr. Submit encoder before the next step().
   */
  step(params: readonly ParamBinding[], encoder: GPUCommandEncoder, lr?: number): void;
  /** The global gradient norm of the last submitted step, or null when neither clipping nor reporting. */
  readGradNorm(): Promise<GradNormReport | null>;
  /** Reads the moment buffers back (after the submitted steps finish). */
  state(): Promise<OptimizerState>;
  /** Restores moment buffers and the step count from state() output (e.g. from a checkpoint). */
  loadState(state: OptimizerState): void;
  /** Destroys the moment and bookkeeping buffers. */
  dispose(): void;
}

export class OptimizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OptimizerError';
  }
}

export async function createOptimizer(gpu: GpuContext, config: OptimizerConfig): Promise<Optimizer> {
  const resolved = resolveConfig(config);
  const rule = ruleOf(resolved);
  const clip = resolved.clipNorm !== null;
  const norm = clip || resolved.reportGradNorm;
  const [update, squares, finish] = await Promise.all([
    pipelineFor(gpu, optimizerUpdateProgram(rule, clip)),
    norm ? pipelineFor(gpu, gradSquareSumProgram()) : null,
    norm ? pipelineFor(gpu, gradNormFinishProgram()) : null,
  ]);
  return new GpuOptimizer(gpu, resolved, rule, { update, squares, finish });
}

/** PyTorch's defaults, and the checks PyTorch makes, with messages that say what is accepted. */
export function resolveConfig(config: OptimizerConfig): ResolvedOptimizerConfig {
  const { type } = config;
  if (type !== 'sgd' && type !== 'adam' && type !== 'adamw') {
    throw new OptimizerError(`unknown optimizer type '${String(type)}': use 'sgd', 'adam' or 'adamw'`);
  }
  const r: ResolvedOptimizerConfig = {
    type,
    lr: config.lr,
    momentum: config.momentum ?? 0,
    nesterov: config.nesterov ?? false,
    beta1: config.beta1 ?? 0.9,
    beta2: config.beta2 ?? 0.999,
    eps: config.eps ?? 1e-8,
    weightDecay: config.weightDecay ?? (type === 'adamw' ? 0.01 : 0),
    clipNorm: config.clipNorm ?? null,
    reportGradNorm: config.reportGradNorm ?? false,
  };
  const need = (ok: boolean, what: string) => {
    if (!ok) throw new OptimizerError(`${type}: ${what}`);
  };
  need(Number.isFinite(r.lr) && r.lr >= 0, `lr must be a finite number ≥ 0, got ${r.lr}`);
  need(r.momentum >= 0 && r.momentum < 1, `momentum must be in [0, 1), got ${r.momentum}`);
  need(!r.nesterov || r.momentum > 0, 'nesterov needs momentum > 0');
  need(
    type === 'sgd' || (config.momentum === undefined && config.nesterov === undefined),
    'momentum and nesterov are SGD options (Adam has beta1)',
  );
  need(r.beta1 >= 0 && r.beta1 < 1, `beta1 must be in [0, 1), got ${r.beta1}`);
  need(r.beta2 >= 0 && r.beta2 < 1, `beta2 must be in [0, 1), got ${r.beta2}`);
  need(r.eps > 0, `eps must be > 0, got ${r.eps}`);
  need(Number.isFinite(r.weightDecay) && r.weightDecay >= 0, `weightDecay must be ≥ 0, got ${r.weightDecay}`);
  need(
    r.clipNorm === null || (Number.isFinite(r.clipNorm) && r.clipNorm > 0),
    `clipNorm must be > 0, got ${r.clipNorm}`,
  );
  return r;
}

/** The update kernel a configuration runs, which fixes the moment tensors (slots) it keeps. */
export function ruleOf(c: ResolvedOptimizerConfig): UpdateRule {
  if (c.type === 'sgd') return c.momentum === 0 ? 'sgd' : c.nesterov ? 'sgd-nesterov' : 'sgd-momentum';
  return c.type;
}

interface Pipelines {
  update: GPUComputePipeline;
  squares: GPUComputePipeline | null;
  finish: GPUComputePipeline | null;
}

/** A range of a tensor updated by one dispatch (the whole tensor unless it exceeds one binding). */
interface Chunk {
  /** First element. */
  start: number;
  size: number;
  tensorUniform: GPUBuffer;
  tensorKey: string;
  updateGroup: GPUBindGroup | null;
  normGroup: GPUBindGroup | null;
  updateDispatch: [number, number, number];
  normDispatch: [number, number, number];
}

/** What the optimizer keeps per parameter name. */
interface Entry {
  name: string;
  size: number;
  slots: GPUBuffer[];
  /** Elements per chunk (size when the tensor fits one binding). */
  chunkSize: number;
  chunks: Chunk[];
  bound: { param: GPUBuffer; grad: GPUBuffer; paramOffset: number; gradOffset: number } | null;
  normGroupPartials: GPUBuffer | null;
}

/** Chunk floats are multiples of this (256 bytes: the largest minStorageBufferOffsetAlignment WebGPU allows). */
const CHUNK_ALIGN_FLOATS = 64;

/** Elements per update chunk of a tensor of `size` floats under a binding limit of `maxBytes`. */
export function chunkSizeOf(size: number, maxBytes: number): number {
  if (size * 4 <= maxBytes) return size;
  const floats = Math.floor(maxBytes / 4 / CHUNK_ALIGN_FLOATS) * CHUNK_ALIGN_FLOATS;
  if (floats < CHUNK_ALIGN_FLOATS)
    throw new OptimizerError(
      `a binding limit of ${maxBytes} bytes is under ${CHUNK_ALIGN_FLOATS * 4} bytes: tensors cannot be updated in chunks`,
    );
  return floats;
}

/** The uniform blocks' usage (a function: under Node the globals exist once a context does). */
const uniformUsage = (): GPUBufferUsageFlags => GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST;

class GpuOptimizer implements Optimizer {
  readonly config: ResolvedOptimizerConfig;
  readonly rule: UpdateRule;
  readonly #gpu: GpuContext;
  readonly #pipelines: Pipelines;
  readonly #slotNames: SlotName[];
  readonly #entries = new Map<string, Entry>();
  readonly #seenEncoders = new WeakSet<GPUCommandEncoder>();
  readonly #hyper: GPUBuffer;
  #step = 0;
  #partials: GPUBuffer | null = null;
  #normParams: GPUBuffer | null = null;
  #clip: GPUBuffer | null = null;
  #finishGroup: GPUBindGroup | null = null;
  #layoutKey = '';
  #partialOffsets = new Map<string, number>();
  #disposed = false;

  constructor(gpu: GpuContext, config: ResolvedOptimizerConfig, rule: UpdateRule, pipelines: Pipelines) {
    this.#gpu = gpu;
    this.config = config;
    this.rule = rule;
    this.#pipelines = pipelines;
    this.#slotNames = slotsOf(rule);
    this.#hyper = gpu.createBuffer(`optimizer ${rule} hyper`, HYPER_BYTES, uniformUsage());
    if (pipelines.finish) {
      this.#clip = gpu.createBuffer('optimizer clip state', CLIP_STATE_BYTES, storageUsage());
      this.#normParams = gpu.createBuffer('optimizer norm params', NORM_PARAMS_BYTES, uniformUsage());
    }
  }

  get stepCount(): number {
    return this.#step;
  }

  step(params: readonly ParamBinding[], encoder: GPUCommandEncoder, lr = this.config.lr): void {
    this.#checkUsable('step');
    if (!Number.isFinite(lr) || lr < 0)
      throw new OptimizerError(`step ${this.#step + 1}: learning rate must be a finite number ≥ 0, got ${lr}`);
    if (this.#seenEncoders.has(encoder)) {
      throw new OptimizerError(
        'step() was called twice with one command encoder: the per-step learning rate and bias corrections live in one ' +
          'uniform buffer written at queue time, so submit the encoder between steps',
      );
    }
    if (params.length === 0) throw new OptimizerError('step() got no parameters');
    this.#checkParams(params);
    this.#seenEncoders.add(encoder);

    const device = this.#gpu.device;
    const norm = this.#pipelines.squares !== null;
    if (norm) this.#layoutPartials(params);
    for (const p of params) this.#bind(device, p, norm);

    this.#step++;
    const t = this.#step;
    const c = this.config;
    this.#gpu.upload(
      this.#hyper,
      new Uint8Array(
        packHyper({
          lr,
          momentum: c.momentum,
          beta1: c.beta1,
          beta2: c.beta2,
          eps: c.eps,
          stepSize: lr / (1 - c.beta1 ** t),
          invSqrtBias2: 1 / Math.sqrt(1 - c.beta2 ** t),
        }),
      ),
    );

    const pass = encoder.beginComputePass({ label: `optimizer ${this.rule} step ${t}` });
    if (norm) {
      pass.setPipeline(this.#pipelines.squares!);
      for (const p of params) {
        for (const c of this.#entries.get(p.name)!.chunks) {
          pass.setBindGroup(0, c.normGroup!);
          pass.dispatchWorkgroups(...c.normDispatch);
        }
      }
      pass.setPipeline(this.#pipelines.finish!);
      pass.setBindGroup(0, this.#finishGroup!);
      pass.dispatchWorkgroups(1);
    }
    pass.setPipeline(this.#pipelines.update);
    for (const p of params) {
      for (const c of this.#entries.get(p.name)!.chunks) {
        pass.setBindGroup(0, c.updateGroup!);
        pass.dispatchWorkgroups(...c.updateDispatch);
      }
    }
    pass.end();
  }

  async readGradNorm(): Promise<GradNormReport | null> {
    this.#checkUsable('readGradNorm');
    if (!this.#clip || this.#step === 0) return null;
    const [sumSquares, norm, scale, nonFinite] = new Float32Array(await this.#gpu.read(this.#clip, CLIP_STATE_BYTES));
    return { sumSquares, norm, scale, nonFinite: nonFinite !== 0 };
  }

  async state(): Promise<OptimizerState> {
    this.#checkUsable('state');
    const slots = new Map<string, Partial<Record<SlotName, Float32Array>>>();
    for (const e of this.#entries.values()) {
      const record: Partial<Record<SlotName, Float32Array>> = {};
      for (let i = 0; i < this.#slotNames.length; i++) {
        record[this.#slotNames[i]] = new Float32Array(await this.#gpu.read(e.slots[i], e.size * 4));
      }
      slots.set(e.name, record);
    }
    return { type: this.config.type, step: this.#step, config: { ...this.config }, slots };
  }

  loadState(state: OptimizerState): void {
    this.#checkUsable('loadState');
    if (state.type !== this.config.type) {
      throw new OptimizerError(`optimizer state is for '${state.type}', this optimizer is '${this.config.type}'`);
    }
    if (!Number.isInteger(state.step) || state.step < 0)
      throw new OptimizerError(`optimizer state: step must be an integer ≥ 0, got ${state.step}`);
    for (const [name, record] of state.slots) {
      const have = Object.keys(record).sort();
      const want = [...this.#slotNames].sort();
      if (have.join() !== want.join()) {
        throw new OptimizerError(
          `optimizer state for '${name}' holds [${have.join(', ')}] but ${this.rule} keeps [${want.join(', ')}]` +
            (this.config.type === 'sgd' ? ' (was it saved with a different momentum setting?)' : ''),
        );
      }
      const size = record[this.#slotNames[0]]?.length;
      for (const slot of this.#slotNames) {
        if (record[slot]!.length !== size) {
          throw new OptimizerError(
            `optimizer state for '${name}': ${slot} has ${record[slot]!.length} elements, ${this.#slotNames[0]} has ${size}`,
          );
        }
      }
      if (size === undefined) continue; // plain SGD: nothing to restore
      const entry = this.#entry(name, size);
      this.#slotNames.forEach((slot, i) => this.#gpu.upload(entry.slots[i], record[slot]!));
    }
    this.#step = state.step;
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const e of this.#entries.values()) {
      for (const b of e.slots) b.destroy();
      for (const c of e.chunks) c.tensorUniform.destroy();
    }
    this.#entries.clear();
    for (const b of [this.#hyper, this.#partials, this.#normParams, this.#clip]) b?.destroy();
  }

  #checkUsable(what: string): void {
    if (this.#disposed) throw new OptimizerError(`${what}: the optimizer was disposed`);
  }

  #checkParams(params: readonly ParamBinding[]): void {
    const align = this.#gpu.device.limits.minStorageBufferOffsetAlignment;
    const names = new Set<string>();
    for (const p of params) {
      if (names.has(p.name)) throw new OptimizerError(`parameter '${p.name}' appears twice in one step`);
      names.add(p.name);
      if (!Number.isInteger(p.size) || p.size < 1)
        throw new OptimizerError(
          `parameter '${p.name}': size must be a positive integer of float32 elements, got ${p.size}`,
        );
      const known = this.#entries.get(p.name);
      if (known && known.size !== p.size) {
        throw new OptimizerError(
          `parameter '${p.name}' has ${p.size} elements but the optimizer's state for it has ${known.size} ` +
            '(state from another model or head? reset the optimizer for a new head)',
        );
      }
      if (p.param === p.grad)
        throw new OptimizerError(`parameter '${p.name}': the parameter and its gradient must be different buffers`);
      for (const [what, buffer, offset] of [
        ['param', p.param, p.paramOffset ?? 0],
        ['grad', p.grad, p.gradOffset ?? 0],
      ] as const) {
        if (!Number.isInteger(offset) || offset < 0 || offset % align !== 0) {
          throw new OptimizerError(
            `parameter '${p.name}': ${what}Offset ${offset} must be a multiple of ${align} bytes (minStorageBufferOffsetAlignment)`,
          );
        }
        if (offset + p.size * 4 > buffer.size) {
          throw new OptimizerError(
            `parameter '${p.name}': ${p.size} floats at byte ${offset} do not fit its ${what} buffer '${buffer.label}' of ${buffer.size} bytes`,
          );
        }
      }
      const lrScale = p.lrScale ?? 1;
      const wd = p.weightDecay ?? this.config.weightDecay;
      if (!Number.isFinite(lrScale) || lrScale < 0)
        throw new OptimizerError(`parameter '${p.name}': lrScale must be ≥ 0, got ${lrScale}`);
      if (!Number.isFinite(wd) || wd < 0)
        throw new OptimizerError(`parameter '${p.name}': weightDecay must be ≥ 0, got ${wd}`);
    }
  }

  /** Partial-sum slots for this step's gradients, in order; reallocated when the set changes. */
  #layoutPartials(params: readonly ParamBinding[]): void {
    const key = params.map((p) => `${p.name}:${p.size}:${this.#chunkSizeOf(p)}`).join('\n');
    if (key === this.#layoutKey) return;
    let total = 0;
    this.#partialOffsets.clear();
    for (const p of params) {
      // One run of partials per chunk, in order (a chunk's own start is placed in #bind).
      this.#partialOffsets.set(p.name, total);
      const chunk = this.#chunkSizeOf(p);
      for (let start = 0; start < p.size; start += chunk)
        total += normDispatch(Math.min(chunk, p.size - start)).partials;
    }
    if (!this.#partials || this.#partials.size < total * 4) {
      this.#partials?.destroy();
      this.#partials = this.#gpu.createBuffer('optimizer Σg² partials', Math.max(16, total * 4), storageUsage());
      this.#finishGroup = null;
    }
    this.#gpu.upload(this.#normParams!, new Uint8Array(packNormParams(total, this.config.clipNorm ?? 0)));
    if (!this.#finishGroup) {
      this.#finishGroup = this.#gpu.device.createBindGroup({
        label: 'optimizer grad norm finish',
        layout: this.#pipelines.finish!.getBindGroupLayout(0),
        entries: [this.#partials, this.#clip!, this.#normParams!].map((buffer, binding) => ({
          binding,
          resource: { buffer },
        })),
      });
    }
    this.#layoutKey = key;
  }

  #entry(name: string, size: number): Entry {
    let e = this.#entries.get(name);
    if (e) {
      if (e.size !== size)
        throw new OptimizerError(`parameter '${name}': ${size} elements given, the optimizer's state has ${e.size}`);
      return e;
    }
    e = {
      name,
      size,
      slots: this.#slotNames.map((s) => this.#gpu.createBuffer(`optimizer ${s} '${name}'`, size * 4, storageUsage())),
      chunkSize: 0,
      chunks: [],
      bound: null,
      normGroupPartials: null,
    };
    this.#entries.set(name, e);
    return e;
  }

  #chunkSizeOf(p: ParamBinding): number {
    const device = this.#gpu.device.limits.maxStorageBufferBindingSize;
    return chunkSizeOf(p.size, Math.min(device, p.maxBindingBytes ?? device));
  }

  /** Writes the chunks' uniform blocks when they changed and (re)binds when the buffers changed. */
  #bind(device: GPUDevice, p: ParamBinding, norm: boolean): void {
    const e = this.#entry(p.name, p.size);
    const chunkSize = this.#chunkSizeOf(p);
    if (chunkSize !== e.chunkSize) {
      for (const c of e.chunks) c.tensorUniform.destroy();
      e.chunks = [];
      for (let start = 0; start < p.size; start += chunkSize) {
        e.chunks.push({
          start,
          size: Math.min(chunkSize, p.size - start),
          tensorUniform: this.#gpu.createBuffer(
            `optimizer tensor '${p.name}' [${start}…]`,
            TENSOR_BYTES,
            uniformUsage(),
          ),
          tensorKey: '',
          updateGroup: null,
          normGroup: null,
          updateDispatch: [1, 1, 1],
          normDispatch: [1, 1, 1],
        });
      }
      e.chunkSize = chunkSize;
      e.bound = null;
    }
    const paramOffset = p.paramOffset ?? 0;
    const gradOffset = p.gradOffset ?? 0;
    const b = e.bound;
    const rebind =
      !b || b.param !== p.param || b.grad !== p.grad || b.paramOffset !== paramOffset || b.gradOffset !== gradOffset;
    const renorm = norm && (rebind || e.normGroupPartials !== this.#partials);
    const maxPerDim = device.limits.maxComputeWorkgroupsPerDimension;
    let partialOffset = norm ? this.#partialOffsetOf(p.name) : 0;
    for (const c of e.chunks) {
      const update = updateDispatch(c.size, maxPerDim);
      const nd = normDispatch(c.size, maxPerDim);
      const values: TensorValues = {
        size: c.size,
        rowSize: update.rowSize,
        partialOffset,
        normGroupsX: nd.groupsX,
        lrScale: p.lrScale ?? 1,
        weightDecay: p.weightDecay ?? this.config.weightDecay,
      };
      partialOffset += nd.partials;
      const key = JSON.stringify(values);
      if (key !== c.tensorKey) {
        this.#gpu.upload(c.tensorUniform, new Uint8Array(packTensor(values)));
        c.tensorKey = key;
      }
      c.updateDispatch = update.dispatch;
      c.normDispatch = nd.dispatch;
      const bytes = c.size * 4;
      const at = c.start * 4;
      if (rebind || !c.updateGroup) {
        const resources: GPUBindingResource[] = [
          { buffer: this.#hyper },
          { buffer: c.tensorUniform },
          { buffer: p.param, offset: paramOffset + at, size: bytes },
          { buffer: p.grad, offset: gradOffset + at, size: bytes },
          ...e.slots.map((buffer) => ({ buffer, offset: at, size: bytes })),
          ...(this.config.clipNorm !== null ? [{ buffer: this.#clip! }] : []),
        ];
        c.updateGroup = device.createBindGroup({
          label: `optimizer ${this.rule} '${p.name}'${e.chunks.length > 1 ? ` [${c.start}…]` : ''}`,
          layout: this.#pipelines.update.getBindGroupLayout(0),
          entries: resources.map((resource, binding) => ({ binding, resource })),
        });
      }
      if (norm && (renorm || !c.normGroup)) {
        c.normGroup = device.createBindGroup({
          label: `optimizer Σg² '${p.name}'${e.chunks.length > 1 ? ` [${c.start}…]` : ''}`,
          layout: this.#pipelines.squares!.getBindGroupLayout(0),
          entries: [
            { binding: 0, resource: { buffer: c.tensorUniform } },
            { binding: 1, resource: { buffer: p.grad, offset: gradOffset + at, size: bytes } },
            { binding: 2, resource: { buffer: this.#partials! } },
          ],
        });
      }
    }
    if (norm) e.normGroupPartials = this.#partials;
    e.bound = { param: p.param, grad: p.grad, paramOffset, gradOffset };
  }

  #partialOffsetOf(name: string): number {
    const offset = this.#partialOffsets.get(name);
    if (offset === undefined) throw new OptimizerError(`internal: '${name}' missing from the gradient-norm layout`);
    return offset;
  }
}
