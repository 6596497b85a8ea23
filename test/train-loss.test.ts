// Softmax cross-entropy on the GPU against a float64 reference: batch-mean loss, dlogits, top-1
// and top-5 counts, label smoothing, numerical stability, and the flags for bad labels and NaN.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeGpuContext } from '../src/node/index.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import {
  LabelOutOfRangeError,
  NonFiniteLossError,
  prepareCrossEntropy,
  type CrossEntropyOptions,
  type LossStats,
} from '../src/kernels/loss.ts';
import { mulberry32, randomFloat32Array } from './helpers/random.ts';

/** The float64 oracle: the definitions, one sample at a time, no cleverness. */
function crossEntropyReference(logits: Float32Array, labels: Uint32Array, batch: number, classes: number, eps = 0) {
  const dlogits = new Float64Array(batch * classes);
  const rowLoss = new Float64Array(batch);
  let top1 = 0;
  let top5 = 0;
  for (let n = 0; n < batch; n++) {
    const z = Array.from(logits.subarray(n * classes, (n + 1) * classes));
    const y = labels[n];
    const m = Math.max(...z);
    const sum = z.reduce((s, v) => s + Math.exp(v - m), 0);
    const logp = z.map((v) => v - m - Math.log(sum));
    let loss = 0;
    for (let j = 0; j < classes; j++) {
      const t = (j === y ? 1 - eps : 0) + eps / classes;
      loss -= t * logp[j];
      dlogits[n * classes + j] = (Math.exp(logp[j]) - t) / batch;
    }
    rowLoss[n] = loss;
    // Rank: logits that beat the label's, ties going to the lower class index.
    let rank = 0;
    for (let j = 0; j < classes; j++) if (z[j] > z[y] || (z[j] === z[y] && j < y)) rank++;
    if (rank < 1) top1++;
    if (rank < 5) top5++;
  }
  const loss = rowLoss.reduce((a, b) => a + b, 0) / batch;
  return { loss, rowLoss, dlogits, top1, top5 };
}

function randomLabels(batch: number, classes: number, seed: number): Uint32Array {
  const rng = mulberry32(seed);
  return Uint32Array.from({ length: batch }, () => Math.floor(rng() * classes));
}

describe('softmax cross-entropy kernels', () => {
  let gpu: GpuContext;
  const storage = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;

  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  /** Uploads, runs the loss once, reads everything back. */
  async function run(options: CrossEntropyOptions, logits: Float32Array, labels: Uint32Array) {
    const { batch, classes } = options;
    const logitsBuffer = gpu.createBuffer('test logits', logits.byteLength, storage());
    const labelsBuffer = gpu.createBuffer('test labels', labels.byteLength, storage());
    const dlogitsBuffer = gpu.createBuffer('test dlogits', batch * classes * 4, storage());
    gpu.upload(logitsBuffer, logits);
    gpu.upload(labelsBuffer, labels);
    // Filled with garbage first, so a kernel that skips an element fails.
    gpu.upload(dlogitsBuffer, randomFloat32Array(batch * classes, 99, 1e3));
    const loss = await prepareCrossEntropy(gpu, options, {
      logits: { buffer: logitsBuffer },
      labels: { buffer: labelsBuffer },
      dlogits: options.gradient === false ? undefined : { buffer: dlogitsBuffer },
    });
    try {
      await gpu.scope('run cross-entropy', () => {
        const encoder = gpu.device.createCommandEncoder();
        loss.encode(encoder);
        gpu.device.queue.submit([encoder.finish()]);
      });
      const stats = await loss.readStats({ check: false });
      const dlogits = new Float32Array(await gpu.read(dlogitsBuffer));
      const rowLosses = await loss.readRowLosses();
      return { stats, dlogits, rowLosses };
    } finally {
      loss.destroy();
      for (const b of [logitsBuffer, labelsBuffer, dlogitsBuffer]) b.destroy();
    }
  }

  function expectMatches(
    stats: LossStats,
    dlogits: Float32Array,
    ref: ReturnType<typeof crossEntropyReference>,
    checkGrad = true,
  ) {
    expect(Math.abs(stats.loss - ref.loss)).toBeLessThanOrEqual(1e-5 * Math.abs(ref.loss) + 1e-6);
    expect(stats.top1).toBe(ref.top1);
    expect(stats.top5).toBe(ref.top5);
    expect(stats.badLabels).toBe(0);
    expect(stats.nonFiniteRows).toBe(0);
    expect(stats.lossNonFinite).toBe(false);
    if (!checkGrad) return;
    const scale = Math.max(...ref.dlogits.map(Math.abs));
    let worst = 0;
    for (let i = 0; i < ref.dlogits.length; i++) worst = Math.max(worst, Math.abs(dlogits[i] - ref.dlogits[i]));
    expect(worst / scale, 'max |dlogits − reference| / max |reference|').toBeLessThan(1e-5);
  }

  it('matches the reference for 7 samples × 1000 classes', async () => {
    const [batch, classes] = [7, 1000];
    const logits = randomFloat32Array(batch * classes, 1, 3);
    const labels = randomLabels(batch, classes, 2);
    const { stats, dlogits, rowLosses } = await run({ batch, classes }, logits, labels);
    const ref = crossEntropyReference(logits, labels, batch, classes);
    expectMatches(stats, dlogits, ref);
    expect(stats.batch).toBe(batch);
    for (let n = 0; n < batch; n++)
      expect(Math.abs(rowLosses[n] - ref.rowLoss[n])).toBeLessThan(1e-5 * ref.rowLoss[n] + 1e-6);
  });

  it('applies label smoothing (ε = 0.1) over 130 samples × 37 classes', async () => {
    const [batch, classes] = [130, 37]; // more samples than the reduce workgroup; C not a multiple of 64
    const logits = randomFloat32Array(batch * classes, 3, 2);
    const labels = randomLabels(batch, classes, 4);
    const { stats, dlogits } = await run({ batch, classes, labelSmoothing: 0.1 }, logits, labels);
    expectMatches(stats, dlogits, crossEntropyReference(logits, labels, batch, classes, 0.1));
  });

  it('handles one sample with 3 classes (top-5 is every class)', async () => {
    const logits = randomFloat32Array(3, 5);
    const labels = new Uint32Array([2]);
    const { stats, dlogits } = await run({ batch: 1, classes: 3, labelSmoothing: 0.25 }, logits, labels);
    const ref = crossEntropyReference(logits, labels, 1, 3, 0.25);
    expectMatches(stats, dlogits, ref);
    expect(stats.top5).toBe(1);
  });

  it('stays stable for logits with a large common offset and a large spread', async () => {
    const [batch, classes] = [5, 300];
    const logits = randomFloat32Array(batch * classes, 6, 30).map((v) => v + 1e4);
    const labels = randomLabels(batch, classes, 7);
    const { stats, dlogits } = await run({ batch, classes, labelSmoothing: 0.05 }, logits, labels);
    const ref = crossEntropyReference(logits, labels, batch, classes, 0.05);
    expect(Number.isFinite(stats.loss)).toBe(true);
    // A common offset of 1e4 costs f32 its last bits in z − m: 1e4 · 2^-24 ≈ 6e-4 absolute.
    expect(Math.abs(stats.loss - ref.loss)).toBeLessThan(2e-3);
    expect(stats.top1).toBe(ref.top1);
    expect(stats.top5).toBe(ref.top5);
    let worst = 0;
    for (let i = 0; i < ref.dlogits.length; i++) worst = Math.max(worst, Math.abs(dlogits[i] - ref.dlogits[i]));
    expect(worst).toBeLessThan(1e-4);
  });

  it('counts top-1 and top-5 from the label rank, ties going to the lower index', async () => {
    const classes = 8;
    // Per sample: logits, label, and whether it is top-1 / top-5.
    const cases: [number[], number, boolean, boolean][] = [
      [[0, 1, 2, 3, 4, 5, 6, 7], 7, true, true], // the max
      [[0, 1, 2, 3, 4, 5, 6, 7], 3, false, true], // rank 4
      [[0, 1, 2, 3, 4, 5, 6, 7], 2, false, false], // rank 5
      [[5, 5, 5, 5, 5, 5, 5, 5], 0, true, true], // all tied: index 0 wins
      [[5, 5, 5, 5, 5, 5, 5, 5], 5, false, false], // all tied: five lower indices beat it
      [[1, 9, 9, 0, 0, 0, 0, 0], 2, false, true], // tied with a lower index at the top
      [[5, 5, 5, 5, 5, 5, 5, 5], 7, false, false], // all tied, the last index: rank 7
      [[3, 3, 0, 0, 0, 0, 0, 0], 0, true, true], // tied with a higher index: still top-1
    ];
    const logits = Float32Array.from(cases.flatMap((c) => c[0]));
    const labels = Uint32Array.from(cases.map((c) => c[1]));
    const { stats } = await run({ batch: cases.length, classes, gradient: false }, logits, labels);
    expect(stats.top1).toBe(cases.filter((c) => c[2]).length);
    expect(stats.top5).toBe(cases.filter((c) => c[3]).length);
    const ref = crossEntropyReference(logits, labels, cases.length, classes);
    expect(stats.top1).toBe(ref.top1);
    expect(stats.top5).toBe(ref.top5);
    expect(Math.abs(stats.loss - ref.loss)).toBeLessThan(1e-5 * ref.loss);
  });

  it('gives the same loss without the gradient sweep', async () => {
    const [batch, classes] = [9, 101];
    const logits = randomFloat32Array(batch * classes, 8);
    const labels = randomLabels(batch, classes, 9);
    const withGrad = await run({ batch, classes }, logits, labels);
    const without = await run({ batch, classes, gradient: false }, logits, labels);
    expect(without.stats).toEqual(withGrad.stats);
  });

  it('flags labels outside [0, C) with the offending sample and label, and zeroes their gradient', async () => {
    const [batch, classes] = [6, 10];
    const logits = randomFloat32Array(batch * classes, 10);
    const labels = new Uint32Array([1, 2, 9, 10, 4, 0xffffffff]); // 10 and -1 are out of range
    const { stats, dlogits } = await run({ batch, classes }, logits, labels);
    expect(stats.badLabels).toBe(2);
    expect(stats.firstBadRow).toBe(3);
    expect(stats.firstBadLabel).toBe(10);
    expect([...dlogits.subarray(3 * classes, 4 * classes)]).toEqual(new Array(classes).fill(0));
    expect([...dlogits.subarray(5 * classes, 6 * classes)]).toEqual(new Array(classes).fill(0));

    const error = await checked({ batch, classes }, logits, labels, 'epoch 1, batch 4');
    expect(error).toBeInstanceOf(LabelOutOfRangeError);
    const e = error as LabelOutOfRangeError;
    expect([e.batchIndex, e.label, e.count, e.classes]).toEqual([3, 10, 2, 10]);
    expect(e.message).toMatch(/^epoch 1, batch 4: label 10 of sample 3 .*outside \[0, 10\).*0…9.*2 of 6 labels/);

    // A -1 "ignore" label alone: named as such.
    const minusOne = await checked(
      { batch: 2, classes },
      logits.subarray(0, 2 * classes),
      new Uint32Array([0xffffffff, 1]),
    );
    expect((minusOne as Error).message).toMatch(/label 4294967295 \(-1 as a signed integer\) of sample 0/);
  });

  it('flags NaN and infinite logits naming the first sample', async () => {
    const [batch, classes] = [4, 20];
    const logits = randomFloat32Array(batch * classes, 11);
    logits[2 * classes + 7] = NaN;
    logits[3 * classes + 1] = Infinity;
    const labels = randomLabels(batch, classes, 12);
    const { stats } = await run({ batch, classes }, logits, labels);
    expect(stats.nonFiniteRows).toBe(2);
    expect(stats.firstNonFiniteRow).toBe(2);
    const error = await checked({ batch, classes }, logits, labels);
    expect(error).toBeInstanceOf(NonFiniteLossError);
    expect((error as NonFiniteLossError).firstRow).toBe(2);
    expect((error as Error).message).toMatch(/sample 2 has non-finite logits/);

    // Finite logits whose spread overflows f32 in the loss.
    const huge = new Float32Array([3e38, -3e38, 0, 0]);
    const overflow = await checked({ batch: 1, classes: 4 }, huge, new Uint32Array([1]));
    expect(overflow).toBeInstanceOf(NonFiniteLossError);
  });

  async function checked(
    options: CrossEntropyOptions,
    logits: Float32Array,
    labels: Uint32Array,
    where?: string,
  ): Promise<unknown> {
    const logitsBuffer = gpu.createBuffer('logits', logits.byteLength, storage());
    const labelsBuffer = gpu.createBuffer('labels', labels.byteLength, storage());
    const dlogitsBuffer = gpu.createBuffer('dlogits', logits.byteLength, storage());
    gpu.upload(logitsBuffer, logits);
    gpu.upload(labelsBuffer, labels);
    const loss = await prepareCrossEntropy(gpu, options, {
      logits: { buffer: logitsBuffer },
      labels: { buffer: labelsBuffer },
      dlogits: { buffer: dlogitsBuffer },
    });
    try {
      const encoder = gpu.device.createCommandEncoder();
      loss.encode(encoder);
      gpu.device.queue.submit([encoder.finish()]);
      return await loss.readStats({ where }).then(
        () => null,
        (e: unknown) => e,
      );
    } finally {
      loss.destroy();
      for (const b of [logitsBuffer, labelsBuffer, dlogitsBuffer]) b.destroy();
    }
  }

  it('refuses bad options with a clear message', async () => {
    const b = gpu.createBuffer('x', 64, storage());
    await expect(
      prepareCrossEntropy(gpu, { batch: 0, classes: 10 }, { logits: { buffer: b }, labels: { buffer: b } }),
    ).rejects.toThrow(/batch must be a positive integer/);
    await expect(
      prepareCrossEntropy(
        gpu,
        { batch: 2, classes: 10, labelSmoothing: 1.5 },
        { logits: { buffer: b }, labels: { buffer: b } },
      ),
    ).rejects.toThrow(/labelSmoothing/);
    await expect(
      prepareCrossEntropy(gpu, { batch: 2, classes: 10 }, { logits: { buffer: b }, labels: { buffer: b } }),
    ).rejects.toThrow(/dlogits buffer is required/);
    b.destroy();
  });
});
