/// <reference types="@webgpu/types" />
// A training plan: autodiff's steps compiled over pooled buffers (saved activations live until
// their last backward reader), parameters in persistent buffers shared with every plan of the
// same store, the softmax cross-entropy between forward and backward, and the optimizer's
// fused updates after: one command encoder and one submit per training step. A batch with a
// value over the binding limit trains as slices of the batch through the plan of one slice (one
// submit per slice), each slice's gradients added to sums weighted by its share of the batch.
// A graph that reduces over the batch (BatchNormalization in training mode) holds its slices
// side by side instead (layer-major): each slice has a plan of its own (its own activations, the
// parameters shared) and the steps run in order, each for every slice; where a step reduces
// over the batch, each slice computes its partials and a combine gives every slice the whole
// batch's result (see #holdSlices). Memory is then that of the whole batch, spread over
// bindings that each fit, so only the device's memory limits the batch.
import { ModelError } from '../graph/errors.ts';
import type { Graph, Node } from '../graph/ir.ts';
import { defaultVariant, gemmTarget, type GemmVariant } from '../kernels/gemm.ts';
import { GpuOutOfMemoryError } from '../kernels/errors.ts';
import type { GpuContext } from '../kernels/gpu-context.ts';
import {
  checkLossStats,
  decodeLossStats,
  LOSS_STATS_BYTES,
  prepareCrossEntropy,
  type CrossEntropyStep,
  type LossStats,
} from '../kernels/loss.ts';
import { gradientSumProgram } from '../kernels/gradient-sum.ts';
import {
  encodeSteps,
  prepareStep,
  storageUsage,
  type BufferRange,
  type KernelProgram,
  type KernelStep,
} from '../kernels/program.ts';
import { setBatchSize } from '../graph/surgery/batch.ts';
import {
  BatchMemoryError,
  BatchSliceError,
  checkImagesIndependent,
  compileLargestSlice,
  sharedBatch,
  sliceFeeds,
  sliceRows,
  type BatchSlicing,
} from '../runtime/batch-slices.ts';
import { BindingLimitError } from '../runtime/lower.ts';
import { ConstantStore, Plan } from '../runtime/plan.ts';
import { differentiate, parameterKey, type TrainableParameter, type TrainingLowered } from './autodiff.ts';
import { chunkSizeOf, type Optimizer, type ParamBinding } from './optimizers.ts';

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
  /**
   * A plan of the same graph at a larger batch (the trainer's full batch, for its smaller last
   * one): this plan binds its activation buffers where the steps match and every value fits
   * (Plan.compile's shareMemoryWith), and then its snapshot of the parameters for undoLastStep
   * too. It must outlive this plan, and the two must not run at once.
   */
  shareMemoryWith?: TrainingPlan;
  /**
   * The most bytes of activation buffers a batch held as slices side by side may take, every
   * slice's at once (see create): a batch over it is refused with a BatchMemoryError before its
   * slices' buffers are made. WebGPU does not tell a device's memory; without a budget, a held
   * batch the device cannot allocate gets a BatchMemoryError when the allocation fails.
   */
  memoryBudgetBytes?: number;
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

/** A batch trained as slices (see TrainingPlan.create). */
interface SlicedBatch {
  slicing: BatchSlicing;
  /** The plan of each slice: this one (and one for a smaller last slice), or each its own (held). */
  plans: TrainingPlan[];
  /** Set when the slices are held side by side (layer-major), not run one after another. */
  held: HeldSlices | undefined;
  /** Each parameter's gradient summed over the slices: what the optimizer reads. */
  sums: GPUBuffer[];
  /** Per slice: sums = share·gradient (the first), sums += share·gradient (the others). */
  sumSteps: KernelStep[][];
  /** Every slice's loss stats, one after another. */
  stats: GPUBuffer;
}

/** Slices held side by side, each with its own plan (SlicedBatch.plans): where they meet. */
interface HeldSlices {
  /** The steps that reduce over the batch, in step order (see BatchReductionSite). */
  meetings: SliceMeeting[];
  /** Per meeting: every slice's partials (SlicePartials). */
  partials: GPUBuffer[];
}

/** A step that reduces over the batch, run for held slices: per slice, its index there and its partial and combine steps. */
interface SliceMeeting {
  /** The steps between meetings may differ from slice to slice (a conv gradient chunked by images). */
  steps: number[];
  /** Whether it is a backward step. */
  backward: boolean;
  partial: KernelStep[];
  combine: KernelStep[];
}

export class TrainingPlan {
  readonly #gpu: GpuContext;
  readonly #maxBindingBytes: number;
  #sliced: SlicedBatch | undefined;
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
  /** The plan whose activation buffers (and parameter snapshot) this one binds, if another. */
  readonly #memoryHost: TrainingPlan | undefined;

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
    host: TrainingPlan | undefined,
    replicaOf: TrainingPlan | undefined,
  ) {
    this.#gpu = gpu;
    this.#maxBindingBytes = maxBindingBytes;
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
      Math.max(16, this.#sliceImages * this.classes * 4),
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
    // A plan on another's activation buffers runs only when that one does not: one snapshot serves both.
    const owner = host && plan.memoryOwner !== plan ? (host.#memoryHost ?? host) : undefined;
    const sameParameters =
      owner !== undefined &&
      owner.#undoable.length === this.#undoable.length &&
      owner.#undoable.every((b, i) => b.name === this.#undoable[i].name && b.size === this.#undoable[i].size);
    this.#memoryHost = owner;
    // A held slice's plan (replicaOf) never backs up: the first slice's plan does, for all.
    const snapshotOwner = replicaOf ?? (sameParameters ? owner : undefined);
    this.#ownsBefore = snapshotOwner === undefined;
    this.#before = snapshotOwner
      ? snapshotOwner.#before
      : this.#undoable.map((b) =>
          gpu.createBuffer(`'${b.name}' before the step`, Math.max(16, Math.ceil(b.size / 4) * 16), storageUsage()),
        );
  }

  readonly #undoable: { name: string; buffer: GPUBuffer; size: number }[];
  readonly #ownsBefore: boolean;

  #sizeOf(name: string): number {
    return this.#graph.initializers.get(name)!.value.dims.reduce((a, b) => a * b, 1);
  }

  /**
   * Compiles a prepared graph (static shapes) for training at its input shapes. A batch with a
   * value over the binding limit trains as slices of the batch through the plan of the largest
   * slice that fits: the slices' gradients summed, each weighted by its share of the batch, so
   * that one step equals the unsliced step. A graph with a step that reduces over the batch
   * (BatchNormalization in training mode) holds its slices side by side, each with a plan of
   * its own, and combines their partials where they meet (layer-major; see #holdSlices).
   */
  static async create(gpu: GpuContext, graph: Graph, options: TrainingPlanOptions): Promise<TrainingPlan> {
    try {
      return await TrainingPlan.#createWhole(gpu, graph, options);
    } catch (error) {
      if (!(error instanceof BindingLimitError)) throw error;
      return TrainingPlan.#createSliced(gpu, graph, options, error);
    }
  }

  static async #createSliced(
    gpu: GpuContext,
    graph: Graph,
    options: TrainingPlanOptions,
    overLimit: BindingLimitError,
  ): Promise<TrainingPlan> {
    const batch = sharedBatch(graph.feedInputs.map((i) => (i.shape ?? []) as number[]));
    if (batch === undefined) throw overLimit;
    checkImagesIndependent(graph, setBatchSize(graph, batch === 2 ? 1 : batch - 1));
    const { slicing, compiled: plan } = await compileLargestSlice(batch, overLimit, (images) =>
      TrainingPlan.#createWhole(gpu, setBatchSize(graph, images), options),
    );
    const plans: TrainingPlan[] = [plan];
    try {
      // Slice-major (one slice's memory) where it is exact; held side by side where the batch meets.
      const meets = plan.#lowered.batchReductions[0]?.node;
      if (meets) {
        await plan.#makeHeldSlices(graph, options, slicing, meets, plans);
        await plan.#sliceOver(slicing, plans, await plan.#holdSlices(plans, slicing));
        return plan;
      }
      if (slicing.lastImages === slicing.images) plans.push(...Array<TrainingPlan>(slicing.count - 1).fill(plan));
      else {
        plans.push(...Array<TrainingPlan>(slicing.count - 2).fill(plan));
        const last = setBatchSize(graph, slicing.lastImages);
        plans.push(await TrainingPlan.#createWhole(gpu, last, { ...options, shareMemoryWith: plan }));
      }
      await plan.#sliceOver(slicing, plans, undefined);
      return plan;
    } catch (error) {
      for (const p of new Set(plans)) p.dispose();
      throw error;
    }
  }

  /**
   * Adds to `plans` (this one, the first slice's) a plan of its own for every other slice, with
   * activations of its own and this plan's parameters. Refuses, with the sizes, a batch whose
   * slices would take more than options.memoryBudgetBytes, or that the device cannot allocate.
   */
  async #makeHeldSlices(
    graph: Graph,
    options: TrainingPlanOptions,
    slicing: BatchSlicing,
    meets: Node,
    plans: TrainingPlan[],
  ): Promise<void> {
    // The first slice's plan is the largest: every slice's together take at most count times its bytes.
    const perSlice = this.#plan.peakActivationBytes;
    const bytes = perSlice * slicing.count;
    const what =
      `a batch of ${slicing.batch} held as ${slicing.count} slices of ${slicing.images} images (node '${meets.name}' ` +
      `(${meets.opType}) reduces over the batch) takes at most ${bytes} bytes of activations, ${perSlice} per slice`;
    const where = { file: graph.source, bytes };
    const budget = options.memoryBudgetBytes;
    if (budget !== undefined && bytes > budget)
      throw new BatchMemoryError(`${what}: over memoryBudgetBytes = ${budget}; train with a smaller batch`, {
        ...where,
        limit: budget,
      });
    try {
      await this.#gpu.scope(`hold a batch of ${slicing.batch} as ${slicing.count} slices`, async () => {
        for (let k = 1; k < slicing.count; k++) {
          const sliceGraph = setBatchSize(graph, sliceRows(slicing, k).images);
          const own = { ...options, shareMemoryWith: undefined };
          plans.push(await TrainingPlan.#createWhole(this.#gpu, sliceGraph, own, this));
        }
      });
    } catch (error) {
      if (!(error instanceof GpuOutOfMemoryError)) throw error;
      const message = `${what}: the device could not allocate them; train with a smaller batch`;
      throw new BatchMemoryError(message, where, { cause: error });
    }
  }

  /**
   * Where the held slices meet: for each step that reduces over the batch, every slice's partial
   * step (its parts at its region of one buffer of every slice's partials) and combine step
   * (writing its copy of the step's outputs from all the partials). `plans` come from one graph
   * at the slices' sizes: the steps between meetings may differ (a conv gradient chunked by
   * images), the meetings come in the same order.
   */
  async #holdSlices(plans: readonly TrainingPlan[], slicing: BatchSlicing): Promise<HeldSlices> {
    const gpu = this.#gpu;
    const sites = this.#lowered.batchReductions;
    const backwardAt = (p: TrainingPlan, i: number) => p.#lowered.batchReductions[i].step >= p.#lowered.forwardSteps;
    for (const p of plans) {
      const same =
        p.#lowered.batchReductions.length === sites.length &&
        p.#lowered.batchReductions.every(
          (r, i) =>
            p.#graph.nodes.indexOf(r.node) === this.#graph.nodes.indexOf(sites[i].node) &&
            backwardAt(p, i) === backwardAt(this, i),
        );
      if (!same)
        throw new ModelError(
          `internal: the plans of slices of ${slicing.images} and ${p.#sliceImages} images reduce over the batch at different steps`,
          { file: this.#graph.source },
        );
    }
    const align = Math.max(16, gpu.device.limits.minStorageBufferOffsetAlignment);
    const held: HeldSlices = { meetings: [], partials: [] };
    for (const [i, site] of sites.entries()) {
      const { partLength, partial } = site.reduction;
      const partStride = Math.ceil((partLength * 4) / align) * (align / 4);
      const layout = {
        slices: slicing.count,
        images: slicing.images,
        lastImages: slicing.lastImages,
        sliceStride: partStride * partial.parts.length,
        partStride,
      };
      const bytes = slicing.count * layout.sliceStride * 4;
      if (bytes > this.#maxBindingBytes)
        throw new BatchSliceError(
          `the partial results of ${slicing.count} slices take ${bytes} bytes, over the binding limit of ${this.#maxBindingBytes} bytes`,
          { file: this.#graph.source, node: site.node },
        );
      const partials = gpu.createBuffer(
        `'${site.node.name}' partials of ${slicing.count} slices`,
        bytes,
        storageUsage(),
      );
      held.partials.push(partials);
      const meeting: SliceMeeting = {
        steps: plans.map((p) => p.#lowered.batchReductions[i].step),
        backward: backwardAt(this, i),
        partial: [],
        combine: [],
      };
      held.meetings.push(meeting);
      for (const [k, p] of plans.entries()) {
        const reduction = p.#lowered.batchReductions[i].reduction;
        const part = (q: number): BufferRange => ({
          buffer: partials,
          offset: (k * layout.sliceStride + q * partStride) * 4,
          size: partLength * 4,
        });
        const own = reduction.partial;
        meeting.partial.push(
          await prepareStep(
            gpu,
            own.program,
            p.#bindingsOf(own.program, own.bind, (name) => {
              const q = own.parts.indexOf(name);
              return q < 0 ? undefined : part(q);
            }),
          ),
        );
        const combine = reduction.combine(layout, k === 0);
        meeting.combine.push(
          await prepareStep(
            gpu,
            combine.program,
            p.#bindingsOf(combine.program, combine.bind, (name) =>
              name === combine.partials ? { buffer: partials } : undefined,
            ),
          ),
        );
      }
    }
    return held;
  }

  /** The buffer ranges of a program's bindings: `special`'s where it has one, else the value (or initializer) `bind` names. */
  #bindingsOf(
    program: KernelProgram,
    bind: Record<string, string>,
    special: (binding: string) => BufferRange | undefined,
  ): BufferRange[] {
    return program.bindings
      .filter((b) => b.name !== 'params')
      .map((b) => {
        const own = special(b.name);
        if (own) return own;
        const name = bind[b.name];
        const range =
          name === undefined
            ? undefined
            : this.#graph.initializers.has(name)
              ? { buffer: this.parameterBuffer(name) }
              : this.#plan.rangeOf(name);
        if (!range)
          throw new ModelError(`internal: nothing to bind to '${b.name}' of ${program.label} ('${name}')`, {
            file: this.#graph.source,
          });
        return range;
      });
  }

  /** Makes this plan (for the first slice) run the whole batch of `slicing`, slice k through plans[k]. */
  async #sliceOver(slicing: BatchSlicing, plans: TrainingPlan[], held: HeldSlices | undefined): Promise<void> {
    const gpu = this.#gpu;
    const training = this.#train !== undefined;
    const sums = training
      ? this.#lowered.parameters.map((p) =>
          gpu.createBuffer(`'${p.name}' gradient summed over slices`, Math.max(16, p.size * 4), storageUsage()),
        )
      : [];
    // One set of steps per plan and role: slices through one plan share them.
    const made = new Map<string, KernelStep[]>();
    const sumSteps = async (plan: TrainingPlan, k: number, first: boolean): Promise<KernelStep[]> => {
      const key = `${plans.indexOf(plan)}|${first}`;
      const known = made.get(key);
      if (known) return known;
      const steps: KernelStep[] = [];
      for (const [i, p] of plan.#lowered.parameters.entries()) {
        const grad = plan.#plan.bufferOf(p.grad)!;
        const chunk = chunkSizeOf(p.size, this.#maxBindingBytes);
        for (let start = 0; start < p.size; start += chunk) {
          const size = Math.min(chunk, p.size - start);
          const range = (buffer: GPUBuffer) => ({ buffer, offset: start * 4, size: size * 4 });
          const program = gradientSumProgram(size, sliceRows(slicing, k).images / slicing.batch, first);
          steps.push(await prepareStep(gpu, program, [range(grad), range(sums[i])]));
        }
      }
      made.set(key, steps);
      return steps;
    };
    const steps: KernelStep[][] = [];
    if (training) for (const [k, plan] of plans.entries()) steps.push(await sumSteps(plan, k, k === 0));
    this.#sliced = {
      slicing,
      plans,
      held,
      sums,
      sumSteps: steps,
      stats: gpu.createBuffer(
        'training stats of every slice (readback)',
        LOSS_STATS_BYTES * slicing.count,
        readbackUsage(),
      ),
    };
    this.#bindings.forEach((b, i) => {
      if (training) b.grad = sums[i];
    });
  }

  /** `replicaOf`: the plan of the first of the held slices, when this one is another's. */
  static async #createWhole(
    gpu: GpuContext,
    graph: Graph,
    options: TrainingPlanOptions,
    replicaOf?: TrainingPlan,
  ): Promise<TrainingPlan> {
    // The device's GEMM target (software adapter, subgroup size): the same kernel choice as inference.
    const target = gemmTarget(gpu);
    const limits = gpu.device.limits;
    const fixed = options.gemm;
    const evaluation = options.mode === 'evaluate';
    const hostPlan = options.shareMemoryWith ? options.shareMemoryWith.#plan : undefined;
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
        ? { maxBindingBytes, shareMemoryWith: hostPlan }
        : {
            external: [lowered.dlogits],
            keep: lowered.parameters.map((p) => p.grad),
            maxBindingBytes,
            shareMemoryWith: hostPlan,
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
    return new TrainingPlan(
      gpu,
      graph,
      plan,
      lowered,
      train,
      evaluate,
      labels,
      options.constants,
      maxBindingBytes,
      options.shareMemoryWith,
      replicaOf,
    );
  }

  /** The plan whose activation buffers this one binds (options.shareMemoryWith's, when they
   * fit), or undefined when it holds its own. */
  get memoryHost(): TrainingPlan | undefined {
    return this.#memoryHost;
  }

  /** Whether `other`'s steps give every activation the lifetime this plan's give it (Plan.sameScheduleAs). */
  sameScheduleAs(other: TrainingPlan): boolean {
    return this.#plan.sameScheduleAs(other.#plan);
  }

  get batch(): number {
    return this.#sliced?.slicing.batch ?? this.#sliceImages;
  }

  /** Images of one run of the compiled plan (the batch, or one slice of it). */
  get #sliceImages(): number {
    return (this.#graph.values.get(this.#lowered.partition.logits)!.shape as number[])[0];
  }

  /** How the batch is split into slices, when it is (a value of the whole batch would not fit one binding). */
  get slicing(): BatchSlicing | undefined {
    return this.#sliced?.slicing;
  }

  /** Whether the slices are held side by side (a step reduces over the batch) rather than run one after another. */
  get holdsSlices(): boolean {
    return this.#sliced?.held !== undefined;
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

  /** Steps, and activation bytes: of one slice's plan, or of every slice's when they are held side by side. */
  get stats(): { forwardSteps: number; backwardSteps: number; activationBytes: number; peakLiveBytes: number } {
    const plans = this.#sliced?.held ? this.#sliced.plans.map((p) => p.#plan) : [this.#plan];
    return {
      forwardSteps: this.#lowered.forwardSteps,
      backwardSteps: this.#plan.steps.length - this.#lowered.forwardSteps,
      activationBytes: plans.reduce((sum, p) => sum + p.peakActivationBytes, 0),
      peakLiveBytes: plans.reduce((sum, p) => sum + p.peakLiveBytes, 0),
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
    if (this.#sliced) return this.#stepSliced(this.#sliced, feeds, labels, optimizer, lr, where, seed);
    this.#feed(feeds, labels);
    this.#reseed(seed);
    const encoder = this.#gpu.device.createCommandEncoder({ label: 'training step' });
    if (optimizer) this.#encodeBackup(encoder);
    this.#encodeForwardBackward(encoder);
    if (optimizer) {
      optimizer.step(this.#bindings, encoder, lr);
    }
    encoder.copyBufferToBuffer(this.#train!.stats, 0, this.#staging, 0, LOSS_STATS_BYTES);
    this.#gpu.device.queue.submit([encoder.finish()]);
    return checkLossStats(await this.#readStats(), this.classes, where);
  }

  #encodeBackup(encoder: GPUCommandEncoder): void {
    this.#undoable.forEach((b, i) => encoder.copyBufferToBuffer(b.buffer, 0, this.#before[i], 0, b.size * 4));
  }

  /** Dropout's seed for this step, and where this plan's images start in the batch (a slice's first row). */
  #reseed(seed: number, firstImage = 0, images = 1): void {
    for (const r of this.#lowered.reseed) {
      const params = this.#plan.steps[r.step].owned[0];
      this.#gpu.device.queue.writeBuffer(params, r.offset, Uint32Array.of(mixSeed(seed, r.salt)));
      this.#gpu.device.queue.writeBuffer(params, r.firstOffset, Uint32Array.of(firstImage * (r.elements / images)));
    }
  }

  #encodeForwardBackward(encoder: GPUCommandEncoder): void {
    const f = this.#lowered.forwardSteps;
    encodeSteps(encoder, this.#plan.steps.slice(0, f), 'forward');
    this.#train!.encode(encoder);
    encodeSteps(encoder, this.#plan.steps.slice(f), 'backward');
  }

  /**
   * One step over the slices: each slice's feeds written, its forward, loss and backward run and
   * its gradients added to the sums (weighted by its share of the batch), in one submit per slice
   * (the queue orders a slice's uploads after the previous slice's work); the optimizer reads
   * the sums after the last. Held slices run step by step instead, all in one submit. The stats
   * are combined as the whole batch's.
   */
  async #stepSliced(
    sliced: SlicedBatch,
    feeds: Map<string, Float32Array>,
    labels: Uint32Array,
    optimizer: Optimizer | undefined,
    lr: number | undefined,
    where: string,
    seed: number,
  ): Promise<LossStats> {
    const { slicing, plans, held } = sliced;
    if (labels.length !== slicing.batch)
      throw new ModelError(`${labels.length} labels for a batch of ${slicing.batch}`);
    let encoder: GPUCommandEncoder | undefined;
    for (let k = 0; k < slicing.count; k++) {
      const plan = plans[k];
      const rows = sliceRows(slicing, k);
      plan.#feed(sliceFeeds(feeds, slicing, k), labels.subarray(rows.first, rows.first + rows.images));
      // Each slice draws its rows of the unsliced step's Dropout mask.
      plan.#reseed(seed, rows.first, rows.images);
      if (held) continue;
      encoder = this.#gpu.device.createCommandEncoder({
        label: `training step, slice ${k + 1} of ${slicing.count}`,
      });
      if (k === 0 && optimizer) this.#encodeBackup(encoder);
      plan.#encodeForwardBackward(encoder);
      encodeSteps(encoder, sliced.sumSteps[k], 'gradient sum');
      encoder.copyBufferToBuffer(plan.#train!.stats, 0, sliced.stats, k * LOSS_STATS_BYTES, LOSS_STATS_BYTES);
      if (k < slicing.count - 1) this.#gpu.device.queue.submit([encoder.finish()]);
    }
    if (held) {
      encoder = this.#gpu.device.createCommandEncoder({ label: `training step, ${slicing.count} slices held` });
      if (optimizer) this.#encodeBackup(encoder);
      TrainingPlan.#encodeHeld(encoder, sliced, held, false);
      for (const plan of plans) plan.#train!.encode(encoder);
      TrainingPlan.#encodeHeld(encoder, sliced, held, true);
      for (const [k, plan] of plans.entries()) {
        encodeSteps(encoder, sliced.sumSteps[k], 'gradient sum');
        encoder.copyBufferToBuffer(plan.#train!.stats, 0, sliced.stats, k * LOSS_STATS_BYTES, LOSS_STATS_BYTES);
      }
    }
    if (optimizer) optimizer.step(this.#bindings, encoder!, lr);
    this.#gpu.device.queue.submit([encoder!.finish()]);
    return checkLossStats(await this.#readSliceStats(sliced), this.classes, where);
  }

  /**
   * The forward or the backward steps of held slices: each run of steps between two meetings for
   * every slice in turn, then at a meeting every slice's partial step and every slice's combine.
   */
  static #encodeHeld(encoder: GPUCommandEncoder, sliced: SlicedBatch, held: HeldSlices, backward: boolean): void {
    const { plans } = sliced;
    const at = plans.map((p) => (backward ? p.#lowered.forwardSteps : 0));
    const run = (until: (k: number) => number) =>
      plans.forEach((p, k) => encodeSteps(encoder, p.#plan.steps.slice(at[k], until(k)), 'held slice'));
    for (const m of held.meetings) {
      if (m.backward !== backward) continue;
      run((k) => m.steps[k]);
      encodeSteps(encoder, m.partial, 'slice partials');
      encodeSteps(encoder, m.combine, 'slices combined');
      m.steps.forEach((step, k) => (at[k] = step + 1));
    }
    run((k) => (backward ? plans[k].#plan.steps.length : plans[k].#lowered.forwardSteps));
  }

  /** The slices' stats as one batch's: the loss weighted by slice size, counts summed, rows offset. */
  async #readSliceStats(sliced: SlicedBatch): Promise<LossStats> {
    return combineLossStats(await this.#readSliceParts(sliced), sliced.slicing);
  }

  /** Every slice's stats, as copied to sliced.stats. */
  async #readSliceParts(sliced: SlicedBatch): Promise<LossStats[]> {
    const { slicing, stats } = sliced;
    const bytes = LOSS_STATS_BYTES * slicing.count;
    await stats.mapAsync(GPUMapMode.READ, 0, bytes);
    const copy = stats.getMappedRange(0, bytes).slice(0);
    stats.unmap();
    return Array.from({ length: slicing.count }, (_, k) =>
      decodeLossStats(new Uint8Array(copy, k * LOSS_STATS_BYTES, LOSS_STATS_BYTES)),
    );
  }

  /** Forward and loss only (no gradient): evaluation. Returns unchecked stats and, when asked, the logits. */
  async evaluate(
    feeds: Map<string, Float32Array>,
    labels: Uint32Array | undefined,
    readLogits = false,
  ): Promise<{ stats?: LossStats; logits?: Float32Array }> {
    if (this.#sliced) return this.#evaluateSliced(this.#sliced, feeds, labels, readLogits);
    return this.#evaluateWhole(feeds, labels, readLogits);
  }

  async #evaluateWhole(
    feeds: Map<string, Float32Array>,
    labels: Uint32Array | undefined,
    readLogits: boolean,
  ): Promise<{ stats?: LossStats; logits?: Float32Array }> {
    this.#feed(feeds, labels ?? new Uint32Array(this.#sliceImages));
    const encoder = this.#gpu.device.createCommandEncoder({ label: 'evaluation' });
    encodeSteps(encoder, this.#plan.steps.slice(0, this.#lowered.forwardSteps), 'forward');
    if (labels) {
      this.#eval.encode(encoder);
      encoder.copyBufferToBuffer(this.#eval.stats, 0, this.#staging, 0, LOSS_STATS_BYTES);
    }
    if (readLogits) this.#encodeLogitsCopy(encoder);
    this.#gpu.device.queue.submit([encoder.finish()]);
    const stats = labels ? await this.#readStats() : undefined;
    return { stats, logits: readLogits ? await this.#readLogits() : undefined };
  }

  #encodeLogitsCopy(encoder: GPUCommandEncoder): void {
    const logits = this.#plan.bufferOf(this.#lowered.partition.logits)!;
    encoder.copyBufferToBuffer(logits, 0, this.#logitsStaging, 0, this.#sliceImages * this.classes * 4);
  }

  /** The logits #encodeLogitsCopy copied, once the GPU is done. */
  async #readLogits(): Promise<Float32Array> {
    const bytes = this.#sliceImages * this.classes * 4;
    await this.#logitsStaging.mapAsync(GPUMapMode.READ, 0, bytes);
    const logits = new Float32Array(this.#logitsStaging.getMappedRange(0, bytes).slice(0));
    this.#logitsStaging.unmap();
    return logits;
  }

  /** evaluate() slice by slice (held slices: step by step): the stats combined as the batch's, the logits' rows put together. */
  async #evaluateSliced(
    sliced: SlicedBatch,
    feeds: Map<string, Float32Array>,
    labels: Uint32Array | undefined,
    readLogits: boolean,
  ): Promise<{ stats?: LossStats; logits?: Float32Array }> {
    const { slicing, plans, held } = sliced;
    if (labels && labels.length !== slicing.batch)
      throw new ModelError(`${labels.length} labels for a batch of ${slicing.batch}`);
    const parts: LossStats[] = [];
    const logits = readLogits ? new Float32Array(slicing.batch * this.classes) : undefined;
    for (let k = 0; k < slicing.count; k++) {
      const rows = sliceRows(slicing, k);
      const sliceLabels = labels?.subarray(rows.first, rows.first + rows.images);
      if (held) {
        plans[k].#feed(sliceFeeds(feeds, slicing, k), sliceLabels ?? new Uint32Array(rows.images));
        continue;
      }
      const part = await plans[k].#evaluateWhole(sliceFeeds(feeds, slicing, k), sliceLabels, readLogits);
      if (part.stats) parts.push(part.stats);
      if (logits && part.logits) logits.set(part.logits, rows.first * this.classes);
    }
    if (held) {
      const encoder = this.#gpu.device.createCommandEncoder({ label: `evaluation, ${slicing.count} slices held` });
      TrainingPlan.#encodeHeld(encoder, sliced, held, false);
      for (const [k, plan] of plans.entries()) {
        if (labels) {
          plan.#eval.encode(encoder);
          encoder.copyBufferToBuffer(plan.#eval.stats, 0, sliced.stats, k * LOSS_STATS_BYTES, LOSS_STATS_BYTES);
        }
        if (readLogits) plan.#encodeLogitsCopy(encoder);
      }
      this.#gpu.device.queue.submit([encoder.finish()]);
      if (labels) parts.push(...(await this.#readSliceParts(sliced)));
      if (logits)
        for (const [k, plan] of plans.entries())
          logits.set(await plan.#readLogits(), sliceRows(slicing, k).first * this.classes);
    }
    return { stats: labels ? combineLossStats(parts, slicing) : undefined, logits };
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

  /** Reads the gradients of the last step (kept to the end of the plan; summed over the slices of a sliced batch). */
  async readGradients(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const [i, p] of this.#lowered.parameters.entries()) {
      const buffer = this.#sliced ? this.#sliced.sums[i] : this.#plan.bufferOf(p.grad)!;
      out.set(p.name, new Float32Array(await this.#gpu.read(buffer, p.size * 4)));
    }
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
    if (this.#ownsBefore) for (const b of this.#before) b.destroy();
    const sliced = this.#sliced;
    if (sliced) {
      for (const plan of new Set(sliced.plans)) if (plan !== this) plan.dispose();
      for (const b of sliced.sums) b.destroy();
      for (const step of new Set(sliced.sumSteps.flat())) for (const b of step.owned) b.destroy();
      for (const m of sliced.held?.meetings ?? [])
        for (const step of [...m.partial, ...m.combine]) for (const b of step.owned) b.destroy();
      for (const b of sliced.held?.partials ?? []) b.destroy();
      sliced.stats.destroy();
    }
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
    if (labels.length !== this.#sliceImages)
      throw new ModelError(`${labels.length} labels for a batch of ${this.#sliceImages}`);
    this.#gpu.upload(this.#labels, labels);
  }

  async #readStats(): Promise<LossStats> {
    await this.#staging.mapAsync(GPUMapMode.READ, 0, LOSS_STATS_BYTES);
    const stats = decodeLossStats(this.#staging.getMappedRange(0, LOSS_STATS_BYTES).slice(0));
    this.#staging.unmap();
    return stats;
  }
}

/** Slices' loss stats as one batch's: the mean loss weighted by slice size, counts summed, first rows offset. */
function combineLossStats(parts: readonly LossStats[], slicing: BatchSlicing): LossStats {
  const firstOf = (pick: (s: LossStats) => number) => {
    const k = parts.findIndex((s) => pick(s) >= 0);
    return k < 0 ? -1 : sliceRows(slicing, k).first + pick(parts[k]);
  };
  const badAt = parts.findIndex((s) => s.firstBadRow >= 0);
  return {
    loss: parts.reduce((sum, s, k) => sum + s.loss * sliceRows(slicing, k).images, 0) / slicing.batch,
    top1: parts.reduce((sum, s) => sum + s.top1, 0),
    top5: parts.reduce((sum, s) => sum + s.top5, 0),
    batch: slicing.batch,
    badLabels: parts.reduce((sum, s) => sum + s.badLabels, 0),
    firstBadRow: firstOf((s) => s.firstBadRow),
    firstBadLabel: badAt < 0 ? 0 : parts[badAt].firstBadLabel,
    nonFiniteRows: parts.reduce((sum, s) => sum + s.nonFiniteRows, 0),
    firstNonFiniteRow: firstOf((s) => s.firstNonFiniteRow),
    lossNonFinite: parts.some((s) => s.lossNonFinite),
  };
}
