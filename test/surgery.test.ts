// Graph surgery on the light model-zoo networks and the architecture builders: cutting (with
// onnxruntime-node checking that a cut's output equals the original model's tensor), cut points,
// heads grafted on (checked against a float64 reference), freeze/unfreeze/reinit selectors,
// the refusals and warnings, the codec round trip of rewritten graphs, and `graft rewrite`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { UsageError } from '../src/cli/args.ts';
import { rewriteCommand } from '../src/cli/commands/rewrite.ts';
import { buildArchitecture } from '../src/graph/architectures/index.ts';
import { decodeModel, encodeModel } from '../src/graph/codec.ts';
import { ModelError } from '../src/graph/errors.ts';
import type { Graph, Node } from '../src/graph/ir.ts';
import { loadModel } from '../src/graph/load.ts';
import {
  cutAt,
  cutPoints,
  formatCutPoints,
  freeze,
  graft,
  headOf,
  includeTop,
  reinit,
  removeTop,
  setBatchSize,
  transfer,
  unfreeze,
  type CutPoint,
} from '../src/graph/surgery/index.ts';
import { isFloatType, sizeOf, toNumbers } from '../src/graph/tensor.ts';
import { loadModelFile } from '../src/node/files.ts';
import { describeGraphDifference } from './helpers/graph-equal.ts';
import { lightModelPath } from './helpers/models.ts';
import {
  light,
  maxAbsDiff,
  nodesBehind,
  normals,
  randomizeWeights,
  runOrt,
  type Outputs,
} from './helpers/surgery-support.ts';

function floatNamesRead(graph: Graph, nodes: Node[]): Set<string> {
  const names = new Set<string>();
  for (const n of nodes)
    for (const i of n.inputs)
      if (graph.initializers.has(i) && isFloatType(graph.initializers.get(i)!.value.dtype)) names.add(i);
  return names;
}

const sizeOfNames = (graph: Graph, names: Iterable<string>) =>
  [...names].reduce((s, n) => s + sizeOf(graph.initializers.get(n)!.value.dims), 0);

/** Whether `tensor` separates the graph: nothing after it reads anything from before it. */
function separates(graph: Graph, tensor: string): boolean {
  const before = new Set(nodesBehind(graph, tensor));
  for (const n of graph.nodes) {
    if (before.has(n)) continue;
    for (const i of n.inputs) {
      if (i === tensor || graph.initializers.has(i)) continue;
      if ([...before].some((b) => b.outputs.includes(i)) || graph.feedInputs.some((f) => f.name === i)) return false;
    }
  }
  return true;
}

function expectModelError(f: () => unknown, ...fragments: (string | RegExp)[]): ModelError {
  let error: unknown;
  try {
    f();
  } catch (e) {
    error = e;
  }
  expect(error, 'expected a ModelError').toBeInstanceOf(ModelError);
  for (const fragment of fragments) expect((error as Error).message).toMatch(fragment);
  return error as ModelError;
}

// ─── cutting ───────────────────────────────────────────────────────────────────────────────

describe.each([
  { model: 'resnet50', cuts: ['r3', 'r35', 'r89', 'r171'], inBlock: 'r11', node: 'n14' },
  { model: 'inception_v1', cuts: ['r9', 'r37', 'r94'], inBlock: 'r12', node: 'n23' },
  // r4, fire2's squeeze output, is inside the module but separates it: both expand branches
  // start after it, so the cut drops no branch and warns about nothing.
  { model: 'squeezenet', cuts: ['r4', 'r9', 'r32', 'r60'], inBlock: 'r6', node: 'n9' },
  { model: 'bvlc_alexnet', cuts: ['r3', 'r14', 'r21'], inBlock: undefined, node: 'n16' },
])('cutAt on light $model', ({ model, cuts, inBlock, node }) => {
  let original: Graph;
  let input: Float32Array;
  let reference: Outputs;
  const nodeOutput = () => original.nodes.find((n) => n.name === node)!.outputs[0];

  beforeAll(async () => {
    original = randomizeWeights(light(model), 21);
    input = normals(3 * 224 * 224, 22);
    reference = await runOrt(original, input, [...cuts, ...(inBlock ? [inBlock] : []), nodeOutput()]);
  });

  it.each(cuts)('cut at %s keeps exactly what it depends on and computes the same tensor', async (tensor) => {
    const { graph, warnings, shape } = cutAt(original, tensor);
    expect(warnings).toEqual([]);
    expect(graph.outputs.map((o) => o.name)).toEqual([tensor]);
    expect(shape).toEqual(original.values.get(tensor)!.shape);
    const kept = nodesBehind(original, tensor);
    expect(graph.nodes.map((n) => n.name)).toEqual(kept.map((n) => n.name));
    const usedInits = new Set(kept.flatMap((n) => n.inputs).filter((i) => original.initializers.has(i)));
    expect(new Set(graph.initializers.keys())).toEqual(usedInits);
    for (const v of graph.values.keys())
      expect(
        graph.nodes.some((n) => n.inputs.includes(v) || n.outputs.includes(v)) ||
          graph.inputs.some((i) => i.name === v),
      ).toBe(true);
    for (const i of graph.inputs) expect(graph.initializers.has(i.name) || graph.feedInputs.includes(i)).toBe(true);
    const out = await runOrt(graph, input);
    expect(maxAbsDiff(out[tensor].data, reference[tensor].data)).toBeLessThanOrEqual(1e-6);
  });

  it('accepts a node name, meaning its first output', async () => {
    const { graph, tensor } = cutAt(original, node);
    expect(tensor).toBe(nodeOutput());
    const out = await runOrt(graph, input);
    expect(maxAbsDiff(out[tensor].data, reference[tensor].data)).toBeLessThanOrEqual(1e-6);
  });

  if (inBlock) {
    it(`cuts inside a block (${inBlock}) with a warning, and cutPoints does not offer it`, async () => {
      const { graph, warnings } = cutAt(original, inBlock);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(model === 'resnet50' ? /residual block/ : /module/);
      expect(warnings[0]).toMatch(model === 'resnet50' ? /\(Sum\)/ : /\(Concat\)/);
      expect(cutPoints(original).map((p) => p.tensor)).not.toContain(inBlock);
      const out = await runOrt(graph, input);
      expect(maxAbsDiff(out[inBlock].data, reference[inBlock].data)).toBeLessThanOrEqual(1e-6);
    });
  }

  it('leaves the input graph alone', () => {
    expect(original.nodes.length).toBe(light(model).nodes.length);
    expect(original.outputs).toHaveLength(1);
  });
});

describe('cutAt refusals', () => {
  it('an unknown name lists the five closest names', () => {
    const e = expectModelError(
      () => cutAt(light('resnet50'), 'r1711'),
      /no tensor or node is named 'r1711'/,
      /closest names: /,
    );
    const listed = e.message.split('closest names: ')[1].split(', ');
    expect(listed).toHaveLength(5);
    expect(listed).toContain("'r171'");
    expectModelError(() => cutAt(light('squeezenet'), 'fire9/concat'), /closest names: /);
  });

  it('refuses a graph input, a weight and a shape computation, saying why', () => {
    const g = light('resnet50');
    expectModelError(() => cutAt(g, 'gpu_0/data_0'), /graph input/, /'r0'/);
    expectModelError(() => cutAt(g, 'gpu_0/conv1_w_0'), /is a weight/, /node 'n0' \(Conv\)/);
    expectModelError(() => cutAt(g, 'gpu_0/res_conv1_bn_rm_0'), /is a weight/, /BatchNormalization/);
    expectModelError(() => cutAt(g, 'OC2_DUMMY_1'), /shape computation/, /Reshape/, /'r172'/);
  });
});

// ─── cut points ────────────────────────────────────────────────────────────────────────────

describe('cutPoints', () => {
  const check = (g: Graph, points: CutPoint[]) => {
    for (const p of points) {
      expect(separates(g, p.tensor), `${p.tensor} separates the graph`).toBe(true);
      expect(p.parameters).toBe(sizeOfNames(g, floatNamesRead(g, nodesBehind(g, p.tensor))));
      expect(p.shape).toEqual(g.values.get(p.tensor)!.shape);
    }
    expect(points.filter((p) => p.features)).toHaveLength(1);
    const text = formatCutPoints(points);
    for (const p of points) expect(text).toContain(p.tensor);
  };

  it('ResNet-50: every residual block output (after Sum + Relu) and the stem pool; stages end where the size changes', () => {
    const g = light('resnet50');
    const points = cutPoints(g);
    check(g, points);
    const blockOutputs = g.nodes
      .filter((n) => n.opType === 'Relu' && g.nodes.some((s) => s.opType === 'Sum' && s.outputs[0] === n.inputs[0]))
      .map((n) => n.outputs[0]);
    expect(blockOutputs).toHaveLength(16);
    expect(points.filter((p) => p.kind === 'residual').map((p) => p.tensor)).toEqual(blockOutputs);
    expect(points.filter((p) => p.kind === 'pool').map((p) => p.tensor)).toEqual(['r3']);
    expect(points.filter((p) => p.kind === 'residual' && p.stageEnd).map((p) => p.tensor)).toEqual([
      'r35',
      'r77',
      'r139',
      'r171',
    ]);
    expect(points.find((p) => p.features)!.tensor).toBe('r171');
  });

  it('Inception v1 and SqueezeNet: module Concat outputs and pools; VGG and AlexNet: pool outputs', () => {
    for (const [model, modules, pools] of [
      ['inception_v1', 9, 4],
      ['squeezenet', 8, 3],
      ['bvlc_alexnet', 0, 3],
      ['vgg19', 0, 5],
    ] as const) {
      const g = light(model);
      const points = cutPoints(g);
      check(g, points);
      const concats = g.nodes.filter((n) => n.opType === 'Concat').map((n) => n.outputs[0]);
      expect(concats).toHaveLength(modules);
      expect(points.filter((p) => p.kind === 'concat').map((p) => p.tensor)).toEqual(concats);
      expect(points.filter((p) => p.kind === 'pool')).toHaveLength(pools);
    }
  });

  it('builders: ResNet-50 block outputs and GoogLeNet modules, none inside a block', () => {
    const resnet = buildArchitecture('resnet50', { inputSize: 64 });
    const r = cutPoints(resnet);
    check(resnet, r);
    expect(r.filter((p) => p.kind === 'residual')).toHaveLength(16);
    expect(r.at(-1)!.tensor).toBe('/layer4/layer4.2/relu_2/Relu_output_0');
    const googlenet = buildArchitecture('googlenet', { inputSize: 64 });
    const gp = cutPoints(googlenet);
    check(googlenet, gp);
    expect(gp.filter((p) => p.kind === 'concat').map((p) => p.tensor)).toEqual(
      ['3a', '3b', '4a', '4b', '4c', '4d', '4e', '5a', '5b'].map((m) => `/inception${m}/Concat_output_0`),
    );
  });
});

// ─── grafting a head ───────────────────────────────────────────────────────────────────────

describe('graft', () => {
  let body: Graph;
  let input: Float32Array;
  let features: Float32Array;
  beforeAll(async () => {
    body = removeTop(randomizeWeights(light('squeezenet'), 31)).graph;
    input = normals(3 * 224 * 224, 32);
    features = (await runOrt(body, input)).r60.data;
  });

  it('appends pooling, hidden dense layers with dropout and a softmax classifier, matching a float64 reference', async () => {
    const r = graft(body, {
      pooling: 'avg',
      dense: [
        { units: 16, activation: 'relu' },
        { units: 8, activation: 'sigmoid' },
      ],
      dropout: 0.3,
      classes: 4,
      seed: 5,
    });
    const g = r.graph;
    expect(r.input).toBe('r60');
    expect(g.nodes.slice(-11).map((n) => n.opType)).toEqual([
      'GlobalAveragePool',
      'Flatten',
      'Dropout',
      'Gemm',
      'Relu',
      'Dropout',
      'Gemm',
      'Sigmoid',
      'Dropout',
      'Gemm',
      'Softmax',
    ]);
    expect(r.parameters).toBe(512 * 16 + 16 + 16 * 8 + 8 + 8 * 4 + 4);
    const fresh = [...g.initializers.values()].filter((i) => !body.initializers.has(i.name));
    expect(fresh.every((i) => i.trainable)).toBe(true);
    expect(fresh.reduce((s, i) => s + sizeOf(i.value.dims), 0)).toBe(r.parameters);
    const dropout = g.nodes.find((n) => n.opType === 'Dropout' && n.name.startsWith('head'))!;
    expect(dropout.attributes.ratio).toEqual({ type: 'float', value: 0.3 });

    const gemms = g.nodes.filter((n) => n.opType === 'Gemm');
    const w = (n: Node, k: number) => g.initializers.get(n.inputs[k])!.value.data as Float32Array;
    let x = Array.from({ length: 512 }, (_, c) => {
      let s = 0;
      for (let i = 0; i < 169; i++) s += features[c * 169 + i];
      return s / 169;
    });
    const dense = (n: Node, v: number[]) => {
      const b = w(n, 2);
      const wt = w(n, 1);
      return Array.from(b, (bias, o) => v.reduce((s, xi, i) => s + wt[o * v.length + i] * xi, bias));
    };
    x = dense(gemms[0], x).map((v) => Math.max(0, v));
    x = dense(gemms[1], x).map((v) => 1 / (1 + Math.exp(-v)));
    x = dense(gemms[2], x);
    const m = Math.max(...x);
    const e = x.map((v) => Math.exp(v - m));
    const expected = e.map((v) => v / e.reduce((a, b) => a + b, 0));
    const out = await runOrt(g, input);
    expect(out[r.output].dims).toEqual([1, 4]);
    expect(maxAbsDiff(out[r.output].data, expected)).toBeLessThanOrEqual(1e-5);
  });

  it('max pooling, flatten and logits without softmax give the expected shapes and run', async () => {
    const max = graft(body, { pooling: 'max', classes: 3, seed: 1, softmax: false });
    expect(max.graph.nodes.slice(-3).map((n) => n.opType)).toEqual(['GlobalMaxPool', 'Flatten', 'Gemm']);
    expect(max.output).toBe('head_logits');
    const flat = graft(body, { pooling: 'flatten', classes: 3, seed: 1, init: 'he' });
    expect(flat.parameters).toBe(512 * 13 * 13 * 3 + 3);
    for (const r of [max, flat]) {
      const out = await runOrt(r.graph, input);
      expect(out[r.output].dims).toEqual([1, 3]);
    }
  });

  it('is seeded: the same seed gives the same weights, another seed others', () => {
    const a = graft(body, { pooling: 'avg', classes: 3, seed: 7 }).graph.initializers.get('head.classifier.weight')!
      .value.data;
    const b = graft(body, { pooling: 'avg', classes: 3, seed: 7 }).graph.initializers.get('head.classifier.weight')!
      .value.data;
    const c = graft(body, { pooling: 'avg', classes: 3, seed: 8 }).graph.initializers.get('head.classifier.weight')!
      .value.data;
    expect(Buffer.compare(Buffer.from((a as Float32Array).buffer), Buffer.from((b as Float32Array).buffer))).toBe(0);
    expect(maxAbsDiff(a as Float32Array, c as Float32Array)).toBeGreaterThan(0);
  });

  it('attaches at a given tensor, cutting there first', () => {
    const r = graft(light('resnet50'), { at: 'r89', pooling: 'avg', classes: 2, seed: 1 });
    expect(r.input).toBe('r89');
    expect(r.graph.values.get(r.output)!.shape).toEqual([1, 2]);
    expect(r.graph.nodes.some((n) => n.name === 'n90')).toBe(false);
  });

  it('refuses dense layers on a 4-D map without pooling, saying which pooling to add', () => {
    expectModelError(
      () => graft(body, { classes: 3, seed: 1 }),
      /4-D \[1, 512, 13, 13\]/,
      /add pooling 'avg'/,
      /'max'/,
      /'flatten'/,
    );
    const pooled = graft(body, { pooling: 'avg', classes: 3, seed: 1, softmax: false });
    const flatOutput = cutAt(pooled.graph, 'head_flatten_output').graph;
    expectModelError(() => graft(flatOutput, { pooling: 'avg', classes: 3, seed: 1 }), /already 2-D/);
    expect(graft(flatOutput, { classes: 3, seed: 1 }).parameters).toBe(512 * 3 + 3);
    expectModelError(() => graft(body, { pooling: 'avg', classes: 0, seed: 1 }), /classes must be a positive integer/);
  });

  it('opset ≥ 12 graphs get Dropout with a ratio input, and the builder layout runs', async () => {
    const g = buildArchitecture('googlenet', { inputSize: 32, includeTop: false });
    const r = graft(g, { pooling: 'avg', dense: [{ units: 8 }], dropout: 0.25, classes: 2, seed: 1 });
    const d = r.graph.nodes.find((n) => n.opType === 'Dropout')!;
    expect(d.inputs).toHaveLength(2);
    expect(toNumbers(r.graph.initializers.get(d.inputs[1])!.value)).toEqual([0.25]);
    expect(r.graph.initializers.get(d.inputs[1])!.trainable).toBe(false);
    const out = await runOrt(r.graph, normals(3 * 32 * 32, 1));
    expect(out[r.output].dims).toEqual([1, 2]);
  });
});

// ─── freeze, unfreeze, reinit ──────────────────────────────────────────────────────────────

describe('freeze / unfreeze / reinit', () => {
  const resnet = () => light('resnet50').clone();
  const frozenNames = (g: Graph) =>
    new Set([...g.initializers.values()].filter((i) => isFloatType(i.value.dtype) && !i.trainable).map((i) => i.name));
  const bnStats = (g: Graph) =>
    new Set(g.nodes.filter((n) => n.opType === 'BatchNormalization').flatMap((n) => [n.inputs[3], n.inputs[4]]));

  it('by pattern over initializer and node names', () => {
    const g = resnet();
    const matched = [...g.initializers.keys()].filter((k) => /^gpu_0\/res2_/.test(k));
    const counts = freeze(g, { pattern: /^gpu_0\/res2_/ });
    expect(counts.initializers).toBe(matched.length);
    expect(counts.parameters).toBe(sizeOfNames(g, matched));
    expect(counts.changed).toBe(matched.filter((m) => !bnStats(g).has(m)).length);
    expect(frozenNames(g)).toEqual(new Set([...bnStats(g), ...matched]));
    const byNode = freeze(resnet(), { pattern: '^n0$' });
    expect(byNode.initializers).toBe(1);
    expect(byNode.parameters).toBe(64 * 3 * 7 * 7);
  });

  it('before a tensor: everything it depends on', () => {
    const g = resnet();
    const expected = floatNamesRead(g, nodesBehind(g, 'r35'));
    const counts = freeze(g, { before: 'r35' });
    expect(counts.parameters).toBe(sizeOfNames(g, expected));
    expect(frozenNames(g)).toEqual(new Set([...bnStats(g), ...expected]));
    // A frozen BatchNormalization (scale and bias not trainable) runs in inference mode.
    const bn = g.nodes.find((n) => n.opType === 'BatchNormalization')!;
    expect(g.initializers.get(bn.inputs[1])!.trainable || g.initializers.get(bn.inputs[2])!.trainable).toBe(false);
  });

  it('all but the last N layers with parameters, and unfreeze all (state stays frozen)', () => {
    const g = resnet();
    freeze(g, { allButLast: 1 });
    const trainable = [...g.initializers.values()]
      .filter((i) => i.trainable)
      .map((i) => i.name)
      .sort();
    expect(trainable).toEqual(['gpu_0/pred_b_0', 'gpu_0/pred_w_0']);
    unfreeze(g, 'all');
    freeze(g, { allButLast: 3 }); // the last conv, its BatchNormalization and the classifier train
    expect(g.parameterCount((i) => i.trainable)).toBe(2048 * 1000 + 1000 + 2048 * 512 + 2048 * 2);
    const counts = unfreeze(g, 'all');
    expect(frozenNames(g)).toEqual(bnStats(g));
    expect(counts.parameters).toBe(g.parameterCount((i) => i.trainable));
    freeze(g, 'all');
    expect(g.parameterCount((i) => i.trainable)).toBe(0);
  });

  it('selectors that match nothing are errors', () => {
    const g = resnet();
    expectModelError(() => freeze(g, { pattern: 'no_such_layer' }), /matches no float initializer/, /closest names/);
    expectModelError(() => freeze(g, { before: 'gpu_0/data_0' }), /graph input/);
    expectModelError(() => freeze(g, { before: 'r99999' }), /closest names/);
    expectModelError(() => freeze(g, { allButLast: 500 }), /layers with parameters/);
    expectModelError(() => unfreeze(g, { pattern: '_rm_0$|_riv_0$' }), /only state/);
    expectModelError(() => reinit(g, { pattern: 'nothing' }, { seed: 1 }), /matches no float initializer/);
    expectModelError(() => freeze(g, { pattern: '(' }), /regular expression/);
  });

  it('reinit gives He weights, zero biases and fresh BatchNormalization, keeping the flags', () => {
    const g = randomizeWeights(light('resnet50'), 3);
    freeze(g, { pattern: 'res5_2_branch2c' });
    const counts = reinit(g, { pattern: 'res5_2_branch2c' }, { seed: 9 });
    expect(counts.layers).toBe(2); // the conv and its BatchNormalization
    const w = g.initializers.get('gpu_0/res5_2_branch2c_w_0')!;
    const data = w.value.data as Float32Array;
    const std = Math.sqrt(data.reduce((s, v) => s + v * v, 0) / data.length);
    expect(std).toBeGreaterThan(Math.sqrt(2 / 512) * 0.97);
    expect(std).toBeLessThan(Math.sqrt(2 / 512) * 1.03);
    expect(w.trainable).toBe(false);
    const fill = (name: string) => [
      ...new Set(g.initializers.get(`gpu_0/res5_2_branch2c_bn_${name}_0`)!.value.data as Float32Array),
    ];
    expect([fill('s'), fill('b'), fill('rm'), fill('riv')]).toEqual([[1], [0], [0], [1]]);
    expect(light('resnet50').initializers.get('gpu_0/res5_2_branch2c_w_0')!.value.data).not.toBe(data);
  });
});

// ─── round trips ───────────────────────────────────────────────────────────────────────────

describe('rewrite → encode → decode → rewrite again', () => {
  const rewrites: [string, (g: Graph) => Graph][] = [
    ['cutAt r89', (g) => cutAt(g, 'r89').graph],
    [
      'removeTop + graft',
      (g) =>
        graft(removeTop(g).graph, { pooling: 'avg', dense: [{ units: 32 }], dropout: 0.5, classes: 3, seed: 4 }).graph,
    ],
    [
      'freeze before r47',
      (g) => {
        const c = g.clone();
        freeze(c, { before: 'r47' });
        return c;
      },
    ],
    ...([1, 2, 3, 4] as const).map((c): [string, (g: Graph) => Graph] => [
      `transfer case ${c}`,
      (g) => transfer(g, { case: c, classes: 3, seed: 2, reinitialize: c === 4 }).graph,
    ]),
  ];

  it.each(rewrites)('%s', (_, rewrite) => {
    const original = light('resnet50');
    const first = rewrite(original);
    const bytes = encodeModel(first);
    const reloaded = loadModel(bytes, { file: 'first.onnx' });
    // The file holds the same graph, trainable flags included.
    expect(describeGraphDifference(decodeModel(bytes), decodeModel(encodeModel(reloaded)))).toBeUndefined();
    expect(reloaded.nodes.map((n) => [n.name, n.opType, n.inputs, n.outputs])).toEqual(
      first.nodes.map((n) => [n.name, n.opType, n.inputs, n.outputs]),
    );
    expect([...reloaded.initializers.values()].map((i) => [i.name, i.trainable])).toEqual(
      [...first.initializers.values()].map((i) => [i.name, i.trainable]),
    );
    for (const n of first.nodes)
      for (const o of n.outputs) expect(reloaded.values.get(o)?.shape).toEqual(first.values.get(o)?.shape);
    // The same rewrite of the re-decoded original gives the same file.
    const again = rewrite(loadModel(encodeModel(original), { file: 'again.onnx' }));
    expect(describeGraphDifference(decodeModel(bytes), decodeModel(encodeModel(again)))).toBeUndefined();
    // Cutting at the output is a no-op on the reloaded graph.
    const recut = cutAt(reloaded, reloaded.outputs[0].name).graph;
    expect(describeGraphDifference(decodeModel(bytes), decodeModel(encodeModel(recut)))).toBeUndefined();
  });
});

// ─── batch size ────────────────────────────────────────────────────────────────────────────

describe('setBatchSize', () => {
  it('rewrites the zoo flatten to copy the batch dimension and re-infers every shape', () => {
    const g = light('resnet50');
    const b3 = setBatchSize(g, 3);
    expect(b3.values.get('gpu_0/softmax_1')!.shape).toEqual([3, 1000]);
    expect(toNumbers(b3.initializers.get('OC2_DUMMY_1')!.value)).toEqual([0, 2048]);
    expect(toNumbers(g.initializers.get('OC2_DUMMY_1')!.value)).toEqual([1, 2048]);
    expect(setBatchSize(g, 'N').values.get('r173')!.shape).toEqual(['N', 2048]);
    expect(includeTop(g, true).graph.nodes.length).toBe(g.nodes.length);
  });
});

// ─── the command ───────────────────────────────────────────────────────────────────────────

describe('graft rewrite', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'graft-rewrite-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    let stdout = '';
    let stderr = '';
    const out = vi.spyOn(process.stdout, 'write').mockImplementation((s) => ((stdout += String(s)), true));
    const err = vi.spyOn(process.stderr, 'write').mockImplementation((s) => ((stderr += String(s)), true));
    try {
      const code = await rewriteCommand.run(args);
      return { code, stdout, stderr };
    } finally {
      out.mockRestore();
      err.mockRestore();
    }
  }

  it('applies a transfer case and writes a model onnxruntime runs', async () => {
    const file = path.join(dir, 'case2.onnx');
    const r = await run([
      lightModelPath('squeezenet'),
      '--out',
      file,
      '--case',
      '2',
      '--classes',
      '3',
      '--cut',
      'r39',
      '--seed',
      '5',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/transfer case 2: new layers attach at 'r39'/);
    expect(r.stdout).toMatch(/trainable 1,155/);
    const g = loadModelFile(file);
    expect(g.values.get(g.outputs[0].name)!.shape).toEqual([1, 3]);
    expect(g.parameterCount((i) => i.trainable)).toBe(384 * 3 + 3);
    const out = await runOrt(g, normals(3 * 224 * 224, 1));
    expect(out[g.outputs[0].name].dims).toEqual([1, 3]);
  });

  it('cuts, grafts a head, freezes and re-initialises; warns about in-block cuts', async () => {
    const file = path.join(dir, 'custom.onnx');
    const r = await run([
      lightModelPath('resnet50'),
      '--out',
      file,
      '--cut',
      'r11',
      '--head',
      'avg',
      '--classes',
      '4',
      '--dense',
      '16,8:sigmoid',
      '--dropout',
      '0.2',
      '--freeze-before',
      'r11',
      '--reinit',
      '^head',
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/warning: 'r11' is inside a residual block/);
    const g = loadModelFile(file);
    expect(g.parameterCount((i) => i.trainable)).toBe(256 * 16 + 16 + 16 * 8 + 8 + 8 * 4 + 4);
    const top = await run([
      lightModelPath('resnet50'),
      '--out',
      path.join(dir, 'top.onnx'),
      '--no-top',
      '--head',
      'max',
      '--classes',
      '2',
      '--freeze-all-but',
      '1',
    ]);
    expect(top.stdout).toMatch(/removed the top \(4 nodes: AveragePool → Reshape → Gemm → Softmax\)/);
  });

  it('reports bad names and bad flag combinations', async () => {
    await expect(
      run([lightModelPath('resnet50'), '--out', path.join(dir, 'x.onnx'), '--cut', 'r1711']),
    ).rejects.toThrow(/closest names: .*'r171'/);
    await expect(run([lightModelPath('resnet50'), '--out', path.join(dir, 'x.onnx'), '--head', 'avg'])).rejects.toThrow(
      UsageError,
    );
    await expect(
      run([
        lightModelPath('resnet50'),
        '--out',
        path.join(dir, 'x.onnx'),
        '--case',
        '3',
        '--classes',
        '2',
        '--cut',
        'r89',
      ]),
    ).rejects.toThrow(/--cut goes with --case 2/);
    await expect(run([lightModelPath('resnet50'), '--case', '1', '--classes', '2'])).rejects.toThrow(/--out/);
    await expect(
      run([
        lightModelPath('resnet50'),
        '--out',
        path.join(dir, 'x.onnx'),
        '--no-top',
        '--head',
        'none',
        '--classes',
        '2',
      ]),
    ).rejects.toThrow(/add pooling 'avg'/);
    expect(fs.existsSync(path.join(dir, 'x.onnx'))).toBe(false);
  });
});

describe('headOf', () => {
  it('fails on a graph without a classifier, saying what it ends with', () => {
    expectModelError(() => headOf(removeTop(light('resnet50')).graph), /no classifier head found/, /'r171'/, /Relu/);
  });
});
