// The image loader behind `graft train`, `eval` and `predict`: an image folder (torchvision's
// ImageFolder layout) or a list of files, decoded and preprocessed by a pool of worker threads,
// with batches assembled ahead of the consumer so the GPU does not wait for data.
//
// A file that does not decode (corrupt, truncated, not an image despite its extension) is
// skipped with a warning naming it, once, and counted in `skipped`; a batch holding it comes out
// one shorter, and later epochs leave it out.

import type { PreprocessSpec } from '../../graph/model-metadata.ts';
import { epochOrder, sampleSeed, type Batch } from '../batcher.ts';
import { DataError } from '../errors.ts';
import { evalTransform, trainTransform, type Augment } from '../preprocess.ts';
import { JPEG_DECODERS, type JpegDecoder } from './decode-native.ts';
import { listImageFolder, type ImageFolderListing, type ImageFolderOptions } from './image-folder.ts';
import { defaultWorkerCount, ImagePool, type PoolResult } from './image-pool.ts';

export interface SkippedFile {
  readonly file: string;
  readonly reason: string;
}

export interface ImageLoaderOptions {
  readonly preprocess: PreprocessSpec;
  /** Worker threads (default: one per core). */
  readonly workers?: number;
  /** Called once per skipped file (default: console.warn). */
  readonly onWarning?: (message: string) => void;
  /** 'sharp' (libjpeg-turbo, default) or 'jpeg-js' (pure JS). */
  readonly jpeg?: JpegDecoder;
}

export interface ImageFolderOpenOptions extends ImageLoaderOptions, ImageFolderOptions {
  /**
   * A model's labels: every class folder must be one of them, and label i means classes[i]
   * (the folder may hold a subset, e.g. for eval). Without it, classes are the folder names.
   */
  readonly classes?: readonly string[];
}

export interface ImageBatchOptions {
  readonly batchSize: number;
  /** Seeded random order per epoch (default false). */
  readonly shuffle?: boolean;
  /** Seeds the order and the augmentation (default 0). */
  readonly seed?: number;
  /** Training transform with this augmentation; absent: the evaluation transform. */
  readonly augment?: Augment;
  /** Skip a final short batch (default false). */
  readonly dropLast?: boolean;
  /** Visit only these dataset indices (one side of a train/validation split); default all. */
  readonly indices?: ArrayLike<number>;
  /** Batches decoded ahead of the one being consumed (default 2). */
  readonly prefetch?: number;
  /**
   * false: labels and indices only, `images` empty, nothing decoded (for a trainer that holds
   * every example's features already: the Trainer's BatchRequest). Default true.
   */
  readonly pixels?: boolean;
}

export interface ImageFolderSource extends ImageFolderListing {
  readonly root: string;
  readonly length: number;
  /** Files that did not decode so far, with why. */
  readonly skipped: readonly SkippedFile[];
  readonly preprocess: PreprocessSpec;
  /** One epoch's batches, N×3×crop×crop. Stop early with `break`. */
  batches(epoch: number, options: ImageBatchOptions): AsyncGenerator<Batch, void, undefined>;
  /** Ends the worker threads; the source cannot be used afterwards. */
  close(): Promise<void>;
}

/** Lists root/<class>/<image> (throws a DataError naming what is wrong) and prepares the pool. */
export async function openImageFolder(root: string, options: ImageFolderOpenOptions): Promise<ImageFolderSource> {
  let listing = listImageFolder(root, options, 'image folder');
  if (options.classes)
    listing = { ...listing, ...alignClasses(root, listing.classes, listing.labels, options.classes) };
  const loader = new Loader(options);
  const { files, labels } = listing;
  return {
    root,
    ...listing,
    length: files.length,
    skipped: loader.skipped,
    preprocess: options.preprocess,
    batches: (epoch, batchOptions) => loader.batches(files, labels, epoch, batchOptions),
    close: () => loader.close(),
  };
}

/**
 * Decodes and preprocesses files for prediction: `images` holds the loaded ones in order
 * (N×3×crop×crop, N = loaded.length); the others are in `skipped`.
 */
export async function loadImageFiles(
  paths: readonly string[],
  preprocess: PreprocessSpec,
  options: Omit<ImageLoaderOptions, 'preprocess'> = {},
): Promise<{ images: Float32Array; loaded: string[]; skipped: SkippedFile[] }> {
  if (paths.length === 0) throw new DataError('loadImageFiles: no image files given');
  const loader = new Loader({
    ...options,
    preprocess,
    workers: Math.min(options.workers ?? defaultWorkerCount(), paths.length),
  });
  try {
    const labels = new Uint32Array(paths.length);
    const images: Float32Array[] = [];
    const loaded: string[] = [];
    for await (const batch of loader.batches(paths, labels, 0, { batchSize: paths.length })) {
      images.push(batch.images);
      for (const i of batch.indices) loaded.push(paths[i]);
    }
    return { images: images[0] ?? new Float32Array(0), loaded, skipped: [...loader.skipped] };
  } finally {
    await loader.close();
  }
}

class Loader {
  readonly skipped: SkippedFile[] = [];
  private readonly bad = new Set<number>();
  private readonly spec: PreprocessSpec;
  private readonly warn: (message: string) => void;
  private readonly jpeg: JpegDecoder;
  private pool: ImagePool | undefined;
  private closed = false;

  constructor(options: ImageLoaderOptions) {
    this.spec = options.preprocess;
    this.warn = options.onWarning ?? ((m) => console.warn(m));
    this.jpeg = options.jpeg ?? 'sharp';
    // Bad settings fail here, once, not in the workers as one "skipped" file per image.
    if (!JPEG_DECODERS.includes(this.jpeg)) {
      throw new DataError(`JPEG decoder '${String(this.jpeg)}' is not known; accepted: ${JPEG_DECODERS.join(', ')}`);
    }
    evalTransform(this.spec);
    // Checks the count now, not at the first batch; threads start only when work arrives.
    this.pool = new ImagePool(options.workers);
  }

  async *batches(
    files: readonly string[],
    labels: Uint32Array,
    epoch: number,
    options: ImageBatchOptions,
  ): AsyncGenerator<Batch, void, undefined> {
    const { batchSize } = options;
    if (!Number.isInteger(batchSize) || batchSize < 1) {
      throw new DataError(`batches: batchSize must be a positive integer, got ${batchSize}`);
    }
    const prefetch = options.prefetch ?? 2;
    if (!Number.isInteger(prefetch) || prefetch < 0)
      throw new DataError(`batches: prefetch must be an integer ≥ 0, got ${prefetch}`);
    if (!Number.isInteger(epoch) || epoch < 0)
      throw new DataError(`batches: epoch must be an integer ≥ 0, got ${epoch}`);
    if (this.closed || !this.pool) throw new DataError('batches: the image loader was closed');
    if (options.augment) trainTransform(this.spec, options.augment);
    const pool = this.pool;
    const seed = options.seed ?? 0;
    const subset = options.indices ? checkIndices(options.indices, files.length) : undefined;
    const visit = epochOrder(subset ? subset.length : files.length, options.shuffle ?? false, seed, epoch);
    // Files known to be bad from earlier epochs are left out up front.
    const order = (subset ? visit.map((i) => subset[i]) : visit).filter((i) => !this.bad.has(i));
    const count = options.dropLast ? Math.floor(order.length / batchSize) : Math.ceil(order.length / batchSize);
    if (options.pixels === false) {
      yield* labelBatches(labels, order, count, batchSize, this.spec.crop);
      return;
    }
    const owner = {};
    const start = (k: number): Promise<PoolResult>[] =>
      Array.from(order.subarray(k * batchSize, Math.min((k + 1) * batchSize, order.length)), (index) => {
        const task = {
          path: files[index],
          jpeg: this.jpeg,
          spec: this.spec,
          augment: options.augment,
          seed: sampleSeed(seed, epoch, index),
        };
        const p = pool.run(task, owner);
        p.catch(() => {}); // surfaced when awaited; never an unhandled rejection meanwhile
        return p;
      });
    const queue: Promise<PoolResult>[][] = [];
    let next = 0;
    try {
      for (let k = 0; k < count; k++) {
        while (next < count && queue.length <= prefetch) queue.push(start(next++));
        const results = await Promise.all(queue.shift()!);
        const indices = order.subarray(k * batchSize, k * batchSize + results.length);
        const batch = this.assemble(files, labels, indices, results);
        if (batch) yield batch;
      }
    } finally {
      // Stopped early (break, an error): prefetched work nobody will read is dropped.
      pool.cancel(owner);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const pool = this.pool;
    this.pool = undefined;
    await pool?.close();
  }

  private assemble(
    files: readonly string[],
    labels: Uint32Array,
    indices: Uint32Array,
    results: PoolResult[],
  ): Batch | undefined {
    const kept: number[] = [];
    results.forEach((r, n) => {
      const index = indices[n];
      if (r.ok) kept.push(n);
      else if (!this.bad.has(index)) {
        this.bad.add(index);
        const file = files[index];
        const reason = r.reason.startsWith(`${file}: `) ? r.reason.slice(file.length + 2) : r.reason;
        this.skipped.push({ file, reason });
        this.warn(`skipped ${file}: ${reason}`);
      }
    });
    if (kept.length === 0) return undefined;
    const { crop } = this.spec;
    const per = 3 * crop * crop;
    const images = new Float32Array(per * kept.length);
    const batchLabels = new Uint32Array(kept.length);
    const batchIndices = new Uint32Array(kept.length);
    kept.forEach((n, slot) => {
      const r = results[n] as Extract<PoolResult, { ok: true }>;
      images.set(r.data, slot * per);
      batchLabels[slot] = labels[indices[n]];
      batchIndices[slot] = indices[n];
    });
    return {
      images,
      labels: batchLabels,
      size: kept.length,
      channels: 3,
      height: crop,
      width: crop,
      indices: batchIndices,
    };
  }
}

/** An epoch's batches without pixels: the labels and dataset indices in the epoch's order. */
function* labelBatches(
  labels: Uint32Array,
  order: Uint32Array,
  count: number,
  batchSize: number,
  crop: number,
): Generator<Batch, void, undefined> {
  for (let k = 0; k < count; k++) {
    const indices = order.slice(k * batchSize, Math.min((k + 1) * batchSize, order.length));
    yield {
      images: new Float32Array(0),
      labels: indices.map((i) => labels[i]),
      size: indices.length,
      channels: 3,
      height: crop,
      width: crop,
      indices,
    };
  }
}

function checkIndices(indices: ArrayLike<number>, length: number): Uint32Array {
  for (let n = 0; n < indices.length; n++) {
    const i = indices[n];
    if (!Number.isInteger(i) || i < 0 || i >= length) {
      throw new DataError(
        `batches: indices[${n}] is ${i}; expected an integer in 0…${length - 1} (the source has ${length} files)`,
      );
    }
  }
  return Uint32Array.from(indices);
}

/** Maps the folder's labels onto a model's class list; throws listing both when they do not fit. */
function alignClasses(
  root: string,
  found: readonly string[],
  labels: Uint32Array,
  expected: readonly string[],
): { classes: readonly string[]; labels: Uint32Array } {
  const position = new Map(expected.map((c, i) => [c, i]));
  const unknown = found.filter((c) => !position.has(c));
  if (unknown.length > 0) {
    throw new DataError(
      `image folder: ${root} has class folders the model does not know (${unknown.join(', ')}); ` +
        `folder classes: ${found.join(', ')}; model classes: ${expected.join(', ')}`,
    );
  }
  const map = found.map((c) => position.get(c)!);
  return { classes: expected, labels: labels.map((l) => map[l]) };
}
