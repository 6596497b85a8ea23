// graft build <arch>: an architecture with seeded random weights, written as torchvision's ONNX
// export would lay it out, and a short account of what was written.
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  ARCHITECTURE_NAMES,
  architectureInfo,
  buildArchitecture,
  isArchitectureName,
  type BuildOptions,
} from '../../graph/architectures/index.ts';
import type { Dim } from '../../graph/ir.ts';
import { summarizeGraph } from '../../graph/summary.ts';
import { saveModelFile } from '../../node/files.ts';
import { checkOutputFile } from '../common.ts';
import { flagOptions, parseCommandArgs, UsageError, valueOptions, type CommandSpec } from '../args.ts';

export const buildCommand: CommandSpec = {
  name: 'build',
  usage: `graft build <${ARCHITECTURE_NAMES.join('|')}> [--out FILE] [--classes N] [--no-top] [--pooling avg|max] [--seed N] [--input-size N] [--batch N|batch] [--width W]`,
  summary:
    'an architecture with seeded random weights in torchvision ONNX layout, written to FILE (default <arch>.onnx)',
  run(argv) {
    const args = parseCommandArgs(argv, {
      options: {
        ...flagOptions('no-top'),
        ...valueOptions('out', 'classes', 'pooling', 'seed', 'input-size', 'batch', 'width'),
      },
      positional: 1,
      usage: this.usage,
    });
    const name = args.positional[0];
    if (!isArchitectureName(name))
      throw new UsageError(
        `unknown architecture '${name}'; accepted: ${ARCHITECTURE_NAMES.join(', ')}\nusage: ${this.usage}`,
      );
    const pooling = args.values.pooling;
    if (pooling !== undefined && pooling !== 'avg' && pooling !== 'max')
      throw new UsageError(`--pooling accepts avg or max, got '${pooling}'\nusage: ${this.usage}`);
    if (pooling && !args.values['no-top'])
      throw new UsageError(
        `--pooling applies only with --no-top (the classifier brings its own pooling)\nusage: ${this.usage}`,
      );
    const batch = args.values.batch;
    const options: BuildOptions = {
      includeTop: !args.values['no-top'],
      pooling: pooling ?? null,
      classes: integerOption(args.values.classes, 'classes', 1, this.usage),
      seed: integerOption(args.values.seed, 'seed', 0, this.usage),
      inputSize: integerOption(args.values['input-size'], 'input-size', 1, this.usage),
      batch: batch === 'batch' ? 'batch' : integerOption(batch, 'batch', 1, this.usage),
      width: widthOption(args.values.width, this.usage),
    };
    const out = resolve(args.values.out ?? `${name}.onnx`);
    checkOutputFile(out, '--out');
    const graph = buildArchitecture(name, options);
    saveModelFile(graph, out);
    const s = summarizeGraph(graph);
    const shape = (v: { name: string; shape?: Dim[] }) =>
      `${v.name} [${(v.shape ?? []).map((d) => d ?? '?').join(', ')}]`;
    const count = (n: number) => n.toLocaleString('en-US');
    const lines = [
      `wrote ${out} (${(statSync(out).size / 1e6).toFixed(1)} MB)`,
      `architecture: ${name}: ${architectureInfo(name).description}${options.includeTop ? '' : `, no top${options.pooling ? `, ${options.pooling} pooling` : ''}`}${options.width !== undefined && options.width !== 1 ? `, width ${options.width}` : ''}, seed ${options.seed ?? 0}`,
      `input:  ${s.inputs.map(shape).join(', ')}`,
      `output: ${s.outputs.map(shape).join(', ')}`,
      `parameters: ${count(s.parameters)} (trainable ${count(s.trainableParameters)}, non-trainable ${count(s.nonTrainableParameters)})`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
    return 0;
  },
};

/** An integer option ≥ min, or undefined when absent (the builder's default applies). */
function integerOption(text: string | undefined, name: string, min: number, usage: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(n) || n < min)
    throw new UsageError(`--${name} expects an integer ≥ ${min}, got '${text}'\nusage: ${usage}`);
  return n;
}

/** The channel multiplier, 0 < W ≤ 1, or undefined when absent (width 1). */
function widthOption(text: string | undefined, usage: string): number | undefined {
  if (text === undefined) return undefined;
  const w = Number(text);
  if (!/^\d*\.?\d+$/.test(text) || !(w > 0 && w <= 1))
    throw new UsageError(
      `--width expects a channel multiplier W with 0 < W ≤ 1 (e.g. 0.25), got '${text}'\nusage: ${usage}`,
    );
  return w;
}
