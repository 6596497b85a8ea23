// What train, eval and predict share: number flags, the output-folder check, choosing the
// preprocessing (flag, model metadata or default), and plain-text tables.
import { dirname, resolve } from 'node:path';
import type { Graph } from '../graph/ir.ts';
import {
  PREPROCESS_PRESETS,
  preprocessPreset,
  readPreprocess,
  type PreprocessPreset,
  type PreprocessSpec,
} from '../graph/model-metadata.ts';
import { checkReadableFile, checkWritableFolder } from '../node/atomic-write.ts';
import { UsageError } from './args.ts';

export function integerFlag(flag: string, text: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = Number(text);
  if (!/^-?\d+$/.test(text.trim()) || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new UsageError(
      `${flag} must be an integer${max < Number.MAX_SAFE_INTEGER ? ` from ${min} to ${max}` : ` ≥ ${min}`}, got '${text}'`,
    );
  }
  return v;
}

export function numberFlag(flag: string, text: string, check: (v: number) => boolean, accepted: string): number {
  const v = Number(text);
  if (text.trim() === '' || !Number.isFinite(v) || !check(v))
    throw new UsageError(`${flag} must be ${accepted}, got '${text}'`);
  return v;
}

export function choiceFlag<T extends string>(flag: string, text: string, choices: readonly T[]): T {
  if (!choices.includes(text as T)) throw new UsageError(`${flag} must be one of ${choices.join(', ')}, got '${text}'`);
  return text as T;
}

export { checkWritableFolder } from '../node/atomic-write.ts';

/** An output model: an .onnx name in a folder that takes a new file, checked before any work. */
export function checkOutputFile(path: string, flag: string): void {
  if (!path.toLowerCase().endsWith('.onnx')) throw new UsageError(`${flag} must name an .onnx file, got '${path}'`);
  checkWritableFolder(dirname(resolve(path)), flag);
}

/** A model file argument: it exists, is a file and is readable (a FileError naming it otherwise). */
export function checkModelFile(path: string, label?: string): void {
  checkReadableFile(path, 'an .onnx file', label);
}

/** The model's image size: its input's H (= W), static. */
export function modelInputSize(graph: Graph, file: string): { channels: number; size: number } {
  const shape = graph.feedInputs[0]?.shape;
  if (graph.feedInputs.length !== 1 || !shape || shape.length !== 4) {
    throw new UsageError(
      `${file}: expected one image input N×C×H×W, found ${graph.feedInputs.map((i) => `'${i.name}' [${i.shape?.join(', ') ?? '?'}]`).join(', ') || 'none'}`,
    );
  }
  const [, c, h, w] = shape;
  if (typeof c !== 'number' || typeof h !== 'number' || typeof w !== 'number') {
    throw new UsageError(
      `${file}: input '${graph.feedInputs[0].name}' has symbolic image dimensions [${shape.join(', ')}]; give it a fixed C×H×W first (e.g. export it from torch with a fixed image size)`,
    );
  }
  if (c !== 3)
    throw new UsageError(
      `${file}: input '${graph.feedInputs[0].name}' takes ${c} channels; images are loaded as 3-channel RGB`,
    );
  if (h !== w)
    throw new UsageError(
      `${file}: input '${graph.feedInputs[0].name}' is ${h}×${w}; square inputs only (pass --input-size to train at a square size)`,
    );
  return { channels: c, size: h };
}

export const PREPROCESS_CHOICES = [...PREPROCESS_PRESETS, 'model'] as const;

/**
 * --preprocess NAME, or 'model' (the metadata's), or by default the metadata's when present,
 * else torchvision; at the input size `size` (a stored spec is scaled: resize/crop kept).
 */
export function choosePreprocess(
  graph: Graph,
  file: string,
  flag: string | undefined,
  size: number,
): { spec: PreprocessSpec; why: string } {
  const stored = readPreprocess(graph);
  if (flag !== undefined && flag !== 'model') {
    const name = choiceFlag('--preprocess', flag, PREPROCESS_CHOICES) as PreprocessPreset;
    return { spec: preprocessPreset(name, size), why: `--preprocess ${name}` };
  }
  if (stored) {
    const spec =
      stored.crop === size
        ? stored
        : { ...stored, crop: size, resize: Math.max(size, Math.round((size * stored.resize) / stored.crop)) };
    return { spec, why: "the model's metadata" };
  }
  if (flag === 'model')
    throw new UsageError(
      `--preprocess model: ${file} has no preprocessing in its metadata; pass one of ${PREPROCESS_PRESETS.join(', ')}`,
    );
  return { spec: preprocessPreset('torchvision', size), why: 'the default (the model has none in its metadata)' };
}

export function describePreprocess(p: PreprocessSpec): string {
  const f = (v: readonly number[]) => `[${v.map((x) => Number(x.toPrecision(4))).join(', ')}]`;
  return `${p.name}: resize ${p.resize}, crop ${p.crop}, ${p.channelOrder.toUpperCase()}${p.grayscale ? ' (gray)' : ''}, ×${Number(p.scale.toPrecision(4))}, mean ${f(p.mean)}, std ${f(p.std)}`;
}

/** Columns padded to their widest cell; `right` lists the columns aligned right. */
export function table(header: string[], rows: string[][], right: number[] = []): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((cell, c) => (right.includes(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n') + '\n';
}

export const percent = (v: number) => `${(100 * v).toFixed(1)}%`;

/** path.onnx → path.<suffix> (e.g. tuned.onnx → tuned.history.json). */
export function besides(out: string, suffix: string): string {
  return out.replace(/\.onnx$/i, '') + '.' + suffix;
}
