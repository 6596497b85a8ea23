// The four transfer-learning cases and include_top=False on every light model-zoo network and
// every architecture builder. Each rewrite is loaded and run by onnxruntime-node (CPU); where
// weights were kept, its tensors equal the original model's on the same seeded random input, and
// the new head's output equals a float64 reference computed here from those tensors. Parameter
// counts are recomputed here by walking the graph, not by the functions under test.
import fs from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildArchitecture, type ArchitectureName } from '../src/graph/architectures/index.ts';
import type { Graph, Node } from '../src/graph/ir.ts';
import {
  cutPoints,
  graft,
  headOf,
  includeTop,
  removeTop,
  setBatchSize,
  transfer,
  type TransferSummary,
} from '../src/graph/surgery/index.ts';
import { isFloatType, sizeOf } from '../src/graph/tensor.ts';
import {
  preprocessPreset,
  readLabels,
  readPreprocess,
  writeLabels,
  writePreprocess,
} from '../src/graph/model-metadata.ts';
import { loadModelFile } from '../src/node/files.ts';
import { lightModelPath, type LightModel } from './helpers/models.ts';
import { maxAbsDiff, nodesBehind, normals, randomizeWeights, runOrt, type Outputs } from './helpers/surgery-support.ts';

const CLASSES = 5;

/** What each light model's head looks like, written down from the model files. */
const LIGHT: Record<string, { features: string; channels: number; featureShape: number[]; classifier: string }> = {
  bvlc_alexnet: { features: 'r14', channels: 256, featureShape: [1, 256, 6, 6], classifier: 'fc8_w_0' },
  vgg19: { features: 'r36', channels: 512, featureShape: [1, 512, 7, 7], classifier: 'fc8_w_0' },
  inception_v1: { features: 'r137', channels: 1024, featureShape: [1, 1024, 6, 6], classifier: 'r142' },
  resnet50: { features: 'r171', channels: 2048, featureShape: [1, 2048, 7, 7], classifier: 'gpu_0/pred_w_0' },
  squeezenet: { features: 'r60', channels: 512, featureShape: [1, 512, 13, 13], classifier: 'conv10_w_0' },
};

/** VGG-sized graphs: case 4 keeps its pretrained weights there (re-initialising 140M weights is
 * slow and is covered on the smaller networks), and onnxruntime runs only their small rewrites. */
const LARGE = new Set(['vgg19', 'vgg16', 'alexnet']);

// ─── independent counting ──────────────────────────────────────────────────────────────────

/** Elements of the float initializers `nodes` read, each once. */
function floatsRead(graph: Graph, nodes: Node[]): number {
  const names = new Set<string>();
  for (const n of nodes)
    for (const i of n.inputs)
      if (graph.initializers.get(i) && isFloatType(graph.initializers.get(i)!.value.dtype)) names.add(i);
  return [...names].reduce((s, n) => s + sizeOf(graph.initializers.get(n)!.value.dims), 0);
}

function floatTotal(graph: Graph, filter: (trainable: boolean) => boolean = () => true): number {
  let s = 0;
  for (const i of graph.initializers.values())
    if (isFloatType(i.value.dtype) && filter(i.trainable)) s += sizeOf(i.value.dims);
  return s;
}

/** The last Gemm or Conv in graph order: the classifier a fine-tune replaces. */
function lastClassifier(graph: Graph): { node: Node; inFeatures: number; size: number } {
  const node = [...graph.nodes].reverse().find((n) => n.opType === 'Gemm' || n.opType === 'Conv')!;
  const w = graph.initializers.get(node.inputs[1])!.value.dims;
  const b = node.inputs[2] ? sizeOf(graph.initializers.get(node.inputs[2])!.value.dims) : 0;
  const transB = node.opType === 'Gemm' && node.attributes.transB?.type === 'int' && node.attributes.transB.value === 1;
  const inFeatures = node.opType === 'Conv' ? w[1] : transB ? w[1] : w[0];
  return { node, inFeatures, size: sizeOf(w) + b };
}

interface Expected {
  trainable: number;
  frozen: number;
}

/** Counts each case must produce, from the original graph alone. */
function expectedCounts(graph: Graph, c: 1 | 2 | 3 | 4, at: string | undefined): Expected {
  if (c === 1 || c === 2) {
    const channels = graph.values.get(at!)!.shape![1] as number;
    return { trainable: channels * CLASSES + CLASSES, frozen: floatsRead(graph, nodesBehind(graph, at!)) };
  }
  const old = lastClassifier(graph);
  const frozen = floatTotal(graph, (t) => !t);
  return { trainable: floatTotal(graph) - frozen - old.size + old.inFeatures * CLASSES + CLASSES, frozen };
}

function checkSummary(summary: TransferSummary, result: Graph, expected: Expected): void {
  expect({ trainable: summary.trainableParameters, frozen: summary.frozenParameters }).toEqual(expected);
  expect(floatTotal(result, (t) => t)).toBe(expected.trainable);
  expect(floatTotal(result, (t) => !t)).toBe(expected.frozen);
}

// ─── float64 references for the new heads ──────────────────────────────────────────────────

function softmax(z: number[]): number[] {
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/** GlobalAveragePool → Gemm(W [classes, C], b) → optional Softmax, for batch 1. */
function denseHead(
  features: Float32Array,
  channels: number,
  w: Float32Array,
  b: Float32Array,
  withSoftmax: boolean,
): number[] {
  const spatial = features.length / channels;
  const pooled = Array.from({ length: channels }, (_, c) => {
    let s = 0;
    for (let i = 0; i < spatial; i++) s += features[c * spatial + i];
    return s / spatial;
  });
  const classes = b.length;
  const z = Array.from({ length: classes }, (_, k) => {
    let s = b[k];
    for (let c = 0; c < channels; c++) s += w[k * channels + c] * pooled[c];
    return s;
  });
  return withSoftmax ? softmax(z) : z;
}

/** SqueezeNet's head: 1×1 Conv (W [classes, C, 1, 1]) → Relu → GlobalAveragePool → Softmax. */
function convHead(features: Float32Array, channels: number, w: Float32Array, b: Float32Array): number[] {
  const spatial = features.length / channels;
  const classes = b.length;
  const z = Array.from({ length: classes }, (_, k) => {
    let total = 0;
    for (let i = 0; i < spatial; i++) {
      let s = b[k];
      for (let c = 0; c < channels; c++) s += w[k * channels + c] * features[c * spatial + i];
      total += Math.max(0, s);
    }
    return total / spatial;
  });
  return softmax(z);
}

function weight(graph: Graph, name: string): Float32Array {
  return graph.initializers.get(name)!.value.data as Float32Array;
}

// ─── light model-zoo networks ──────────────────────────────────────────────────────────────

describe.each(Object.keys(LIGHT))('light %s', (model) => {
  const spec = LIGHT[model];
  const file = lightModelPath(model as LightModel);
  let original: Graph;
  let input: Float32Array;
  let cases: Record<1 | 2 | 3 | 4, { graph: Graph; summary: TransferSummary }>;
  let reference: Outputs;
  let nodeCount: number;

  beforeAll(async () => {
    if (!fs.existsSync(file)) throw new Error(`missing ${file}: shared/ must be checked out beside the repository`);
    original = randomizeWeights(loadModelFile(file), 11);
    nodeCount = original.nodes.length;
    input = normals(3 * 224 * 224, 5);
    cases = {
      1: transfer(original, { case: 1, classes: CLASSES, seed: 1 }),
      2: transfer(original, { case: 2, classes: CLASSES, seed: 2 }),
      3: transfer(original, { case: 3, classes: CLASSES, seed: 3 }),
      4: transfer(original, {
        case: 4,
        classes: CLASSES,
        seed: 4,
        reinitialize: !LARGE.has(model.replace('bvlc_', '')),
      }),
    };
    reference = await runOrt(original, input, [spec.features, cases[2].summary.cutPoint, cases[3].summary.cutPoint]);
  });

  it('finds the head and the features', () => {
    const head = headOf(original);
    expect(head.featureTensor).toBe(spec.features);
    expect(head.featureShape).toEqual(spec.featureShape);
    expect(head.classifier.inputs[1]).toBe(spec.classifier);
    expect(head.softmax?.opType).toBe('Softmax');
    expect(head.nodes.at(-1)!.outputs[0]).toBe(original.outputs[0].name);
  });

  it('case 1: features frozen, one new dense layer; features and head match the original', async () => {
    const { graph, summary } = cases[1];
    expect(summary.cutPoint).toBe(spec.features);
    checkSummary(summary, graph, expectedCounts(original, 1, spec.features));
    const out = await runOrt(graph, input, [spec.features]);
    expect(maxAbsDiff(out[spec.features].data, reference[spec.features].data)).toBeLessThanOrEqual(1e-6);
    const [w, b] = summary.newWeights.map((n) => weight(graph, n));
    const expected = denseHead(reference[spec.features].data, spec.channels, w, b, true);
    expect(out[summary.output].dims).toEqual([1, CLASSES]);
    expect(maxAbsDiff(out[summary.output].data, expected)).toBeLessThanOrEqual(1e-5);
  });

  it('case 2: cut half-way at a cut point, kept part frozen and equal to the original', async () => {
    const { graph, summary } = cases[2];
    const points = cutPoints(original);
    const point = points.find((p) => p.tensor === summary.cutPoint);
    expect(point, `${summary.cutPoint} is one of the cut points`).toBeDefined();
    expect(point!.features).toBe(false);
    const bodyLayers = points.find((p) => p.features)!.layers;
    expect(point!.layers).toBeGreaterThanOrEqual(bodyLayers / 4);
    expect(point!.layers).toBeLessThanOrEqual((3 * bodyLayers) / 4);
    checkSummary(summary, graph, expectedCounts(original, 2, summary.cutPoint));
    const out = await runOrt(graph, input, [summary.cutPoint]);
    expect(maxAbsDiff(out[summary.cutPoint].data, reference[summary.cutPoint].data)).toBeLessThanOrEqual(1e-6);
    const channels = original.values.get(summary.cutPoint)!.shape![1] as number;
    const [w, b] = summary.newWeights.map((n) => weight(graph, n));
    expect(
      maxAbsDiff(out[summary.output].data, denseHead(reference[summary.cutPoint].data, channels, w, b, true)),
    ).toBeLessThanOrEqual(1e-5);
  });

  it('case 3: only the last layer is new, everything trains; the rest matches the original', async () => {
    const { graph, summary } = cases[3];
    checkSummary(summary, graph, expectedCounts(original, 3, undefined));
    expect(summary.newWeights[0]).toBe(spec.classifier);
    const out = await runOrt(graph, input, [summary.cutPoint]);
    expect(maxAbsDiff(out[summary.cutPoint].data, reference[summary.cutPoint].data)).toBeLessThanOrEqual(1e-6);
    const x = reference[summary.cutPoint].data;
    const [w, b] = summary.newWeights.map((n) => weight(graph, n));
    const channels = original.values.get(summary.cutPoint)!.shape![1] as number;
    const expected = model === 'squeezenet' ? convHead(x, channels, w, b) : denseHead(x, channels, w, b, true);
    expect(out[summary.output].dims.reduce((a, d) => a * d, 1)).toBe(CLASSES);
    expect(maxAbsDiff(out[summary.output].data, expected)).toBeLessThanOrEqual(1e-5);
  });

  it(
    'case 4: like case 3, every weight trainable' +
      (LARGE.has(model.replace('bvlc_', '')) ? '' : ' and re-initialised'),
    async () => {
      const { graph, summary } = cases[4];
      checkSummary(summary, graph, expectedCounts(original, 4, undefined));
      if (!LARGE.has(model.replace('bvlc_', ''))) {
        const conv = original.nodes.find((n) => n.opType === 'Conv')!;
        expect(maxAbsDiff(weight(graph, conv.inputs[1]), weight(original, conv.inputs[1]))).toBeGreaterThan(0.01);
        for (const n of graph.nodes.filter((n) => n.opType === 'BatchNormalization')) {
          expect([...weight(graph, n.inputs[1])].every((v) => v === 1)).toBe(true);
          expect([...weight(graph, n.inputs[4])].every((v) => v === 1)).toBe(true);
        }
      }
      if (LARGE.has(model.replace('bvlc_', ''))) return; // case 3 already ran the same graph shape
      const out = await runOrt(graph, input);
      const y = out[summary.output].data;
      expect(y.length).toBe(CLASSES);
      expect([...y].every(Number.isFinite)).toBe(true);
    },
  );

  it('include_top=False + avg pooling + a 5-class head gives N×5 at batch 2', async () => {
    const top = includeTop(original, false);
    expect(top.tensor).toBe(spec.features);
    expect(top.graph.outputs.map((o) => o.name)).toEqual([spec.features]);
    const grafted = graft(top.graph, { pooling: 'avg', classes: CLASSES, seed: 9 });
    const batch2 = setBatchSize(grafted.graph, 2);
    expect(batch2.values.get(grafted.output)!.shape).toEqual([2, CLASSES]);
    const second = normals(input.length, 6);
    const both = new Float32Array(input.length * 2);
    both.set(input);
    both.set(second, input.length);
    const out = await runOrt(batch2, both, [spec.features]);
    expect(out[grafted.output].dims).toEqual([2, CLASSES]);
    const y = out[grafted.output].data;
    for (let r = 0; r < 2; r++)
      expect(
        y[r * CLASSES] + y[r * CLASSES + 1] + y[r * CLASSES + 2] + y[r * CLASSES + 3] + y[r * CLASSES + 4],
      ).toBeCloseTo(1, 5);
    const first = out[spec.features].data.subarray(0, reference[spec.features].data.length);
    expect(maxAbsDiff(first, reference[spec.features].data)).toBeLessThanOrEqual(1e-5);
  });

  it('the input graph is never modified', () => {
    expect(original.outputs.map((o) => o.name)).toEqual([OUTPUTS[model]]);
    expect(original.nodes.length).toBe(nodeCount);
    expect(original.initializers.get(spec.classifier)!.value.dims[0]).toBe(1000);
    // Only BatchNormalization running statistics are not trainable, as loaded.
    let stats = 0;
    for (const n of original.nodes.filter((n) => n.opType === 'BatchNormalization'))
      stats += sizeOf(original.initializers.get(n.inputs[3])!.value.dims) * 2;
    expect(floatTotal(original, (t) => !t)).toBe(stats);
  });
});

const OUTPUTS: Record<string, string> = {
  bvlc_alexnet: 'prob_1',
  vgg19: 'prob_1',
  inception_v1: 'prob_1',
  resnet50: 'gpu_0/softmax_1',
  squeezenet: 'softmaxout_1',
};

// ─── architecture builders ─────────────────────────────────────────────────────────────────

/** Small inputs keep onnxruntime quick; AlexNet and VGG then pool adaptively with MatMuls. */
const BUILDERS: {
  name: ArchitectureName;
  inputSize: number;
  features: string;
  channels: number;
  classifier: string;
}[] = [
  {
    name: 'alexnet',
    inputSize: 63,
    features: '/features/features.12/MaxPool_output_0',
    channels: 256,
    classifier: 'classifier.6.weight',
  },
  {
    name: 'vgg16',
    inputSize: 32,
    features: '/features/features.30/MaxPool_output_0',
    channels: 512,
    classifier: 'classifier.6.weight',
  },
  {
    name: 'vgg19',
    inputSize: 32,
    features: '/features/features.36/MaxPool_output_0',
    channels: 512,
    classifier: 'classifier.6.weight',
  },
  {
    name: 'googlenet',
    inputSize: 64,
    features: '/inception5b/Concat_output_0',
    channels: 1024,
    classifier: 'fc.weight',
  },
  {
    name: 'inception_v3',
    inputSize: 96,
    features: '/Mixed_7c/Concat_2_output_0',
    channels: 2048,
    classifier: 'fc.weight',
  },
  {
    name: 'resnet50',
    inputSize: 64,
    features: '/layer4/layer4.2/relu_2/Relu_output_0',
    channels: 2048,
    classifier: 'fc.weight',
  },
];

describe.each(BUILDERS)('builder $name', ({ name, inputSize, features, channels, classifier }) => {
  let built: Graph;
  let input: Float32Array;
  beforeAll(() => {
    built = buildArchitecture(name, { inputSize, batch: 2, seed: 3 });
    input = normals(2 * 3 * inputSize * inputSize, 8);
  });

  it('finds the torchvision head', () => {
    const head = headOf(built);
    expect(head.featureTensor).toBe(features);
    expect(head.featureShape?.[1]).toBe(channels);
    expect(head.classifier.inputs[1]).toBe(classifier);
    expect(head.softmax).toBeUndefined();
    expect(head.nodes.at(-1)!.outputs[0]).toBe('output');
  });

  it('include_top=False + avg pooling + a 5-class head gives N×5', async () => {
    const top = includeTop(built, false);
    const grafted = graft(top.graph, { pooling: 'avg', classes: CLASSES, seed: 9 });
    const out = await runOrt(grafted.graph, input);
    expect(out[grafted.output].dims).toEqual([2, CLASSES]);
    expect(grafted.parameters).toBe(channels * CLASSES + CLASSES);
    expect(top.graph.parameterCount()).toBe(floatsRead(built, nodesBehind(built, features)));
    if (!LARGE.has(name)) {
      const viaBuilder = buildArchitecture(name, { inputSize, batch: 2, seed: 3, includeTop: false });
      expect(top.graph.parameterCount()).toBe(viaBuilder.parameterCount());
      expect(top.graph.nodes.map((n) => n.opType)).toEqual(viaBuilder.nodes.map((n) => n.opType));
    }
  });

  it.each([1, 2, 3, 4] as const)('case %i gives the expected trainable and frozen counts and runs', async (c) => {
    const { graph, summary } = transfer(built, {
      case: c,
      classes: CLASSES,
      seed: c,
      reinitialize: c === 4 && !LARGE.has(name),
    });
    checkSummary(summary, graph, expectedCounts(built, c, c === 1 ? features : c === 2 ? summary.cutPoint : undefined));
    if (c === 1) expect(summary.cutPoint).toBe(features);
    expect(graph.values.get(summary.output)!.shape).toEqual([2, CLASSES]);
    if (LARGE.has(name) && c >= 3) return; // 60–140M parameters: the light AlexNet and VGG19 run these
    const out = await runOrt(graph, input);
    expect(out[summary.output].dims).toEqual([2, CLASSES]);
    expect([...out[summary.output].data].every(Number.isFinite)).toBe(true);
  });
});

describe('removeTop', () => {
  it('removes exactly the head nodes', () => {
    const g = loadModelFile(lightModelPath('resnet50'));
    const head = headOf(g);
    const { graph } = removeTop(g);
    expect(graph.nodes.length).toBe(g.nodes.length - head.nodes.length);
    expect(head.nodes.map((n) => n.opType)).toEqual(['AveragePool', 'Reshape', 'Gemm', 'Softmax']);
  });
});

describe('transfer pooling (cases 1 and 2)', () => {
  const source = () => buildArchitecture('resnet50', { width: 0.125, inputSize: 32, classes: 5, seed: 3 });

  it("'flatten' keeps every position of the cut's map; the head matches a float64 reference in onnxruntime", async () => {
    const g = source();
    const cut = cutPoints(g).find((p) => p.stageEnd)!;
    const { graph, summary } = transfer(g, { case: 2, classes: 3, cutAt: cut.tensor, seed: 1, pooling: 'flatten' });
    const [, c, h, w] = cut.shape as number[];
    const dense = graph.nodes.find((n) => summary.newWeights.includes(n.inputs[1]))!;
    const weight = graph.initializers.get(dense.inputs[1])!.value;
    // One weight per class and per feature of the flattened c×h×w map.
    expect(weight.dims.reduce((a, b) => a * b, 1)).toBe(3 * c * h * w);
    expect(graph.nodes.some((n) => n.opType === 'Flatten')).toBe(true);
    const batch = setBatchSize(graph, 2);
    const out = await runOrt(batch, normals(2 * 3 * 32 * 32, 11), [cut.tensor]);
    const features = out[cut.tensor].data;
    const wData = weight.data as Float32Array;
    const bias = graph.initializers.get(dense.inputs[2])?.value.data as Float32Array | undefined;
    const transB = dense.attributes.transB?.type === 'int' && dense.attributes.transB.value !== 0;
    const per = c * h * w;
    const logits = new Float64Array(2 * 3);
    for (let n = 0; n < 2; n++)
      for (let k = 0; k < 3; k++) {
        let s = bias ? bias[k] : 0;
        for (let f = 0; f < per; f++) s += features[n * per + f] * wData[transB ? k * per + f : f * 3 + k];
        logits[n * 3 + k] = s;
      }
    const got = out[summary.output].data;
    const expected = summary.output === dense.outputs[0] ? [...logits] : softmaxRows([...logits], 3);
    expect(maxAbsDiff(got, expected)).toBeLessThan(1e-4);
    expect(out[summary.output].dims).toEqual([2, 3]);
  });

  it('refuses pooling for cases 3 and 4 and values outside avg, max, flatten', () => {
    expect(() => transfer(source(), { case: 3, classes: 3, seed: 1, pooling: 'flatten' })).toThrow(
      /pooling applies to cases 1 and 2/,
    );
    expect(() => transfer(source(), { case: 1, classes: 3, seed: 1, pooling: 'sum' as never })).toThrow(
      /'avg', 'max' or 'flatten'/,
    );
  });
});

function softmaxRows(x: number[], k: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < x.length / k; r++) {
    const row = x.slice(r * k, (r + 1) * k);
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const s = e.reduce((a, b) => a + b, 0);
    out.push(...e.map((v) => v / s));
  }
  return out;
}

describe('transfer and the model metadata', () => {
  it("drops the source's class names (the classifier is new) and keeps its preprocessing", () => {
    const g = buildArchitecture('resnet50', { width: 0.125, inputSize: 32, classes: 5, seed: 3 });
    writeLabels(g, ['a', 'b', 'c', 'd', 'e']);
    const spec = preprocessPreset('torchvision', 32);
    writePreprocess(g, spec);
    for (const c of [1, 2, 3, 4] as const) {
      const { graph } = transfer(g, { case: c, classes: 3, seed: 1 });
      expect(readLabels(graph)).toBeUndefined();
      expect(readPreprocess(graph)).toEqual(spec);
    }
    expect(readLabels(g)).toEqual(['a', 'b', 'c', 'd', 'e']); // the input graph is untouched
  });
});
