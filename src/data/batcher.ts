// One epoch of batches as an async iterator, assembling batch k+1 while the consumer works on
// batch k. Assembly yields to the event loop every few milliseconds, so it runs in the gaps where
// the consumer awaits the GPU instead of delaying the consumer's own synchronous work.
// Randomness is per sample, from (seed, epoch, dataset index): the same seed and epoch give
// the same batches whatever the prefetch timing. Browser-safe.

import type { Dataset, Sample } from './datasets.ts';
import { mixSeed, permutation, seededRandom } from './seed.ts';
import { describeSize, isFloatImage, toFloat, type FloatImage, type Image } from './tensor-image.ts';
import type { Rng, Transform } from './transforms.ts';

export interface Batch {
  /** N×C×H×W, sample-major. */
  readonly images: Float32Array;
  readonly labels: Uint32Array;
  /** N (the last batch can be short unless dropLast). */
  readonly size: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  /** Dataset indices of the N samples, in batch order. */
  readonly indices: Uint32Array;
}

export interface BatchOptions {
  readonly batchSize: number;
  /** Visit samples in a seeded random order (default false: 0, 1, 2, …). */
  readonly shuffle?: boolean;
  /** Seeds the order and every random transform (default 0). */
  readonly seed?: number;
  /** Which epoch this is: a new order and new augmentations per epoch (default 0). */
  readonly epoch?: number;
  /** Applied per sample with its own generator; a ByteImage result goes through toFloat ([0, 1]). */
  readonly transform?: Transform;
  /** Skip a final short batch (default false). */
  readonly dropLast?: boolean;
  /** Batches assembled ahead of the consumer (default 1; 0 assembles on demand). */
  readonly prefetch?: number;
}

/** The batches of one epoch. Stop early with `break`: prefetching stops too. */
export async function* batches(dataset: Dataset, options: BatchOptions): AsyncGenerator<Batch, void, undefined> {
  const { batchSize } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`batches: batchSize must be a positive integer, got ${batchSize}`);
  }
  const seed = options.seed ?? 0;
  const epoch = options.epoch ?? 0;
  const prefetch = options.prefetch ?? 1;
  if (!Number.isInteger(prefetch) || prefetch < 0) {
    throw new RangeError(`batches: prefetch must be an integer ≥ 0, got ${prefetch}`);
  }
  const order = epochOrder(dataset.length, options.shuffle ?? false, seed, epoch);
  const count = options.dropLast ? Math.floor(order.length / batchSize) : Math.ceil(order.length / batchSize);
  const state = { stopped: false };
  const start = (k: number): Promise<Batch> => {
    const p = assemble(dataset, order.subarray(k * batchSize, Math.min((k + 1) * batchSize, order.length)), k, {
      seed,
      epoch,
      transform: options.transform,
      state,
    });
    p.catch(() => {}); // surfaced when awaited; never an unhandled rejection meanwhile
    return p;
  };
  const queue: Promise<Batch>[] = [];
  let next = 0;
  try {
    for (let k = 0; k < count; k++) {
      if (queue.length === 0) queue.push(start(next++));
      const batch = await queue.shift()!;
      while (next < count && queue.length < prefetch) queue.push(start(next++));
      yield batch;
    }
  } finally {
    state.stopped = true;
  }
}

/** Dataset indices in the order an epoch visits them. */
export function epochOrder(length: number, shuffle: boolean, seed: number, epoch: number): Uint32Array {
  if (!shuffle) return Uint32Array.from({ length }, (_, i) => i);
  return permutation(length, mixSeed(ORDER_STREAM, seed, epoch));
}

/** The generator a sample's transform gets: a function of (seed, epoch, index) only. */
export function sampleRng(seed: number, epoch: number, index: number): Rng {
  return seededRandom(sampleSeed(seed, epoch, index));
}

/** The seed behind sampleRng, for code that builds the generator elsewhere (a worker thread). */
export function sampleSeed(seed: number, epoch: number, index: number): number {
  return mixSeed(SAMPLE_STREAM, seed, epoch, index);
}

// Distinct first parts keep the order's generator and the samples' generators unrelated.
const ORDER_STREAM = 1;
const SAMPLE_STREAM = 2;

const SLICE_MS = 4;

async function assemble(
  dataset: Dataset,
  indices: Uint32Array,
  batchIndex: number,
  ctx: { seed: number; epoch: number; transform?: Transform; state: { stopped: boolean } },
): Promise<Batch> {
  // Start after the consumer's current synchronous stretch, not inside it.
  await yieldToEventLoop();
  const images: FloatImage[] = [];
  const labels = new Uint32Array(indices.length);
  let sliceStart = now();
  for (let n = 0; n < indices.length; n++) {
    if (ctx.state.stopped) throw new Error('batches: iteration was stopped');
    const index = indices[n];
    let sample: Sample;
    let image: Image;
    try {
      sample = await dataset.get(index);
      image = sample.image;
      if (ctx.transform) image = ctx.transform(image, sampleRng(ctx.seed, ctx.epoch, index));
    } catch (e) {
      throw new Error(`batches: dataset index ${index}: ${(e as Error).message}`, { cause: e });
    }
    images.push(isFloatImage(image) ? image : toFloat(image));
    if (!Number.isInteger(sample.label) || sample.label < 0) {
      throw new RangeError(`batches: dataset index ${index} has label ${sample.label}; labels are integers ≥ 0`);
    }
    labels[n] = sample.label;
    if (now() - sliceStart > SLICE_MS) {
      await yieldToEventLoop();
      sliceStart = now();
    }
  }
  return stack(images, labels, indices, batchIndex);
}

function stack(images: FloatImage[], labels: Uint32Array, indices: Uint32Array, batchIndex: number): Batch {
  const first = images[0];
  const { channels, height, width } = first;
  const mismatched = images.findIndex((im) => im.channels !== channels || im.height !== height || im.width !== width);
  if (mismatched >= 0) {
    // Name the first index of each distinct size, so the user sees what differs and where.
    const sizes = new Map<string, number[]>();
    images.forEach((im, n) => {
      const key = describeSize(im);
      const list = sizes.get(key) ?? [];
      list.push(indices[n]);
      sizes.set(key, list);
    });
    const listing = [...sizes].map(
      ([size, idx]) =>
        `${size}: dataset ${idx.length === 1 ? 'index' : 'indices'} ${idx.slice(0, 5).join(', ')}${idx.length > 5 ? `, … (${idx.length})` : ''}`,
    );
    throw new Error(
      `batches: batch ${batchIndex} mixes image sizes after the transform — ${listing.join('; ')}. ` +
        `Add a resize or crop (e.g. steps.resize(w, h) or steps.centerCrop(s)) to the transform so every image has one size`,
    );
  }
  const per = channels * height * width;
  const out = new Float32Array(per * images.length);
  images.forEach((im, n) => out.set(im.data, n * per));
  return { images: out, labels, size: images.length, channels, height, width, indices: Uint32Array.from(indices) };
}

const now: () => number = typeof performance !== 'undefined' ? () => performance.now() : () => Date.now();

/** A macrotask turn: setImmediate where it exists (Node), else a MessageChannel, else a timer. */
function yieldToEventLoop(): Promise<void> {
  const g = globalThis as { setImmediate?: (cb: () => void) => unknown };
  if (typeof g.setImmediate === 'function') return new Promise((resolve) => g.setImmediate!(resolve));
  if (typeof MessageChannel !== 'undefined') {
    return new Promise((resolve) => {
      const channel = new MessageChannel();
      channel.port1.onmessage = () => {
        channel.port1.close();
        resolve();
      };
      channel.port2.postMessage(null);
    });
  }
  return new Promise((resolve) => setTimeout(resolve, 0));
}
