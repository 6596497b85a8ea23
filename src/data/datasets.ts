// The Dataset contract and the views over it (subset, shuffle, split). Browser-safe; the file-backed
// datasets (Fashion-MNIST, image folders) are in ./node/.

import { checkImage, type Image } from './tensor-image.ts';
import { permutation } from './seed.ts';

export interface Sample {
  readonly image: Image;
  /** Class index, 0 ≤ label < number of classes. */
  readonly label: number;
}

/**
 * Indexed samples. `get` may return a promise (a dataset that fetches); the batcher awaits it
 * either way. `classes` is the class names (index = label) or just their count.
 */
export interface Dataset {
  readonly length: number;
  readonly classes: readonly string[] | number;
  get(index: number): Sample | Promise<Sample>;
}

export function classCount(dataset: Dataset): number {
  return typeof dataset.classes === 'number' ? dataset.classes : dataset.classes.length;
}

/** Throws a RangeError unless 0 ≤ index < length and an integer. */
export function checkIndex(index: number, length: number, what = 'dataset'): void {
  if (!Number.isInteger(index) || index < 0 || index >= length) {
    throw new RangeError(`${what}: index ${index} is out of range; valid indices are 0…${length - 1}`);
  }
}

/** Images and labels held in memory. Classes default to max(label) + 1. */
export function inMemoryDataset(
  images: readonly Image[],
  labels: ArrayLike<number>,
  classes?: readonly string[] | number,
): Dataset {
  if (images.length !== labels.length) {
    throw new RangeError(`inMemoryDataset: ${images.length} images but ${labels.length} labels`);
  }
  let max = -1;
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i];
    if (!Number.isInteger(l) || l < 0)
      throw new RangeError(`inMemoryDataset: label ${i} is ${l}; labels are integers ≥ 0`);
    max = Math.max(max, l);
  }
  images.forEach((image, i) => checkImage(image, `inMemoryDataset image ${i}`));
  const cls = classes ?? max + 1;
  const count = typeof cls === 'number' ? cls : cls.length;
  if (max >= count) throw new RangeError(`inMemoryDataset: label ${max} but only ${count} classes`);
  const labelCopy = Array.from(labels);
  return {
    length: images.length,
    classes: cls,
    get(index) {
      checkIndex(index, images.length, 'inMemoryDataset');
      return { image: images[index], label: labelCopy[index] };
    },
  };
}

/** The samples at `indices` (in that order; repeats allowed), renumbered 0…indices.length−1. */
export function subset(dataset: Dataset, indices: ArrayLike<number>): Dataset {
  const picked = Uint32Array.from(
    Array.from(indices, (i, k) => {
      if (!Number.isInteger(i) || i < 0 || i >= dataset.length) {
        throw new RangeError(`subset: indices[${k}] = ${i} is out of range for a dataset of ${dataset.length}`);
      }
      return i;
    }),
  );
  return {
    length: picked.length,
    classes: dataset.classes,
    get(index) {
      checkIndex(index, picked.length, 'subset');
      return dataset.get(picked[index]);
    },
  };
}

/** A fixed random reordering of the whole dataset (same seed, same order). */
export function shuffle(dataset: Dataset, seed: number): Dataset {
  return subset(dataset, permutation(dataset.length, seed));
}

/**
 * Disjoint parts covering the dataset: `sizes` are counts summing to its length, or fractions
 * summing to 1 (floors, the remainder handed out one each from the first part, like
 * torch.utils.data.random_split). With a seed the samples are shuffled first; without, the
 * parts are contiguous.
 */
export function split(dataset: Dataset, sizes: readonly number[], options: { seed?: number } = {}): Dataset[] {
  const n = dataset.length;
  const counts = partCounts(n, sizes);
  const order =
    options.seed === undefined ? Uint32Array.from({ length: n }, (_, i) => i) : permutation(n, options.seed);
  const parts: Dataset[] = [];
  let start = 0;
  for (const c of counts) {
    parts.push(subset(dataset, order.subarray(start, start + c)));
    start += c;
  }
  return parts;
}

function partCounts(n: number, sizes: readonly number[]): number[] {
  if (sizes.length === 0 || sizes.some((s) => !(s >= 0))) {
    throw new RangeError(`split: sizes must be non-negative numbers, got [${sizes.join(', ')}]`);
  }
  const total = sizes.reduce((a, b) => a + b, 0);
  if (sizes.every(Number.isInteger) && total === n) return [...sizes];
  if (Math.abs(total - 1) < 1e-9 && sizes.every((s) => s <= 1)) {
    const counts = sizes.map((f) => Math.floor(f * n));
    let rest = n - counts.reduce((a, b) => a + b, 0);
    for (let i = 0; rest > 0; i = (i + 1) % counts.length, rest--) counts[i]++;
    return counts;
  }
  throw new RangeError(
    `split: sizes [${sizes.join(', ')}] are neither counts summing to the dataset's ${n} nor fractions summing to 1`,
  );
}
