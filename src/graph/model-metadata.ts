// What a tuned model carries besides its weights, in the ONNX model's metadata_props: the class
// labels (index = output column) and the preprocessing its inputs need. `graft train` writes
// them; `graft eval`, `graft predict` and `--preprocess model` read them. Pure TypeScript.
import { ModelError } from './errors.ts';
import type { Graph } from './ir.ts';

export const LABELS_KEY = 'onnx_graft.labels';
export const PREPROCESS_KEY = 'onnx_graft.preprocess';

/**
 * How an image becomes the network's input: shorter side resized to `resize` (Pillow bilinear,
 * antialiased), centre crop `crop`×`crop`, optionally gray, then
 * out[c] = (byte[order[c]]·scale − mean[c]) / std[c], CHW.
 */
export interface PreprocessSpec {
  /** 'torchvision', 'caffe', 'inception' or a model's own name. */
  readonly name: string;
  readonly resize: number;
  readonly crop: number;
  readonly channelOrder: 'rgb' | 'bgr';
  readonly scale: number;
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
  /** Convert to gray (ITU-R 601 luma, as Pillow's convert('L')) before replicating to 3 channels. */
  readonly grayscale?: boolean;
}

export type PreprocessPreset = 'torchvision' | 'caffe' | 'inception';
export const PREPROCESS_PRESETS: readonly PreprocessPreset[] = ['torchvision', 'caffe', 'inception'];

/**
 * The usual preprocessing of a model family at input size `size`: torchvision (resize to
 * size·256/224, ImageNet mean/std on [0, 1]), Caffe/Caffe2 zoo models (BGR on 0–255, mean
 * subtracted), Inception (Keras/TF: [-1, 1], resize to size·342/299).
 */
export function preprocessPreset(name: PreprocessPreset, size: number): PreprocessSpec {
  if (!Number.isInteger(size) || size < 1)
    throw new ModelError(`preprocess: input size must be a positive integer, got ${size}`);
  const row = Object.hasOwn(PRESET_FAMILIES, name) ? PRESET_FAMILIES[name] : undefined;
  if (!row)
    throw new ModelError(
      `preprocess '${String(name)}' is not known; accepted: ${PREPROCESS_PRESETS.join(', ')}, or 'model' (read from the model's metadata)`,
    );
  const { resizePerCrop, ...rest } = row;
  return { name, resize: Math.round(size * resizePerCrop), crop: size, ...rest };
}

type PresetFamily = Omit<PreprocessSpec, 'name' | 'resize' | 'crop'> & { resizePerCrop: number };

/** One row per family: resize as a multiple of the crop, channel order, scale, mean, std. */
const PRESET_FAMILIES: Record<PreprocessPreset, PresetFamily> = {
  torchvision: family(256 / 224, 'rgb', 1 / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
  caffe: family(256 / 224, 'bgr', 1, [103.939, 116.779, 123.68], [1, 1, 1]),
  inception: family(342 / 299, 'rgb', 1 / 255, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
};

function family(
  resizePerCrop: number,
  channelOrder: PreprocessSpec['channelOrder'],
  scale: number,
  mean: PreprocessSpec['mean'],
  std: PreprocessSpec['std'],
): PresetFamily {
  return { resizePerCrop, channelOrder, scale, mean, std };
}

/** Class names stored in the model, or undefined when it has none. */
export function readLabels(graph: Graph): string[] | undefined {
  const raw = graph.metadataProps.find((p) => p.key === LABELS_KEY)?.value;
  if (raw === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ModelError(`metadata '${LABELS_KEY}' is not JSON; expected an array of class names`, {
      file: graph.source,
    });
  }
  if (!Array.isArray(parsed) || parsed.length === 0 || !parsed.every((l) => typeof l === 'string')) {
    throw new ModelError(`metadata '${LABELS_KEY}' must be a non-empty array of strings`, { file: graph.source });
  }
  return parsed as string[];
}

export function writeLabels(graph: Graph, labels: readonly string[]): void {
  if (labels.length === 0 || !labels.every((l) => typeof l === 'string'))
    throw new ModelError('labels must be a non-empty list of strings', { file: graph.source });
  setProp(graph, LABELS_KEY, JSON.stringify(labels));
}

/** The preprocessing stored in the model, or undefined when it has none. */
export function readPreprocess(graph: Graph): PreprocessSpec | undefined {
  const raw = graph.metadataProps.find((p) => p.key === PREPROCESS_KEY)?.value;
  if (raw === undefined) return undefined;
  let p: Record<string, unknown>;
  try {
    p = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    throw new ModelError(`metadata '${PREPROCESS_KEY}' is not JSON`, { file: graph.source });
  }
  const bad = (what: string) => new ModelError(`metadata '${PREPROCESS_KEY}': ${what}`, { file: graph.source });
  const positiveInt = (k: string) => {
    if (!Number.isInteger(p[k]) || (p[k] as number) < 1)
      throw bad(`'${k}' must be a positive integer, got ${JSON.stringify(p[k])}`);
    return p[k] as number;
  };
  const triple = (k: string, nonZero: boolean) => {
    const v = p[k];
    if (
      !Array.isArray(v) ||
      v.length !== 3 ||
      !v.every((x) => typeof x === 'number' && Number.isFinite(x) && (!nonZero || x !== 0))
    ) {
      throw bad(`'${k}' must be three finite numbers${nonZero ? ', none zero' : ''}, got ${JSON.stringify(v)}`);
    }
    return v as unknown as readonly [number, number, number];
  };
  if (typeof p.name !== 'string') throw bad(`'name' must be a string`);
  if (p.channelOrder !== 'rgb' && p.channelOrder !== 'bgr')
    throw bad(`'channelOrder' must be 'rgb' or 'bgr', got ${JSON.stringify(p.channelOrder)}`);
  if (typeof p.scale !== 'number' || !Number.isFinite(p.scale) || p.scale <= 0)
    throw bad(`'scale' must be a positive number, got ${JSON.stringify(p.scale)}`);
  if (p.grayscale !== undefined && typeof p.grayscale !== 'boolean') throw bad(`'grayscale' must be true or false`);
  const resize = positiveInt('resize');
  const crop = positiveInt('crop');
  if (crop > resize) throw bad(`'crop' (${crop}) is larger than 'resize' (${resize})`);
  return {
    name: p.name,
    resize,
    crop,
    channelOrder: p.channelOrder,
    scale: p.scale,
    mean: triple('mean', false),
    std: triple('std', true),
    ...(p.grayscale ? { grayscale: true } : {}),
  };
}

export function writePreprocess(graph: Graph, spec: PreprocessSpec): void {
  setProp(graph, PREPROCESS_KEY, JSON.stringify(spec));
  readPreprocess(graph); // refuses a spec that would not read back
}

function setProp(graph: Graph, key: string, value: string): void {
  graph.metadataProps = graph.metadataProps.filter((p) => p.key !== key);
  graph.metadataProps.push({ key, value });
}
