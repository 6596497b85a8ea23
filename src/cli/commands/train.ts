// graft train MODEL.onnx DATA_DIR --case 1|2|3|4 --out tuned.onnx: transfer learning on a folder
// of labelled images (root/<class>/<image>), end to end: surgery, training with progress,
// validation, checkpoints and resume, Ctrl-C, and the tuned model with its history and curves.
import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { permutation, mixSeed } from '../../data/seed.ts';
import { CROP_AUGMENTS, type Augment, type CropAugment } from '../../data/preprocess.ts';
import { openImageFolder, type ImageFolderSource } from '../../data/node/image-loader.ts';
import type { Graph } from '../../graph/ir.ts';
import { writeLabels, writePreprocess } from '../../graph/model-metadata.ts';
import { adaptToInputSize, transfer, type TransferSummary } from '../../graph/surgery/index.ts';
import { createNodeGpuContext } from '../../node/index.ts';
import { loadCheckpoint, loadWeightsFile, saveCheckpoint } from '../../node/checkpoint-files.ts';
import { checkReadableFile } from '../../node/atomic-write.ts';
import { loadModelFile, writeFileAtomic } from '../../node/files.ts';
import { restoreGraphWeights, type Checkpoint } from '../../train/checkpoint.ts';
import type { OptimizerType } from '../../train/optimizers.ts';
import { Trainer, type BatchRequest, type EpochMetrics, type TrainBatch } from '../../train/trainer.ts';
import { flagOptions, parseCommandArgs, UsageError, valueOptions, type CommandSpec } from '../args.ts';
import {
  besides,
  checkOutputFile,
  checkWritableFolder,
  choiceFlag,
  choosePreprocess,
  describePreprocess,
  integerFlag,
  modelInputSize,
  numberFlag,
  percent,
  PREPROCESS_CHOICES,
  checkModelFile,
} from '../common.ts';
import { lineChart, stackCharts } from '../plot.ts';
import { Progress } from '../progress.ts';
import { interruptible } from '../signals.ts';

const USAGE =
  'graft train MODEL.onnx DATA_DIR --case 1|2|3|4 --out tuned.onnx [--cut-at NAME] [--pooling avg|max|flatten] [--reinitialize] [--input-size S] ' +
  '[--epochs 5] [--batch 16] [--optimizer sgd|adam|adamw] [--lr F] [--val-split 0.2 | --val DIR] [--flip] [--crop center|random|resized] ' +
  '[--preprocess torchvision|caffe|inception|model] [--init-weights FILE.safetensors] [--checkpoint-dir DIR] [--resume] [--seed 0] [--workers N]';

const HELP = `
Fine-tunes MODEL.onnx on DATA_DIR/<class>/<image> (classes are the folder names, sorted).
  --case 1   feature extraction: remove the classifier, freeze everything, train a new dense layer
  --case 2   cut earlier (--cut-at NAME, default a block boundary half-way), freeze it, train a new head
  --case 3   fine-tune: replace the last layer, train every layer
  --case 4   as 3; with --reinitialize every weight starts afresh (only the architecture is kept)
  --pooling avg|max|flatten   cases 1 and 2: how the kept feature map feeds the new layer (default
                     avg; flatten keeps where things are, for an early cut on small maps)
  --input-size S     train at S×S (pools adapted); default the model's input size
  --epochs N (5)  --batch N (16)  --optimizer sgd|adam|adamw (adam)  --lr F (adam 1e-3, sgd 1e-2)
  --val-split F (0.2, stratified, seeded)  or  --val DIR (a folder with the same classes)
  --flip --crop center|random|resized   augmentation (turns off feature caching)
  --preprocess NAME  torchvision, caffe, inception, or model (the model's metadata); default: the
                     model's metadata when it has one, else torchvision
  --init-weights FILE.safetensors  start from these weights (e.g. saved by PyTorch or Hugging Face
                     safetensors), named as MODEL.onnx's initializers, each with its shape
  --checkpoint-dir DIR  where the checkpoint goes (default: beside --out); --resume continues from it
Writes --out (labels and preprocessing in its metadata, any batch size), <out>.history.json and
<out>.curves.svg. Ctrl-C stops after the current step and saves a checkpoint (exit 130).`;

export const trainCommand: CommandSpec = {
  name: 'train',
  usage: USAGE,
  summary: 'transfer learning on an image folder (cases 1–4): writes the tuned model, its history and learning curves',
  details: HELP,
  async run(argv) {
    const args = parseCommandArgs(argv, {
      options: {
        ...flagOptions('reinitialize', 'resume', 'flip'),
        ...valueOptions(
          'case',
          'out',
          'cut-at',
          'pooling',
          'input-size',
          'epochs',
          'batch',
          'optimizer',
          'lr',
          'val-split',
          'val',
          'crop',
          'preprocess',
          'init-weights',
          'checkpoint-dir',
          'seed',
          'workers',
        ),
      },
      positional: 2,
      usage: USAGE,
    });
    const o = args.values;
    const [modelPath, dataDir] = args.positional;
    if (o.case === undefined)
      throw new UsageError('--case 1|2|3|4 is required (see graft train --help for what each does)');
    if (o.out === undefined) throw new UsageError('--out tuned.onnx is required');
    const transferCase = integerFlag('--case', o.case, 1, 4) as 1 | 2 | 3 | 4;
    if (o['cut-at'] !== undefined && transferCase !== 2) throw new UsageError('--cut-at goes with --case 2 only');
    if (args.values.reinitialize && transferCase !== 4) throw new UsageError('--reinitialize goes with --case 4 only');
    if (o.pooling !== undefined && transferCase > 2)
      throw new UsageError("--pooling goes with --case 1 or 2 (cases 3 and 4 keep the network's own head)");
    const pooling =
      o.pooling === undefined
        ? undefined
        : choiceFlag<'avg' | 'max' | 'flatten'>('--pooling', o.pooling, ['avg', 'max', 'flatten']);
    const epochs = o.epochs === undefined ? 5 : integerFlag('--epochs', o.epochs, 1);
    const batchSize = o.batch === undefined ? 16 : integerFlag('--batch', o.batch, 1, 4096);
    const optimizer = choiceFlag<OptimizerType>('--optimizer', o.optimizer ?? 'adam', ['sgd', 'adam', 'adamw']);
    const lr =
      o.lr === undefined
        ? optimizer === 'sgd'
          ? 1e-2
          : 1e-3
        : numberFlag('--lr', o.lr, (v) => v > 0, 'a positive number');
    const seed = o.seed === undefined ? 0 : integerFlag('--seed', o.seed, 0, 2 ** 31 - 1);
    const inputSize = o['input-size'] === undefined ? undefined : integerFlag('--input-size', o['input-size'], 8, 4096);
    const workers = o.workers === undefined ? undefined : integerFlag('--workers', o.workers, 1, 64);
    if (o.val !== undefined && o['val-split'] !== undefined)
      throw new UsageError('use --val DIR or --val-split F, not both');
    const valSplit =
      o['val-split'] === undefined
        ? o.val === undefined
          ? 0.2
          : 0
        : numberFlag('--val-split', o['val-split'], (v) => v >= 0 && v < 1, 'a fraction from 0 to below 1');
    const augment: Augment = {
      flip: args.values.flip,
      crop: o.crop === undefined ? 'center' : choiceFlag<CropAugment>('--crop', o.crop, CROP_AUGMENTS),
    };
    const augmented = Boolean(augment.flip) || augment.crop !== 'center';
    if (o.preprocess !== undefined) choiceFlag('--preprocess', o.preprocess, PREPROCESS_CHOICES);

    // Everything that could refuse the run is checked before any training.
    const out = resolve(o.out);
    checkOutputFile(out, '--out');
    if (o['checkpoint-dir'] !== undefined) checkWritableFolder(o['checkpoint-dir'], '--checkpoint-dir');
    const checkpointPath =
      o['checkpoint-dir'] !== undefined
        ? join(resolve(o['checkpoint-dir']), `${basename(out).replace(/\.onnx$/i, '')}.ckpt`)
        : besides(out, 'ckpt');
    if (args.values.resume && !existsSync(checkpointPath))
      throw new UsageError(
        `--resume: no checkpoint at ${checkpointPath} (it is written beside --out, or in --checkpoint-dir)`,
      );
    checkModelFile(modelPath);
    const initWeights = o['init-weights'] === undefined ? undefined : resolve(o['init-weights']);
    if (initWeights !== undefined) checkReadableFile(initWeights, 'a .safetensors file', '--init-weights');

    const stop = interruptible();
    const say = (line: string) => process.stdout.write(line + '\n');
    let progress: Progress | undefined;
    const warn = (m: string) => {
      progress?.clear();
      process.stderr.write(`warning: ${m}\n`);
    };
    let train: ImageFolderSource | undefined;
    let val: ImageFolderSource | undefined;
    let trainer: Trainer | undefined;
    let gpu: Awaited<ReturnType<typeof createNodeGpuContext>> | undefined;
    try {
      // The model, its size and preprocessing.
      const original = loadModelFile(modelPath);
      if (initWeights !== undefined) {
        const restored = restoreGraphWeights(original, loadWeightsFile(initWeights, original), initWeights);
        say(`initial weights: ${restored} tensors from ${initWeights}`);
      }
      const constant = constantWeights(original);
      if (constant)
        warn(
          `${modelPath}: ${constant}; fine-tuning it cannot learn useful features (the ONNX zoo's "light" models are such placeholders): start from a pretrained model (see the README)`,
        );
      const native = modelInputSize(original, modelPath).size;
      const size = inputSize ?? native;
      const { spec, why } = choosePreprocess(original, modelPath, o.preprocess, size);
      say(`preprocessing from ${why}: ${describePreprocess(spec)}`);

      // The data.
      train = await openImageFolder(dataDir, { preprocess: spec, workers, onWarning: warn });
      const classes = [...train.classes];
      if (classes.length < 2)
        throw new UsageError(
          `${dataDir}: found 1 class folder (${classes[0]}); training a classifier needs at least 2`,
        );
      let trainIndices: Uint32Array | undefined;
      let valIndices: Uint32Array | undefined;
      if (o.val !== undefined) {
        val = await openImageFolder(o.val, { preprocess: spec, workers, classes, onWarning: warn });
      } else if (valSplit > 0) {
        ({ trainIndices, valIndices } = stratifiedSplit(train.labels, classes.length, valSplit, seed));
        if (valIndices.length === 0)
          warn(`--val-split ${valSplit}: too few images for a validation set; training without one`);
      }
      const trainCount = trainIndices?.length ?? train.length;
      const valCount = val ? val.length : (valIndices?.length ?? 0);
      say(
        `data: ${dataDir}: ${train.length} images in ${classes.length} classes (${classes.join(', ')}); ${trainCount} for training, ${valCount} for validation${val ? ` from ${o.val}` : ''}`,
      );
      if (stop.signal.aborted) return stop.exitBeforeWork('train');

      // The surgery.
      let graph: Graph = original;
      let resizeNote = '';
      if (inputSize !== undefined && inputSize !== native) {
        const adapted = adaptToInputSize(original, inputSize);
        graph = adapted.graph;
        const s = adapted.summary;
        resizeNote =
          `; input ${inputSize}×${inputSize}` +
          (s.globalPools.length + s.adaptivePools.length
            ? ` (${s.globalPools.length} pools made global, ${s.adaptivePools.length} adaptive pools added)`
            : '');
      }
      const { graph: tuned, summary } = transfer(graph, {
        case: transferCase,
        classes: classes.length,
        cutAt: o['cut-at'],
        pooling,
        seed,
        reinitialize: args.values.reinitialize,
      });
      for (const w of summary.warnings) warn(w);
      writeLabels(tuned, classes);
      writePreprocess(tuned, spec);
      say(`case ${transferCase}: ${caseText(summary, args.values.reinitialize ?? false)}${resizeNote}`);

      // Training.
      gpu = await createNodeGpuContext();
      trainer = await Trainer.create(gpu, tuned);
      let resume: Checkpoint | undefined;
      let previous: EpochMetrics[] = [];
      if (args.values.resume) {
        resume = loadCheckpoint(checkpointPath);
        previous = Array.isArray(resume.extra?.history) ? (resume.extra.history as unknown as EpochMetrics[]) : [];
        // The seed orders the data and makes the validation split: another one would mix the sets.
        if (typeof resume.extra?.seed === 'number' && resume.extra.seed !== seed)
          throw new UsageError(
            `--resume: the checkpoint ${checkpointPath} was trained with --seed ${resume.extra.seed}; pass the same seed (it also chose the validation split)`,
          );
        if (resume.epoch >= epochs && !resume.extra?.partial)
          throw new UsageError(
            `--resume: the checkpoint ${checkpointPath} has already done ${resume.epoch} epochs; pass --epochs above ${resume.epoch} to train further`,
          );
        say(`resuming from ${checkpointPath} (epoch ${resume.epoch}, step ${resume.step})`);
      }
      const source = train;
      // The trainer asks for labels only (request.pixels false) once it holds every image's features.
      const batches = (epoch: number, request?: BatchRequest): AsyncIterable<TrainBatch> =>
        source.batches(epoch, {
          batchSize,
          shuffle: true,
          seed,
          indices: trainIndices,
          pixels: request?.pixels,
          ...(augmented ? { augment } : {}),
        });
      const validation = val
        ? (_: number, request?: BatchRequest) => val!.batches(0, { batchSize, pixels: request?.pixels })
        : valIndices?.length
          ? (_: number, request?: BatchRequest) =>
              source.batches(0, { batchSize, indices: valIndices, pixels: request?.pixels })
          : undefined;
      progress = new Progress(process.stdout, epochs);
      if (!progress.interactive)
        say(
          `training ${epochs} epochs of ${Math.ceil(trainCount / batchSize)} steps (batch ${batchSize}, ${optimizer}, lr ${lr})`,
        );
      let checkpointSaved = false;
      const started = Date.now();
      const result = await trainer.fit(batches, {
        epochs,
        optimizer: { type: optimizer, lr, ...(optimizer === 'sgd' ? { momentum: 0.9 } : {}) },
        validation,
        augmented,
        seed,
        stepsPerEpoch: Math.ceil(trainCount / batchSize),
        signal: stop.signal,
        callbacks: {
          onStep: (s) => progress!.step(s),
          onEpochEnd: (m) => progress!.epoch(m),
          onLog: (m) => {
            if (m.startsWith('feature caching') || m.startsWith('resumed')) say(m);
          },
        },
        checkpoint: {
          save: (ck) =>
            stop.guard(() => {
              saveCheckpoint(checkpointPath, ck);
              checkpointSaved = true;
            }),
          resume,
        },
      });
      progress.finish();
      const history = [...previous, ...result.history];
      if (result.interrupted) {
        process.stderr.write(
          `graft train: interrupted; ${checkpointSaved ? `checkpoint saved to ${checkpointPath}` : 'no checkpoint saved'}; resume with: graft ${['train', ...argv.filter((a) => a !== '--resume'), '--resume'].join(' ')}\n`,
        );
        return 130;
      }

      // What it wrote.
      const historyPath = besides(out, 'history.json');
      const curvesPath = besides(out, 'curves.svg');
      const bytes = await trainer.exportModel();
      stop.guard(() => {
        writeFileAtomic(out, bytes);
        writeFileAtomic(
          historyPath,
          new TextEncoder().encode(
            JSON.stringify(
              {
                model: resolve(modelPath),
                data: resolve(dataDir),
                validation: o.val ? resolve(o.val) : valSplit,
                case: transferCase,
                classes,
                preprocess: spec,
                optimizer,
                lr,
                batch: batchSize,
                seed,
                augment: augmented ? augment : null,
                featureCache: result.featureCache,
                trainableParameters: summary.trainableParameters,
                skipped: [...train!.skipped, ...(val?.skipped ?? [])],
                epochs: history,
              },
              null,
              2,
            ) + '\n',
          ),
        );
        writeFileAtomic(curvesPath, new TextEncoder().encode(curves(history, basename(out))));
      });
      const last = history.at(-1);
      const skipped = train.skipped.length + (val?.skipped.length ?? 0);
      say('');
      say(
        `trained ${result.history.length} epoch${result.history.length === 1 ? '' : 's'} in ${((Date.now() - started) / 1000).toFixed(1)} s` +
          (result.featureCache ? ' (frozen body run once per image: head trained on cached features)' : ''),
      );
      say(`what changed: ${caseText(summary, args.values.reinitialize ?? false)}`);
      say(
        `trainable parameters: ${summary.trainableParameters.toLocaleString('en-US')} (frozen ${summary.frozenParameters.toLocaleString('en-US')})`,
      );
      if (last)
        say(
          `final: train loss ${last.loss.toFixed(4)} accuracy ${percent(last.top1)}` +
            (last.valTop1 !== undefined
              ? `; validation loss ${last.valLoss!.toFixed(4)} accuracy ${percent(last.valTop1)}`
              : '; no validation set'),
        );
      say(
        `skipped files: ${skipped}` +
          (skipped ? ` (${[...train.skipped, ...(val?.skipped ?? [])].map((s) => basename(s.file)).join(', ')})` : ''),
      );
      say(`wrote ${out}\n      ${historyPath}\n      ${curvesPath}\n      ${checkpointPath} (checkpoint)`);
      return 0;
    } finally {
      stop.dispose();
      trainer?.dispose();
      await train?.close();
      await val?.close();
      gpu?.dispose();
    }
  },
};

function caseText(s: TransferSummary, reinitialize: boolean): string {
  switch (s.case) {
    case 1:
      return `cut at the features '${s.cutPoint}', body frozen, new classifier trained (${s.newWeights.join(', ')})`;
    case 2:
      return `cut at '${s.cutPoint}', layers before it frozen, new head trained (${s.newWeights.join(', ')})`;
    case 3:
      return `last layer replaced (${s.newWeights.join(', ')}), every layer trained from the pretrained weights`;
    case 4:
      return reinitialize
        ? `last layer replaced (${s.newWeights.join(', ')}), every weight re-initialised and trained (architecture only)`
        : `last layer replaced (${s.newWeights.join(', ')}), every layer trained (as case 3; add --reinitialize to start from random weights)`;
  }
}

/** Per class, a seeded fraction of its images for validation (at least one when the class has two or more). */
export function stratifiedSplit(
  labels: Uint32Array,
  classes: number,
  fraction: number,
  seed: number,
): { trainIndices: Uint32Array; valIndices: Uint32Array } {
  const trainIndices: number[] = [];
  const valIndices: number[] = [];
  for (let c = 0; c < classes; c++) {
    const members = [...labels.keys()].filter((i) => labels[i] === c);
    const order = permutation(members.length, mixSeed(0x5b1e, seed, c));
    const take =
      members.length < 2 ? 0 : Math.min(members.length - 1, Math.max(1, Math.round(fraction * members.length)));
    order.forEach((k, j) => (j < take ? valIndices : trainIndices).push(members[k]));
  }
  const sort = (a: number[]) => Uint32Array.from(a.sort((x, y) => x - y));
  return { trainIndices: sort(trainIndices), valIndices: sort(valIndices) };
}

function curves(history: EpochMetrics[], name: string): string {
  const pts = (f: (m: EpochMetrics) => number | undefined) =>
    history.filter((m) => f(m) !== undefined).map((m) => [m.epoch, f(m)!] as [number, number]);
  const hasVal = history.some((m) => m.valLoss !== undefined);
  const loss = lineChart({
    title: `${name}: loss`,
    xLabel: 'epoch',
    yLabel: 'cross-entropy loss',
    series: [
      { name: 'train', points: pts((m) => m.loss) },
      ...(hasVal ? [{ name: 'validation', dashed: true, points: pts((m) => m.valLoss) }] : []),
    ],
  });
  const acc = lineChart({
    title: `${name}: accuracy`,
    xLabel: 'epoch',
    yLabel: 'top-1 accuracy',
    yRange: [0, 1],
    series: [
      { name: 'train', points: pts((m) => m.top1) },
      ...(hasVal ? [{ name: 'validation', dashed: true, points: pts((m) => m.valTop1) }] : []),
    ],
  });
  return stackCharts([loss, acc]);
}

/** Says so when most weight tensors hold one value repeated (placeholder weights, not pretrained ones). */
export function constantWeights(graph: Graph): string | undefined {
  let tensors = 0;
  let constant = 0;
  for (const init of graph.initializers.values()) {
    const data = init.value.data;
    if (!(data instanceof Float32Array) || data.length < 64 || !init.trainable) continue;
    tensors++;
    const first = data[0];
    if (data.every((v) => v === first)) constant++;
  }
  return tensors > 0 && constant > tensors / 2
    ? `${constant} of its ${tensors} weight tensors hold one value repeated`
    : undefined;
}
