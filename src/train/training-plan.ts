/// <reference types="@webgpu/types" />
// A training plan: autodiff's steps compiled over pooled buffers (saved activations live until
// their last backward reader), parameters in persistent buffers shared with every plan of the
// same store, the softmax cross-entropy between forward and backward, and the optimizer's
// fused updates after: one command encoder and one submit per training step.
import { ModelError } from '../graph/errors.ts';
import type { Graph } from '../graph/ir.ts';
import { defaultVariant, gemmTarget, type GemmVariant } from '../kernels/gemm.ts';
import type { GpuContext } from '../kernels/gpu-context.ts';
import {
  checkLossStats,
  decodeLossStats,
  LOSS_STATS_BYTES,
  prepareCrossEntropy,
  type CrossEntropyStep,
  type LossStats,
} from '../kernels/loss.ts';
import { encodeSteps, storageUsage } from '../kernels/program.ts';
import { ConstantStore, Plan } from '../runtime/plan.ts';
import { differentiate, parameterKey, type TrainableParameter, type TrainingLowered } from './autodiff.ts';
import type { Optimizer, ParamBinding } from './optimizers.ts';

export interface TrainingPlanOptions {
  /** Shared by every plan over the same weights (other batch sizes, evaluation). */
  constants: ConstantStore;
  labelSmoothing?: number;
  /** One GEMM variant for every GEMM (default: the engine's per-shape default). */
  gemm?: GemmVariant;
  /**
   * 'evaluate': a forward-only plan in evaluation mode (BatchNormalization on its running
   * statistics, Dropout an identity) over the same parameter buffers; step() is refused.
   */
  mode?: 'train' | 'evaluate';
  /** false: Dropout stays an identity in training (default true). */
  dropout?: boolean;
  /**
   * The most bytes one storage binding may cover (default, and at most: the device's
   * maxStorageBufferBindingSize). Weights, gradients and moments larger than that are bound in
   * blocks; a lower value exercises that path on small shapes.
   */
  maxBindingBytes?: number;
}

/** A buffer the host maps to read what the GPU copied into it. */
const readbackUsage = (): GPUBufferUsageFlags => GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;

/** The seed a Dropout step draws with: the training step's seed mixed with the node's salt. */
export function mixSeed(seed: number, salt: number): number {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(salt + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

export class TrainingPlan {
  readonly #gpu: GpuContext;
  readonly #plan: Plan;
  readonly #lowered: TrainingLowered;
  readonly #train: CrossEntropyStep | undefined;
  readonly #eval: CrossEntropyStep;
  readonly #labels: GPUBuffer;
  readonly #staging: GPUBuffer;
  readonly #logitsStaging: GPUBuffer;
  readonly #bindings: ParamBinding[];
  readonly #constants: ConstantStore;
  readonly #graph: Graph;
  /** Each parameter as it was before the latest update: a non-finite step is undone from these. */
  readonly #before: GPUBuffer[];

  private constructor(
    gpu: GpuContext,
    graph: Graph,
    plan: Plan,
    lowered: TrainingLowered,
    train: CrossEntropyStep | undefined,
    evaluation: CrossEntropyStep,
    labels: GPUBuffer,
    constants: ConstantStore,
    maxBindingBytes: number,
  ) {
    this.#gpu = gpu;
    this.#graph = graph;
    this.#plan = plan;
    this.#lowered = lowered;
    this.#train = train;
    this.#eval = evaluation;
    this.#labels = labels;
    this.#constants = constants;
    this.#staging = gpu.createBuffer('training stats (readback)', LOSS_STATS_BYTES, readbackUsage());
    this.#logitsStaging = gpu.createBuffer(
      'logits (readback)',
      Math.max(16, this.batch * this.classes * 4),
      readbackUsage(),
    );
    this.#bindings = lowered.parameters.map((p) => ({
      name: p.name,
      param: this.parameterBuffer(p.name),
      grad: plan.bufferOf(p.grad)!,
      size: p.size,
      maxBindingBytes,
    }));
    // Parameters and state (BN running statistics) as they were before the latest step.
    this.#undoable = [
      ...this.#bindings.map((b) => ({ name: b.name, buffer: b.param, size: b.size })),
      ...lowered.state.map((name) => ({ name, buffer: this.parameterBuffer(name), size: this.#sizeOf(name) })),
    ];
    this.#before = this.#undoable.map((b) =>
      gpu.createBuffer(`'${b.name}' before the step`, Math.max(16, Math.ceil(b.size / 4) * 16), storageUsage()),
    );
  }

  readonly #undoable: { name: string; buffer: GPUBuffer; size: number }[];

  #sizeOf(name: string): number {
    return this.#graph.initializers.get(name)!.value.dims.reduce((a, b) => a * b, 1);
  }

  /** Compiles a prepared graph (static shapes) for training at its input shapes. */
  static async create(gpu: GpuContext, graph: Graph, options: TrainingPlanOptions): Promise<TrainingPlan> {
    // The device's GEMM target (software adapter, subgroup size): the same kernel choice as inference.
    const target = gemmTarget(gpu);
    const limits = gpu.device.limits;
    const fixed = options.gemm;
    const evaluation = options.mode === 'evaluate';
    const maxBindingBytes = Math.min(limits.maxStorageBufferBindingSize, options.maxBindingBytes ?? Infinity);
    if (!(maxBindingBytes >= 256))
      throw new ModelError(`maxBindingBytes must be at least 256 bytes, got ${options.maxBindingBytes}`, {
        file: graph.source,
      });
    const lowered = await differentiate(graph, {
      mode: options.mode,
      dropout: options.dropout,
      chooseVariant: async (problem) => fixed ?? defaultVariant(problem, target),
      variant: (problem) => fixed ?? defaultVariant(problem, target),
      maxBindingBytes,
      maxWorkgroupsPerDimension: limits.maxComputeWorkgroupsPerDimension,
    });
    const logits = lowered.partition.logits;
    const dims = graph.values.get(logits)?.shape as number[] | undefined;
    if (!dims || dims.length !== 2 || dims.some((d) => typeof d !== 'number')) {
      throw new ModelError(
        `the logits '${logits}' must be [batch, classes] with static dims, got [${dims?.join(', ') ?? '?'}]`,
        { file: graph.source },
      );
    }
    const planGraph = graph.clone();
    planGraph.outputs = [{ name: logits, dtype: 'float32', shape: dims }];
    const plan = await Plan.compile(
      gpu,
      planGraph,
      lowered,
      options.constants,
      evaluation
        ? { maxBindingBytes }
        : {
            external: [lowered.dlogits],
            keep: lowered.parameters.map((p) => p.grad),
            maxBindingBytes,
          },
    );
    const [batch, classes] = dims;
    const labels = gpu.createBuffer('labels', Math.max(16, batch * 4), storageUsage());
    const logitsRange = { buffer: plan.bufferOf(logits)! };
    const smoothing = options.labelSmoothing ?? 0;
    const train = evaluation
      ? undefined
      : await prepareCrossEntropy(
          gpu,
          { batch, classes, labelSmoothing: smoothing },
          { logits: logitsRange, labels: { buffer: labels }, dlogits: { buffer: plan.bufferOf(lowered.dlogits)! } },
        );
    const evaluate = await prepareCrossEntropy(
      gpu,
      { batch, classes, labelSmoothing: smoothing, gradient: false },
      { logits: logitsRange, labels: { buffer: labels } },
    );
    return new TrainingPlan(gpu, graph, plan, lowered, train, evaluate, labels, options.constants, maxBindingBytes);
  }

  get batch(): number {
    return (this.#graph.values.get(this.#lowered.partition.logits)!.shape as number[])[0];
  }

  get classes(): number {
    return (this.#graph.values.get(this.#lowered.partition.logits)!.shape as number[])[1];
  }

  get parameters(): readonly TrainableParameter[] {
    return this.#lowered.parameters;
  }

  get lowered(): TrainingLowered {
    return this.#lowered;
  }

  get inputNames(): string[] {
    return this.#plan.inputs.map((i) => i.name);
  }

  get stats(): { forwardSteps: number; backwardSteps: number; activationBytes: number; peakLiveBytes: number } {
    return {
      forwardSteps: this.#lowered.forwardSteps,
      backwardSteps: this.#plan.steps.length - this.#lowered.forwardSteps,
      activationBytes: this.#plan.peakActivationBytes,
      peakLiveBytes: this.#plan.peakLiveBytes,
    };
  }

  /** The persistent buffer of a parameter (or any initializer the plan reads raw). */
  parameterBuffer(name: string): GPUBuffer {
    const init = this.#graph.initializers.get(name);
    if (!init) throw new Error(`'${name}' is not an initializer`);
    const data =
      init.value.data instanceof Float32Array
        ? init.value.data
        : Float32Array.from(init.value.data as ArrayLike<number>);
    return this.#constants.get({ key: parameterKey(name), data });
  }

  /**
   * One training step: forward, loss, backward and (when given) the optimizer update, in one
   * submit. Returns the loss stats (checked: throws NonFiniteLossError / LabelOutOfRangeError,
   * in which case the update was still applied: callers restore from their last good state).
   */
  async step(
    feeds: Map<string, Float32Array>,
    labels: Uint32Array,
    optimizer: Optimizer | undefined,
    lr?: number,
    where = '',
    seed = 0,
  ): Promise<LossStats> {
    if (!this.#train) throw new Error('an evaluation plan does not train');
    this.#feed(feeds, labels);
    for (const r of this.#lowered.reseed) {
      this.#gpu.device.queue.writeBuffer(
        this.#plan.steps[r.step].owned[0],
        r.offset,
        Uint32Array.of(mixSeed(seed, r.salt)),
      );
    }
    const encoder = this.#gpu.device.createCommandEncoder({ label: 'training step' });
    if (optimizer)
      this.#undoable.forEach((b, i) => encoder.copyBufferToBuffer(b.buffer, 0, this.#before[i], 0, b.size * 4));
    const f = this.#lowered.forwardSteps;
    encodeSteps(encoder, this.#plan.steps.slice(0, f), 'forward');
    this.#train!.encode(encoder);
    encodeSteps(encoder, this.#plan.steps.slice(f), 'backward');
    if (optimizer) {
      optimizer.step(this.#bindings, encoder, lr);
    }
    encoder.copyBufferToBuffer(this.#train!.stats, 0, this.#staging, 0, LOSS_STATS_BYTES);
    this.#gpu.device.queue.submit([encoder.finish()]);
    return checkLossStats(await this.#readStats(), this.classes, where);
  }

  /** Forward and loss only (no gradient): evaluation. Returns unchecked stats and, when asked, the logits. */
  async evaluate(
    feeds: Map<string, Float32Array>,
    labels: Uint32Array | undefined,
    readLogits = false,
  ): Promise<{ stats?: LossStats; logits?: Float32Array }> {
    this.#feed(feeds, labels ?? new Uint32Array(this.batch));
    const encoder = this.#gpu.device.createCommandEncoder({ label: 'evaluation' });
    encodeSteps(encoder, this.#plan.steps.slice(0, this.#lowered.forwardSteps), 'forward');
    if (labels) {
      this.#eval.encode(encoder);
      encoder.copyBufferToBuffer(this.#eval.stats, 0, this.#staging, 0, LOSS_STATS_BYTES);
    }
    const bytes = this.batch * this.classes * 4;
    if (readLogits)
      encoder.copyBufferToBuffer(
        this.#plan.bufferOf(this.#lowered.partition.logits)!,
        0,
        this.#logitsStaging,
        0,
        bytes,
      );
    this.#gpu.device.queue.submit([encoder.finish()]);
    const stats = labels ? await this.#readStats() : undefined;
    let logits: Float32Array | undefined;
    if (readLogits) {
      await this.#logitsStaging.mapAsync(GPUMapMode.READ, 0, bytes);
      logits = new Float32Array(this.#logitsStaging.getMappedRange(0, bytes).slice(0));
      this.#logitsStaging.unmap();
    }
    return { stats, logits };
  }

  /** Reads every trainable parameter back from the GPU. */
  async readParameters(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const p of this.#lowered.parameters)
      out.set(p.name, new Float32Array(await this.#gpu.read(this.parameterBuffer(p.name), p.size * 4)));
    return out;
  }

  /** Initializers the training forward writes (BN running statistics). */
  get state(): readonly string[] {
    return this.#lowered.state;
  }

  /** Reads initializers (parameters or state) back from their GPU buffers. */
  async readValues(names: Iterable<string>): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const name of names)
      out.set(name, new Float32Array(await this.#gpu.read(this.parameterBuffer(name), this.#sizeOf(name) * 4)));
    return out;
  }

  /** Reads the gradients of the last step (kept to the end of the plan). */
  async readGradients(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const p of this.#lowered.parameters)
      out.set(p.name, new Float32Array(await this.#gpu.read(this.#plan.bufferOf(p.grad)!, p.size * 4)));
    return out;
  }

  /** Puts every parameter back as it was before the latest step() (after a non-finite loss). */
  async undoLastStep(): Promise<void> {
    const encoder = this.#gpu.device.createCommandEncoder({ label: 'undo step' });
    this.#undoable.forEach((b, i) => encoder.copyBufferToBuffer(this.#before[i], 0, b.buffer, 0, b.size * 4));
    this.#gpu.device.queue.submit([encoder.finish()]);
    await this.#gpu.device.queue.onSubmittedWorkDone();
  }

  /** Overwrites parameters on the GPU (restoring a checkpoint). */
  writeParameters(values: Map<string, Float32Array>): void {
    for (const [name, data] of values) this.#gpu.upload(this.parameterBuffer(name), data);
  }

  dispose(): void {
    this.#plan.dispose();
    this.#train?.destroy();
    this.#eval.destroy();
    this.#labels.destroy();
    this.#staging.destroy();
    this.#logitsStaging.destroy();
    for (const b of this.#before) b.destroy();
  }

  #feed(feeds: Map<string, Float32Array>, labels: Uint32Array): void {
    for (const input of this.#plan.inputs) {
      const data = feeds.get(input.name);
      const want = input.dims.reduce((a, b) => a * b, 1);
      if (!data || data.length !== want)
        throw new ModelError(
          `input '${input.name}' needs ${want} floats ([${input.dims}]), got ${data?.length ?? 'none'}`,
        );
      this.#gpu.upload(input.buffer, data);
    }
    if (labels.length !== this.batch) throw new ModelError(`${labels.length} labels for a batch of ${this.batch}`);
    this.#gpu.upload(this.#labels, labels);
  }

  async #readStats(): Promise<LossStats> {
    await this.#staging.mapAsync(GPUMapMode.READ, 0, LOSS_STATS_BYTES);
    const stats = decodeLossStats(this.#staging.getMappedRange(0, LOSS_STATS_BYTES).slice(0));
    this.#staging.unmap();
    return stats;
  }
}
