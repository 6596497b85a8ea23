// npm run pretrain: the project's own source network. No ImageNet weights can be downloaded on the
// project's machines, so the transfer-learning demo starts from a network pretrained here, from a
// seed, with the project's own Trainer: ResNet-50 at width 0.125 (the narrowest of the family that
// still trains robustly: BatchNormalization everywhere; fast enough on lavapipe for the demo's full
// fine-tuning runs) on 32×32 inputs, trained on five Fashion-MNIST classes. The other five are the
// demo's "similar data" target and are never read here.
//
// Writes the model (labels and preprocessing in its metadata, symbolic batch), labels.txt and
// MODEL_CARD.md beside it, each atomically.
import { accessSync, constants, statSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildArchitecture } from '../src/graph/architectures/index.ts';
import type { Graph } from '../src/graph/ir.ts';
import { writeLabels, writePreprocess, type PreprocessSpec } from '../src/graph/model-metadata.ts';
import { batches, type Dataset } from '../src/data/index.ts';
import {
  fashionMnist,
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_ROOT,
  type IdxImageDataset,
} from '../src/data/node/index.ts';
import { evalTransform, trainTransform } from '../src/data/preprocess.ts';
import { createNodeGpuContext, type GpuContext } from '../src/node/index.ts';
import { saveModelFile, writeFileAtomic } from '../src/node/files.ts';
import { Trainer, type EpochMetrics } from '../src/train/index.ts';

/** Fashion-MNIST labels the source network learns, in output order. */
export const SOURCE_CLASSES: readonly number[] = [0, 2, 3, 5, 8];
/** The classes pretraining never reads (the demo's "similar data" target). */
export const HELD_OUT_CLASSES: readonly number[] = [1, 4, 6, 7, 9];
export const SOURCE_LABELS: readonly string[] = SOURCE_CLASSES.map((c) => FASHION_MNIST_CLASSES[c]);

/** 28×28 gray → 32×32 (Pillow bilinear), replicated to 3 channels; mean and std of Fashion-MNIST's pixels on [0, 1]. */
export const SOURCE_PREPROCESS: PreprocessSpec = {
  name: 'fashion-gray',
  resize: 32,
  crop: 32,
  channelOrder: 'rgb',
  scale: 1 / 255,
  mean: [0.286, 0.286, 0.286],
  std: [0.353, 0.353, 0.353],
  grayscale: true,
};

export const SOURCE_ARCHITECTURE = { name: 'resnet50', width: 0.125, inputSize: 32 } as const;

export interface PretrainOptions {
  seed: number;
  epochs: number;
  /** Training images per class: the first this many of each source class in the train file (≤ 6000). */
  perClass: number;
  batch: number;
  lr: number;
  /** The model file; labels.txt and MODEL_CARD.md go beside it. */
  out: string;
  /** Folder with Fashion-MNIST's {train,t10k}-*-ubyte.gz (Debian's dataset-fashion-mnist). */
  data: string;
  /** t10k images per class to evaluate on: the first this many of each source class (default all 1000). */
  testPerClass?: number;
  /** The command line to record in the model card. */
  command?: string;
  log?: (line: string) => void;
}

export const DEFAULTS = {
  seed: 0,
  epochs: 2,
  perClass: 3000,
  batch: 32,
  lr: 0.002,
  out: 'models-onnx/source/source-net.onnx',
  data: FASHION_MNIST_ROOT,
} as const;

export interface PretrainResult {
  graph: Graph;
  history: EpochMetrics[];
  /** Top-1 on the evaluated t10k source-class images, overall and per class (label order). */
  top1: number;
  perClassTop1: number[];
  correct: number;
  evaluated: number;
  trainImages: number;
  seconds: number;
  trainSeconds: number;
  files: { model: string; labels: string; card: string };
}

export class PretrainError extends Error {
  override name = 'PretrainError';
}

/** Builds, trains, evaluates and writes the source network. */
export async function pretrain(options: PretrainOptions, gpu?: GpuContext): Promise<PretrainResult> {
  const started = performance.now();
  const log = options.log ?? (() => {});
  checkOptions(options);
  const out = resolve(options.out);
  checkWritable(dirname(out));
  // Missing data is refused before any GPU or model work, naming the file, the package and --data.
  const [train, test] = (['train', 'test'] as const).map((split) => {
    let data: IdxImageDataset;
    try {
      data = fashionMnist(split, { root: options.data });
    } catch (e) {
      // fashionMnist names the missing file; here the fix is the package or --data.
      const missing = (e as Error).message.split('. Install')[0];
      throw new PretrainError(
        `${missing}: install Debian's dataset-fashion-mnist (sudo apt-get install dataset-fashion-mnist) or pass --data DIR`,
      );
    }
    return split === 'train'
      ? sourceClasses(data, options.perClass, '--per-class')
      : sourceClasses(data, options.testPerClass ?? 1000, '--test-per-class');
  });

  const ownGpu = !gpu;
  gpu ??= await createNodeGpuContext();
  let trainer: Trainer | undefined;
  try {
    const graph = buildArchitecture(SOURCE_ARCHITECTURE.name, {
      ...SOURCE_ARCHITECTURE,
      classes: SOURCE_CLASSES.length,
      batch: 'batch',
      seed: options.seed,
    });
    log(
      `source network: ResNet-50 width ${SOURCE_ARCHITECTURE.width}, ${SOURCE_ARCHITECTURE.inputSize}×${SOURCE_ARCHITECTURE.inputSize}, ${graph.parameterCount((i) => i.trainable).toLocaleString('en-US')} trainable parameters, seed ${options.seed}`,
    );
    log(
      `data: ${train.length} training images (${options.perClass} per class of ${SOURCE_LABELS.join(', ')}), ${test.length} t10k test images; adapter ${gpu.info.description || gpu.info.device || gpu.info.vendor}`,
    );
    trainer = await Trainer.create(gpu, graph);
    const stepsPerEpoch = Math.floor(train.length / options.batch);
    const trainTf = trainTransform(SOURCE_PREPROCESS, { flip: true });
    const evalTf = evalTransform(SOURCE_PREPROCESS);
    const evalBatch = 100;
    // A short linear warm-up keeps Adam's first, poorly estimated steps from wrecking the He-initialised weights.
    const warmupSteps = Math.min(50, Math.floor((stepsPerEpoch * options.epochs) / 10));
    const trainStart = performance.now();
    let lastReport = trainStart;
    const fitted = await trainer.fit(
      (epoch) =>
        batches(train, {
          batchSize: options.batch,
          shuffle: true,
          seed: options.seed,
          epoch,
          transform: trainTf,
          dropLast: true,
          prefetch: 2,
        }),
      {
        epochs: options.epochs,
        optimizer: { type: 'adam', lr: options.lr },
        // Cosine decay to 1% over the whole run: the last epochs settle instead of bouncing.
        schedule: {
          type: 'cosine',
          lr: options.lr,
          totalSteps: stepsPerEpoch * options.epochs,
          minLr: options.lr / 100,
          warmup: { steps: warmupSteps },
        },
        augmented: true,
        seed: options.seed,
        validation: () => batches(test, { batchSize: evalBatch, transform: evalTf }),
        callbacks: {
          onStep: ({ epoch, step, loss }) => {
            const now = performance.now();
            if (now - lastReport < 30_000) return;
            lastReport = now;
            const inEpoch = step - epoch * stepsPerEpoch;
            log(
              `  epoch ${epoch + 1} step ${inEpoch}/${stepsPerEpoch} loss ${loss.toFixed(4)} (${((now - trainStart) / 1000).toFixed(0)} s)`,
            );
          },
          onEpochEnd: (m) => {
            log(
              `epoch ${m.epoch}/${options.epochs}: loss ${m.loss.toFixed(4)} train top-1 ${pct(m.top1)} | t10k loss ${m.valLoss!.toFixed(4)} top-1 ${pct(m.valTop1!)} | training ${m.trainSeconds.toFixed(0)} s, ${(m.samples / m.trainSeconds).toFixed(0)} img/s, evaluation ${m.valSeconds.toFixed(0)} s`,
            );
          },
        },
      },
    );
    const trainSeconds = (performance.now() - trainStart) / 1000;
    const { correct, perClass } = await classify(trainer, test, evalTf, evalBatch);
    const evaluated = test.length;
    const trained = await trainer.exportGraph();
    trained.modelDocString = `onnx-graft source network: ResNet-50 (torchvision layout) at width ${SOURCE_ARCHITECTURE.width}, ${SOURCE_ARCHITECTURE.inputSize}×${SOURCE_ARCHITECTURE.inputSize} inputs, pretrained by \`npm run pretrain\` (seed ${options.seed}) on Fashion-MNIST classes ${SOURCE_LABELS.join(', ')}; see MODEL_CARD.md`;
    writeLabels(trained, SOURCE_LABELS);
    writePreprocess(trained, SOURCE_PREPROCESS);
    const files = { model: out, labels: join(dirname(out), 'labels.txt'), card: join(dirname(out), 'MODEL_CARD.md') };
    saveModelFile(trained, files.model);
    writeFileAtomic(files.labels, new TextEncoder().encode(SOURCE_LABELS.join('\n') + '\n'));
    const result: PretrainResult = {
      graph: trained,
      history: fitted.history,
      top1: correct / evaluated,
      perClassTop1: perClass,
      correct,
      evaluated,
      trainImages: train.length,
      seconds: (performance.now() - started) / 1000,
      trainSeconds,
      files,
    };
    writeFileAtomic(files.card, new TextEncoder().encode(modelCard(options, result, gpu)));
    log(
      `t10k top-1 on the source classes: ${pct(result.top1)} (${correct} / ${evaluated}); per class ${SOURCE_LABELS.map((l, i) => `${l} ${pct(perClass[i])}`).join(', ')}`,
    );
    log(
      `wrote ${files.model} (${(statSync(files.model).size / 1e6).toFixed(2)} MB), ${files.labels}, ${files.card}; wall time ${result.seconds.toFixed(0)} s`,
    );
    return result;
  } finally {
    trainer?.dispose();
    if (ownGpu) gpu.dispose();
  }
}

/** The first `perClass` images of each source class, in file order, relabelled 0…4;
 * `fileIndices` says which images of the file they are. */
export function sourceClasses(
  data: IdxImageDataset,
  perClass: number,
  what: string,
): Dataset & { fileIndices: Uint32Array } {
  const picked: number[] = [];
  const counts = SOURCE_CLASSES.map(() => 0);
  for (let i = 0; i < data.length; i++) {
    const k = SOURCE_CLASSES.indexOf(data.labels[i]);
    if (k >= 0 && counts[k] < perClass) {
      counts[k]++;
      picked.push(i);
    }
  }
  const short = counts.findIndex((c) => c < perClass);
  if (short >= 0)
    throw new PretrainError(
      `${what} ${perClass}: the file holds only ${counts[short]} images of class '${SOURCE_LABELS[short]}'`,
    );
  return {
    length: picked.length,
    classes: SOURCE_LABELS,
    fileIndices: Uint32Array.from(picked),
    async get(index) {
      const sample = await data.get(picked[index]);
      return { image: sample.image, label: SOURCE_CLASSES.indexOf(sample.label) };
    },
  };
}

/** Correct predictions overall and per class, from the trainer's own forward pass. */
async function classify(
  trainer: Trainer,
  data: Dataset,
  transform: ReturnType<typeof evalTransform>,
  batchSize: number,
): Promise<{ correct: number; perClass: number[] }> {
  const hits = SOURCE_CLASSES.map(() => 0);
  const totals = SOURCE_CLASSES.map(() => 0);
  for await (const b of batches(data, { batchSize, transform })) {
    const logits = await trainer.predict(b.images, b.size);
    const k = logits.length / b.size;
    for (let n = 0; n < b.size; n++) {
      const row = logits.subarray(n * k, (n + 1) * k);
      const guess = row.indexOf(Math.max(...row));
      totals[b.labels[n]]++;
      if (guess === b.labels[n]) hits[b.labels[n]]++;
    }
  }
  return { correct: hits.reduce((a, b) => a + b, 0), perClass: hits.map((h, i) => h / totals[i]) };
}

function checkOptions(o: PretrainOptions): void {
  const int = (v: number, name: string, min: number, max = Infinity) => {
    if (!Number.isInteger(v) || v < min || v > max)
      throw new PretrainError(`--${name} expects an integer in [${min}, ${max === Infinity ? '∞' : max}], got ${v}`);
  };
  int(o.seed, 'seed', 0, 2 ** 32 - 1);
  int(o.epochs, 'epochs', 1, 1000);
  int(o.perClass, 'per-class', 1, 6000);
  if (o.testPerClass !== undefined) int(o.testPerClass, 'test-per-class', 1, 1000);
  int(o.batch, 'batch', 1, 1024);
  if (o.batch > o.perClass * SOURCE_CLASSES.length)
    throw new PretrainError(
      `--batch ${o.batch} is larger than the ${o.perClass * SOURCE_CLASSES.length} training images; lower --batch or raise --per-class`,
    );
  if (!(o.lr > 0 && o.lr < 1)) throw new PretrainError(`--lr expects a number in (0, 1), got ${o.lr}`);
  if (!o.out.endsWith('.onnx')) throw new PretrainError(`--out '${o.out}' must name a .onnx file`);
}

/** Refuses a missing or read-only output folder before any training. */
function checkWritable(dir: string): void {
  try {
    if (!statSync(dir).isDirectory()) throw new Error('not a folder');
    accessSync(dir, constants.W_OK);
  } catch (e) {
    throw new PretrainError(
      `output folder ${dir} is missing or not writable (${(e as Error).message}); create it or pass another --out`,
    );
  }
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

function modelCard(o: PretrainOptions, r: PretrainResult, gpu: GpuContext): string {
  const cpu = cpus();
  const rows = r.history.map(
    (m) =>
      `| ${m.epoch} | ${m.loss.toFixed(4)} | ${pct(m.top1)} | ${m.valLoss!.toFixed(4)} | ${pct(m.valTop1!)} | ${m.trainSeconds.toFixed(0)} | ${(m.samples / m.trainSeconds).toFixed(0)} | ${m.valSeconds.toFixed(0)} |`,
  );
  const params = r.graph.parameterCount((i) => i.trainable);
  const adapter = [gpu.info.vendor, gpu.info.architecture, gpu.info.description || gpu.info.device]
    .filter(Boolean)
    .join(' / ');
  return `# Source network: ResNet-50 (width ${SOURCE_ARCHITECTURE.width}) pretrained on five Fashion-MNIST classes

\`source-net.onnx\` is the network onnx-graft's transfer-learning demo (\`npm start\`) starts from: no
ImageNet weights can be downloaded on the project's machines, so the project pretrains its own
source network, reproducibly, with its own Trainer and WGSL kernels (\`npm run pretrain\`).

## Model

- Architecture: ResNet-50 v1.5 in torchvision's ONNX layout (\`buildArchitecture('resnet50', { width: ${SOURCE_ARCHITECTURE.width}, inputSize: ${SOURCE_ARCHITECTURE.inputSize}, classes: 5 })\`):
  every channel count ⅛ of the published one (stem 8, bottleneck widths 8/16/32/64, 256 feature channels), same layer names.
- Parameters: ${params.toLocaleString('en-US')} trainable, ${r.graph.parameterCount((i) => !i.trainable).toLocaleString('en-US')} BatchNormalization running statistics; file ${(statSync(r.files.model).size / 1e6).toFixed(2)} MB.
- Input \`input\` [batch, 3, 32, 32] (symbolic batch), output \`output\` [batch, 5] logits.
- Labels (output order; also in the model's metadata \`onnx_graft.labels\` and in labels.txt): ${SOURCE_LABELS.map((l, i) => `${i} ${l}`).join(', ')}.

## Preprocessing (stored in the model's metadata \`onnx_graft.preprocess\`)

Gray 28×28 image → resize to 32×32 (Pillow bilinear) → replicated to 3 channels → x/255, then
(x − 0.286) / 0.353 per channel (Fashion-MNIST's pixel mean and standard deviation). Colour
images are converted to gray first (\`grayscale: true\`).

\`\`\`json
${JSON.stringify(SOURCE_PREPROCESS)}
\`\`\`

## Data

- Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, Zalando Research; MIT license), from Debian's
  \`dataset-fashion-mnist\` (${FASHION_MNIST_ROOT}).
- Source classes (Fashion-MNIST labels): ${SOURCE_CLASSES.map((c) => `${c} ${FASHION_MNIST_CLASSES[c]}`).join(', ')}.
- Never read by pretraining (the demo's "similar data" target): ${HELD_OUT_CLASSES.map((c) => `${c} ${FASHION_MNIST_CLASSES[c]}`).join(', ')}.
- Training: the first ${o.perClass} images of each source class in the train file (${r.trainImages} images); augmentation: random horizontal flip.
- Evaluation: the t10k file's ${r.evaluated} images of the source classes, never trained on.

## Training

- Command: \`${o.command ?? 'npm run pretrain'}\`
- Seed ${o.seed} (weights, data order, augmentation); ${o.epochs} epochs, batch ${o.batch}, Adam (β 0.9/0.999), learning rate ${o.lr}
  with a linear warm-up (${Math.min(50, Math.floor((Math.floor(r.trainImages / o.batch) * o.epochs) / 10))} steps) and cosine decay to ${o.lr / 100}; softmax cross-entropy; BatchNormalization in training mode.
- Wall time: ${r.seconds.toFixed(0)} s in all (training ${r.trainSeconds.toFixed(0)} s, with the per-epoch t10k evaluation), measured on
  ${cpu.length} × ${cpu[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, no GPU; WebGPU adapter: ${adapter}.
  The machine was shared with other work during the run, so the time is an upper bound for a quiet machine.

| epoch | train loss | train top-1 | t10k loss | t10k top-1 | training s | train img/s | t10k eval s |
|---:|---:|---:|---:|---:|---:|---:|---:|
${rows.join('\n')}

## Accuracy

Top-1 on the held-out t10k source classes: ${pct(r.top1)} (${r.correct} / ${r.evaluated})

| class | top-1 |
|---|---:|
${SOURCE_LABELS.map((l, i) => `| ${l} | ${pct(r.perClassTop1[i])} |`).join('\n')}

(onnx-graft's Trainer, forward pass in evaluation mode, on the adapter above; \`test/pretrain.test.ts\` recomputes it with
onnxruntime-node on the CPU.)

## Reproducibility

Same seed, same options, same machine kind → the same weights: the data order, augmentation and
initialisation are functions of the seed, and the kernels reduce in a fixed order.
\`test/pretrain.test.ts\` trains twice with one seed at a reduced budget and compares the written
models bit for bit. Another adapter or driver (another GPU, another Mesa) may round differently
and give slightly different weights.

## Intended use

A source network for transfer-learning demonstrations and tests on small gray images. It has
seen five clothing classes at 32×32 and nothing else; it is not an ImageNet substitute.
`;
}

const USAGE = `usage: npm run pretrain -- [--seed N] [--epochs N] [--per-class N] [--test-per-class N] [--batch N] [--lr X] [--out FILE.onnx] [--data DIR]
  Trains the project's source network (ResNet-50 width ${SOURCE_ARCHITECTURE.width}, 32×32) on Fashion-MNIST classes
  ${SOURCE_LABELS.join(', ')} with onnx-graft's own Trainer, evaluates it on their t10k images, and writes
  FILE.onnx (labels and preprocessing in its metadata), labels.txt and MODEL_CARD.md beside it.
  --seed N            initialisation, data order and augmentation (default ${DEFAULTS.seed})
  --epochs N          passes over the training images (default ${DEFAULTS.epochs})
  --per-class N       training images per class, 1–6000 (default ${DEFAULTS.perClass})
  --test-per-class N  t10k images per class to evaluate on, 1–1000 (default 1000)
  --batch N           images per step (default ${DEFAULTS.batch})
  --lr X              Adam's peak learning rate (default ${DEFAULTS.lr})
  --out FILE.onnx       the model file (default ${DEFAULTS.out})
  --data DIR          Fashion-MNIST's folder (default ${DEFAULTS.data}, Debian's dataset-fashion-mnist)`;

const OPTIONS = ['seed', 'epochs', 'per-class', 'test-per-class', 'batch', 'lr', 'out', 'data'] as const;

/** Parses argv (without node and the script); null for --help. */
export function parsePretrainArgs(argv: string[]): PretrainOptions | null {
  const o: PretrainOptions = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') return null;
    const [key, inline] = arg.startsWith('--') ? arg.slice(2).split(/=(.*)/s, 2) : [arg, undefined];
    if (!(OPTIONS as readonly string[]).includes(key))
      throw new PretrainError(
        `unknown argument '${arg}'; accepted: ${OPTIONS.map((k) => `--${k}`).join(', ')}, --help`,
      );
    const value = inline ?? argv[++i];
    if (value === undefined) throw new PretrainError(`--${key} needs a value`);
    const number = () => {
      const n = Number(value);
      if (value.trim() === '' || !Number.isFinite(n))
        throw new PretrainError(`--${key} expects a number, got '${value}'`);
      return n;
    };
    if (key === 'out') o.out = value;
    else if (key === 'data') o.data = value;
    else if (key === 'per-class') o.perClass = number();
    else if (key === 'test-per-class') o.testPerClass = number();
    else if (key === 'lr') o.lr = number();
    else (o as unknown as Record<string, number>)[key] = number();
  }
  o.command = argv.length ? `npm run pretrain -- ${argv.join(' ')}` : 'npm run pretrain';
  return o;
}

async function main(argv: string[]): Promise<number> {
  try {
    const options = parsePretrainArgs(argv);
    if (!options) {
      process.stdout.write(USAGE + '\n');
      return 0;
    }
    const result = await pretrain({ ...options, log: (line) => process.stdout.write(line + '\n') });
    process.stdout.write(
      `done: ${relative(process.cwd(), result.files.model)}, t10k top-1 ${pct(result.top1)} on ${SOURCE_LABELS.length} source classes, ${result.seconds.toFixed(0)} s\n`,
    );
    return 0;
  } catch (e) {
    process.stderr.write(`pretrain: ${(e as Error).message.split('\n')[0]}\n`);
    return 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  process.exitCode = await main(process.argv.slice(2));
}
