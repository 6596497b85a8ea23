// graft predict MODEL.onnx IMAGE…: the top-k classes of each image with their probabilities.
import { loadImageFiles } from '../../data/node/image-loader.ts';
import { readLabels } from '../../graph/model-metadata.ts';
import { createNodeGpuContext } from '../../node/index.ts';
import { loadModelFile } from '../../node/files.ts';
import { flagOptions, parseCommandArgs, UsageError, valueOptions, type CommandSpec } from '../args.ts';
import { rankClasses, softmaxRows } from '../../train/trainer.ts';
import { openClassifier } from '../classifier.ts';
import { checkReadableFile } from '../../node/atomic-write.ts';
import {
  choosePreprocess,
  describePreprocess,
  integerFlag,
  modelInputSize,
  PREPROCESS_CHOICES,
  choiceFlag,
  checkModelFile,
} from '../common.ts';

const USAGE =
  'graft predict MODEL.onnx IMAGE… [--top 5] [--json] [--preprocess torchvision|caffe|inception|model] [--batch 8]';

export const predictCommand: CommandSpec = {
  name: 'predict',
  usage: USAGE,
  summary:
    "the top-k classes of each image with probabilities (class names from the model's labels); --json for machines.\n" +
    "  Preprocessing: --preprocess, default the model's metadata, else torchvision. Files that do not decode are skipped with a warning (exit status 1).",
  async run(argv) {
    const args = parseCommandArgs(argv, {
      options: { ...flagOptions('json'), ...valueOptions('top', 'preprocess', 'batch') },
      positional: [2, Infinity],
      usage: USAGE,
    });
    const [modelPath, ...images] = args.positional;
    const top = args.values.top === undefined ? 5 : integerFlag('--top', args.values.top, 1);
    const chunk = args.values.batch === undefined ? 8 : integerFlag('--batch', args.values.batch, 1, 1024);
    if (args.values.preprocess !== undefined) choiceFlag('--preprocess', args.values.preprocess, PREPROCESS_CHOICES);
    checkModelFile(modelPath);
    for (const image of images) {
      checkReadableFile(image, 'an image file (graft eval takes a folder of class folders)');
    }
    // Only run: each weight is read from the file as the session uploads it, never held on the host.
    const graph = loadModelFile(modelPath, { leaveTensorsInFile: true });
    const { size } = modelInputSize(graph, modelPath);
    const { spec, why } = choosePreprocess(graph, modelPath, args.values.preprocess, size);
    const labels = readLabels(graph);
    const warnings: string[] = [];
    const loaded = await loadImageFiles(images, spec, { onWarning: (m) => warnings.push(m) });
    for (const w of warnings) process.stderr.write(`warning: ${w}\n`);
    if (loaded.loaded.length === 0)
      throw new UsageError(
        `none of the ${images.length} images could be read (${loaded.skipped.map((s) => `${s.file}: ${s.reason}`).join('; ')})`,
      );
    const gpu = await createNodeGpuContext();
    try {
      const classifier = await openClassifier(graph, modelPath, gpu, Math.min(chunk, loaded.loaded.length), size);
      try {
        const logits = await classifier.logits(loaded.images, loaded.loaded.length);
        const classes = classifier.classes;
        if (labels && labels.length !== classes)
          throw new UsageError(`${modelPath}: ${labels.length} labels in its metadata for ${classes} outputs`);
        const { probabilities } = softmaxRows(logits, classes);
        const k = Math.min(top, classes);
        const predictions = loaded.loaded.map((file, n) => {
          const row = probabilities.subarray(n * classes, (n + 1) * classes);
          return {
            file,
            top: rankClasses(row)
              .slice(0, k)
              .map((index) => ({ label: labels?.[index] ?? String(index), index, probability: row[index] })),
          };
        });
        if (args.values.json) {
          process.stdout.write(
            JSON.stringify({ model: modelPath, preprocess: spec, predictions, skipped: loaded.skipped }, null, 2) +
              '\n',
          );
        } else {
          process.stdout.write(`preprocessing from ${why}: ${describePreprocess(spec)}\n`);
          for (const p of predictions) {
            process.stdout.write(`${p.file}\n`);
            const width = Math.max(...p.top.map((t) => t.label.length));
            p.top.forEach((t, i) =>
              process.stdout.write(
                `  ${i + 1}. ${t.label.padEnd(width)}  ${(100 * t.probability).toFixed(2).padStart(6)}%\n`,
              ),
            );
          }
          if (loaded.skipped.length)
            process.stdout.write(
              `skipped ${loaded.skipped.length} file(s): ${loaded.skipped.map((s) => s.file).join(', ')}\n`,
            );
        }
        return loaded.skipped.length ? 1 : 0;
      } finally {
        classifier.dispose();
      }
    } finally {
      gpu.dispose();
    }
  },
};
