// Makes the data sample `npm start` (graft demo) runs on when the full datasets are not installed:
// a seeded subset of Fashion-MNIST's target classes (those the source network never saw) from
// both splits, written as gzipped IDX files with the original labels, so that
// fashionMnist(split, { root: 'models-onnx/samples/fashion-mnist' }) reads it like the full set.
// The digits file is copied as it is. Re-running with the same seed writes identical bytes.
//
//   npx tsx scripts/make-samples.ts [--per-class-train N] [--per-class-test N] [--seed S] [--out DIR]
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { fashionMnist, FASHION_MNIST_ROOT, SKLEARN_DIGITS_PATH } from '../src/data/node/index.ts';
import { mixSeed, permutation } from '../src/data/seed.ts';
import { writeFileAtomic } from '../src/node/files.ts';
import { UsageError, parseCommandArgs, valueOptions } from '../src/cli/args.ts';
import { FASHION_TARGET_CLASSES } from '../src/cli/commands/demo.ts';

const USAGE = 'npx tsx scripts/make-samples.ts [--per-class-train N] [--per-class-test N] [--seed S] [--out DIR]';
const DEFAULTS = { train: 300, test: 100, seed: 2026, out: 'models-onnx/samples' };

function main(argv: string[]): void {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(
      `usage: ${USAGE}\n  writes a seeded Fashion-MNIST subset (classes ${FASHION_TARGET_CLASSES.join(', ')}) and a copy of sklearn's digits.csv.gz under --out (default ${DEFAULTS.out})\n`,
    );
    return;
  }
  const args = parseCommandArgs(argv, {
    options: { ...valueOptions('per-class-train', 'per-class-test', 'seed', 'out') },
    positional: 0,
    usage: USAGE,
  });
  const count = (key: 'per-class-train' | 'per-class-test' | 'seed', fallback: number) => {
    const raw = args.values[key];
    const v = raw === undefined ? fallback : Number(raw);
    if (!Number.isInteger(v) || v < 1) throw new UsageError(`--${key} must be a positive integer, got '${raw}'`);
    return v;
  };
  const perTrain = count('per-class-train', DEFAULTS.train);
  const perTest = count('per-class-test', DEFAULTS.test);
  const seed = count('seed', DEFAULTS.seed);
  const out = args.values.out ?? DEFAULTS.out;
  if (!existsSync(FASHION_MNIST_ROOT))
    throw new UsageError(`${FASHION_MNIST_ROOT} not found: apt-get install dataset-fashion-mnist`);
  if (!existsSync(SKLEARN_DIGITS_PATH))
    throw new UsageError(`${SKLEARN_DIGITS_PATH} not found: apt-get install python3-sklearn`);

  const folder = join(out, 'fashion-mnist');
  mkdirSync(folder, { recursive: true });
  for (const [split, prefix, per] of [
    ['train', 'train', perTrain],
    ['test', 't10k', perTest],
  ] as const) {
    const data = fashionMnist(split);
    const picked = pickPerClass(data.labels, per, mixSeed(seed, split === 'train' ? 1 : 2));
    const side = 28;
    const pixels = new Uint8Array(picked.length * side * side);
    picked.forEach((index, k) =>
      pixels.set(data.pixels.subarray(index * side * side, (index + 1) * side * side), k * side * side),
    );
    const labels = Uint8Array.from(picked, (i) => data.labels[i]);
    writeFileAtomic(
      join(folder, `${prefix}-images-idx3-ubyte.gz`),
      gzipSync(idxUint8([picked.length, side, side], pixels), { level: 9 }),
    );
    writeFileAtomic(
      join(folder, `${prefix}-labels-idx1-ubyte.gz`),
      gzipSync(idxUint8([picked.length], labels), { level: 9 }),
    );
    process.stdout.write(
      `${folder}/${prefix}-*: ${picked.length} images (${per} per class of ${FASHION_TARGET_CLASSES.join(', ')})\n`,
    );
  }
  const digitsCopy = join(out, 'digits.csv.gz');
  writeFileAtomic(digitsCopy, readFileSync(SKLEARN_DIGITS_PATH));
  process.stdout.write(`${digitsCopy}: copied from ${SKLEARN_DIGITS_PATH}\n`);
}

/** `per` indices of each target class, seeded, returned in ascending (original file) order. */
function pickPerClass(labels: Uint8Array, per: number, seed: number): number[] {
  const order = permutation(labels.length, seed);
  const taken = new Map<number, number>(FASHION_TARGET_CLASSES.map((c) => [c, 0]));
  const picked: number[] = [];
  for (const i of order) {
    const c = labels[i];
    const n = taken.get(c);
    if (n === undefined || n >= per) continue;
    taken.set(c, n + 1);
    picked.push(i);
  }
  for (const [c, n] of taken) if (n < per) throw new UsageError(`class ${c} has only ${n} images; asked for ${per}`);
  return picked.sort((a, b) => a - b);
}

/** An IDX file of unsigned bytes: magic 0x00000803-style header, big-endian dims, then the data. */
function idxUint8(dims: number[], data: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  const view = new DataView(out.buffer);
  out[2] = 0x08;
  out[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

try {
  main(process.argv.slice(2));
} catch (e) {
  process.stderr.write(`make-samples: ${(e as Error).message}\n`);
  process.exitCode = e instanceof UsageError ? 2 : 1;
}
