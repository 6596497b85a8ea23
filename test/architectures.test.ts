// Architecture builders against what torchvision publishes and what onnxruntime computes:
//   a. at the default input size, every network prepares, ends in [1, 1000], and its trainable
//      parameter count equals both torchvision's published figure and a count made here from
//      the layer tables (written independently of the builders); BatchNormalization running
//      statistics are the only non-trainable floats;
//   b. onnxruntime-node runs every encoded network (at 224/299, and headless at the smallest
//      input each accepts) on seeded random inputs: the right shape, finite, not constant;
//   c. headless builds (includeTop=false) give [1, C] with pooling and the 4-D map without;
//   d. the adaptive pooling that replaces torch's for sizes torch cannot export matches a plain
//      reference of nn.AdaptiveAvgPool2d;
//   e. seeds: same seed, same weights (also across options); another seed, other weights;
//   f. `graft build` writes a file that loads back to the same network (the codec's own tests
//      cover round trips in general; here one small network goes through a file).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildCommand } from '../src/cli/commands/build.ts';
import { UsageError } from '../src/cli/args.ts';
import { ARCHITECTURES, buildArchitecture, type ArchitectureName } from '../src/graph/architectures/index.ts';
import { TorchLayout } from '../src/graph/architectures/torch-layout.ts';
import { encodeModel } from '../src/graph/codec.ts';
import { ModelError } from '../src/graph/errors.ts';
import { Graph } from '../src/graph/ir.ts';
import { prepareGraph } from '../src/graph/load.ts';
import { loadModelFile } from '../src/node/files.ts';
import { randomFloat32Array } from './helpers/random.ts';

// ─── independent parameter counts from the layer tables ───────────────────────────────────────

/** Parameters as torchvision counts them, and BatchNormalization running statistics apart. */
class Tally {
  parameters = 0;
  statistics = 0;
  conv(cin: number, cout: number, kh: number, kw = kh, bias = false): this {
    this.parameters += kh * kw * cin * cout + (bias ? cout : 0);
    return this;
  }
  bn(channels: number): this {
    this.parameters += 2 * channels; // gamma, beta
    this.statistics += 2 * channels; // running mean, running variance
    return this;
  }
  /** GoogLeNet's and Inception-v3's BasicConv2d: conv without bias, then BN. */
  basic(cin: number, cout: number, kh: number, kw = kh): this {
    return this.conv(cin, cout, kh, kw).bn(cout);
  }
  linear(inFeatures: number, outFeatures: number): this {
    this.parameters += inFeatures * outFeatures + outFeatures;
    return this;
  }
}

/** The width multiplier's rule, as the builder documents it: c·w rounded to a multiple of 8, at least 8. */
function scaled(c: number, w: number): number {
  return w === 1 ? c : Math.max(8, 8 * Math.round((c * w) / 8));
}

function alexnetTally(w = 1, classes = 1000): Tally {
  const t = new Tally();
  const s = (c: number) => scaled(c, w);
  // Krizhevsky 2014, torchvision: 11×11/4 → 64, 5×5 → 192, 3×3 → 384, 256, 256; 6×6×256 → 4096 → 4096 → 1000.
  for (const [cin, cout, k] of [
    [3, 64, 11],
    [64, 192, 5],
    [192, 384, 3],
    [384, 256, 3],
    [256, 256, 3],
  ])
    t.conv(cin === 3 ? 3 : s(cin), s(cout), k, k, true);
  return t
    .linear(s(256) * 6 * 6, s(4096))
    .linear(s(4096), s(4096))
    .linear(s(4096), classes);
}

function vggTally(columns: string, w = 1, classes = 1000): Tally {
  const t = new Tally();
  let cin = 3;
  for (const token of columns.split(' ')) {
    if (token === 'pool') continue;
    const [count, cout] = token.split('x').map(Number);
    for (let i = 0; i < count; i++) {
      t.conv(cin, scaled(cout, w), 3, 3, true);
      cin = scaled(cout, w);
    }
  }
  const hidden = scaled(4096, w);
  return t
    .linear(scaled(512, w) * 7 * 7, hidden)
    .linear(hidden, hidden)
    .linear(hidden, classes);
}

/** Bottleneck outputs are 4× the (scaled) bottleneck width, as torchvision's expansion. */
function resnet50Tally(w = 1, classes = 1000): Tally {
  const stem = scaled(64, w);
  const t = new Tally().conv(3, stem, 7).bn(stem);
  let cin = stem;
  for (const [blocks, published] of [
    [3, 64],
    [4, 128],
    [6, 256],
    [3, 512],
  ]) {
    const width = scaled(published, w);
    for (let b = 0; b < blocks; b++) {
      t.conv(cin, width, 1)
        .bn(width)
        .conv(width, width, 3)
        .bn(width)
        .conv(width, 4 * width, 1)
        .bn(4 * width);
      if (b === 0) t.conv(cin, 4 * width, 1).bn(4 * width); // projection shortcut
      cin = 4 * width;
    }
  }
  return t.linear(cin, classes);
}

function googlenetTally(w = 1, classes = 1000): Tally {
  const s = (c: number) => scaled(c, w);
  const t = new Tally().basic(3, s(64), 7).basic(s(64), s(64), 1).basic(s(64), s(192), 3);
  // Szegedy et al. 2015, Table 1: #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5 (3×3 in torchvision), pool proj.
  const table = [
    [64, 96, 128, 16, 32, 32],
    [128, 128, 192, 32, 96, 64],
    [192, 96, 208, 16, 48, 64],
    [160, 112, 224, 24, 64, 64],
    [128, 128, 256, 24, 64, 64],
    [112, 144, 288, 32, 64, 64],
    [256, 160, 320, 32, 128, 128],
    [256, 160, 320, 32, 128, 128],
    [384, 192, 384, 48, 128, 128],
  ];
  let cin = s(192);
  for (const row of table) {
    const [c1, c3r, c3, c5r, c5, pp] = row.map(s);
    t.basic(cin, c1, 1).basic(cin, c3r, 1).basic(c3r, c3, 3).basic(cin, c5r, 1).basic(c5r, c5, 3).basic(cin, pp, 1);
    cin = c1 + c3 + c5 + pp;
  }
  if (w === 1) expect(cin).toBe(1024);
  return t.linear(cin, classes);
}

function inceptionV3Tally(withAux = false, w = 1, classes = 1000): Tally {
  const t = new Tally();
  // conv(channels in, published channels out): counts one BasicConv2d, returns its (scaled) output channels.
  const conv = (cin: number, cout: number, kh: number, kw = kh) => {
    t.basic(cin, scaled(cout, w), kh, kw);
    return scaled(cout, w);
  };
  const a = (cin: number, pool: number) =>
    conv(cin, 64, 1) + conv(conv(cin, 48, 1), 64, 5) + conv(conv(conv(cin, 64, 1), 96, 3), 96, 3) + conv(cin, pool, 1);
  const b = (cin: number) => conv(cin, 384, 3) + conv(conv(conv(cin, 64, 1), 96, 3), 96, 3) + cin;
  const c = (cin: number, c7: number) =>
    conv(cin, 192, 1) +
    conv(conv(conv(cin, c7, 1), c7, 1, 7), 192, 7, 1) +
    conv(conv(conv(conv(conv(cin, c7, 1), c7, 7, 1), c7, 1, 7), c7, 7, 1), 192, 1, 7) +
    conv(cin, 192, 1);
  const d = (cin: number) =>
    conv(conv(cin, 192, 1), 320, 3) + conv(conv(conv(conv(cin, 192, 1), 192, 1, 7), 192, 7, 1), 192, 3) + cin;
  const e = (cin: number) => {
    const s3 = conv(cin, 384, 1);
    const sd = conv(conv(cin, 448, 1), 384, 3);
    return (
      conv(cin, 320, 1) +
      conv(s3, 384, 1, 3) +
      conv(s3, 384, 3, 1) +
      conv(sd, 384, 1, 3) +
      conv(sd, 384, 3, 1) +
      conv(cin, 192, 1)
    );
  };
  let ch = conv(conv(conv(conv(conv(3, 32, 3), 32, 3), 64, 3), 80, 1), 192, 3);
  ch = a(ch, 32);
  ch = a(ch, 64);
  ch = a(ch, 64);
  ch = b(ch);
  for (const c7 of [128, 160, 160, 192]) ch = c(ch, c7);
  if (withAux) t.basic(768, 128, 1).basic(128, 768, 5).linear(768, 1000); // AuxLogits after Mixed_6e (published width only)
  ch = d(ch);
  ch = e(ch);
  ch = e(ch);
  if (w === 1) expect(ch).toBe(2048);
  return t.linear(ch, classes);
}

interface Expected {
  tally: () => Tally;
  /** Channels and size of the last feature map at the default input size. */
  featureMap: [number, number];
  /** Conv and BatchNormalization layers (each BN has four tensors). */
  convs: number;
  batchNorms: number;
  ops: string[];
}

const EXPECTED: Record<ArchitectureName, Expected> = {
  alexnet: {
    tally: alexnetTally,
    featureMap: [256, 6],
    convs: 5,
    batchNorms: 0,
    ops: ['AveragePool', 'Conv', 'Flatten', 'Gemm', 'MaxPool', 'Relu'],
  },
  vgg16: {
    tally: () => vggTally('2x64 pool 2x128 pool 3x256 pool 3x512 pool 3x512 pool'),
    featureMap: [512, 7],
    convs: 13,
    batchNorms: 0,
    ops: ['AveragePool', 'Conv', 'Flatten', 'Gemm', 'MaxPool', 'Relu'],
  },
  vgg19: {
    tally: () => vggTally('2x64 pool 2x128 pool 4x256 pool 4x512 pool 4x512 pool'),
    featureMap: [512, 7],
    convs: 16,
    batchNorms: 0,
    ops: ['AveragePool', 'Conv', 'Flatten', 'Gemm', 'MaxPool', 'Relu'],
  },
  googlenet: {
    tally: googlenetTally,
    featureMap: [1024, 7],
    convs: 57,
    batchNorms: 57,
    ops: ['BatchNormalization', 'Concat', 'Conv', 'Flatten', 'Gemm', 'GlobalAveragePool', 'MaxPool', 'Relu'],
  },
  inception_v3: {
    tally: () => inceptionV3Tally(),
    featureMap: [2048, 8],
    convs: 94,
    batchNorms: 94,
    ops: [
      'AveragePool',
      'BatchNormalization',
      'Concat',
      'Conv',
      'Flatten',
      'Gemm',
      'GlobalAveragePool',
      'MaxPool',
      'Relu',
    ],
  },
  resnet50: {
    tally: resnet50Tally,
    featureMap: [2048, 7],
    convs: 53,
    batchNorms: 53,
    ops: ['Add', 'BatchNormalization', 'Conv', 'Flatten', 'Gemm', 'GlobalAveragePool', 'MaxPool', 'Relu'],
  },
};

describe('independent counts agree with the published ones', () => {
  it('Inception-v3: with aux logits 27,161,264, the AuxLogits branch 3,326,696', () => {
    const withAux = inceptionV3Tally(true).parameters;
    expect(withAux).toBe(27_161_264);
    expect(withAux - inceptionV3Tally().parameters).toBe(3_326_696);
  });
  for (const a of ARCHITECTURES) {
    it(`${a.name}: ${a.publishedParameters.toLocaleString('en-US')}`, () => {
      expect(EXPECTED[a.name].tally().parameters).toBe(a.publishedParameters);
    });
  }
});

// ─── full networks at the default input size ─────────────────────────────────────────────────

async function runOrt(bytes: Uint8Array, input: Float32Array, dims: number[]): Promise<ort.Tensor> {
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'] });
  try {
    const result = await session.run({ input: new ort.Tensor('float32', input, dims) });
    expect(session.outputNames).toEqual(['output']);
    return result.output;
  } finally {
    await session.release();
  }
}

function expectFiniteAndVaried(data: Float32Array): void {
  let min = Infinity;
  let max = -Infinity;
  for (const v of data) {
    expect(Number.isFinite(v)).toBe(true);
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  expect(max).toBeGreaterThan(min); // random weights on a random input give distinct logits
}

for (const info of ARCHITECTURES) {
  describe(`${info.name} at ${info.defaultInputSize}×${info.defaultInputSize}`, () => {
    const expected = EXPECTED[info.name];
    const size = info.defaultInputSize;
    let graph: Graph | undefined;
    let bytes: Uint8Array | undefined;
    beforeAll(() => {
      graph = buildArchitecture(info.name);
      bytes = encodeModel(graph);
    });
    afterAll(() => {
      graph = undefined; // the VGG weights are half a gigabyte: let them go before the next network
      bytes = undefined;
    });

    it('is an opset 17, IR 8 graph from input [1, 3, H, W] to output [1, 1000]', () => {
      const g = graph!;
      expect(g.opset).toBe(17);
      expect(g.irVersion).toBe(8);
      expect(g.feedInputs.map((i) => [i.name, g.values.get(i.name)?.shape])).toEqual([['input', [1, 3, size, size]]]);
      expect(g.outputs.map((o) => [o.name, g.values.get(o.name)?.shape])).toEqual([['output', [1, 1000]]]);
      expect([...new Set(g.nodes.map((n) => n.opType))].sort()).toEqual(expected.ops);
      // Every value's shape is inferred; the builder's own graph passes a second preparation.
      for (const n of g.nodes) for (const o of n.outputs) expect(g.values.get(o)?.shape, o).toBeDefined();
      expect(() => prepareGraph(g.clone())).not.toThrow();
    });

    it(`has ${info.publishedParameters.toLocaleString('en-US')} trainable parameters, as published and as counted from the layer table`, () => {
      const g = graph!;
      const tally = expected.tally();
      expect(g.parameterCount((i) => i.trainable)).toBe(info.publishedParameters);
      expect(g.parameterCount((i) => i.trainable)).toBe(tally.parameters);
      expect(g.parameterCount((i) => !i.trainable)).toBe(tally.statistics);
    });

    it('names and shapes its initializers as torchvision does; only BN running statistics are frozen', () => {
      const g = graph!;
      const names = [...g.initializers.keys()];
      expect(names.filter((n) => /\.running_mean$/.test(n))).toHaveLength(expected.batchNorms);
      expect(g.nodes.filter((n) => n.opType === 'Conv')).toHaveLength(expected.convs);
      for (const init of g.initializers.values()) {
        expect(init.name).toMatch(/^[A-Za-z_0-9]+(\.[A-Za-z_0-9]+)*\.(weight|bias|running_mean|running_var)$/);
        expect(init.trainable, init.name).toBe(!/\.running_(mean|var)$/.test(init.name));
      }
      for (const n of g.nodes) {
        if (n.opType === 'BatchNormalization')
          expect(n.inputs.slice(1).map((i) => i.split('.').pop())).toEqual([
            'weight',
            'bias',
            'running_mean',
            'running_var',
          ]);
        if (n.opType === 'Gemm') expect(n.attributes.transB).toEqual({ type: 'int', value: 1 });
        if (n.opType === 'Conv') expect(g.initializers.get(n.inputs[1])!.name).toMatch(/\.weight$/);
      }
      const first: Record<ArchitectureName, [string, number[]]> = {
        alexnet: ['features.0.weight', [64, 3, 11, 11]],
        vgg16: ['features.28.weight', [512, 512, 3, 3]],
        vgg19: ['features.34.weight', [512, 512, 3, 3]],
        googlenet: ['inception5b.branch3.1.conv.weight', [128, 48, 3, 3]],
        inception_v3: ['Mixed_6b.branch7x7dbl_5.conv.weight', [192, 128, 1, 7]],
        resnet50: ['layer4.0.downsample.0.weight', [2048, 1024, 1, 1]],
      };
      const [name, dims] = first[info.name];
      expect(g.initializers.get(name)?.value.dims).toEqual(dims);
      const [fc, features] =
        info.name === 'alexnet' || info.name.startsWith('vgg')
          ? ['classifier.6', 4096]
          : ['fc', expected.featureMap[0]];
      expect(g.initializers.get(`${fc}.weight`)?.value.dims).toEqual([1000, features]);
    });

    it(`ends its features in a [1, ${expected.featureMap[0]}, ${expected.featureMap[1]}, ${expected.featureMap[1]}] map`, () => {
      const g = graph!;
      const flatten = g.nodes.find((n) => n.opType === 'Flatten')!;
      const pool = g.nodes.find((n) => n.outputs.includes(flatten.inputs[0]))!;
      const [c, s] = expected.featureMap;
      expect(g.values.get(pool.inputs[0])?.shape).toEqual([1, c, s, s]);
    });

    it('runs in onnxruntime: [1, 1000], finite', async () => {
      const out = await runOrt(bytes!, randomFloat32Array(3 * size * size, 11), [1, 3, size, size]);
      expect(out.dims).toEqual([1, 1000]);
      expectFiniteAndVaried(out.data as Float32Array);
    });
  });
}

// ─── headless builds, small inputs, batches ──────────────────────────────────────────────────

describe('includeTop=false', () => {
  for (const info of ARCHITECTURES) {
    const channels = EXPECTED[info.name].featureMap[0];
    it(`${info.name} with pooling avg at its smallest input (${info.minInputSize}) gives [1, ${channels}] and runs`, async () => {
      const g = buildArchitecture(info.name, { includeTop: false, pooling: 'avg', inputSize: info.minInputSize });
      expect(g.values.get('output')?.shape).toEqual([1, channels]);
      expect(g.nodes.slice(-2).map((n) => n.opType)).toEqual(['GlobalAveragePool', 'Flatten']);
      expect(g.parameterCount((i) => i.trainable)).toBe(
        info.publishedParameters -
          (info.name === 'alexnet' || info.name.startsWith('vgg') ? classifierOf(info.name) : channels * 1000 + 1000),
      );
      const out = await runOrt(encodeModel(g), randomFloat32Array(3 * info.minInputSize ** 2, 12), [
        1,
        3,
        info.minInputSize,
        info.minInputSize,
      ]);
      expect(out.dims).toEqual([1, channels]);
      for (const v of out.data as Float32Array) expect(Number.isFinite(v)).toBe(true);
      expect(() => buildArchitecture(info.name, { includeTop: false, inputSize: info.minInputSize - 1 })).toThrow(
        ModelError,
      );
    });
  }

  it('pooling max gives [1, C] through GlobalMaxPool; no pooling leaves the 4-D map', async () => {
    const max = buildArchitecture('googlenet', { includeTop: false, pooling: 'max', inputSize: 64 });
    expect(max.values.get('output')?.shape).toEqual([1, 1024]);
    expect(max.nodes.slice(-2).map((n) => n.opType)).toEqual(['GlobalMaxPool', 'Flatten']);
    const input = randomFloat32Array(3 * 64 * 64, 13);
    const pooled = await runOrt(encodeModel(max), input, [1, 3, 64, 64]);

    const map = buildArchitecture('googlenet', { includeTop: false, inputSize: 64 });
    expect(map.values.get('output')?.shape).toEqual([1, 1024, 2, 2]);
    const features = (await runOrt(encodeModel(map), input, [1, 3, 64, 64])).data as Float32Array;
    // Reference: the maximum over each channel's 2×2 map.
    const reference = Array.from({ length: 1024 }, (_, c) => Math.max(...features.subarray(4 * c, 4 * c + 4)));
    expect(Array.from(pooled.data as Float32Array)).toEqual(reference);
  });

  it('refuses options that contradict each other or do not fit', () => {
    expect(() => buildArchitecture('resnet50', { pooling: 'avg' })).toThrow(/only without the classifier/);
    expect(() => buildArchitecture('resnet50', { includeTop: false, classes: 10 })).toThrow(/includeTop=false removes/);
    expect(() => buildArchitecture('alexnet', { inputSize: 62 })).toThrow(/≥ 63/);
    expect(() => buildArchitecture('inception_v3', { inputSize: 74 })).toThrow(/≥ 75/);
    expect(() => buildArchitecture('resnet50', { classes: 0 })).toThrow(/positive integer/);
    expect(() => buildArchitecture('nope' as ArchitectureName)).toThrow(
      /accepted: alexnet, vgg16, vgg19, googlenet, inception_v3, resnet50/,
    );
  });
});

function classifierOf(name: ArchitectureName): number {
  const flat = name === 'alexnet' ? 256 * 6 * 6 : 512 * 7 * 7;
  return flat * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000;
}

// ─── the width multiplier ─────────────────────────────────────────────────────────────────────

describe('width multiplier', () => {
  const smallInput: Record<ArchitectureName, number> = {
    alexnet: 63,
    vgg16: 32,
    vgg19: 32,
    googlenet: 32,
    inception_v3: 75,
    resnet50: 32,
  };
  const tallyAt: Record<ArchitectureName, (w: number, classes: number) => Tally> = {
    alexnet: alexnetTally,
    vgg16: (w, c) => vggTally('2x64 pool 2x128 pool 3x256 pool 3x512 pool 3x512 pool', w, c),
    vgg19: (w, c) => vggTally('2x64 pool 2x128 pool 4x256 pool 4x512 pool 4x512 pool', w, c),
    googlenet: googlenetTally,
    inception_v3: (w, c) => inceptionV3Tally(false, w, c),
    resnet50: resnet50Tally,
  };

  for (const info of ARCHITECTURES) {
    it(`${info.name} at width 0.25: parameters as counted from the layer table, the same layers and names as at width 1, runs in onnxruntime`, async () => {
      const size = smallInput[info.name];
      const narrow = buildArchitecture(info.name, { width: 0.25, classes: 10, inputSize: size, batch: 'batch' });
      const full = buildArchitecture(info.name, { classes: 10, inputSize: size, batch: 'batch' });
      const tally = tallyAt[info.name](0.25, 10);
      expect(narrow.parameterCount((i) => i.trainable)).toBe(tally.parameters);
      expect(narrow.parameterCount((i) => !i.trainable && /\.running_(mean|var)$/.test(i.name))).toBe(tally.statistics);
      // A quarter of the channels: roughly a sixteenth of the weights (more where counts round up to 8).
      expect(tally.parameters / full.parameterCount((i) => i.trainable)).toBeLessThan(0.1);
      expect([...narrow.initializers.keys()]).toEqual([...full.initializers.keys()]);
      expect(narrow.nodes.map((n) => `${n.name} ${n.opType} ${n.inputs.join(',')}`)).toEqual(
        full.nodes.map((n) => `${n.name} ${n.opType} ${n.inputs.join(',')}`),
      );
      for (const n of narrow.nodes) {
        if (n.opType !== 'Conv') continue;
        const [cout, cin] = narrow.initializers.get(n.inputs[1])!.value.dims;
        expect(cout % 8, n.name).toBe(0);
        expect(cin === 3 || cin % 8 === 0, n.name).toBe(true);
      }
      expect(narrow.modelDocString).toContain('width 0.25');
      const out = await runOrt(encodeModel(narrow), randomFloat32Array(2 * 3 * size * size, 15), [2, 3, size, size]);
      expect(out.dims).toEqual([2, 10]);
      expectFiniteAndVaried(out.data as Float32Array);
    });
  }

  it('ResNet-50 at width 0.125 (the source network): stem 8, bottleneck widths 8/16/32/64, 256 feature channels', () => {
    const g = buildArchitecture('resnet50', { width: 0.125, classes: 5, inputSize: 32 });
    const dims = (name: string) => g.initializers.get(name)?.value.dims;
    expect(dims('conv1.weight')).toEqual([8, 3, 7, 7]);
    expect(dims('layer1.0.conv1.weight')).toEqual([8, 8, 1, 1]);
    expect(dims('layer2.0.conv2.weight')).toEqual([16, 16, 3, 3]);
    expect(dims('layer3.5.conv3.weight')).toEqual([128, 32, 1, 1]);
    expect(dims('layer4.0.downsample.0.weight')).toEqual([256, 128, 1, 1]);
    expect(dims('fc.weight')).toEqual([5, 256]);
    expect(g.parameterCount((i) => i.trainable)).toBe(resnet50Tally(0.125, 5).parameters);
  });

  it('width 1 is the published network: the same bytes as leaving it out', () => {
    for (const name of ['resnet50', 'googlenet'] as const) {
      const size = smallInput[name];
      expect(
        sameBytes(
          encodeModel(buildArchitecture(name, { width: 1, inputSize: size })),
          encodeModel(buildArchitecture(name, { inputSize: size })),
        ),
      ).toBe(true);
    }
    for (const info of ARCHITECTURES) expect(tallyAt[info.name](1, 1000).parameters).toBe(info.publishedParameters);
  });

  it('refuses a width outside 0 < width ≤ 1, naming the accepted range', () => {
    for (const width of [0, -0.25, Number.NaN, 1.5, Infinity, '0.5' as unknown as number]) {
      expect(() => buildArchitecture('resnet50', { width, inputSize: 32 }), String(width)).toThrow(ModelError);
      expect(() => buildArchitecture('vgg16', { width, inputSize: 32 }), String(width)).toThrow(
        /vgg16: width .* 0 < width ≤ 1/,
      );
    }
  });
});

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a).equals(Buffer.from(b));
}

describe('options', () => {
  it('classes sizes the final layer; a symbolic batch runs each sample as it would alone', async () => {
    const g = buildArchitecture('googlenet', { classes: 10, batch: 'batch', inputSize: 64 });
    expect(g.feedInputs[0].shape).toEqual(['batch', 3, 64, 64]);
    expect(g.values.get('output')?.shape).toEqual(['batch', 10]);
    expect(g.initializers.get('fc.weight')?.value.dims).toEqual([10, 1024]);
    expect(g.parameterCount((i) => i.trainable)).toBe(6_624_904 - 1024 * 990 - 990);
    const bytes = encodeModel(g);
    const input = randomFloat32Array(2 * 3 * 64 * 64, 14);
    const both = await runOrt(bytes, input, [2, 3, 64, 64]);
    expect(both.dims).toEqual([2, 10]);
    const data = both.data as Float32Array;
    expectFiniteAndVaried(data);
    for (const i of [0, 1]) {
      const alone = (await runOrt(bytes, input.slice(i * 3 * 64 * 64, (i + 1) * 3 * 64 * 64), [1, 3, 64, 64]))
        .data as Float32Array;
      for (let k = 0; k < 10; k++) expect(alone[k]).toBeCloseTo(data[i * 10 + k], 4);
    }
  });

  it('same seed, same weights (whatever the other options); another seed, other weights', () => {
    const a = buildArchitecture('googlenet', { inputSize: 32 });
    const b = buildArchitecture('googlenet', { includeTop: false, pooling: 'max', inputSize: 96, batch: 'batch' });
    const c = buildArchitecture('googlenet', { seed: 1, inputSize: 32 });
    let compared = 0;
    for (const [name, init] of b.initializers) {
      expect(
        sameData(a.initializers.get(name)!.value.data as Float32Array, init.value.data as Float32Array),
        name,
      ).toBe(true);
      compared++;
    }
    expect(compared).toBe(a.initializers.size - 2); // all but fc.weight and fc.bias
    for (const [name, init] of a.initializers) {
      const other = c.initializers.get(name)!.value.data as Float32Array;
      const random = /\.conv\.weight$|^fc\.weight$/.test(name); // BN and biases are constants
      expect(sameData(other, init.value.data as Float32Array), name).toBe(!random);
    }
  });

  it('initialises He-normal weights: mean ≈ 0, std ≈ √(2 / fan_in)', () => {
    const g = buildArchitecture('alexnet', { includeTop: false, inputSize: 63 });
    const w = g.initializers.get('features.10.weight')!.value.data as Float32Array; // [256, 256, 3, 3]
    let sum = 0;
    let squares = 0;
    for (const v of w) {
      sum += v;
      squares += v * v;
    }
    const mean = sum / w.length;
    const std = Math.sqrt(squares / w.length - mean * mean);
    expect(Math.abs(mean)).toBeLessThan(0.002);
    expect(std / Math.sqrt(2 / (256 * 9))).toBeCloseTo(1, 2);
  });
});

/** Bit-identical float data (a plain loop: vitest's deep equality is slow on millions of elements). */
function sameData(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

// ─── adaptive average pooling where torch's exporter gives up ───────────────────────────────

/** nn.AdaptiveAvgPool2d over one [size, size] plane, in float64. */
function adaptiveAvgPoolReference(plane: Float32Array, size: number, target: number): number[] {
  const out: number[] = [];
  const window = (i: number) => [Math.floor((i * size) / target), Math.ceil(((i + 1) * size) / target)];
  for (let i = 0; i < target; i++) {
    for (let j = 0; j < target; j++) {
      const [r0, r1] = window(i);
      const [c0, c1] = window(j);
      let sum = 0;
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) sum += plane[r * size + c];
      out.push(sum / ((r1 - r0) * (c1 - c0)));
    }
  }
  return out;
}

describe('adaptive average pooling', () => {
  const cases: [number, number, string][] = [
    [1, 6, 'MatMul'], // AlexNet at 63×63
    [1, 7, 'MatMul'], // VGG at 32×32
    [3, 7, 'MatMul'],
    [10, 7, 'MatMul'],
    [13, 6, 'MatMul'],
    [14, 7, 'AveragePool'], // VGG at 448×448: what torch exports
    [7, 7, 'AveragePool'],
    [5, 1, 'GlobalAveragePool'],
  ];
  for (const [size, target, op] of cases) {
    it(`${size}×${size} → ${target}×${target} (${op}) matches nn.AdaptiveAvgPool2d`, async () => {
      const graph = new Graph();
      const t = new TorchLayout(graph, 0);
      const x = t.addInput('input', [1, 2, size, size]);
      t.finish(t.adaptiveAvgPool('avgpool', x, target), 'output');
      prepareGraph(graph);
      expect(graph.nodes.map((n) => n.opType)).toContain(op);
      expect(graph.parameterCount((i) => i.trainable)).toBe(0);
      const input = randomFloat32Array(2 * size * size, size * 100 + target);
      const out = await runOrt(encodeModel(graph), input, [1, 2, size, size]);
      expect(out.dims).toEqual([1, 2, target, target]);
      const reference = [0, 1].flatMap((c) =>
        adaptiveAvgPoolReference(input.subarray(c * size * size, (c + 1) * size * size), size, target),
      );
      const got = Array.from(out.data as Float32Array);
      reference.forEach((r, i) => expect(got[i]).toBeCloseTo(r, 5));
    });
  }
});

// ─── graft build ─────────────────────────────────────────────────────────────────────────────

describe('graft build', () => {
  const dir = mkdtempSync(join(tmpdir(), 'graft-build-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes the network and prints its summary', async () => {
    const file = join(dir, 'g.onnx');
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    let code: number;
    let printed: string;
    try {
      code = await buildCommand.run([
        'googlenet',
        '--no-top',
        '--pooling',
        'avg',
        '--input-size',
        '32',
        '--seed',
        '3',
        '--out',
        file,
      ]);
      printed = write.mock.calls.map((c) => String(c[0])).join('');
    } finally {
      write.mockRestore();
    }
    expect(code).toBe(0);
    expect(printed).toContain('output [1, 1024]');
    expect(printed).toContain('input [1, 3, 32, 32]');
    expect(printed).toContain('trainable 5,599,904');
    const loaded = loadModelFile(file);
    const built = buildArchitecture('googlenet', { includeTop: false, pooling: 'avg', inputSize: 32, seed: 3 });
    expect(loaded.parameterCount((i) => i.trainable)).toBe(6_624_904 - 1_025_000);
    expect(loaded.parameterCount((i) => !i.trainable)).toBe(built.parameterCount((i) => !i.trainable));
    for (const [name, init] of built.initializers)
      expect(
        sameData(loaded.initializers.get(name)!.value.data as Float32Array, init.value.data as Float32Array),
        name,
      ).toBe(true);
  });

  it('--width builds the narrow network', async () => {
    const file = join(dir, 'r.onnx');
    const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    let printed: string;
    try {
      expect(
        await buildCommand.run(['resnet50', '--width', '0.125', '--input-size', '32', '--classes', '5', '--out', file]),
      ).toBe(0);
      printed = write.mock.calls.map((c) => String(c[0])).join('');
    } finally {
      write.mockRestore();
    }
    const trainable = resnet50Tally(0.125, 5).parameters;
    expect(printed).toContain('width 0.125');
    expect(printed).toContain(`trainable ${trainable.toLocaleString('en-US')}`);
    expect(loadModelFile(file).parameterCount((i) => i.trainable)).toBe(trainable);
  });

  it('names the accepted architectures and options when given others', () => {
    expect(() => buildCommand.run(['resnet', '--out', join(dir, 'x.onnx')])).toThrow(UsageError);
    expect(() => buildCommand.run(['resnet'])).toThrow(
      /accepted: alexnet, vgg16, vgg19, googlenet, inception_v3, resnet50/,
    );
    expect(() => buildCommand.run(['resnet50', '--pooling', 'avg'])).toThrow(/--no-top/);
    expect(() => buildCommand.run(['resnet50', '--no-top', '--pooling', 'mean'])).toThrow(/avg or max/);
    expect(() => buildCommand.run(['resnet50', '--classes', 'ten'])).toThrow(/integer/);
    for (const bad of ['0', '2', '-0.5', 'abc', '1e-1x'])
      expect(() => buildCommand.run(['resnet50', '--width', bad])).toThrow(/--width expects .*0 < W ≤ 1/);
  });
});
