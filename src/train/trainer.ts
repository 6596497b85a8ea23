// The training loop: fit / evaluate / predict over batches the caller supplies (src/data's
// batcher, or anything yielding NCHW float images and u32 labels), with a schedule per step,
// per-epoch loss, top-1 and top-5, early stopping, checkpoints through an injected save
// function (the engine stays free of file I/O) with resume, and export of the trained graph.
//
// Feature caching: when no trainable parameter sits before the cut (transfer cases 1 and 2) and
// the inputs are not augmented, the frozen body is a fixed function of each example: the trainer
// runs it once per example (an inference Session), keeps the features by dataset index, and
// trains the head on them. It decides this itself and says so (FitResult.featureCache, onLog).
import { encodeModel } from '../graph/codec.ts';
import { ModelError } from '../graph/errors.ts';
import type { Graph } from '../graph/ir.ts';
import { readLabels } from '../graph/model-metadata.ts';
import { extractSubgraph } from '../graph/subgraph.ts';
import { setBatchSize } from '../graph/surgery/batch.ts';
import type { GemmVariant } from '../kernels/gemm.ts';
import type { GpuContext } from '../kernels/gpu-context.ts';
import { LabelOutOfRangeError, NonFiniteLossError, type LossStats } from '../kernels/loss.ts';
import { ConstantStore } from '../runtime/plan.ts';
import { Session } from '../runtime/session.ts';
import { partitionGraph, type GraphPartition } from './autodiff.ts';
import {
  architectureFingerprint,
  CheckpointError,
  checkFingerprint,
  graphWeights,
  restoreGraphWeights,
  type Checkpoint,
  type JsonValue,
} from './checkpoint.ts';
import { createOptimizer, type Optimizer, type OptimizerConfig } from './optimizers.ts';
import { createSchedule, type ScheduleSpec } from './schedules.ts';
import { mixSeed, TrainingPlan } from './training-plan.ts';

/** What fit and evaluate consume: src/data's Batch fits this shape. */
export interface TrainBatch {
  /** N×C×H×W floats. */
  readonly images: Float32Array;
  readonly labels: Uint32Array;
  readonly size: number;
  /** Dataset indices of the samples (needed for feature caching). */
  readonly indices?: Uint32Array;
}

/**
 * The batches of one epoch (a new order per epoch is the source's business). `request.pixels`
 * false: the trainer holds cached features of every example it has seen and needs only labels
 * and indices, so a source that visits the same examples every epoch may skip decoding and yield
 * batches with empty `images` (a source may also ignore the request).
 */
export type BatchSource = (epoch: number, request?: BatchRequest) => AsyncIterable<TrainBatch> | Iterable<TrainBatch>;

export interface BatchRequest {
  readonly pixels: boolean;
}

/** fit/evaluate were given something that is not a BatchSource (say, one epoch's iterator). */
export class BatchSourceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BatchSourceError';
  }
}

/** What onStep reports after each optimizer step. */
export interface StepInfo {
  /** 0-based epoch. */
  epoch: number;
  /** Optimizer steps taken in total (1-based, including a resumed run's). */
  step: number;
  /** 1-based step within this epoch. */
  stepInEpoch: number;
  /** Steps in this epoch, when known (FitOptions.stepsPerEpoch, or a source that returns an array). */
  stepsInEpoch?: number;
  /** This step's mean loss. */
  loss: number;
  /** Running mean loss and top-1 accuracy over this epoch so far. */
  epochLoss: number;
  epochTop1: number;
  lr: number;
  /** Training images per second in this epoch so far. */
  imagesPerSecond: number;
  /** Training seconds of this epoch so far. */
  epochSeconds: number;
  /** This step's wall time: from asking the batch source for the batch to the end of the update. */
  stepSeconds: number;
  /** The part of stepSeconds spent awaiting the batch source (the GPU idle for want of data). */
  dataWaitSeconds: number;
}

export interface EpochMetrics {
  epoch: number;
  loss: number;
  top1: number;
  top5: number;
  samples: number;
  steps: number;
  lr: number;
  /** trainSeconds + valSeconds. */
  seconds: number;
  /** Training steps alone (with feature extraction when features are cached). */
  trainSeconds: number;
  /** Validation alone (0 without validation). */
  valSeconds: number;
  /** The part of trainSeconds spent awaiting the batch source (a resumed epoch's: this run's part alone). */
  dataWaitSeconds: number;
  valLoss?: number;
  valTop1?: number;
  valTop5?: number;
}

export interface TrainerCallbacks {
  onStep?(info: StepInfo): void;
  onEpochEnd?(metrics: EpochMetrics): void | Promise<void>;
  onLog?(message: string): void;
}

export interface FitOptions {
  epochs: number;
  optimizer: OptimizerConfig;
  /** Learning rate per optimizer step (default: constant optimizer.lr). */
  schedule?: ScheduleSpec;
  validation?: BatchSource;
  callbacks?: TrainerCallbacks;
  /** Stop when the monitored loss (validation if given, else training) has not improved by minDelta for `patience` epochs. */
  earlyStopping?: { patience: number; minDelta?: number };
  checkpoint?: {
    /** Called with a complete checkpoint (e.g. node's saveCheckpoint bound to a path). */
    save(ck: Checkpoint): void | Promise<void>;
    /** Every how many epochs (default 1). */
    everyEpochs?: number;
    /** Resume from this checkpoint: weights, optimizer moments, step and epoch. */
    resume?: Checkpoint;
  };
  /** The batches are augmented (random per epoch): disables feature caching. */
  augmented?: boolean;
  /** false: never cache features (default: cache when the graph allows it). */
  featureCache?: boolean;
  /** Stored in the checkpoint for the caller (seed of the data order, say). */
  seed?: number;
  /** Steps per epoch, for progress (onStep's stepsInEpoch). */
  stepsPerEpoch?: number;
  /**
   * Stop after the current step when aborted (Ctrl-C): a checkpoint of the state so far goes
   * through checkpoint.save (resuming continues mid-epoch) and fit returns interrupted: true.
   */
  signal?: AbortSignal;
}

export interface FitResult {
  history: EpochMetrics[];
  stoppedEarly: boolean;
  /** Optimizer steps taken in total (including a resumed run's). */
  steps: number;
  /** Whether the frozen body ran once per example and the head trained on cached features. */
  featureCache: boolean;
  /** Stopped through FitOptions.signal; the partial epoch is not in history. */
  interrupted: boolean;
}

/** Per image: the k most probable classes, most probable first. */
export interface Classification {
  top: { index: number; label: string; probability: number }[];
  /** Softmax over all classes. */
  probabilities: Float32Array;
}

export interface ClassifyOptions {
  /** How many classes per image (default 5, at most the class count). */
  topK?: number;
  /** Images per forward pass (default 8; the last chunk is padded). */
  batchSize?: number;
  /** Class names (default: the model's labels metadata, else the class index). */
  labels?: readonly string[];
}

export interface EvaluateResult {
  loss: number;
  top1: number;
  top5: number;
  samples: number;
}

/** Training stopped on a NaN/Inf loss; the weights of the last saved checkpoint are unaffected. */
export class TrainingDivergedError extends Error {
  constructor(
    message: string,
    readonly epoch: number,
    readonly step: number,
    readonly firstBadNode?: string,
  ) {
    super(message);
    this.name = 'TrainingDivergedError';
  }
}

export interface TrainerOptions {
  labelSmoothing?: number;
  gemm?: GemmVariant;
  /**
   * false: Dropout stays an identity in training. Default true: in training each Dropout draws
   * a mask from (seed, optimizer step), so a resumed run draws the same masks; evaluate and
   * predict never drop.
   */
  dropout?: boolean;
  /** The most bytes one storage binding may cover (TrainingPlanOptions.maxBindingBytes). */
  maxBindingBytes?: number;
  /** The most bytes of activations a batch held as slices may take (TrainingPlanOptions.memoryBudgetBytes). */
  memoryBudgetBytes?: number;
}

export class Trainer {
  readonly #gpu: GpuContext;
  /** The model as given (weights on the host updated by exportGraph / checkpoints). */
  #graph: Graph;
  readonly #options: TrainerOptions;
  readonly #constants: ConstantStore;
  readonly #plans = new Map<string, Promise<TrainingPlan>>();
  /** The plans of #plans once compiled, by the same keys. */
  readonly #compiledPlans = new Map<string, TrainingPlan>();
  /** Per kind of plan, the one of the largest batch: smaller batches' plans bind its activation buffers. */
  readonly #memoryHosts = new Map<string, TrainingPlan>();
  readonly #bodies = new Map<number, Promise<Session>>();
  readonly #input: string;
  readonly #preparedGraphs = new Map<number, Graph>();
  /** partitionGraph of each prepared graph: asked for at every step of a cached epoch. */
  readonly #partitions = new Map<number, GraphPartition>();
  #optimizer: Optimizer | undefined;
  #steps = 0;
  #disposed = false;

  private constructor(gpu: GpuContext, graph: Graph, options: TrainerOptions) {
    this.#gpu = gpu;
    this.#graph = graph;
    this.#options = options;
    this.#constants = new ConstantStore(gpu);
    const feeds = graph.feedInputs;
    if (feeds.length !== 1)
      throw new ModelError(`training needs a model with one image input; this one has ${feeds.length}`, {
        file: graph.source,
      });
    this.#input = feeds[0].name;
  }

  /** Checks the graph can train (rules for every op on the gradient path) by compiling one plan. */
  static async create(gpu: GpuContext, graph: Graph, options: TrainerOptions = {}): Promise<Trainer> {
    const trainer = new Trainer(gpu, graph.clone(), options);
    return trainer;
  }

  /** Optimizer steps taken so far. */
  get steps(): number {
    return this.#steps;
  }

  async fit(batches: BatchSource, options: FitOptions): Promise<FitResult> {
    this.#checkUsable();
    checkSource(batches, 'fit');
    const log = (m: string) => options.callbacks?.onLog?.(m);
    const schedule = createSchedule(options.schedule ?? { type: 'constant', lr: options.optimizer.lr });
    this.#optimizer?.dispose();
    this.#optimizer = await createOptimizer(this.#gpu, options.optimizer);
    let startEpoch = 0;
    let partial: PartialEpoch | undefined;
    let previous: JsonValue[] = [];
    const resume = options.checkpoint?.resume;
    if (resume) {
      this.#checkResume(resume);
      restoreGraphWeights(this.#graph, resume.weights);
      this.#resetPlans();
      if (resume.optimizer) this.#optimizer.loadState(resume.optimizer);
      this.#steps = resume.step;
      startEpoch = resume.epoch;
      partial = readPartial(resume.extra?.partial);
      if (Array.isArray(resume.extra?.history)) previous = resume.extra.history;
      log(
        partial
          ? `resumed in epoch ${resume.epoch + 1} after ${partial.batches} of its batches, step ${resume.step}`
          : `resumed after epoch ${resume.epoch}, step ${resume.step}`,
      );
    }
    const history: EpochMetrics[] = [];
    const extra = (more: { [key: string]: JsonValue } = {}) => ({
      history: [...previous, ...(history as unknown as JsonValue[])],
      seed: options.seed ?? null,
      ...more,
    });
    let best = Infinity;
    let since = 0;
    let stoppedEarly = false;
    let interrupted = false;
    let cacheUsed = false;
    const cache = new Map<number, Float32Array[]>();
    const valCache = new Map<number, Float32Array[]>();
    // The next epoch's batches, asked for two steps before this epoch ends so its first batches
    // load while those steps run (a loader starts an epoch only when asked; two: by then one that
    // reads two batches ahead has queued all of this epoch's): no wait at epoch starts.
    let ahead: EpochAhead | undefined;
    // Every batch of the last full epoch trained on cached features: later epochs need no pixels.
    let cacheComplete = false;
    let aheadPixels = true;
    let valCacheComplete = false;
    try {
      for (let epoch = startEpoch; epoch < options.epochs && !interrupted; epoch++) {
        const resumed = epoch === startEpoch ? partial : undefined;
        let trainMs = resumed ? resumed.trainSeconds * 1000 : 0;
        // performance.now: steps can be a few ms, under Date.now's resolution.
        let segment = performance.now();
        let waitMs = 0;
        let loss = resumed?.loss ?? 0;
        let top1 = resumed?.top1 ?? 0;
        let top5 = resumed?.top5 ?? 0;
        let samples = resumed?.samples ?? 0;
        let steps = resumed?.batches ?? 0;
        let lr = schedule.lrAt(this.#steps);
        let index = 0;
        let cachedEpoch = false;
        let everyBatchCached = true;
        const pixels = ahead ? aheadPixels : !cacheComplete;
        const epochBatches = ahead?.iterable ?? batches(epoch, { pixels });
        checkEpoch(epochBatches, 'fit');
        const started = ahead?.started;
        ahead = undefined;
        const stepsInEpoch = options.stepsPerEpoch ?? (Array.isArray(epochBatches) ? epochBatches.length : undefined);
        for await (const batch of started ? continueAhead(started) : epochBatches) {
          // A resumed mid-epoch run skips the batches the interrupted run already trained on.
          if (++index <= (resumed?.batches ?? 0)) continue;
          const stepWaitMs = performance.now() - segment;
          waitMs += stepWaitMs;
          const where = `epoch ${epoch + 1}, batch ${index}, step ${this.#steps + 1}`;
          this.#checkBatch(batch, where, !pixels);
          const mode = this.#cacheMode(batch, options);
          if (!mode) everyBatchCached = false;
          if (
            !ahead &&
            stepsInEpoch !== undefined &&
            index >= stepsInEpoch - 2 &&
            epoch + 1 < options.epochs &&
            !options.signal?.aborted
          ) {
            // Every batch of this epoch goes through the cache (the source gives the same kind of
            // batch throughout): by the next epoch every example's features are held, no pixels needed.
            aheadPixels = !(mode && everyBatchCached && !resumed);
            ahead = startAhead(batches(epoch + 1, { pixels: aheadPixels }));
          }
          if (!mode && batch.images.length === 0)
            throw new BatchSourceError(
              `${where}: the batch came without images, but this step needs them (it does not train on cached features)`,
            );
          if (mode && !cacheUsed) {
            cacheUsed = true;
            log(
              `feature caching: nothing before '${mode.partition.boundary.join("', '")}' trains and the inputs are not augmented, so the frozen body runs once per example and the head trains on cached features`,
            );
          }
          if (mode) cachedEpoch = true;
          const plan = await this.#plan(batch.size, mode ? 'head' : 'full');
          this.#checkLabels(batch, plan.classes, where);
          const feeds = mode
            ? await this.#features(batch, mode.partition, cache)
            : new Map([[this.#input, batch.images]]);
          lr = schedule.lrAt(this.#steps);
          let stats: LossStats;
          try {
            stats = await plan.step(
              feeds,
              batch.labels,
              this.#optimizer,
              lr,
              where,
              mixSeed(options.seed ?? 0, this.#steps),
            );
          } catch (e) {
            if (e instanceof NonFiniteLossError) {
              await plan.undoLastStep();
              throw await this.#diverged(e, batch, epoch);
            }
            throw e;
          }
          this.#steps++;
          steps++;
          loss += stats.loss * batch.size;
          top1 += stats.top1;
          top5 += stats.top5;
          samples += batch.size;
          const now = performance.now();
          const stepMs = now - segment;
          trainMs += stepMs;
          segment = now;
          options.callbacks?.onStep?.({
            epoch,
            step: this.#steps,
            stepInEpoch: steps,
            stepsInEpoch,
            loss: stats.loss,
            epochLoss: loss / samples,
            epochTop1: top1 / samples,
            lr,
            imagesPerSecond: samples / Math.max(1e-3, trainMs / 1000),
            epochSeconds: trainMs / 1000,
            stepSeconds: stepMs / 1000,
            dataWaitSeconds: stepWaitMs / 1000,
          });
          segment = performance.now(); // the callback's own time is not training time
          if (options.signal?.aborted) {
            interrupted = true;
            log(`stopped after step ${this.#steps} (epoch ${epoch + 1}, batch ${index})`);
            if (options.checkpoint) {
              const state: PartialEpoch = { batches: index, loss, top1, top5, samples, trainSeconds: trainMs / 1000 };
              await options.checkpoint.save(
                await this.checkpoint(
                  epoch,
                  extra({ partial: state as unknown as JsonValue }),
                  schedule.toJSON() as unknown as JsonValue,
                ),
              );
            }
            break;
          }
        }
        if (interrupted) break;
        if (samples === 0) throw new BatchSourceError(`fit: the batch source gave no batches for epoch ${epoch + 1}`);
        cacheComplete = cachedEpoch && everyBatchCached && !resumed;
        const metrics: EpochMetrics = {
          epoch: epoch + 1,
          loss: loss / samples,
          top1: top1 / samples,
          top5: top5 / samples,
          samples,
          steps,
          lr,
          seconds: trainMs / 1000,
          trainSeconds: trainMs / 1000,
          valSeconds: 0,
          dataWaitSeconds: waitMs / 1000,
        };
        if (options.validation) {
          const started = Date.now();
          // With a frozen body the validation images go through it once too (their own cache: never mixed with training indices).
          let v: EvaluateResult;
          if (cachedEpoch) {
            const pass = await this.#evaluateCached(options.validation, valCache, valCacheComplete);
            v = pass.result;
            valCacheComplete = pass.complete;
          } else v = await this.evaluate(options.validation);
          metrics.valSeconds = (Date.now() - started) / 1000;
          metrics.seconds += metrics.valSeconds;
          Object.assign(metrics, { valLoss: v.loss, valTop1: v.top1, valTop5: v.top5 });
        }
        history.push(metrics);
        log(
          `epoch ${metrics.epoch}: loss ${metrics.loss.toFixed(4)} top-1 ${(100 * metrics.top1).toFixed(1)}% top-5 ${(100 * metrics.top5).toFixed(1)}%` +
            (metrics.valLoss !== undefined
              ? ` | val loss ${metrics.valLoss.toFixed(4)} top-1 ${(100 * metrics.valTop1!).toFixed(1)}%`
              : '') +
            ` | ${metrics.trainSeconds.toFixed(1)} s training` +
            (options.validation ? `, ${metrics.valSeconds.toFixed(1)} s validation` : ''),
        );
        await options.callbacks?.onEpochEnd?.(metrics);
        const every = options.checkpoint?.everyEpochs ?? 1;
        if (
          options.checkpoint &&
          ((epoch + 1) % every === 0 || epoch + 1 === options.epochs || options.signal?.aborted)
        ) {
          await options.checkpoint.save(
            await this.checkpoint(epoch + 1, extra(), schedule.toJSON() as unknown as JsonValue),
          );
        }
        if (options.signal?.aborted && epoch + 1 < options.epochs) {
          interrupted = true;
          log(`stopped after epoch ${epoch + 1}`);
          break;
        }
        if (options.earlyStopping) {
          const monitored = metrics.valLoss ?? metrics.loss;
          if (monitored < best - (options.earlyStopping.minDelta ?? 0)) {
            best = monitored;
            since = 0;
          } else if (++since >= options.earlyStopping.patience) {
            stoppedEarly = true;
            log(`early stopping after epoch ${metrics.epoch}: no improvement for ${since} epochs`);
            break;
          }
        }
      }
    } finally {
      if (ahead?.started) dropAhead(ahead.started);
    }
    return { history, stoppedEarly, steps: this.#steps, featureCache: cacheUsed, interrupted };
  }

  /** Mean loss, top-1 and top-5 over the batches (forward only). */
  async evaluate(batches: BatchSource): Promise<EvaluateResult> {
    this.#checkUsable();
    checkSource(batches, 'evaluate');
    return this.#evaluateWith(batches, 'evaluate', (batch) => new Map([[this.#input, batch.images]]));
  }

  /** Evaluation of the head on features cached per dataset index (the frozen body runs once per example). */
  async #evaluateCached(
    batches: BatchSource,
    cache: Map<number, Float32Array[]>,
    labelsOnly: boolean,
  ): Promise<{ result: EvaluateResult; complete: boolean }> {
    let complete = true;
    // The partition of the graph at this batch's size (nodes differ per prepared size).
    const result = await this.#evaluateWith(
      batches,
      'head-evaluate',
      (batch) => {
        if (!batch.indices) complete = false;
        return batch.indices ? this.#features(batch, this.#partition(batch.size), cache) : undefined;
      },
      { pixels: !labelsOnly },
    );
    // Every validation example now has its features cached: later passes need no pixels.
    return { result, complete };
  }

  async #evaluateWith(
    batches: BatchSource,
    kind: 'evaluate' | 'head-evaluate',
    feedsOf: (
      batch: TrainBatch,
    ) => Map<string, Float32Array> | undefined | Promise<Map<string, Float32Array> | undefined>,
    request?: BatchRequest,
  ): Promise<EvaluateResult> {
    let loss = 0;
    let top1 = 0;
    let top5 = 0;
    let samples = 0;
    let index = 0;
    const epochBatches = request ? batches(0, request) : batches(0);
    checkEpoch(epochBatches, 'evaluate');
    for await (const batch of epochBatches) {
      const where = `evaluation, batch ${++index}`;
      this.#checkBatch(batch, where, request?.pixels === false);
      const cached = await feedsOf(batch);
      if (!cached && batch.images.length === 0)
        throw new BatchSourceError(
          `${where}: the batch came without images and without dataset indices to find cached features by`,
        );
      // A batch without dataset indices cannot use the cache: it runs through the whole model.
      const plan = await this.#plan(batch.size, cached ? kind : 'evaluate');
      this.#checkLabels(batch, plan.classes, where);
      const { stats } = await plan.evaluate(cached ?? new Map([[this.#input, batch.images]]), batch.labels);
      loss += stats!.loss * batch.size;
      top1 += stats!.top1;
      top5 += stats!.top5;
      samples += batch.size;
    }
    if (samples === 0) throw new BatchSourceError('evaluate: the batch source gave no batches');
    return { loss: loss / samples, top1: top1 / samples, top5: top5 / samples, samples };
  }

  /**
   * Logits [count, classes] for `count` NCHW images (the outputs before a final Softmax; the
   * graph's output when it has none). Runs in chunks of `batchSize` images (default: count, at
   * most 8), the last chunk padded, so every call reuses one compiled plan.
   */
  async predict(images: Float32Array, count?: number, batchSize?: number): Promise<Float32Array> {
    return (await this.#logits(images, count, batchSize)).logits;
  }

  async #logits(
    images: Float32Array,
    count: number | undefined,
    batchSize: number | undefined,
  ): Promise<{ logits: Float32Array; count: number; classes: number }> {
    this.#checkUsable();
    const per = this.#exampleFloats();
    const n = count ?? (per ? images.length / per : NaN);
    if (!Number.isInteger(n) || n < 1) {
      throw new ModelError(
        `predict: ${images.length} floats are not a whole number of images` +
          (per
            ? ` of ${per} floats (${this.#graph.feedInputs[0].shape?.slice(1).join('×')})`
            : '; pass the image count'),
        { file: this.#graph.source },
      );
    }
    this.#checkBatch({ images, labels: new Uint32Array(n), size: n }, 'predict');
    const size = batchSize ?? Math.min(n, 8);
    if (!Number.isInteger(size) || size < 1)
      throw new ModelError(`predict: batchSize must be a positive integer, got ${batchSize}`);
    const each = images.length / n;
    const plan = await this.#plan(size, 'evaluate');
    const out = new Float32Array(n * plan.classes);
    for (let start = 0; start < n; start += size) {
      const take = Math.min(size, n - start);
      let chunk = images.subarray(start * each, (start + take) * each);
      if (take < size) {
        const padded = new Float32Array(size * each);
        padded.set(chunk);
        chunk = padded;
      }
      const logits = (await plan.evaluate(new Map([[this.#input, chunk]]), undefined, true)).logits!;
      out.set(logits.subarray(0, take * plan.classes), start * plan.classes);
    }
    return { logits: out, count: n, classes: plan.classes };
  }

  /**
   * Per image, the topK most probable classes with their probabilities (softmax of the logits;
   * a graph that ends in Softmax gets it once, as predict returns what goes into it), named by
   * the model's labels when it has them. `images`: NCHW floats of one or more images, or a batch.
   */
  async classify(
    images: Float32Array | { images: Float32Array; size: number },
    options: ClassifyOptions = {},
  ): Promise<Classification[]> {
    const [data, count] = images instanceof Float32Array ? [images, undefined] : [images.images, images.size];
    const { logits, count: n, classes } = await this.#logits(data, count, options.batchSize);
    const labels = options.labels ?? readLabels(this.#graph);
    if (labels && labels.length !== classes) {
      throw new ModelError(`classify: ${labels.length} labels for a model with ${classes} outputs`, {
        file: this.#graph.source,
      });
    }
    const k = Math.min(options.topK ?? 5, classes);
    if (!Number.isInteger(k) || k < 1)
      throw new ModelError(`classify: topK must be a positive integer, got ${options.topK}`);
    const out: Classification[] = [];
    const all = softmaxRows(logits, classes).probabilities;
    for (let i = 0; i < n; i++) {
      const probabilities = Float32Array.from(all.subarray(i * classes, (i + 1) * classes));
      const order = rankClasses(probabilities).slice(0, k);
      out.push({
        top: order.map((index) => ({
          index,
          label: labels?.[index] ?? String(index),
          probability: probabilities[index],
        })),
        probabilities,
      });
    }
    return out;
  }

  /** The model with the trained weights read back into its initializers (trainable flags kept). */
  async exportGraph(): Promise<Graph> {
    this.#checkUsable();
    const g = this.#graph.clone();
    const plans = await Promise.all([...this.#plans.values()]);
    // Trainable parameters and state (BN running statistics) of every plan, from the shared buffers.
    const names = new Set<string>();
    for (const plan of plans) {
      for (const p of plan.parameters) names.add(p.name);
      for (const s of plan.state) names.add(s);
    }
    if (plans.length) {
      for (const [name, data] of await plans[0].readValues(names)) {
        const init = g.initializers.get(name)!;
        g.setInitializer(name, { dtype: 'float32', dims: [...init.value.dims], data }, init.trainable);
      }
    }
    return g;
  }

  /**
   * ONNX bytes of exportGraph() with a symbolic batch dimension (the input's own name for it,
   * else 'N'), so onnxruntime runs it at any batch size; metadata (labels, preprocessing) kept.
   * `batch`: a fixed size instead.
   */
  async exportModel(options: { batch?: number | string } = {}): Promise<Uint8Array> {
    const g = await this.exportGraph();
    const first = g.feedInputs[0].shape?.[0];
    return encodeModel(setBatchSize(g, options.batch ?? (typeof first === 'string' && first ? first : 'N')));
  }

  /** A checkpoint of the current weights, optimizer state and counters. */
  async checkpoint(epoch: number, extra?: { [key: string]: JsonValue }, schedule?: JsonValue): Promise<Checkpoint> {
    const g = await this.exportGraph();
    return {
      fingerprint: architectureFingerprint(g),
      weights: graphWeights(g),
      optimizer: this.#optimizer ? await this.#optimizer.state() : undefined,
      step: this.#steps,
      epoch,
      schedule,
      extra,
    };
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#resetPlans();
    this.#optimizer?.dispose();
    this.#constants.dispose();
  }

  // ---- internals ----

  #checkUsable(): void {
    if (this.#disposed) throw new Error('trainer disposed');
  }

  #resetPlans(): void {
    for (const p of this.#plans.values())
      p.then(
        (plan) => plan.dispose(),
        () => undefined,
      );
    for (const s of this.#bodies.values())
      s.then(
        (session) => session.dispose(),
        () => undefined,
      );
    this.#plans.clear();
    this.#compiledPlans.clear();
    this.#memoryHosts.clear();
    this.#bodies.clear();
    // New host weights must reach the GPU: parameter buffers are re-uploaded on first use.
    for (const name of this.#graph.initializers.keys()) this.#constants.forget(`const:${name}`);
    this.#preparedGraphs.clear();
    this.#partitions.clear();
  }

  #prepared(batch: number): Graph {
    let g = this.#preparedGraphs.get(batch);
    if (!g) this.#preparedGraphs.set(batch, (g = setBatchSize(this.#graph, batch)));
    return g;
  }

  /**
   * 'full': training over the whole graph; 'head': training on cached features; 'evaluate': the
   * evaluation forward; 'head-evaluate': the head's, on cached features.
   */
  #plan(batch: number, kind: 'full' | 'head' | 'evaluate' | 'head-evaluate'): Promise<TrainingPlan> {
    const key = `${batch}|${kind}`;
    let plan = this.#plans.get(key);
    if (!plan) {
      plan = (async () => {
        const full = this.#prepared(batch);
        const graph = kind === 'head' || kind === 'head-evaluate' ? headGraph(full, this.#partition(batch)) : full;
        const created = await TrainingPlan.create(this.#gpu, graph, {
          constants: this.#constants,
          labelSmoothing: this.#options.labelSmoothing,
          gemm: this.#options.gemm,
          mode: kind === 'evaluate' || kind === 'head-evaluate' ? 'evaluate' : 'train',
          dropout: this.#options.dropout,
          maxBindingBytes: this.#options.maxBindingBytes,
          memoryBudgetBytes: this.#options.memoryBudgetBytes,
          shareMemoryWith: this.#memoryHosts.get(kind),
        });
        this.#adoptPlan(key, kind, created);
        return created;
      })();
      this.#plans.set(key, plan);
      plan.catch(() => this.#plans.delete(key));
    }
    return plan;
  }

  /**
   * Keeps one set of activation buffers per kind of plan: a plan that binds the host's is done;
   * one of the host's schedule that did not fit (a larger batch) becomes the host, and the plans
   * on the old host's buffers are released (compiled again when asked for). A plan whose steps
   * differ from the host's (a GEMM variant chosen for its sizes, say) keeps buffers of its own.
   */
  #adoptPlan(key: string, kind: string, plan: TrainingPlan): void {
    this.#compiledPlans.set(key, plan);
    if (plan.memoryHost) return;
    const host = this.#memoryHosts.get(kind);
    if (host && !plan.sameScheduleAs(host)) return;
    this.#memoryHosts.set(kind, plan);
    if (!host) return;
    for (const [k, old] of this.#compiledPlans) {
      if (old !== host && old.memoryHost !== host) continue;
      old.dispose();
      this.#compiledPlans.delete(k);
      this.#plans.delete(k);
    }
  }

  /** GPU bytes the trainer's plans hold for activations, buffers shared by plans counted once. */
  get activationBytesHeld(): number {
    const owners = new Set([...this.#compiledPlans.values()].map((p) => p.memoryHost ?? p));
    return [...owners].reduce((sum, p) => sum + p.stats.activationBytes, 0);
  }

  /** Floats per example the model's image input takes (C·H·W). */
  #exampleFloats(): number | undefined {
    const dims = this.#graph.feedInputs[0].shape?.slice(1);
    if (!dims || dims.some((d) => typeof d !== 'number')) return undefined;
    return (dims as number[]).reduce((a, b) => a * b, 1);
  }

  /** A batch whose images do not hold size × C·H·W floats, or whose labels do not match its size, is refused naming where. */
  /** `labelsOnly`: the trainer asked for no pixels, so a batch may come with empty images. */
  #checkBatch(batch: TrainBatch, where: string, labelsOnly = false): void {
    const per = this.#exampleFloats();
    const dims = this.#graph.feedInputs[0].shape?.slice(1).join('×');
    if (!Number.isInteger(batch.size) || batch.size < 1)
      throw new ModelError(`${where}: batch size ${batch.size} is not a positive integer`);
    if (batch.labels.length !== batch.size)
      throw new ModelError(`${where}: ${batch.labels.length} labels for a batch of ${batch.size} images`);
    if (per !== undefined && batch.images.length !== batch.size * per && !(labelsOnly && batch.images.length === 0)) {
      const each = batch.images.length / batch.size;
      throw new ModelError(
        `${where}: the images hold ${batch.images.length} floats, but ${batch.size} images of ${dims} (${per} floats each) need ${batch.size * per}` +
          (Number.isInteger(each) ? ` (${each} floats per image on average)` : '') +
          `: the images are not all ${dims}; every image of a batch must be ${dims} (resize or crop them to the model's input size)`,
      );
    }
  }

  /** Labels outside [0, classes) are refused on the host, before any update, naming where. */
  #checkLabels(batch: TrainBatch, classes: number, where: string): void {
    let first = -1;
    let count = 0;
    batch.labels.forEach((l, i) => {
      if (l >= classes) {
        count++;
        if (first < 0) first = i;
      }
    });
    if (count) throw new LabelOutOfRangeError(first, batch.labels[first], classes, count, batch.size, where);
  }

  /** A checkpoint must come from this architecture and hold every weight with the right size. */
  #checkResume(ck: Checkpoint): void {
    if (!ck || !ck.fingerprint || !(ck.weights instanceof Map)) {
      throw new CheckpointError(
        'not-a-checkpoint',
        '',
        'resume: the object given is not a checkpoint (no fingerprint or weights)',
      );
    }
    // A checkpoint object built in code skips the file reader's checks: a step or epoch that is
    // not a count would resume nothing (1e300) or fail later in the schedule (-5).
    for (const [key, value] of [
      ['step', ck.step],
      ['epoch', ck.epoch],
    ] as const) {
      if (!Number.isSafeInteger(value) || value < 0)
        throw new CheckpointError('corrupt', '', `resume: ${key} is ${value}; a non-negative safe integer is needed`);
    }
    checkFingerprint(ck.fingerprint, architectureFingerprint(this.#graph));
    for (const [name, init] of this.#graph.initializers) {
      if (init.value.dtype !== 'float32') continue;
      const w = ck.weights.get(name);
      const want = init.value.dims.reduce((a, b) => a * b, 1);
      if (!w)
        throw new CheckpointError(
          'truncated',
          '',
          `resume: the checkpoint lacks weight '${name}' [${init.value.dims.join(', ')}]`,
        );
      if (w.data.length !== want)
        throw new CheckpointError(
          'truncated',
          '',
          `resume: weight '${name}' holds ${w.data.length} floats in the checkpoint, ${want} expected ([${init.value.dims.join(', ')}])`,
        );
    }
  }

  #partition(batch: number): GraphPartition {
    let p = this.#partitions.get(batch);
    if (!p) this.#partitions.set(batch, (p = partitionGraph(this.#prepared(batch))));
    return p;
  }

  #cacheMode(batch: TrainBatch, options: FitOptions): { partition: GraphPartition } | undefined {
    if (options.featureCache === false || options.augmented || !batch.indices) return undefined;
    const partition = this.#partition(batch.size);
    if (partition.frozen.length === 0 || partition.trainableReadsInput || partition.boundary.length === 0)
      return undefined;
    return { partition };
  }

  async #features(
    batch: TrainBatch,
    partition: GraphPartition,
    cache: Map<number, Float32Array[]>,
  ): Promise<Map<string, Float32Array>> {
    const n = batch.size;
    const indices = batch.indices!;
    if (![...indices].every((i) => cache.has(i))) {
      if (batch.images.length === 0) {
        const missing = [...indices].find((i) => !cache.has(i));
        throw new BatchSourceError(
          `a batch came without images (the trainer asked for labels only, holding the features of every example seen so far), but example ${missing} was never seen: ` +
            'a source that honours { pixels: false } must visit the same examples every epoch',
        );
      }
      let body = this.#bodies.get(n);
      if (!body) {
        const full = this.#prepared(n);
        const g = extractSubgraph(full, partition.frozen, { outputs: partition.boundary });
        body = Session.create(g, { gpu: this.#gpu, gemm: this.#options.gemm });
        this.#bodies.set(n, body);
      }
      const session = await body;
      const dims = session.inputShapes[this.#input] as number[];
      const out = await session.run({ [this.#input]: { dims, data: batch.images } });
      for (let k = 0; k < n; k++) {
        cache.set(
          indices[k],
          partition.boundary.map((name) => {
            const data = out[name].data;
            const per = data.length / n;
            return data.slice(k * per, (k + 1) * per);
          }),
        );
      }
    }
    return new Map(
      partition.boundary.map((name, b) => {
        const per = cache.get(indices[0])![b].length;
        const data = new Float32Array(per * n);
        for (let k = 0; k < n; k++) data.set(cache.get(indices[k])![b], k * per);
        return [name, data];
      }),
    );
  }

  /** A check pass: the batch through the current weights with every value kept, first non-finite op named. */
  async #diverged(e: NonFiniteLossError, batch: TrainBatch, epoch: number): Promise<TrainingDivergedError> {
    let culprit: string | undefined;
    let detail = '';
    try {
      if (!batch.images.every(Number.isFinite)) {
        detail = `the input batch itself holds NaN/Inf`;
      } else {
        const g = setBatchSize(await this.exportGraph(), batch.size);
        const part = partitionGraph(g);
        g.outputs = part.needed.flatMap((n) =>
          n.outputs.filter(Boolean).map((name) => ({ name, dtype: 'float32' as const })),
        );
        const session = await Session.create(g, { gpu: this.#gpu });
        const out = await session.run({
          [this.#input]: { dims: session.inputShapes[this.#input] as number[], data: batch.images },
        });
        session.dispose();
        const bad = part.needed.find((n) => n.outputs.some((o) => o && out[o] && !out[o].data.every(Number.isFinite)));
        if (bad) {
          culprit = `${bad.name} (${bad.opType})`;
          const weights = bad.inputs.filter(
            (i) => g.initializers.has(i) && !(g.initializers.get(i)!.value.data as Float32Array).every(Number.isFinite),
          );
          detail =
            `the first op with a non-finite output (check pass with the weights before the step, which are restored) is node '${bad.name}' (${bad.opType})` +
            (weights.length ? `, whose weights ${weights.map((w) => `'${w}'`).join(', ')} hold NaN/Inf` : '');
        }
      }
    } catch (check) {
      detail = `the check pass failed: ${(check as Error).message}`;
    }
    return new TrainingDivergedError(
      `training stopped at epoch ${epoch + 1}, step ${this.#steps + 1}: the softmax cross-entropy loss is not finite (${e.message})` +
        (detail ? `; ${detail}` : '') +
        '. The last saved checkpoint is intact; resume from it with a lower learning rate or gradient clipping',
      epoch + 1,
      this.#steps + 1,
      culprit,
    );
  }
}

/** fit in one call: a Trainer over `graph`, trained, its result and the trainer (for export). */
export async function fit(
  gpu: GpuContext,
  graph: Graph,
  batches: BatchSource,
  options: FitOptions & TrainerOptions,
): Promise<FitResult & { trainer: Trainer }> {
  const trainer = await Trainer.create(gpu, graph, options);
  const result = await trainer.fit(batches, options);
  return { ...result, trainer };
}

/** An epoch's batches asked for early; `started`: an async source's iterator with its first next() under way. */
interface EpochAhead {
  iterable: AsyncIterable<TrainBatch> | Iterable<TrainBatch>;
  started?: { iterator: AsyncIterator<TrainBatch>; first: Promise<IteratorResult<TrainBatch>> };
}

function startAhead(iterable: AsyncIterable<TrainBatch> | Iterable<TrainBatch>): EpochAhead {
  // checkEpoch reports a bad source when the epoch itself begins.
  if (!iterable || typeof iterable !== 'object' || !(Symbol.asyncIterator in iterable)) return { iterable };
  const iterator = iterable[Symbol.asyncIterator]();
  const first = iterator.next();
  first.catch(() => undefined); // surfaced when the epoch awaits it; never an unhandled rejection meanwhile
  return { iterable, started: { iterator, first } };
}

/** The started iterator as an iterable: the first result already asked for, then the rest; closed on break. */
async function* continueAhead(
  started: NonNullable<EpochAhead['started']>,
): AsyncGenerator<TrainBatch, void, undefined> {
  try {
    for (let r = await started.first; !r.done; r = await started.iterator.next()) yield r.value;
  } finally {
    await started.iterator.return?.();
  }
}

/** fit ended before the early epoch began (stopped, failed): the source may drop its work. */
function dropAhead(started: NonNullable<EpochAhead['started']>): void {
  Promise.resolve(started.iterator.return?.()).catch(() => undefined);
}

/** What an interrupted epoch had done, kept in its checkpoint so a resumed run continues it. */
interface PartialEpoch {
  batches: number;
  loss: number;
  top1: number;
  top5: number;
  samples: number;
  trainSeconds: number;
}

function readPartial(v: JsonValue | undefined): PartialEpoch | undefined {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const keys = ['batches', 'loss', 'top1', 'top5', 'samples', 'trainSeconds'] as const;
  if (!keys.every((k) => typeof v[k] === 'number'))
    throw new CheckpointError(
      'not-a-checkpoint',
      '',
      `resume: the checkpoint's partial epoch record is incomplete (needs ${keys.join(', ')})`,
    );
  return v as unknown as PartialEpoch;
}

const SOURCE_HINT =
  "pass a function of the epoch that returns that epoch's batches, e.g. fit((epoch) => batches(dataset, { batchSize: 8, shuffle: true, epoch }), options)";

/** fit(batches(...)) hands over one epoch's iterator: say what to pass instead of failing inside the loop. */
function checkSource(source: unknown, what: string): void {
  if (typeof source === 'function') return;
  const kind =
    source && typeof source === 'object' && (Symbol.asyncIterator in source || Symbol.iterator in source)
      ? "one epoch's batches (an iterable)"
      : source === null
        ? 'null'
        : typeof source;
  throw new BatchSourceError(
    `${what}: the first argument must be a BatchSource, a function (epoch) => batches, but got ${kind}; ${SOURCE_HINT}`,
  );
}

function checkEpoch(batches: unknown, what: string): void {
  if (batches && typeof batches === 'object' && (Symbol.asyncIterator in batches || Symbol.iterator in batches)) return;
  throw new BatchSourceError(
    `${what}: the batch source returned ${batches === null ? 'null' : typeof batches}, not an iterable of batches; ${SOURCE_HINT}`,
  );
}

/** Softmax of each row of [rows, classes] logits in float64 (max subtracted), with each row's log-sum-exp (cross-entropy = lse − logit[label]). */
export function softmaxRows(
  logits: ArrayLike<number>,
  classes: number,
): { probabilities: Float64Array; logSumExp: Float64Array } {
  const rows = logits.length / classes;
  const probabilities = new Float64Array(logits.length);
  const logSumExp = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[r * classes + c]);
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp(logits[r * classes + c] - max);
    for (let c = 0; c < classes; c++) probabilities[r * classes + c] = Math.exp(logits[r * classes + c] - max) / sum;
    logSumExp[r] = max + Math.log(sum);
  }
  return { probabilities, logSumExp };
}

/** Class indices of one row of scores, highest first (ties: lower index first). */
export function rankClasses(row: ArrayLike<number>): number[] {
  return Array.from({ length: row.length }, (_, i) => i).sort((a, b) => row[b] - row[a] || a - b);
}

/** The trainable part alone: fed by the boundary values, ending at the logits. */
function headGraph(full: Graph, partition: GraphPartition): Graph {
  return extractSubgraph(full, partition.trainable, { inputs: partition.boundary, outputs: [partition.logits] });
}
