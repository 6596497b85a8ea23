// graft eval MODEL.onnx DATA_DIR: loss, top-1, top-5, per-class accuracy and the confusion matrix
// of a classifier on a folder of labelled images, in the terminal and as an SVG heatmap.
import { basename, dirname, resolve } from 'node:path';
import { openImageFolder, type ImageFolderSource } from '../../data/node/image-loader.ts';
import { readLabels } from '../../graph/model-metadata.ts';
import { createNodeGpuContext } from '../../node/index.ts';
import { loadModelFile, writeFileAtomic } from '../../node/files.ts';
import { parseCommandArgs, UsageError, valueOptions, type CommandSpec } from '../args.ts';
import { rankClasses, softmaxRows } from '../../train/trainer.ts';
import { openClassifier } from '../classifier.ts';
import {
  besides,
  checkWritableFolder,
  choiceFlag,
  choosePreprocess,
  describePreprocess,
  integerFlag,
  modelInputSize,
  percent,
  PREPROCESS_CHOICES,
  table,
  checkModelFile,
} from '../common.ts';
import { heatmap } from '../plot.ts';

const USAGE =
  'graft eval MODEL.onnx DATA_DIR [--batch 16] [--preprocess torchvision|caffe|inception|model] [--plot FILE.svg] [--workers N]';

export interface Evaluation {
  loss: number;
  top1: number;
  top5: number;
  samples: number;
  /** confusion[true][predicted] counts. */
  confusion: number[][];
}

export const evalCommand: CommandSpec = {
  name: 'eval',
  usage: USAGE,
  summary:
    'loss, top-1, top-5, per-class accuracy and the confusion matrix of MODEL on DATA_DIR/<class>/<image>; the class folders must be\n' +
    "  among the model's labels. The confusion matrix is also written as an SVG heatmap (--plot, default <model>.confusion.svg).",
  async run(argv) {
    const args = parseCommandArgs(argv, {
      options: { ...valueOptions('batch', 'preprocess', 'plot', 'workers') },
      positional: 2,
      usage: USAGE,
    });
    const [modelPath, dataDir] = args.positional;
    const o = args.values;
    const batch = o.batch === undefined ? 16 : integerFlag('--batch', o.batch, 1, 4096);
    const workers = o.workers === undefined ? undefined : integerFlag('--workers', o.workers, 1, 64);
    if (o.preprocess !== undefined) choiceFlag('--preprocess', o.preprocess, PREPROCESS_CHOICES);
    const plotPath = resolve(o.plot ?? besides(modelPath, 'confusion.svg'));
    if (!plotPath.toLowerCase().endsWith('.svg'))
      throw new UsageError(`--plot must name an .svg file, got '${o.plot}'`);
    checkWritableFolder(dirname(plotPath), '--plot');
    checkModelFile(modelPath);
    // Only run: each weight is read from the file as the session uploads it, never held on the host.
    const graph = loadModelFile(modelPath, { leaveTensorsInFile: true });
    const { size } = modelInputSize(graph, modelPath);
    const { spec, why } = choosePreprocess(graph, modelPath, o.preprocess, size);
    const labels = readLabels(graph);
    const warnings: string[] = [];
    const warn = (m: string) => {
      warnings.push(m);
      process.stderr.write(`warning: ${m}\n`);
    };
    // With labels, every class folder must be one of them (the loader's error lists both sets).
    let data: ImageFolderSource | undefined = await openImageFolder(dataDir, {
      preprocess: spec,
      workers,
      onWarning: warn,
      ...(labels ? { classes: labels } : {}),
    });
    const gpu = await createNodeGpuContext();
    try {
      const classifier = await openClassifier(graph, modelPath, gpu, batch, size);
      try {
        const classNames = labels ?? data.classes;
        const evaluation = await evaluate(
          data,
          batch,
          (images, count) => classifier.logits(images, count),
          () => classifier.classes,
        );
        const classes = classifier.classes;
        if (classNames.length !== classes) {
          throw new UsageError(
            labels
              ? `${modelPath}: ${labels.length} labels in its metadata for ${classes} outputs`
              : `${modelPath} has no labels in its metadata and ${classes} outputs, but ${dataDir} has ${data.classes.length} class folders (${data.classes.join(', ')})`,
          );
        }
        const out: string[] = [];
        out.push(`preprocessing from ${why}: ${describePreprocess(spec)}`);
        if (!labels)
          out.push(
            `note: ${modelPath} has no labels in its metadata; output i is taken to be folder class i (sorted names)`,
          );
        out.push(
          `${dataDir}: ${evaluation.samples} images${data.skipped.length ? ` (${data.skipped.length} skipped)` : ''}`,
        );
        out.push(
          `loss ${evaluation.loss.toFixed(4)}   top-1 ${percent(evaluation.top1)}   top-5 ${percent(evaluation.top5)}${classes < 5 ? ` (${classes} classes)` : ''}`,
        );
        out.push('');
        const present = classNames.map((_, c) => c).filter((c) => evaluation.confusion[c].some((v) => v > 0));
        out.push(
          table(
            ['class', 'images', 'correct', 'accuracy'],
            present.map((c) => {
              const n = evaluation.confusion[c].reduce((a, b) => a + b, 0);
              return [
                classNames[c],
                String(n),
                String(evaluation.confusion[c][c]),
                percent(evaluation.confusion[c][c] / n),
              ];
            }),
            [1, 2, 3],
          ),
        );
        out.push('confusion matrix (rows: true class, columns: predicted class)');
        out.push(
          table(
            ['', ...classNames.map((_, c) => String(c))],
            present.map((c) => [`${c} ${classNames[c]}`, ...evaluation.confusion[c].map(String)]),
            classNames.map((_, c) => c + 1),
          ),
        );
        writeFileAtomic(
          plotPath,
          new TextEncoder().encode(
            heatmap({
              title: `${basename(modelPath)} on ${basename(resolve(dataDir))}: top-1 ${percent(evaluation.top1)}`,
              rowLabels: present.map((c) => classNames[c]),
              colLabels: classNames,
              values: present.map((c) => evaluation.confusion[c]),
              format: (v) => String(v),
            }),
          ),
        );
        out.push(`wrote ${plotPath}`);
        process.stdout.write(out.join('\n') + '\n');
        return 0;
      } finally {
        classifier.dispose();
      }
    } finally {
      gpu.dispose();
      await data?.close();
      data = undefined;
    }
  },
};

/** Loss (from exact logits), top-1, top-5 and the confusion matrix over every batch of `data`. */
export async function evaluate(
  data: ImageFolderSource,
  batchSize: number,
  logitsOf: (images: Float32Array, count: number) => Promise<Float32Array>,
  classCount: () => number,
): Promise<Evaluation> {
  let loss = 0;
  let top1 = 0;
  let top5 = 0;
  let samples = 0;
  let confusion: number[][] | undefined;
  for await (const b of data.batches(0, { batchSize })) {
    const logits = await logitsOf(b.images, b.size);
    const classes = classCount();
    confusion ??= Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
    const { probabilities, logSumExp } = softmaxRows(logits, classes);
    for (let n = 0; n < b.size; n++) {
      const label = b.labels[n];
      if (label >= classes)
        throw new UsageError(
          `the model has ${classes} outputs, but class ${label} (${data.classes[label]}) is in the data`,
        );
      const order = rankClasses(probabilities.subarray(n * classes, (n + 1) * classes));
      loss += logSumExp[n] - logits[n * classes + label];
      if (order[0] === label) top1++;
      if (order.slice(0, 5).includes(label)) top5++;
      confusion[label][order[0]]++;
      samples++;
    }
  }
  if (!confusion || samples === 0)
    throw new UsageError(`${data.root}: no image could be read (${data.skipped.length} skipped)`);
  return { loss: loss / samples, top1: top1 / samples, top5: top5 / samples, samples, confusion };
}
