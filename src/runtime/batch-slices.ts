// A batch larger than one storage binding allows, run as slices of the batch. When a value of
// the plan for N images is over the binding limit (BindingLimitError), the graph is compiled
// again for the largest slice of b images whose every binding fits, split as evenly as the
// count of slices allows (N = 64 over a limit that admits 41 runs as two slices of 32), and
// the slices run one after another through that one plan, so its activations are reused: the
// memory is that of one slice, not of N/b. A last, smaller slice (N not a multiple of b) gets a
// plan of its own. Training (src/train/training-plan.ts) slices the same way and sums the
// slices' gradients; where its steps reduce over the batch (BatchNormalization in training
// mode) it holds the slices side by side and combines their partials instead.
//
// Slicing is only correct when every image is computed apart from the others (but for such
// reductions, which training combines): each value that depends on an input keeps the batch as
// its first axis. checkImagesIndependent compares the graph's shapes at N and at b to verify
// that (a Reshape or Flatten that folds the batch into another axis, a Transpose that moves it,
// a Concat along it all change a shape there) and refuses, naming the node, the ops that mix
// images without changing a shape (Softmax over axis 0). BatchNormalization with
// training_mode = 1 passes: inference refuses it anyway, and training runs any BatchNormalization
// whose scale or bias trains in training mode, whatever the attribute says.
import { ModelError } from '../graph/errors.ts';
import type { Graph, Node } from '../graph/ir.ts';
import { BindingLimitError } from './lower.ts';
import type { Plan } from './plan.ts';

/** A graph whose images are not computed independently, so a batch cannot run as slices. */
export class BatchSliceError extends ModelError {
  constructor(message: string, where: ConstructorParameters<typeof ModelError>[1]) {
    super(message, where);
    this.name = 'BatchSliceError';
  }
}

/**
 * A batch held as slices side by side (training through a step that reduces over the batch)
 * whose activations, every slice's at once, do not fit: `bytes` needed (at most), `limit`
 * allowed (a memory budget), or undefined when the device failed to allocate them.
 */
export class BatchMemoryError extends ModelError {
  readonly bytes: number;
  readonly limit: number | undefined;

  constructor(message: string, where: { file?: string; bytes: number; limit?: number }, options?: { cause?: unknown }) {
    super(message, { file: where.file });
    this.name = 'BatchMemoryError';
    this.bytes = where.bytes;
    this.limit = where.limit;
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/** How a batch of `batch` images splits: `count` slices of `images`, the last of `lastImages`. */
export interface BatchSlicing {
  batch: number;
  images: number;
  count: number;
  lastImages: number;
}

/** The even split of `batch` into slices of at most `largest` images. */
export function sliceBatch(batch: number, largest: number): BatchSlicing {
  const count = Math.ceil(batch / largest);
  const images = Math.ceil(batch / count);
  return { batch, images, count, lastImages: batch - (count - 1) * images };
}

/**
 * Compiles the largest even slice of `batch` that fits the binding limit, starting from the
 * value that did not fit at `batch` and shrinking by its overshoot (activations grow with the
 * batch) until `compile` succeeds. A value over the limit at one image (a weight, or a single
 * huge image, which would need row bands) makes it give up with the error at `batch`.
 */
export async function compileLargestSlice<T>(
  batch: number,
  overLimit: BindingLimitError,
  compile: (images: number) => Promise<T>,
): Promise<{ slicing: BatchSlicing; compiled: T }> {
  let error = overLimit;
  let tried = batch;
  for (;;) {
    const largest = Math.min(tried - 1, Math.floor((tried * error.limit) / error.bytes));
    if (largest < 1) throw overLimit;
    const slicing = sliceBatch(batch, largest);
    try {
      return { slicing, compiled: await compile(slicing.images) };
    } catch (e) {
      if (!(e instanceof BindingLimitError)) throw e;
      error = e;
      tried = slicing.images;
    }
  }
}

/** The first image and the count of images of slice `k`. */
export function sliceRows(slicing: BatchSlicing, k: number): { first: number; images: number } {
  return { first: k * slicing.images, images: k === slicing.count - 1 ? slicing.lastImages : slicing.images };
}

/** Slice `k`'s rows of every feed (views, no copy); every feed holds the whole batch. */
export function sliceFeeds(
  feeds: ReadonlyMap<string, Float32Array>,
  slicing: BatchSlicing,
  k: number,
): Map<string, Float32Array> {
  const { first, images } = sliceRows(slicing, k);
  return new Map(
    [...feeds].map(([name, data]) => {
      const per = data.length / slicing.batch;
      return [name, data.subarray(first * per, (first + images) * per)];
    }),
  );
}

/** The leading dimension every feed shares (the batch), or undefined when they differ or it is 1. */
export function sharedBatch(dims: readonly (readonly number[])[]): number | undefined {
  const batch = dims[0]?.[0];
  if (batch === undefined || batch < 2 || dims.some((d) => d[0] !== batch)) return undefined;
  return batch;
}

/** `dims` with the batch (the leading dimension of every feed) set to `images`. */
export function withBatch(dims: readonly (readonly number[])[], images: number): number[][] {
  return dims.map((d) => [images, ...d.slice(1)]);
}

/**
 * Refuses, naming the node, a graph in which some image's values depend on another image of
 * the batch. `full` and `slice` are the same model prepared for a batch of N and of b images
 * (N ≠ b). Returns the values that carry the batch as their first axis (graph inputs included).
 */
export function checkImagesIndependent(full: Graph, slice: Graph): Set<string> {
  const shapeIn = (g: Graph, name: string) => g.values.get(name)?.shape;
  const n = full.feedInputs[0]?.shape?.[0];
  const b = slice.feedInputs[0]?.shape?.[0];
  if (typeof n !== 'number' || typeof b !== 'number' || n === b)
    throw new Error(`internal: checkImagesIndependent needs two batch sizes, got ${n} and ${b}`);
  const show = (s: readonly unknown[] | undefined) => (s ? `[${s.join(', ')}]` : 'unknown');
  const batched = new Set(full.feedInputs.map((i) => i.name));
  for (const node of full.nodes) {
    const reads = node.inputs.some((i) => i && batched.has(i));
    for (const out of node.outputs) {
      if (!out) continue;
      const atN = shapeIn(full, out);
      const atB = shapeIn(slice, out);
      const keepsBatch =
        atN?.[0] === n &&
        atB?.[0] === b &&
        atN.length === atB.length &&
        atN.every((d, k) => k === 0 || (typeof d === 'number' && d === atB[k]));
      const unchanged = show(atN) === show(atB);
      if (reads ? keepsBatch : unchanged) {
        if (reads) batched.add(out);
        continue;
      }
      throw new BatchSliceError(
        `output '${out}' is ${show(atN)} at a batch of ${n} and ${show(atB)} at ${b}: ` +
          (reads
            ? 'it does not keep the images apart along the first axis (the batch folded into another axis, moved, concatenated or reduced)'
            : 'its shape depends on the batch size'),
        { file: full.source, node },
      );
    }
    const mixing = reads ? mixesImages(full, node) : undefined;
    if (mixing) throw new BatchSliceError(mixing, { file: full.source, node });
  }
  return batched;
}

/** Why a node that keeps the batch axis still mixes images (its result for one image depends on the others), or undefined. */
function mixesImages(graph: Graph, node: Node): string | undefined {
  const int = (name: string) => {
    const a = node.attributes[name];
    return a?.type === 'int' ? a.value : undefined;
  };
  if (node.opType === 'Softmax' || node.opType === 'LogSoftmax' || node.opType === 'Hardmax') {
    const rank = graph.values.get(node.inputs[0])?.shape?.length ?? 1;
    const axis = int('axis') ?? (graph.opset < 13 ? 1 : -1);
    if ((axis < 0 ? axis + rank : axis) === 0)
      return `${node.opType} over axis 0 normalizes across the images of the batch, which slices of it would change`;
  }
  return undefined;
}

export interface SlicedOutput {
  name: string;
  dims: number[];
  /** Whether its first axis is the batch (each slice writes its rows); else every slice computes the same. */
  batched: boolean;
}

/**
 * A batch run as slices through one plan (and one for a smaller last slice): the feeds' rows of
 * each slice go in, each slice's rows of the outputs come back. One submit per slice.
 */
export class BatchSlicedPlan {
  constructor(
    readonly slicing: BatchSlicing,
    /** The plan for a slice of slicing.images, and the one for the last slice. */
    readonly plan: Plan,
    readonly lastPlan: Plan,
    readonly outputs: readonly SlicedOutput[],
  ) {}

  get steps(): Plan['steps'] {
    return this.plan.steps;
  }

  get pipelines(): number {
    return this.plan.pipelines;
  }

  /** Bytes of activation buffers of the slice plans (one slice's worth, plus the last's when it has its own). */
  get peakActivationBytes(): number {
    const shared = this.lastPlan.memoryOwner === this.plan.memoryOwner;
    return this.plan.peakActivationBytes + (shared ? 0 : this.lastPlan.peakActivationBytes);
  }

  get peakLiveBytes(): number {
    return Math.max(this.plan.peakLiveBytes, this.lastPlan.peakLiveBytes);
  }

  async execute(feeds: Map<string, Float32Array>): Promise<Map<string, Float32Array>> {
    const { count } = this.slicing;
    const results = new Map<string, Float32Array>();
    for (const o of this.outputs) {
      if (o.batched) results.set(o.name, new Float32Array(o.dims.reduce((a, d) => a * d, 1)));
    }
    for (let k = 0; k < count; k++) {
      const plan = k === count - 1 ? this.lastPlan : this.plan;
      const { first, images: rows } = sliceRows(this.slicing, k);
      const out = await plan.execute(sliceFeeds(feeds, this.slicing, k));
      for (const o of this.outputs) {
        const data = out.get(o.name)!;
        if (!o.batched) {
          if (k === 0) results.set(o.name, data);
          continue;
        }
        results.get(o.name)!.set(data, first * (data.length / rows));
      }
    }
    return results;
  }

  /** Nothing of its own: the slice plans belong to the session's plan cache. */
  dispose(): void {}
}
