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
import { setBatchSize } from '../graph/surgery/batch.ts';
import type { GemmVariant } from '../kernels/gemm.ts';
import type { GpuContext } from '../kernels/gpu-context.ts';
import { LabelOutOfRangeError, NonFiniteLossError, type LossStats } from '../kernels/loss.ts';
import { ConstantStore } from '../runtime/plan.ts';
import { Session } from '../runtime/session.ts';
import { partitionGraph, type GraphPartition } from './autodiff.ts';
import { architectureFingerprint, CheckpointError, checkFingerprint, graphWeights, restoreGraphWeights, type Checkpoint, type JsonValue } from './checkpoint.ts';
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

/** The batches of one epoch (a new order per epoch is the source's business). */
export type BatchSource = (epoch: number) => AsyncIterable<TrainBatch> | Iterable<TrainBatch>;

export interface EpochMetrics {
  epoch: number;
  loss: number;
  top1: number;
  top5: number;
  samples: number;
  steps: number;
  lr: number;
  seconds: number;
  valLoss?: number;
  valTop1?: number;
  valTop5?: number;
}

export interface TrainerCallbacks {
  onStep?(info: { epoch: number; step: number; loss: number; lr: number }): void;
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
}

export interface FitResult {
  history: EpochMetrics[];
  stoppedEarly: boolean;
  /** Optimizer steps taken in total (including a resumed run's). */
  steps: number;
  /** Whether the frozen body ran once per example and the head trained on cached features. */
  featureCache: boolean;
}

export interface EvaluateResult {
  loss: number;
  top1: number;
  top5: number;
  samples: number;
}

/** Training stopped on a NaN/Inf loss; the weights of the last saved checkpoint are unaffected. */
export class TrainingDivergedError extends Error {
  constructor(message: string, readonly epoch: number, readonly step: number, readonly firstBadNode?: string) {
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
}

export class Trainer {
  readonly #gpu: GpuContext;
  /** The model as given (weights on the host updated by exportGraph / checkpoints). */
  #graph: Graph;
  readonly #options: TrainerOptions;
  readonly #constants: ConstantStore;
  readonly #plans = new Map<string, Promise<TrainingPlan>>();
  readonly #bodies = new Map<number, Promise<Session>>();
  readonly #input: string;
  readonly #preparedGraphs = new Map<number, Graph>();
  #optimizer: Optimizer | undefined;
  #steps = 0;
  #disposed = false;

  private constructor(gpu: GpuContext, graph: Graph, options: TrainerOptions) {
    this.#gpu = gpu;
    this.#graph = graph;
    this.#options = options;
    this.#constants = new ConstantStore(gpu);
    const feeds = graph.feedInputs;
    if (feeds.length !== 1) throw new ModelError(`training needs a model with one image input; this one has ${feeds.length}`, { file: graph.source });
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
    const log = (m: string) => options.callbacks?.onLog?.(m);
    const schedule = createSchedule(options.schedule ?? { type: 'constant', lr: options.optimizer.lr });
    this.#optimizer?.dispose();
    this.#optimizer = await createOptimizer(this.#gpu, options.optimizer);
    let startEpoch = 0;
    const resume = options.checkpoint?.resume;
    if (resume) {
      this.#checkResume(resume);
      restoreGraphWeights(this.#graph, resume.weights);
      this.#resetPlans();
      if (resume.optimizer) this.#optimizer.loadState(resume.optimizer);
      this.#steps = resume.step;
      startEpoch = resume.epoch;
      log(`resumed at epoch ${resume.epoch}, step ${resume.step}`);
    }
    const history: EpochMetrics[] = [];
    let best = Infinity;
    let since = 0;
    let stoppedEarly = false;
    let cacheUsed = false;
    const cache = new Map<number, Float32Array[]>();
    for (let epoch = startEpoch; epoch < options.epochs; epoch++) {
      const started = Date.now();
      let loss = 0;
      let top1 = 0;
      let top5 = 0;
      let samples = 0;
      let steps = 0;
      let lr = schedule.lrAt(this.#steps);
      let index = 0;
      for await (const batch of batches(epoch)) {
        const where = `epoch ${epoch + 1}, batch ${++index}, step ${this.#steps + 1}`;
        this.#checkBatch(batch, where);
        const mode = this.#cacheMode(batch, options);
        if (mode && !cacheUsed) {
          cacheUsed = true;
          log(`feature caching: nothing before '${mode.partition.boundary.join("', '")}' trains and the inputs are not augmented, so the frozen body runs once per example and the head trains on cached features`);
        }
        const plan = await this.#plan(batch.size, Boolean(mode) ? 'head' : 'full');
        this.#checkLabels(batch, plan.classes, where);
        const feeds = mode ? await this.#features(batch, mode.partition, cache) : new Map([[this.#input, batch.images]]);
        lr = schedule.lrAt(this.#steps);
        let stats: LossStats;
        try {
          stats = await plan.step(feeds, batch.labels, this.#optimizer, lr, where, mixSeed(options.seed ?? 0, this.#steps));
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
        options.callbacks?.onStep?.({ epoch, step: this.#steps, loss: stats.loss, lr });
      }
      const metrics: EpochMetrics = { epoch: epoch + 1, loss: loss / samples, top1: top1 / samples, top5: top5 / samples, samples, steps, lr, seconds: (Date.now() - started) / 1000 };
      if (options.validation) {
        const v = await this.evaluate(options.validation);
        Object.assign(metrics, { valLoss: v.loss, valTop1: v.top1, valTop5: v.top5 });
      }
      history.push(metrics);
      log(`epoch ${metrics.epoch}: loss ${metrics.loss.toFixed(4)} top-1 ${(100 * metrics.top1).toFixed(1)}% top-5 ${(100 * metrics.top5).toFixed(1)}%` +
        (metrics.valLoss !== undefined ? ` | val loss ${metrics.valLoss.toFixed(4)} top-1 ${(100 * metrics.valTop1!).toFixed(1)}%` : ''));
      await options.callbacks?.onEpochEnd?.(metrics);
      const every = options.checkpoint?.everyEpochs ?? 1;
      if (options.checkpoint && ((epoch + 1) % every === 0 || epoch + 1 === options.epochs)) {
        await options.checkpoint.save(await this.checkpoint(epoch + 1, { history: history as unknown as JsonValue, seed: options.seed ?? null }, schedule.toJSON() as unknown as JsonValue));
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
    return { history, stoppedEarly, steps: this.#steps, featureCache: cacheUsed };
  }

  /** Mean loss, top-1 and top-5 over the batches (forward only). */
  async evaluate(batches: BatchSource): Promise<EvaluateResult> {
    this.#checkUsable();
    let loss = 0;
    let top1 = 0;
    let top5 = 0;
    let samples = 0;
    let index = 0;
    for await (const batch of batches(0)) {
      const where = `evaluation, batch ${++index}`;
      this.#checkBatch(batch, where);
      const plan = await this.#plan(batch.size, 'evaluate');
      this.#checkLabels(batch, plan.classes, where);
      const { stats } = await plan.evaluate(new Map([[this.#input, batch.images]]), batch.labels);
      loss += stats!.loss * batch.size;
      top1 += stats!.top1;
      top5 += stats!.top5;
      samples += batch.size;
    }
    return { loss: loss / samples, top1: top1 / samples, top5: top5 / samples, samples };
  }

  /** Logits [batch, classes] for NCHW images of `batch` samples. */
  async predict(images: Float32Array, batch: number): Promise<Float32Array> {
    this.#checkUsable();
    this.#checkBatch({ images, labels: new Uint32Array(batch), size: batch }, 'predict');
    const plan = await this.#plan(batch, 'evaluate');
    return (await plan.evaluate(new Map([[this.#input, images]]), undefined, true)).logits!;
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

  /** ONNX bytes of exportGraph(). */
  async exportModel(): Promise<Uint8Array> {
    return encodeModel(await this.exportGraph());
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
    for (const p of this.#plans.values()) p.then((plan) => plan.dispose(), () => undefined);
    for (const s of this.#bodies.values()) s.then((session) => session.dispose(), () => undefined);
    this.#plans.clear();
    this.#bodies.clear();
    // New host weights must reach the GPU: parameter buffers are re-uploaded on first use.
    for (const name of this.#graph.initializers.keys()) this.#constants.forget(`const:${name}`);
    this.#preparedGraphs.clear();
  }

  #prepared(batch: number): Graph {
    let g = this.#preparedGraphs.get(batch);
    if (!g) this.#preparedGraphs.set(batch, (g = setBatchSize(this.#graph, batch)));
    return g;
  }

  /** 'full': training over the whole graph; 'head': training on cached features; 'evaluate': the evaluation forward. */
  #plan(batch: number, kind: 'full' | 'head' | 'evaluate'): Promise<TrainingPlan> {
    const key = `${batch}|${kind}`;
    let plan = this.#plans.get(key);
    if (!plan) {
      plan = (async () => {
        const full = this.#prepared(batch);
        const graph = kind === 'head' ? headGraph(full, partitionGraph(full)) : full;
        return TrainingPlan.create(this.#gpu, graph, {
          constants: this.#constants, labelSmoothing: this.#options.labelSmoothing, gemm: this.#options.gemm,
          mode: kind === 'evaluate' ? 'evaluate' : 'train', dropout: this.#options.dropout,
        });
      })();
      this.#plans.set(key, plan);
      plan.catch(() => this.#plans.delete(key));
    }
    return plan;
  }

  /** Floats per example the model's image input takes (C·H·W). */
  #exampleFloats(): number | undefined {
    const dims = this.#graph.feedInputs[0].shape?.slice(1);
    if (!dims || dims.some((d) => typeof d !== 'number')) return undefined;
    return (dims as number[]).reduce((a, b) => a * b, 1);
  }

  /** A batch whose images do not hold size × C·H·W floats, or whose labels do not match its size, is refused naming where. */
  #checkBatch(batch: TrainBatch, where: string): void {
    const per = this.#exampleFloats();
    const dims = this.#graph.feedInputs[0].shape?.slice(1).join('×');
    if (!Number.isInteger(batch.size) || batch.size < 1) throw new ModelError(`${where}: batch size ${batch.size} is not a positive integer`);
    if (batch.labels.length !== batch.size) throw new ModelError(`${where}: ${batch.labels.length} labels for a batch of ${batch.size} images`);
    if (per !== undefined && batch.images.length !== batch.size * per) {
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
      throw new CheckpointError('not-a-checkpoint', '', 'resume: the object given is not a checkpoint (no fingerprint or weights)');
    }
    checkFingerprint(ck.fingerprint, architectureFingerprint(this.#graph));
    for (const [name, init] of this.#graph.initializers) {
      if (init.value.dtype !== 'float32') continue;
      const w = ck.weights.get(name);
      const want = init.value.dims.reduce((a, b) => a * b, 1);
      if (!w) throw new CheckpointError('truncated', '', `resume: the checkpoint lacks weight '${name}' [${init.value.dims.join(', ')}]`);
      if (w.data.length !== want) throw new CheckpointError('truncated', '', `resume: weight '${name}' holds ${w.data.length} floats in the checkpoint, ${want} expected ([${init.value.dims.join(', ')}])`);
    }
  }

  #cacheMode(batch: TrainBatch, options: FitOptions): { partition: GraphPartition } | undefined {
    if (options.featureCache === false || options.augmented || !batch.indices) return undefined;
    const partition = partitionGraph(this.#prepared(batch.size));
    if (partition.frozen.length === 0 || partition.trainableReadsInput || partition.boundary.length === 0) return undefined;
    return { partition };
  }

  async #features(batch: TrainBatch, partition: GraphPartition, cache: Map<number, Float32Array[]>): Promise<Map<string, Float32Array>> {
    const n = batch.size;
    const indices = batch.indices!;
    if (![...indices].every((i) => cache.has(i))) {
      let body = this.#bodies.get(n);
      if (!body) {
        const full = this.#prepared(n);
        const g = full.clone();
        g.nodes = g.nodes.filter((_, i) => partition.frozen.includes(full.nodes[i]));
        g.outputs = partition.boundary.map((name) => ({ name, dtype: 'float32' as const, shape: full.values.get(name)?.shape }));
        body = Session.create(g, { gpu: this.#gpu, gemm: this.#options.gemm });
        this.#bodies.set(n, body);
      }
      const session = await body;
      const dims = session.inputShapes[this.#input] as number[];
      const out = await session.run({ [this.#input]: { dims, data: batch.images } });
      for (let k = 0; k < n; k++) {
        cache.set(indices[k], partition.boundary.map((name) => {
          const data = out[name].data;
          const per = data.length / n;
          return data.slice(k * per, (k + 1) * per);
        }));
      }
    }
    return new Map(partition.boundary.map((name, b) => {
      const per = cache.get(indices[0])![b].length;
      const data = new Float32Array(per * n);
      for (let k = 0; k < n; k++) data.set(cache.get(indices[k])![b], k * per);
      return [name, data];
    }));
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
        g.outputs = part.needed.flatMap((n) => n.outputs.filter(Boolean).map((name) => ({ name, dtype: 'float32' as const })));
        const session = await Session.create(g, { gpu: this.#gpu });
        const out = await session.run({ [this.#input]: { dims: session.inputShapes[this.#input] as number[], data: batch.images } });
        session.dispose();
        const bad = part.needed.find((n) => n.outputs.some((o) => o && out[o] && !out[o].data.every(Number.isFinite)));
        if (bad) {
          culprit = `${bad.name} (${bad.opType})`;
          const weights = bad.inputs.filter((i) => g.initializers.has(i) && !(g.initializers.get(i)!.value.data as Float32Array).every(Number.isFinite));
          detail = `the first op with a non-finite output (check pass with the weights before the step, which are restored) is node '${bad.name}' (${bad.opType})` +
            (weights.length ? `, whose weights ${weights.map((w) => `'${w}'`).join(', ')} hold NaN/Inf` : '');
        }
      }
    } catch (check) {
      detail = `the check pass failed: ${(check as Error).message}`;
    }
    return new TrainingDivergedError(
      `training stopped at epoch ${epoch + 1}, step ${this.#steps + 1}: the softmax cross-entropy loss is not finite (${e.message})` + (detail ? `; ${detail}` : '') +
        '. The last saved checkpoint is intact; resume from it with a lower learning rate or gradient clipping',
      epoch + 1,
      this.#steps + 1,
      culprit,
    );
  }
}

/** fit in one call: a Trainer over `graph`, trained, its result and the trainer (for export). */
export async function fit(gpu: GpuContext, graph: Graph, batches: BatchSource, options: FitOptions & TrainerOptions): Promise<FitResult & { trainer: Trainer }> {
  const trainer = await Trainer.create(gpu, graph, options);
  const result = await trainer.fit(batches, options);
  return { ...result, trainer };
}

/** The trainable part alone: fed by the boundary values, ending at the logits. */
function headGraph(full: Graph, partition: GraphPartition): Graph {
  const g = full.clone();
  g.nodes = g.nodes.filter((_, i) => partition.trainable.includes(full.nodes[i]));
  g.inputs = partition.boundary.map((name) => ({ name, dtype: 'float32' as const, shape: full.values.get(name)?.shape }));
  g.outputs = [{ name: partition.logits, dtype: 'float32', shape: full.values.get(partition.logits)?.shape }];
  return g;
}
