// Inference sessions: a Graph (or ONNX bytes) compiled into a Plan per input shape, run with
// one submit per call. Everything the runtime cannot do is refused at create time (naming the
// node and op); every wrong feed is refused before anything is submitted. A device lost while
// compiling or running surfaces as a GpuDeviceLostError naming the operation, never as a
// ModelError: the model was fine, a new GpuContext and Session will run it.
import { decodeModel } from '../graph/codec.ts';
import { ModelError } from '../graph/errors.ts';
import { Graph, type Dim, type Node } from '../graph/ir.ts';
import { prepareGraph } from '../graph/load.ts';
import { isFloatType, sizeOf } from '../graph/tensor.ts';
import { setBatchSize } from '../graph/surgery/batch.ts';
import { Autotuner } from '../kernels/autotune.ts';
import {
  defaultVariant,
  F16_GEMM_VARIANTS,
  GEMM_VARIANTS,
  gemmTarget,
  variantRefusal,
  variantKey,
  type GemmProblem,
  type GemmVariant,
} from '../kernels/gemm.ts';
import { GpuDeviceLostError } from '../kernels/errors.ts';
import type { GpuContext } from '../kernels/gpu-context.ts';
import { startPipelines } from '../kernels/program.ts';
import { SessionDisposedError, SessionUsageError, WeightsTooLargeError } from './errors.ts';
import {
  BatchSlicedPlan,
  checkImagesIndependent,
  compileLargestSlice,
  sharedBatch,
  withBatch,
  type BatchSlicing,
} from './batch-slices.ts';
import { BindingLimitError, checkGraph, lowerGraph, type StepSpec } from './lower.ts';
import { ConstantStore, Plan } from './plan.ts';

export interface Tensor {
  dims: number[];
  data: Float32Array;
}

export interface SessionOptions {
  gpu: GpuContext;
  /** Shown in error messages when the model is given as bytes. */
  file?: string;
  /** Concrete shapes for inputs with symbolic dims (a batch size, say): the first plan's shapes. */
  inputShapes?: Record<string, number[]>;
  /**
   * How GEMM variants are picked: 'default' (a fixed choice per adapter kind and shape, no
   * timing), 'tune' (the autotuner times candidates once per shape class and adapter), or one
   * variant for every GEMM.
   */
  gemm?: 'default' | 'tune' | GemmVariant;
  /** The autotuner for gemm: 'tune' (default: one shared per context, remembered in memory). */
  tuner?: Autotuner;
  /**
   * Keep the session's host references to the model's weights after they are uploaded (default
   * false). Without it the session lets them go once no other plan can need them (every input
   * dim fixed), so that a Graph the caller drops, or the file it was read from, is freed; with
   * symbolic input dims they are kept anyway, to compile plans for new shapes. A Graph passed
   * in is never changed: its weights stay the caller's.
   */
  keepHostWeights?: boolean;
  /**
   * What runs batch-1 dense layers (at most 4 rows, constant weights): 'gemv' (split-K, reads
   * each weight once; the default on GPUs), 'gemm' (the GEMM core over packed weights) or 'dot'
   * (a dot product per output over the weights as stored, for a Gemm with transB, which then
   * need no packing; elsewhere as 'gemm'; the default on software adapters, where it runs about
   * as fast as the GEMM core and the model loads faster). With 'dot', a session run at batches
   * of at most 4 and at larger ones holds such weights twice: as stored, and packed.
   */
  denseKernel?: 'gemv' | 'gemm' | 'dot';
  /**
   * The most bytes of weights this session may upload (default: no total; WebGPU does not tell
   * a device's memory). Each weight is also checked against the device's maxBufferSize. A model
   * over either is refused before anything is uploaded, with a WeightsTooLargeError.
   */
  weightBudgetBytes?: number;
  /**
   * The most bytes one storage binding may cover, when lower than the device's
   * maxStorageBufferBindingSize. A batch with a value over it runs as slices of the batch.
   */
  maxBindingBytes?: number;
}

export class Session {
  readonly #gpu: GpuContext;
  readonly #options: SessionOptions;
  /** A fresh copy of the model as given (bytes decoded, or a Graph cloned), to prepare per
   * shape; undefined when the host weights are let go (no other shape can be asked for). */
  readonly #source: (() => Graph) | undefined;
  /** The model as given, during create's first compile only: a batch sliced after that compile
   * let go of weights is prepared again from it (the caller still holds it then). */
  #firstSource: (() => Graph) | undefined;
  /** The model prepared for the first shapes: names, declared shapes, outputs. */
  readonly #graph: Graph;
  /** Input shapes as the model declares them (symbolic dims are names). */
  readonly #declared: Map<string, Dim[] | undefined>;
  readonly #constants: ConstantStore;
  /** Plans by input dims; a batch over the binding limit maps to a BatchSlicedPlan over the
   * plans of its slices, which are in this map under their own dims. */
  readonly #plans = new Map<string, Promise<Plan | BatchSlicedPlan>>();
  #current: Plan | BatchSlicedPlan | undefined;
  /** Every Plan compiled and not yet released (slice plans included). */
  readonly #compiledPlans = new Set<Plan>();
  /** The plan of the largest batch seen: later plans of smaller batches bind its activation
   * buffers when their schedule matches (Plan.compile's shareMemoryWith). */
  #memoryHost: Plan | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;

  private constructor(
    gpu: GpuContext,
    options: SessionOptions,
    source: (() => Graph) | undefined,
    graph: Graph,
    declared: Map<string, Dim[] | undefined>,
  ) {
    this.#gpu = gpu;
    this.#options = options;
    this.#source = source;
    this.#graph = graph;
    this.#declared = declared;
    // Shared with every other session of the context: a second create of a model uploads nothing.
    this.#constants = new ConstantStore(gpu, { share: true });
  }

  /**
   * Prepares (for bytes), checks and compiles the model for its input shapes. Throws a
   * ModelError naming node and op for anything the runtime does not run.
   */
  static async create(model: Graph | Uint8Array, options: SessionOptions): Promise<Session> {
    checkCreateArguments(model, options);
    // The copy keeps later edits of the caller's Graph out of this session (preparing is
    // idempotent, so a Graph from loadModel and one from decodeModel both work).
    const fresh = model instanceof Uint8Array ? decodeModel(model, { file: options.file }) : model.clone();
    const declared = new Map(fresh.feedInputs.map((i) => [i.name, i.shape && [...i.shape]]));
    // With every input dim fixed no other plan can be asked for: the weights need not stay.
    // (An input declared without dims takes any rank in run(), so it counts as not fixed.)
    const everyDimFixed = [...declared.values()].every(
      (dims) => dims !== undefined && dims.length > 0 && dims.every((d) => typeof d === 'number'),
    );
    const keepWeights = options.keepHostWeights === true || !everyDimFixed;
    const graph = prepareGraph(fresh, { inputShapes: options.inputShapes });
    refuseEmptyInputs(graph);
    checkGraph(graph);
    checkWeightSizes(graph, options);
    const session = new Session(
      options.gpu,
      options,
      keepWeights ? sourceOf(model, options) : undefined,
      graph,
      declared,
    );
    if (graph.feedInputs.every((i) => i.shape?.every((d) => typeof d === 'number'))) {
      if (!keepWeights) session.#firstSource = sourceOf(model, options);
      try {
        session.#current = await session.#planFor(
          graph.feedInputs.map((i) => i.shape as number[]),
          graph,
        );
      } catch (error) {
        session.dispose(); // weights uploaded node by node before the refusal
        throw error;
      } finally {
        session.#firstSource = undefined;
      }
    }
    return session;
  }

  get inputNames(): string[] {
    return this.#graph.feedInputs.map((i) => i.name);
  }

  get outputNames(): string[] {
    return this.#graph.outputs.map((o) => o.name);
  }

  /** Declared input shapes (symbolic dims as names, unknown as null). */
  get inputShapes(): Record<string, Dim[]> {
    return Object.fromEntries(this.#graph.feedInputs.map((i) => [i.name, [...(i.shape ?? [])]]));
  }

  /** GPU bytes the latest plan holds for activations (inputs and outputs included): its arenas,
   * where values are packed at offsets by liveness, plus any whole buffers. */
  get peakActivationBytes(): number {
    return this.#current?.peakActivationBytes ?? 0;
  }

  /** GPU bytes all of the session's plans hold for activations, buffers shared by plans counted
   * once: after runs at batch 8 then smaller ones, the batch-8 plan's. */
  get activationBytesHeld(): number {
    const owners = new Set([...this.#compiledPlans].map((p) => p.memoryOwner));
    return [...owners].reduce((sum, p) => sum + p.peakActivationBytes, 0);
  }

  /** The most activation bytes alive at one time in the latest plan (what perfect reuse would need). */
  get peakLiveBytes(): number {
    return this.#current?.peakLiveBytes ?? 0;
  }

  /** Bytes of uploaded constants (packed weights and biases), counting those this session shares
   * with other sessions of its context (held once on the GPU). */
  get weightBytes(): number {
    return this.#constants.bytes;
  }

  /** How the latest plan splits its batch into slices (a value of the whole batch over the binding limit), or undefined. */
  get batchSlicing(): BatchSlicing | undefined {
    return this.#current instanceof BatchSlicedPlan ? this.#current.slicing : undefined;
  }

  /** Steps and distinct pipelines of the latest plan. */
  get planStats(): { steps: number; pipelines: number } {
    return { steps: this.#current?.steps.length ?? 0, pipelines: this.#current?.pipelines ?? 0 };
  }

  async run(feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
    if (this.#disposed) throw new SessionDisposedError('run()');
    const dims = this.#checkFeeds(feeds);
    const job = this.#queue.then(async () => {
      const plan = await this.#planFor(dims);
      this.#current = plan;
      const data = new Map(this.inputNames.map((name) => [name, feeds[name].data]));
      let results: Map<string, Float32Array>;
      try {
        results = await plan.execute(data);
      } catch (error) {
        throw this.#lostOr(error, 'run plan');
      }
      const out: Record<string, Tensor> = {};
      for (const o of plan.outputs) out[o.name] = { dims: [...o.dims], data: results.get(o.name)! };
      return out;
    });
    this.#queue = job.catch(() => undefined);
    return job;
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const p of this.#plans.values())
      p.then(
        (plan) => plan.dispose(),
        () => undefined,
      );
    this.#plans.clear();
    for (const plan of this.#compiledPlans) plan.dispose();
    this.#compiledPlans.clear();
    this.#constants.dispose();
  }

  /** Every feed named, float32, of the declared rank and fixed dims, with matching data length. */
  #checkFeeds(feeds: Record<string, Tensor>): number[][] {
    const where = this.#graph.source ?? this.#options.file;
    const prefix = where ? `${where}: ` : '';
    const expected = this.#graph.feedInputs;
    const names = expected.map((i) => `'${i.name}'`).join(', ');
    if (typeof feeds !== 'object' || feeds === null)
      throw new SessionUsageError(
        `run() takes an object of input tensors ({ name: { dims, data: Float32Array } }) for ${names}; got ${feeds === null ? 'null' : typeof feeds}`,
      );
    for (const name of Object.keys(feeds)) {
      if (!expected.some((i) => i.name === name)) {
        throw new ModelError(
          `${prefix}'${name}' is not an input of the model; inputs: ${expected.map((i) => `'${i.name}'`).join(', ')}`,
        );
      }
    }
    return expected.map((input) => {
      const feed = feeds[input.name] as Tensor | undefined | null;
      if (feed === undefined)
        throw new ModelError(`${prefix}input '${input.name}' is missing; give every input: ${names}`);
      if (typeof feed !== 'object' || feed === null)
        throw new SessionUsageError(
          `${prefix}input '${input.name}' must be a tensor ({ dims, data: Float32Array }); got ${feed === null ? 'null' : typeof feed}`,
        );
      if (!(feed.data instanceof Float32Array)) {
        const kind = (feed.data as object | undefined)?.constructor?.name ?? typeof feed.data;
        throw new ModelError(`${prefix}input '${input.name}' must be float32 data (a Float32Array), got ${kind}`);
      }
      const declared = this.#declared.get(input.name) ?? input.shape ?? [];
      const shape = `[${declared.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
      if (!Array.isArray(feed.dims) || feed.dims.some((d) => !Number.isInteger(d) || d < 1)) {
        throw new ModelError(
          `${prefix}input '${input.name}' has dims [${feed.dims}]; dims must be positive integers (declared ${shape})`,
        );
      }
      if (declared.length && feed.dims.length !== declared.length) {
        throw new ModelError(
          `${prefix}input '${input.name}' has rank ${feed.dims.length} ([${feed.dims}]); the model declares rank ${declared.length} ${shape}`,
        );
      }
      const own = this.#declared.get(input.name) ?? [];
      own.forEach((d, k) => {
        if (typeof d === 'number' && feed.dims[k] !== d) {
          throw new ModelError(
            `${prefix}input '${input.name}' has dims [${feed.dims}]; the model expects [${own.map((x) => (x === null ? '?' : String(x))).join(', ')}]`,
          );
        }
      });
      const size = feed.dims.reduce((a, b) => a * b, 1);
      if (feed.data.length !== size) {
        throw new ModelError(
          `${prefix}input '${input.name}' has ${feed.data.length} values but dims [${feed.dims}] need ${size}`,
        );
      }
      return [...feed.dims];
    });
  }

  /** The plan for these input dims: compiled once, reused after (compiled again when a plan of
   * a larger batch released it). */
  #planFor(dims: number[][], prepared?: Graph): Promise<Plan | BatchSlicedPlan> {
    const key = JSON.stringify(dims);
    const known = this.#plans.get(key);
    if (known) return known.then((plan) => (isReleased(plan) ? this.#newPlan(key, dims) : plan));
    return this.#newPlan(key, dims, prepared);
  }

  #newPlan(key: string, dims: number[][], prepared?: Graph): Promise<Plan | BatchSlicedPlan> {
    const plan = this.#compile(dims, prepared);
    this.#plans.set(key, plan);
    plan.catch(() => {
      if (this.#plans.get(key) === plan) this.#plans.delete(key);
    });
    return plan;
  }

  async #compile(dims: number[][], prepared?: Graph): Promise<Plan | BatchSlicedPlan> {
    try {
      return await this.#compileOnce(dims, prepared);
    } catch (error) {
      throw this.#lostOr(error, `compile the plan for input dims ${dims.map((d) => `[${d.join(', ')}]`).join(', ')}`);
    }
  }

  /**
   * `error`, unless the device is lost: then a GpuDeviceLostError naming `operation` (the plan
   * wraps kernel failures as ModelErrors, and a lost device fails them all), the error as cause.
   */
  #lostOr(error: unknown, operation: string): unknown {
    const loss = this.#gpu.lost;
    if (!loss || error instanceof GpuDeviceLostError) return error;
    const where = this.#graph.source ?? this.#options.file;
    const lost = new GpuDeviceLostError(where ? `${operation} (${where})` : operation, loss.reason, loss.message);
    (lost as { cause?: unknown }).cause = error;
    return lost;
  }

  async #compileOnce(dims: number[][], prepared?: Graph): Promise<Plan | BatchSlicedPlan> {
    const graph = prepared ?? this.#prepare(dims, this.#source);
    try {
      return await this.#compilePlan(graph, prepared !== undefined);
    } catch (error) {
      if (!(error instanceof BindingLimitError)) throw error;
      // The failed compile may have let go of the weights it lowered: slice a fresh preparation.
      const released = prepared !== undefined && !this.#source;
      const source = this.#source ?? this.#firstSource;
      if (released && !source) throw error;
      return this.#compileSliced(dims, released ? this.#prepare(dims, source) : graph, error);
    }
  }

  /** The model prepared (shapes inferred) and checked for these input dims. */
  #prepare(dims: number[][], source: (() => Graph) | undefined): Graph {
    if (!source) throw new Error('internal: a new plan asked for after the host weights were released');
    const inputShapes = Object.fromEntries(this.#graph.feedInputs.map((i, k) => [i.name, dims[k]]));
    const graph = prepareGraph(source(), { inputShapes });
    checkGraph(graph);
    return graph;
  }

  /** Lowers and compiles one plan; `release`: the graph is the session's own first preparation. */
  async #compilePlan(graph: Graph, release = false): Promise<Plan> {
    // Without a source, each weight's host data goes once the nodes that read it are lowered (its
    // packed forms are on the GPU by then).
    const releaseWeights = release && !this.#source ? weightReleaser(graph) : undefined;
    const gpu = this.#gpu;
    const target = gemmTarget(gpu);
    const mode = this.#options.gemm ?? 'default';
    const tuner = mode === 'tune' ? (this.#options.tuner ?? Autotuner.shared(gpu)) : undefined;
    const chooseVariant = async (problem: GemmProblem, kind: 'gemm' | 'conv'): Promise<GemmVariant> => {
      if (typeof mode === 'object') return mode;
      if (tuner) return tuner.choose({ kind, M: problem.M, N: problem.N, K: problem.K });
      return defaultVariant(problem, target);
    };
    const limits = gpu.device.limits;
    const maxBindingBytes = Math.min(
      limits.maxStorageBufferBindingSize,
      this.#options.maxBindingBytes ?? limits.maxStorageBufferBindingSize,
    );
    const denseKernel = this.#options.denseKernel ?? (target.software ? 'dot' : 'gemv');
    const lowered = await lowerGraph(graph, {
      chooseVariant,
      denseKernel,
      maxBindingBytes,
      maxWorkgroupsPerDimension: limits.maxComputeWorkgroupsPerDimension,
      onStep: (step) => {
        // The step's compile is issued before its weights upload, so the driver compiles while
        // the host copies; a pipeline another session of this context compiled is a cache hit.
        startPipelines(gpu, [step.program]);
        uploadConstants(step, this.#constants);
        releaseWeights?.(step.node);
      },
    });
    releaseWeights?.(undefined);
    const plan = await Plan.compile(gpu, graph, lowered, this.#constants, {
      packFeedsAndOutputs: true,
      maxBindingBytes,
      shareMemoryWith: this.#memoryHost,
    });
    this.#adopt(plan);
    return plan;
  }

  /**
   * Keeps one set of activation buffers where it can: a plan that binds the host's is done; one
   * of the host's schedule with a larger value (a larger batch) becomes the host, and the plans
   * on the old host's buffers are released (compiled again, onto the new host, when asked for).
   * A plan whose steps differ (a GEMM variant chosen for its sizes, say) keeps buffers of its own.
   */
  #adopt(plan: Plan): void {
    this.#compiledPlans.add(plan);
    const host = this.#memoryHost;
    if (plan.memoryOwner !== plan) return;
    if (!host) {
      this.#memoryHost = plan;
      return;
    }
    // Without the model's host weights a released plan could not be compiled again.
    if (!this.#source || !plan.sameScheduleAs(host)) return;
    this.#memoryHost = plan;
    for (const old of this.#compiledPlans) {
      if (old.memoryOwner !== host) continue;
      old.dispose();
      this.#compiledPlans.delete(old);
    }
  }

  /**
   * The plan for a batch with a value over the binding limit: the batch run as slices through
   * the plan for the largest slice that fits (cached like any plan), once the graph is known to
   * compute each image apart from the others.
   */
  async #compileSliced(dims: number[][], full: Graph, overLimit: BindingLimitError): Promise<BatchSlicedPlan> {
    const batch = sharedBatch(dims);
    if (batch === undefined) throw overLimit;
    // Refused before anything is compiled for a slice.
    const batched = checkImagesIndependent(full, this.#sliceGraph(full, batch === 2 ? 1 : batch - 1));
    const { slicing, compiled: plan } = await compileLargestSlice(batch, overLimit, (images) =>
      this.#slicePlan(full, withBatch(dims, images)),
    );
    const lastPlan =
      slicing.lastImages === slicing.images ? plan : await this.#slicePlan(full, withBatch(dims, slicing.lastImages));
    const outputs = full.outputs.map((o) => ({
      name: o.name,
      dims: full.values.get(o.name)!.shape as number[],
      batched: batched.has(o.name),
    }));
    return new BatchSlicedPlan(slicing, plan, lastPlan, outputs);
  }

  /** The plan of one slice of a batch: never itself sliced, cached under its own dims. */
  async #slicePlan(full: Graph, dims: number[][]): Promise<Plan> {
    const key = JSON.stringify(dims);
    const known = await this.#plans.get(key)?.catch(() => undefined);
    if (known instanceof Plan && !known.disposed) return known;
    const graph = this.#sliceGraph(full, dims[0][0]);
    // Over the limit itself (sliced when run alone): compiling it again says by how much.
    if (known instanceof BatchSlicedPlan) return this.#compilePlan(graph);
    const plan = this.#compilePlan(graph);
    this.#plans.set(key, plan);
    plan.catch(() => this.#plans.delete(key));
    return plan;
  }

  /** The prepared model at another batch size (a model may declare a fixed batch). */
  #sliceGraph(full: Graph, images: number): Graph {
    const graph = setBatchSize(full, images);
    checkGraph(graph);
    return graph;
  }
}

/** A plan released because a plan of a larger batch took over the activation memory. */
function isReleased(plan: Plan | BatchSlicedPlan): boolean {
  return plan instanceof BatchSlicedPlan ? plan.plan.disposed || plan.lastPlan.disposed : plan.disposed;
}

/** What create() needs before it reads anything: bytes or a Graph, and a GPU context. */
function checkCreateArguments(model: unknown, options: unknown): void {
  if (!(model instanceof Uint8Array) && !(model instanceof Graph)) {
    const got =
      model === null ? 'null' : typeof model === 'object' ? (model.constructor?.name ?? 'object') : typeof model;
    throw new SessionUsageError(
      `Session.create takes the model as ONNX bytes (a Uint8Array) or a Graph (from loadModel or decodeModel); got ${got}`,
    );
  }
  const given = options as Partial<SessionOptions> | null | undefined;
  const gpu = given?.gpu;
  if (typeof gpu !== 'object' || gpu === null || !('device' in gpu))
    throw new SessionUsageError(
      'Session.create needs options.gpu, a GpuContext (createNodeGpuContext() in Node, GpuContext.create() elsewhere)',
    );
  const maxBindingBytes: unknown = given?.maxBindingBytes;
  if (maxBindingBytes !== undefined && !(Number.isInteger(maxBindingBytes) && (maxBindingBytes as number) >= 256))
    throw new SessionUsageError(
      `options.maxBindingBytes = ${String(maxBindingBytes)} is not accepted; accepted: an integer number of bytes, at least 256`,
    );
  const gemm: unknown = given?.gemm;
  const known = (v: unknown) =>
    typeof v === 'object' &&
    v !== null &&
    [...GEMM_VARIANTS, ...F16_GEMM_VARIANTS].some((g) => variantKey(g) === variantKey(v as GemmVariant));
  if (gemm !== undefined && gemm !== 'default' && gemm !== 'tune' && !known(gemm))
    throw new SessionUsageError(
      `options.gemm = ${JSON.stringify(gemm)} is not accepted; accepted: 'default', 'tune' or one of GEMM_VARIANTS or F16_GEMM_VARIANTS`,
    );
  const refusal =
    typeof gemm === 'object' ? variantRefusal(gemm as GemmVariant, gemmTarget(gpu as GpuContext)) : undefined;
  if (refusal)
    throw new SessionUsageError(`options.gemm: ${refusal}; 'default' or 'tune' chooses one this device runs`);
}

/**
 * Inputs with a dimension of 0 (declared so, or given so by inputShapes) are refused here: the
 * runtime does not run empty tensors (every kernel and buffer needs at least one element), and
 * run() accepts only positive dims, so such a session could never run.
 */
function refuseEmptyInputs(graph: Graph): void {
  for (const input of graph.feedInputs) {
    const shape = input.shape ?? [];
    if (shape.some((d) => d === 0)) {
      const dims = `[${shape.map((d) => (d === null ? '?' : String(d))).join(', ')}]`;
      throw new ModelError(
        `input '${input.name}' has dims ${dims}: a dimension of 0 makes it an empty tensor, which the runtime does not run (every input dimension must be at least 1)`,
        { file: graph.source },
      );
    }
  }
}

/**
 * Uploads the constants of a step as soon as the lowering makes it and empties their host data,
 * so that the packed weights of a model are never all on the host at once. A constant the step
 * binds twice keeps its data: the lowering uploads it again under a key of its own.
 */
function uploadConstants(step: StepSpec, constants: ConstantStore): void {
  const keys = step.refs.flatMap((ref) => ('constant' in ref ? [ref.constant.key] : []));
  for (const ref of step.refs) {
    if ('constant' in ref && keys.indexOf(ref.constant.key) === keys.lastIndexOf(ref.constant.key))
      constants.uploadAndRelease(ref.constant);
  }
}

/**
 * Refuses, before anything is uploaded, a model whose weights cannot fit: one larger than the
 * device's maxBufferSize, or all of them over options.weightBudgetBytes. (The packed forms the
 * runtime uploads are these sizes, rounded up to a few columns.)
 */
function checkWeightSizes(graph: Graph, options: SessionOptions): void {
  const maxBuffer = options.gpu.device.limits.maxBufferSize;
  let total = 0;
  let largest: { name: string; bytes: number } | undefined;
  for (const init of graph.initializers.values()) {
    if (!isFloatType(init.value.dtype)) continue; // shape constants: read on the host, never uploaded
    const bytes = sizeOf(init.value.dims) * 4;
    total += bytes;
    if (!largest || bytes > largest.bytes) largest = { name: init.name, bytes };
  }
  if (largest && largest.bytes > maxBuffer)
    throw new WeightsTooLargeError(
      `weight '${largest.name}' takes ${largest.bytes} bytes as float32, over this device's maxBufferSize of ${maxBuffer} bytes`,
      { file: graph.source, bytes: largest.bytes, limit: maxBuffer },
    );
  const budget = options.weightBudgetBytes;
  if (budget !== undefined && total > budget)
    throw new WeightsTooLargeError(
      `the model's weights take ${total} bytes as float32, over the weight budget of ${budget} bytes (options.weightBudgetBytes)`,
      { file: graph.source, bytes: total, limit: budget },
    );
}

/** A function giving a fresh copy of the model as given, to prepare for new input shapes. */
function sourceOf(model: Graph | Uint8Array, options: SessionOptions): () => Graph {
  if (model instanceof Uint8Array) return () => decodeModel(model, { file: options.file });
  const own = model.clone();
  return () => own.clone();
}

/**
 * Lets go of the host data of the graph's float initializers as the lowering passes their last
 * reader (called with the node of each step made, in graph order; undefined at the end),
 * keeping names, dtypes and dims. Graph outputs that are initializers keep theirs: the plan
 * returns them from the host.
 */
function weightReleaser(graph: Graph): (node: Node | undefined) => void {
  const position = new Map(graph.nodes.map((n, i) => [n, i]));
  const outputs = new Set(graph.outputs.map((o) => o.name));
  const lastReader = new Map<string, number>();
  graph.nodes.forEach((n, i) => {
    for (const name of n.inputs) if (graph.initializers.has(name)) lastReader.set(name, i);
  });
  const order = [...lastReader]
    .filter(([name]) => !outputs.has(name) && isFloatType(graph.initializers.get(name)!.value.dtype))
    .sort((a, b) => a[1] - b[1]);
  let next = 0;
  return (node) => {
    const at = node ? (position.get(node) ?? -1) : Infinity;
    for (; next < order.length && order[next][1] < at; next++) {
      const init = graph.initializers.get(order[next][0])!;
      init.value = { dtype: init.value.dtype, dims: init.value.dims, data: new Uint8Array(0) };
    }
  };
}
