// Start-up work shared by the sessions of one GPU context: a second Session.create of a model
// compiles no pipeline and generates no WGSL (the pipeline cache is per context, keyed by the
// program), packs and uploads no weights (uploads are shared by content: recipe and fingerprints
// of the source bytes), and both sessions give onnxruntime-node's CPU results on seeded random
// weights and inputs. A model with the same initializer names and other values, and a Graph whose
// weights were changed in place, get their own uploads. startPipelines issues every compile
// before any is awaited.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { encodeModel } from '../src/graph/codec.ts';
import { Graph } from '../src/graph/ir.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { startPipelines } from '../src/kernels/program.ts';
import { unaryProgram } from '../src/kernels/elementwise.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Session, type Tensor } from '../src/runtime/session.ts';
import { fingerprintFloats } from '../src/runtime/shared-constants.ts';
import { onnxBytesForOrt, randomizedLightModel, runOrt } from './helpers/reference-models.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { relL2 } from './helpers/reference-ops.ts';

describe('session start-up on one context', () => {
  let gpu: GpuContext;
  const generated: string[] = [];
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
    gpu.setShaderObserver((shader) => generated.push(shader.key));
  });
  afterAll(() => gpu?.dispose());

  it('a second session of ResNet-50 compiles no pipeline, and both match onnxruntime', async () => {
    const graph = randomizedLightModel('resnet50', 7301);
    const input = graph.feedInputs[0];
    const output = graph.outputs[0].name;
    const feeds = { [input.name]: { dims: [1, 3, 224, 224], data: randomFloat32Array(3 * 224 * 224, 7302) } };
    const want = (await runOrt(onnxBytesForOrt(graph), feeds, 'cpu'))[output];

    const compiledBefore = gpu.pipelinesCompiled;
    const liveBefore = gpu.liveBuffers.bytes;
    const uploadedBefore = gpu.bytesUploaded;
    const first = await Session.create(graph, { gpu });
    const compiledByFirst = gpu.pipelinesCompiled - compiledBefore;
    const uploadedByFirst = gpu.bytesUploaded - uploadedBefore;
    const liveByFirst = gpu.liveBuffers.bytes - liveBefore;
    expect(first.weightBytes).toBeGreaterThan(90e6); // ResNet-50: 25.5 M weights
    expect(uploadedByFirst).toBeGreaterThan(first.weightBytes * 0.99);
    const shadersByFirst = generated.length;
    expect(compiledByFirst).toBeGreaterThan(5); // conv variants, pools, add, gemm
    expect(shadersByFirst).toBe(compiledByFirst);

    // The same model given as ONNX bytes: a new decode and lowering, the same programs.
    const second = await Session.create(encodeModel(graph), { gpu });
    expect(gpu.pipelinesCompiled - compiledBefore, 'pipelines compiled after the second create').toBe(compiledByFirst);
    // Only the plan's uniform blocks are uploaded; its weights are the first session's buffers.
    const uploadedBySecond = gpu.bytesUploaded - uploadedBefore - uploadedByFirst;
    expect(uploadedBySecond, 'bytes uploaded by the second create').toBeLessThan(2 ** 20);
    const liveBySecond = gpu.liveBuffers.bytes - liveBefore - liveByFirst;
    expect(liveBySecond, 'GPU bytes the second session added').toBe(liveByFirst - first.weightBytes);
    expect(second.weightBytes).toBe(first.weightBytes);
    expect(generated.slice(shadersByFirst), 'WGSL generated for the second session').toEqual([]);
    expect(second.planStats.pipelines).toBe(first.planStats.pipelines);

    try {
      const fromFirst = (await first.run(feeds))[output];
      // The second session keeps working once the first (which compiled the pipelines) is gone.
      first.dispose();
      const fromSecond = (await second.run(feeds))[output];
      expect(fromFirst.dims).toEqual(want.dims);
      expect(fromSecond.dims).toEqual(want.dims);
      expect(relL2(fromFirst.data, want.data)).toBeLessThan(1e-4);
      expect(relL2(fromSecond.data, want.data)).toBeLessThan(1e-4);
      expect(gpu.pipelinesCompiled - compiledBefore, 'pipelines compiled after both runs').toBe(compiledByFirst);
    } finally {
      first.dispose();
      second.dispose();
    }
    // The shared weights went with the last session that held them (plans go once their
    // promises settle).
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(gpu.liveBuffers.bytes).toBe(liveBefore);
  });

  it('a model with the same initializer names and other weights gets its own uploads', async () => {
    const graph = randomizedLightModel('resnet50', 7311);
    const other = randomizedLightModel('resnet50', 7312); // same names and dims, other values
    const input = graph.feedInputs[0];
    const output = graph.outputs[0].name;
    const feeds = { [input.name]: { dims: [1, 3, 224, 224], data: randomFloat32Array(3 * 224 * 224, 7313) } };
    const want = (await runOrt(onnxBytesForOrt(graph), feeds, 'cpu'))[output];
    const wantOther = (await runOrt(onnxBytesForOrt(other), feeds, 'cpu'))[output];
    expect(relL2(want.data, wantOther.data), 'the two models differ').toBeGreaterThan(0.1);

    const first = await Session.create(graph, { gpu });
    const weightBytes = first.weightBytes;
    const uploaded = await createSecondAndCompare(gpu, first, other, feeds, output, want, wantOther);
    expect(uploaded, 'bytes uploaded for the other weights').toBeGreaterThan(weightBytes * 0.99);
  });

  it('a Graph whose weights were changed in place gets the new weights, and shares the rest', async () => {
    const graph = randomizedLightModel('resnet50', 7321);
    const input = graph.feedInputs[0];
    const output = graph.outputs[0].name;
    const feeds = { [input.name]: { dims: [1, 3, 224, 224], data: randomFloat32Array(3 * 224 * 224, 7322) } };
    const want = (await runOrt(onnxBytesForOrt(graph), feeds, 'cpu'))[output];
    const first = await Session.create(graph, { gpu });

    // In place: the first BatchNormalization's scale (folded into conv1's packed weights and
    // bias) and one weight of a late 1x1 conv, each read through the tensor the Graph holds.
    const bn = graph.nodes.find((n) => n.opType === 'BatchNormalization')!;
    const scale = graph.initializers.get(bn.inputs[1])!.value.data as Float32Array;
    for (let i = 0; i < scale.length; i++) scale[i] *= 1.5;
    const late = graph.nodes.filter((n) => n.opType === 'Conv').at(-1)!;
    const lateWeights = graph.initializers.get(late.inputs[1])!.value.data as Float32Array;
    lateWeights[lateWeights.length - 1] += 0.5; // one word of 1 M: its fingerprint must change
    const wantChanged = (await runOrt(onnxBytesForOrt(graph), feeds, 'cpu'))[output];
    expect(relL2(want.data, wantChanged.data), 'the edits change the output').toBeGreaterThan(1e-3);

    const uploaded = await createSecondAndCompare(gpu, first, graph, feeds, output, want, wantChanged);
    // conv1's packed weights and bias, the late conv's packed weights, and the plan's uniforms.
    const changed = 4 * (64 * 3 * 7 * 7 + 64 + lateWeights.length);
    expect(uploaded).toBeGreaterThan(changed);
    expect(uploaded).toBeLessThan(changed + 2 ** 20);
  });

  it('two constants of equal bytes in one step get buffers of their own, and are shared with the next session', async () => {
    // A BatchNormalization not after a Conv binds its four statistics as they are (read_write
    // bindings): a shared upload bound twice in one dispatch would be refused by WebGPU.
    const g = new Graph();
    g.opsetImports = [{ domain: '', version: 17 }];
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [2, 4, 5, 5] }];
    g.values.set('x', { ...g.inputs[0] });
    const shift = randomFloat32Array(4, 7331);
    const statistics: [string, Float32Array][] = [
      ['scale', randomFloat32Array(4, 7332)],
      ['shift', shift],
      ['mean', shift.slice()], // other name, equal bytes
      ['var', randomFloat32Array(4, 7333).map((v) => Math.abs(v) + 0.5)],
    ];
    for (const [name, data] of statistics) g.setInitializer(name, { dtype: 'float32', dims: [4], data }, false);
    const y = new GraphBuilder(g).op('BatchNormalization', ['x', ...statistics.map(([name]) => name)], {
      epsilon: 1e-3,
    });
    g.outputs = [{ name: y, dtype: 'float32' }];
    const feeds = { x: { dims: [2, 4, 5, 5], data: randomFloat32Array(200, 7334) } };
    const want = (await runOrt(encodeModel(g), feeds, 'cpu'))[y];

    const first = await Session.create(g, { gpu });
    const uploadedBefore = gpu.bytesUploaded;
    const second = await Session.create(g, { gpu });
    try {
      expect(gpu.bytesUploaded - uploadedBefore, 'bytes uploaded by the second create').toBeLessThan(4 * 16);
      for (const session of [first, second]) {
        const got = (await session.run(feeds))[y];
        expect(relL2(got.data, want.data)).toBeLessThan(1e-5);
      }
    } finally {
      first.dispose();
      second.dispose();
    }
  });

  it('two Convs sharing one weight with other groups each get the packing of their own group', async () => {
    // W [4, 2, 3, 3] is a group-1 conv's over 2 channels and a group-2 conv's over 4: packed apart.
    const g = new Graph();
    g.opsetImports = [{ domain: '', version: 17 }];
    g.inputs = [
      { name: 'a', dtype: 'float32', shape: [1, 2, 6, 6] },
      { name: 'b', dtype: 'float32', shape: [1, 4, 6, 6] },
    ];
    for (const i of g.inputs) g.values.set(i.name, { ...i });
    g.setInitializer('w', { dtype: 'float32', dims: [4, 2, 3, 3], data: randomFloat32Array(72, 7341) }, false);
    const builder = new GraphBuilder(g);
    const one = builder.op('Conv', ['a', 'w'], { group: 1, pads: [1, 1, 1, 1] });
    const two = builder.op('Conv', ['b', 'w'], { group: 2, pads: [1, 1, 1, 1] });
    g.outputs = [one, two].map((name) => ({ name, dtype: 'float32' as const }));
    const feeds = {
      a: { dims: [1, 2, 6, 6], data: randomFloat32Array(72, 7342) },
      b: { dims: [1, 4, 6, 6], data: randomFloat32Array(144, 7343) },
    };
    const want = await runOrt(encodeModel(g), feeds, 'cpu');
    const session = await Session.create(g, { gpu });
    try {
      const got = await session.run(feeds);
      for (const name of [one, two]) expect(relL2(got[name].data, want[name].data), name).toBeLessThan(1e-5);
    } finally {
      session.dispose();
    }
  });

  it('startPipelines issues every distinct compile before anything is awaited', async () => {
    const own = await createNodeGpuContext();
    try {
      const programs = [
        unaryProgram({ kind: 'tanh' }, 1000),
        unaryProgram({ kind: 'tanh' }, 4096), // same key, other size: one compile
        unaryProgram({ kind: 'identity' }, 1000),
      ];
      const started = startPipelines(own, programs);
      // Counted before anything is awaited: no compile waits for another.
      expect(own.pipelinesCompiled).toBe(2);
      await started;
      await startPipelines(own, programs);
      expect(own.pipelinesCompiled, 'after a second call').toBe(2);
    } finally {
      own.dispose();
    }
  });
});

/**
 * Creates a second session of `model` beside `first`, checks each against its own reference
 * output (the second first), disposes both and returns the bytes the second create uploaded.
 */
async function createSecondAndCompare(
  gpu: GpuContext,
  first: Session,
  model: Graph,
  feeds: Record<string, Tensor>,
  output: string,
  wantFirst: Tensor,
  wantSecond: Tensor,
): Promise<number> {
  const uploadedBefore = gpu.bytesUploaded;
  const second = await Session.create(model, { gpu });
  const uploaded = gpu.bytesUploaded - uploadedBefore;
  try {
    const fromSecond = (await second.run(feeds))[output];
    const fromFirst = (await first.run(feeds))[output];
    expect(relL2(fromSecond.data, wantSecond.data), 'the second session').toBeLessThan(1e-4);
    expect(relL2(fromFirst.data, wantFirst.data), 'the first session').toBeLessThan(1e-4);
  } finally {
    first.dispose();
    second.dispose();
  }
  return uploaded;
}

describe('fingerprintFloats', () => {
  it('changes with any single word (the tail after the last block of four included), and reads views in place', () => {
    const data = randomFloat32Array(4099, 7341);
    const base = fingerprintFloats(data);
    const seen = new Set([base]);
    for (const i of [0, 1, 2, 3, 2048, 4095, 4096, 4097, 4098]) {
      const changed = data.slice();
      changed[i] = Math.fround(changed[i] + 2 ** -20);
      seen.add(fingerprintFloats(changed));
    }
    expect(seen.size, 'distinct fingerprints').toBe(10);
    // A view at an offset of a larger buffer reads the same words as a copy.
    const view = data.subarray(5, 105);
    expect(fingerprintFloats(view)).toBe(fingerprintFloats(view.slice()));
    expect(fingerprintFloats(view)).not.toBe(fingerprintFloats(data.subarray(6, 106)));
    // The length is part of it: trailing zeros are not the same tensor.
    const zeros = new Float32Array(8);
    expect(fingerprintFloats(zeros.subarray(0, 4))).not.toBe(fingerprintFloats(zeros));
  });
});
