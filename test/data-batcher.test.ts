// Datasets views and the batcher: seeded order, coverage, per-sample augmentation independent of
// prefetch timing, prefetch overlap measured with an instrumented dataset, and size errors.
import { describe, expect, it } from 'vitest';
import {
  batches,
  compose,
  IMAGENET_TORCHVISION,
  inMemoryDataset,
  shuffle,
  split,
  steps,
  subset,
  toFloat,
  type Batch,
  type BatchOptions,
  type ByteImage,
  type Dataset,
  type Sample,
} from '../src/data/index.ts';
import { fashionMnist } from '../src/data/node/index.ts';
import { mulberry32 } from './helpers/random.ts';

function randomImage(width: number, height: number, seed: number, channels: 1 | 3 = 1): ByteImage {
  const rng = mulberry32(seed);
  return {
    width,
    height,
    channels,
    data: Uint8Array.from({ length: width * height * channels }, () => Math.floor(rng() * 256)),
  };
}

/** n random 6×5 gray images, label = index mod 3. */
function smallDataset(n: number): Dataset {
  return inMemoryDataset(
    Array.from({ length: n }, (_, i) => randomImage(6, 5, 1000 + i)),
    Array.from({ length: n }, (_, i) => i % 3),
  );
}

async function collect(ds: Dataset, options: BatchOptions): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of batches(ds, options)) out.push(b);
  return out;
}

const order = (bs: Batch[]) => bs.flatMap((b) => Array.from(b.indices));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('dataset views', () => {
  it('split by fractions and by counts: disjoint, covering, seeded', async () => {
    const ds = smallDataset(10);
    const [a, b] = split(ds, [0.7, 0.3], { seed: 3 });
    expect([a.length, b.length]).toEqual([7, 3]);
    const images = async (d: Dataset) =>
      Promise.all(Array.from({ length: d.length }, async (_, i) => (await d.get(i)).image));
    const all = [...(await images(a)), ...(await images(b))];
    const originals = await images(ds);
    // Every original image appears exactly once across the parts.
    expect(originals.map((im) => all.filter((x) => x === im).length)).toEqual(new Array(10).fill(1));
    const [a2] = split(ds, [0.7, 0.3], { seed: 3 });
    expect(await images(a2)).toEqual(await images(a));
    const [c, d] = split(ds, [2, 8]);
    expect((await c.get(1)).image).toBe(originals[1]); // no seed: contiguous
    expect((await d.get(0)).image).toBe(originals[2]);
    expect(split(ds, [1 / 3, 1 / 3, 1 / 3]).map((p) => p.length)).toEqual([4, 3, 3]);
    expect(() => split(ds, [0.5, 0.2])).toThrow(
      /neither counts summing to the dataset's 10 nor fractions summing to 1/,
    );
  });

  it('subset and shuffle index the underlying dataset; bad indices are named', async () => {
    const ds = smallDataset(6);
    const s = subset(ds, [5, 0, 5]);
    expect(s.length).toBe(3);
    expect((await s.get(0)).label).toBe(2);
    expect((await s.get(2)).image).toBe((await ds.get(5)).image);
    expect(() => subset(ds, [1, 6])).toThrow(/indices\[1\] = 6 is out of range for a dataset of 6/);
    expect(() => s.get(3)).toThrow(/index 3 is out of range; valid indices are 0…2/);
    const sh = shuffle(ds, 9);
    const labels = await Promise.all([0, 1, 2, 3, 4, 5].map(async (i) => (await sh.get(i)).label));
    expect(labels.sort()).toEqual([0, 0, 1, 1, 2, 2]);
    expect(await Promise.all([0, 1, 2].map(async (i) => (await shuffle(ds, 9).get(i)).image))).toEqual(
      await Promise.all([0, 1, 2].map(async (i) => (await sh.get(i)).image)),
    );
  });

  it('inMemoryDataset checks its inputs', () => {
    const im = randomImage(2, 2, 1);
    expect(() => inMemoryDataset([im, im], [0])).toThrow(/2 images but 1 labels/);
    expect(() => inMemoryDataset([im], [-1])).toThrow(/label 0 is -1/);
    expect(() => inMemoryDataset([im], [3], ['a', 'b'])).toThrow(/label 3 but only 2 classes/);
    expect(() => inMemoryDataset([{ ...im, data: new Uint8Array(3) }], [0])).toThrow(
      /data holds 3 values but 2×2×1 needs 4/,
    );
    expect(inMemoryDataset([im, im], [0, 4]).classes).toBe(5);
  });
});

describe('batches', () => {
  it('stacks NCHW floats and labels in dataset order without shuffle', async () => {
    const ds = smallDataset(10);
    const bs = await collect(ds, { batchSize: 4 });
    expect(bs.map((b) => b.size)).toEqual([4, 4, 2]);
    expect(order(bs)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const b = bs[1];
    expect([b.channels, b.height, b.width, b.images.length]).toEqual([1, 5, 6, 4 * 30]);
    for (let n = 0; n < b.size; n++) {
      const s = (await ds.get(4 + n)) as Sample;
      expect(Array.from(b.images.subarray(n * 30, (n + 1) * 30))).toEqual(
        Array.from(toFloat(s.image as ByteImage).data),
      );
      expect(b.labels[n]).toBe(s.label);
    }
    expect((await collect(ds, { batchSize: 4, dropLast: true })).map((x) => x.size)).toEqual([4, 4]);
  });

  it('shuffled order is a function of (seed, epoch) and covers every index once', async () => {
    const ds = smallDataset(23);
    const run = async (seed: number, epoch: number) =>
      order(await collect(ds, { batchSize: 5, shuffle: true, seed, epoch }));
    const a = await run(1, 0);
    expect(await run(1, 0)).toEqual(a);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 23 }, (_, i) => i));
    expect(a).not.toEqual(Array.from({ length: 23 }, (_, i) => i));
    const b = await run(1, 1);
    expect([...b].sort((x, y) => x - y)).toEqual(Array.from({ length: 23 }, (_, i) => i));
    expect(b).not.toEqual(a);
    expect(await run(2, 0)).not.toEqual(a);
    // dropLast drops the tail of the shuffled order, never a fixed index.
    const dropped = order(await collect(ds, { batchSize: 5, shuffle: true, seed: 1, epoch: 0, dropLast: true }));
    expect(dropped).toEqual(a.slice(0, 20));
  });

  it('random augmentations depend on (seed, epoch, index), not on batch size or prefetch', async () => {
    const ds = inMemoryDataset(
      Array.from({ length: 13 }, (_, i) => randomImage(10, 8, i, 3)),
      new Array(13).fill(0),
    );
    const transform = compose(
      steps.randomCrop(8, 8, { padding: 2 }),
      steps.randomHorizontalFlip(),
      steps.normalize(IMAGENET_TORCHVISION),
    );
    const bySample = async (options: Partial<BatchOptions>) => {
      const map = new Map<number, number[]>();
      for (const b of await collect(ds, { batchSize: 4, shuffle: true, seed: 5, transform, ...options })) {
        const per = b.channels * b.height * b.width;
        b.indices.forEach((index, n) => map.set(index, Array.from(b.images.subarray(n * per, (n + 1) * per))));
      }
      return [...map].sort((x, y) => x[0] - y[0]);
    };
    const reference = await bySample({ prefetch: 0 });
    expect(await bySample({ prefetch: 1 })).toEqual(reference);
    expect(await bySample({ prefetch: 3, batchSize: 5 })).toEqual(reference);
    expect(await bySample({ epoch: 1 })).not.toEqual(reference);
    // Augmentation really varies between samples drawn with different generators.
    const same = inMemoryDataset(new Array(8).fill(randomImage(10, 8, 77, 3)), new Array(8).fill(0));
    const [batch] = await collect(same, { batchSize: 8, transform });
    const outs = new Set(Array.from({ length: 8 }, (_, n) => batch.images.subarray(n * 192, (n + 1) * 192).join(',')));
    expect(outs.size).toBeGreaterThan(3);
  });

  it('prefetch assembles batch k+1 while the consumer awaits, after its synchronous part', async () => {
    const events: string[] = [];
    const base = smallDataset(12);
    const counting: Dataset = {
      length: base.length,
      classes: base.classes,
      get(i) {
        events.push(`get ${i}`);
        return base.get(i);
      },
    };
    const trace = async (prefetch: number) => {
      events.length = 0;
      let k = 0;
      for await (const b of batches(counting, { batchSize: 4, prefetch })) {
        events.push(`start ${k}`);
        expect(b.size).toBe(4);
        await sleep(15); // the GPU step
        events.push(`end ${k++}`);
      }
      return [...events];
    };
    const getsBetween = (ev: string[], from: string, to: string) =>
      ev
        .slice(ev.indexOf(from) + 1, ev.indexOf(to))
        .filter((e) => e.startsWith('get'))
        .map((e) => Number(e.slice(4)));

    const overlapped = await trace(1);
    // While batch 0 is being consumed, batch 1 (indices 4–7) is fetched; none before the consumer starts.
    expect(getsBetween(overlapped, 'start 0', 'end 0')).toEqual([4, 5, 6, 7]);
    expect(getsBetween(overlapped, 'start 1', 'end 1')).toEqual([8, 9, 10, 11]);
    expect(getsBetween(overlapped, 'start 2', 'end 2')).toEqual([]);
    expect(overlapped.filter((e) => e.startsWith('get')).length).toBe(12); // nothing fetched twice

    const onDemand = await trace(0);
    expect(getsBetween(onDemand, 'start 0', 'end 0')).toEqual([]);
    expect(getsBetween(onDemand, 'end 0', 'start 1')).toEqual([4, 5, 6, 7]);
  });

  it('awaits datasets whose get returns a promise, keeping the seeded order', async () => {
    const base = smallDataset(9);
    const jitter = mulberry32(3);
    const slow: Dataset = {
      length: base.length,
      classes: base.classes,
      async get(i) {
        await sleep(Math.floor(jitter() * 3));
        return base.get(i);
      },
    };
    const a = order(await collect(slow, { batchSize: 2, shuffle: true, seed: 4 }));
    expect(a).toEqual(order(await collect(base, { batchSize: 2, shuffle: true, seed: 4 })));
  });

  it('mixed image sizes in a batch name the dataset indices and sizes', async () => {
    const images = Array.from({ length: 8 }, (_, i) => (i === 5 ? randomImage(32, 30, i) : randomImage(28, 28, i)));
    const ds = inMemoryDataset(images, new Array(8).fill(0));
    const error = await collect(ds, { batchSize: 4 }).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toMatch(
      /batch 1 mixes image sizes after the transform — 1×28×28 \(C×H×W\): dataset indices 4, 6, 7; 1×30×32 \(C×H×W\): dataset index 5\. Add a resize or crop/,
    );
    // With a resize in the transform the same data batches.
    const fixed = await collect(ds, { batchSize: 4, transform: steps.resize(28, 28) });
    expect(fixed.map((b) => b.images.length)).toEqual([4 * 784, 4 * 784]);
  });

  it('errors from get or the transform name the index; stopping early stops prefetch', async () => {
    const base = smallDataset(12);
    let calls = 0;
    const failing: Dataset = {
      length: 12,
      classes: 3,
      get(i) {
        calls++;
        if (i === 6) throw new Error('boom');
        return base.get(i);
      },
    };
    await expect(collect(failing, { batchSize: 4 })).rejects.toThrow(/batches: dataset index 6: boom/);
    // Break after the first batch: batch 1 (which fails) was prefetched, its error never surfaces
    // as an unhandled rejection, and nothing past it is fetched.
    calls = 0;
    for await (const b of batches(failing, { batchSize: 4 })) {
      expect(b.size).toBe(4);
      break;
    }
    await sleep(20);
    expect(calls).toBeLessThanOrEqual(8);
    await expect(collect(base, { batchSize: 0 })).rejects.toThrow(/batchSize must be a positive integer, got 0/);
  });

  it('Fashion-MNIST batches into an ImageNet-shaped input', async () => {
    const test = subset(
      fashionMnist('test'),
      Array.from({ length: 64 }, (_, i) => i),
    );
    const transform = compose(steps.grayscaleToRgb(), steps.resize(32, 32), steps.normalize(IMAGENET_TORCHVISION));
    const bs = await collect(test, { batchSize: 32, shuffle: true, seed: 1, transform });
    expect(bs.map((b) => [b.size, b.channels, b.height, b.width])).toEqual([
      [32, 3, 32, 32],
      [32, 3, 32, 32],
    ]);
    expect(bs[0].images.length).toBe(32 * 3 * 32 * 32);
    // Gray in, so the three normalised planes are the same byte through three (mean, std) pairs.
    const plane = 32 * 32;
    const r = bs[0].images[5] * 0.229 + 0.485;
    const g = bs[0].images[plane + 5] * 0.224 + 0.456;
    expect(g).toBeCloseTo(r, 5);
  });
});
