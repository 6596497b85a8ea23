// Session behaviour on small built graphs: refusals at create time (naming node and op) and
// before submit (wrong feeds), plans per input shape, aliases and several outputs, Softmax,
// and buffer reuse by liveness. Every numeric check is against the float64 reference.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { encodeModel } from '../src/graph/codec.ts';
import { ModelError } from '../src/graph/errors.ts';
import { Graph } from '../src/graph/ir.ts';
import { prepareGraph } from '../src/graph/load.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { GpuDeviceLostError } from '../src/kernels/errors.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { GEMM_VARIANTS, gemmTarget, variantRuns } from '../src/kernels/gemm.ts';
import { SessionDisposedError, SessionUsageError } from '../src/runtime/errors.ts';
import { lowerGraph } from '../src/runtime/lower.ts';
import { Session, type SessionOptions, type Tensor } from '../src/runtime/session.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { runOrt } from './helpers/reference-models.ts';
import { convRef, gemmRef, globalPoolRef, relL2, softmaxRef } from './helpers/reference-ops.ts';

function newGraph(inputShape: (number | string)[], opset = 17): { g: Graph; b: GraphBuilder } {
  const g = new Graph();
  g.opsetImports = [{ domain: '', version: opset }];
  g.inputs = [{ name: 'x', dtype: 'float32', shape: inputShape }];
  g.values.set('x', { ...g.inputs[0] });
  return { g, b: new GraphBuilder(g, 5) };
}

/** x [N,3,8,8] → Conv 3×3 pad 1 (4) → Relu → GlobalAveragePool → Flatten → Gemm (5) → Softmax */
function classifier(batch: number | string): { g: Graph; w: string; bias: string; fc: string; fcBias: string } {
  const { g, b } = newGraph([batch, 3, 8, 8]);
  const w = b.weight('w', [4, 3, 3, 3], 'he');
  const bias = b.weight('b', [4], 'glorot');
  const c = b.op('Conv', ['x', w, bias], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
  const r = b.op('Relu', [c]);
  const p = b.op('GlobalAveragePool', [r]);
  const f = b.node('Flatten', [p], { axis: 1 }, { outputs: ['features'] })[0];
  const fc = b.weight('fc', [5, 4], 'glorot');
  const fcBias = b.weight('fcb', [5], 'glorot');
  const logits = b.op('Gemm', [f, fc, fcBias], { transB: 1 });
  const prob = b.node('Softmax', [logits], { axis: 1 }, { outputs: ['prob'] })[0];
  g.outputs = [
    { name: prob, dtype: 'float32' },
    { name: 'features', dtype: 'float32' },
  ];
  return { g, w, bias, fc, fcBias };
}

function reference(m: ReturnType<typeof classifier>, x: Float32Array, batch: number) {
  const data = (name: string) => m.g.initializers.get(name)!.value.data as Float32Array;
  const conv = convRef(x, [batch, 3, 8, 8], data(m.w), [4, 3, 3, 3], data(m.bias), {
    pads: [1, 1, 1, 1],
    act: { kind: 'relu' },
  });
  const pooled = globalPoolRef('avg', conv.data, conv.dims);
  const logits = gemmRef(pooled.data, data(m.fc), {
    M: batch,
    N: 5,
    K: 4,
    transB: true,
    c: { data: data(m.fcBias), dims: [5] },
  });
  return { prob: softmaxRef(logits, [batch, 5], 1, 17), features: pooled.data };
}

async function expectRejected(promise: Promise<unknown>, ...fragments: (string | RegExp)[]): Promise<void> {
  let caught: unknown;
  try {
    await promise;
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected a ModelError').toBeInstanceOf(ModelError);
  for (const f of fragments) expect((caught as Error).message).toMatch(f);
}

/** The promise rejects with an error of `type` whose message holds each fragment. */
async function expectTyped<E extends Error>(
  promise: Promise<unknown>,
  type: new (...args: never[]) => E,
  ...fragments: (string | RegExp)[]
): Promise<E> {
  const caught = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(caught, `expected a ${type.name}`).toBeInstanceOf(type);
  for (const f of fragments) expect((caught as Error).message).toMatch(f);
  return caught as E;
}

describe('Session', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('runs a small classifier (Conv, Relu, GlobalAveragePool, Flatten alias, Gemm, Softmax) with two outputs', async () => {
    const m = classifier(2);
    const session = await Session.create(m.g, { gpu });
    const x = randomFloat32Array(2 * 3 * 64, 1);
    const out = await session.run({ x: { dims: [2, 3, 8, 8], data: x } });
    const want = reference(m, x, 2);
    expect(out.prob.dims).toEqual([2, 5]);
    expect(out.features.dims).toEqual([2, 4]);
    expect(relL2(out.prob.data, want.prob)).toBeLessThan(1e-5);
    expect(relL2(out.features.data, want.features)).toBeLessThan(1e-5);
    session.dispose();
  });

  it('compiles a plan per input shape for a symbolic batch (from bytes) and reuses it', async () => {
    const m = classifier('N');
    const bytes = encodeModel(m.g);
    const session = await Session.create(bytes, { gpu, file: 'classifier.onnx', gemm: GEMM_VARIANTS[2] });
    expect(session.inputShapes.x).toEqual(['N', 3, 8, 8]);
    for (const batch of [1, 3, 1]) {
      const x = randomFloat32Array(batch * 192, 10 + batch);
      const out = await session.run({ x: { dims: [batch, 3, 8, 8], data: x } });
      expect(out.prob.dims).toEqual([batch, 5]);
      expect(relL2(out.prob.data, reference(m, x, batch).prob)).toBeLessThan(1e-5);
    }
    session.dispose();
  });

  it('refuses an op the runtime cannot run, at create time, naming node and op', async () => {
    const { g, b } = newGraph([1, 4]);
    const idx = b.int64('idx', [0, 2]);
    const y = b.node('Gather', ['x', idx], { axis: 1 }, { name: 'pick', outputs: ['y'] })[0];
    g.outputs = [{ name: y, dtype: 'float32' }];
    await expectRejected(Session.create(g, { gpu }), "node 'pick' (Gather)", /not supported by the runtime/);
  });

  it('refuses an unsupported attribute value, at create time, naming node and op', async () => {
    const { g, b } = newGraph([1, 2, 4, 4]);
    const pads = b.int64('pads', [0, 0, 1, 1, 0, 0, 1, 1]);
    const y = b.node('Pad', ['x', pads], { mode: 'reflect' }, { name: 'mirror', outputs: ['y'] })[0];
    g.outputs = [{ name: y, dtype: 'float32' }];
    await expectRejected(Session.create(g, { gpu }), "node 'mirror' (Pad)", /reflect/, /accepted: 'constant'/);
  });

  it('refuses wrong feeds before submitting anything', async () => {
    const m = classifier(2);
    const session = await Session.create(m.g, { gpu });
    const good = randomFloat32Array(2 * 192, 3);
    await expectRejected(session.run({ y: { dims: [2, 3, 8, 8], data: good } }), "'y' is not an input", /'x'/);
    await expectRejected(session.run({}), "input 'x' is missing");
    await expectRejected(
      session.run({ x: { dims: [2, 3, 8, 8], data: new Float64Array(384) as unknown as Float32Array } }),
      /float32/,
      /Float64Array/,
    );
    await expectRejected(session.run({ x: { dims: [2, 192], data: good } }), /rank 2/, /rank 4/);
    await expectRejected(session.run({ x: { dims: [2, 3, 8, 8], data: good.subarray(1) } }), /383 values/, /need 384/);
    await expectRejected(
      session.run({ x: { dims: [1, 3, 8, 8], data: good.subarray(0, 192) } }),
      /expects \[2, 3, 8, 8\]/,
    );
    // And the session still works afterwards.
    const out = await session.run({ x: { dims: [2, 3, 8, 8], data: good } });
    expect(relL2(out.prob.data, reference(m, good, 2).prob)).toBeLessThan(1e-5);
    session.dispose();
  });

  it('lowers the long tail of ops like onnxruntime does (BN, LeakyRelu, Transpose, MatMul, Add, Sigmoid, Pad, Clip, Unsqueeze, Squeeze, Div, Sub, Softmax axis)', async () => {
    const { g, b } = newGraph([2, 4, 6, 6]);
    const f32 = (name: string, dims: number[], seed: number, positive = false) => {
      const data = randomFloat32Array(
        dims.reduce((x, y) => x * y, 1),
        seed,
      ).map((v) => (positive ? Math.abs(v) + 0.2 : v));
      g.setInitializer(name, { dtype: 'float32', dims, data });
      return name;
    };
    const bn = b.op(
      'BatchNormalization',
      ['x', f32('s', [4], 1), f32('bb', [4], 2), f32('m', [4], 3), f32('v', [4], 4, true)],
      { epsilon: 1e-3 },
    );
    const lr = b.op('LeakyRelu', [bn], { alpha: 0.2 });
    const t = b.op('Transpose', [lr], { perm: [0, 2, 3, 1] });
    const mm = b.op('MatMul', [t, f32('w', [4, 5], 5)]);
    const ad = b.op('Add', [mm, f32('bias', [5], 6)]);
    const sg = b.op('Sigmoid', [ad]);
    const pd = b.op('Pad', [sg, b.int64('pads', [0, 1, 0, 0, 0, 0, 1, 0]), f32('pv', [], 7)]);
    g.setInitializer('lo', { dtype: 'float32', dims: [], data: new Float32Array([0.2]) });
    g.setInitializer('hi', { dtype: 'float32', dims: [], data: new Float32Array([0.8]) });
    const cl = b.op('Clip', [pd, 'lo', 'hi']);
    const us = b.op('Unsqueeze', [cl, b.int64('ax', [1])]);
    const sq = b.op('Squeeze', [us, b.int64('ax2', [1])]);
    const dv = b.op('Div', [sq, f32('two', [1], 10, true)]);
    const sb = b.op('Sub', [dv, f32('off', [7, 1, 5], 11)]);
    const sm = b.node('Softmax', [sb], { axis: 2 }, { outputs: ['y'] })[0];
    g.outputs = [
      { name: sm, dtype: 'float32' },
      { name: t, dtype: 'float32' },
    ];
    const feeds = { x: { dims: [2, 4, 6, 6], data: randomFloat32Array(288, 12) } };
    const want = await runOrt(encodeModel(g), feeds);
    const session = await Session.create(g, { gpu });
    const got = await session.run(feeds);
    for (const name of ['y', t]) {
      expect(got[name].dims).toEqual(want[name].dims);
      expect(relL2(got[name].data, want[name].data)).toBeLessThan(1e-5);
    }
    session.dispose();
  });

  it('runs 1-D Conv and pools (as 2-D with height 1) like onnxruntime does', async () => {
    const { g, b } = newGraph([2, 3, 20]);
    const w = b.weight('w', [6, 3, 3], 'he');
    const bias = b.weight('b', [6], 'glorot');
    const c = b.op('Conv', ['x', w, bias], { kernel_shape: [3], strides: [2], pads: [1, 2], dilations: [1] });
    const mp = b.op('MaxPool', [c], { kernel_shape: [2], strides: [2], ceil_mode: 1 });
    const ap = b.node(
      'AveragePool',
      [mp],
      { kernel_shape: [3], pads: [1, 1], count_include_pad: 1 },
      { outputs: ['y'] },
    )[0];
    g.outputs = [{ name: ap, dtype: 'float32' }];
    const feeds = { x: { dims: [2, 3, 20], data: randomFloat32Array(120, 13) } };
    const want = await runOrt(encodeModel(g), feeds);
    const session = await Session.create(g, { gpu });
    const got = await session.run(feeds);
    expect(got.y.dims).toEqual(want.y.dims);
    expect(relL2(got.y.data, want.y.data)).toBeLessThan(1e-5);
    session.dispose();
  });

  it('sums more inputs than one kernel binds (partial sums), with broadcasting and a fused Relu', async () => {
    const { g, b } = newGraph([2, 3]);
    const terms = ['x'];
    const consts: Float32Array[] = [];
    for (let i = 0; i < 8; i++) {
      const dims = i % 2 ? [3] : [2, 3];
      const data = randomFloat32Array(
        dims.reduce((p, q) => p * q, 1),
        30 + i,
      );
      g.setInitializer(`t${i}`, { dtype: 'float32', dims, data });
      terms.push(`t${i}`);
      consts.push(data);
    }
    const sum = b.op('Sum', terms);
    const y = b.node('Relu', [sum], {}, { outputs: ['y'] })[0];
    g.outputs = [{ name: y, dtype: 'float32' }];
    const x = randomFloat32Array(6, 40);
    const session = await Session.create(g, { gpu });
    const got = await session.run({ x: { dims: [2, 3], data: x } });
    const want = Array.from(x, (v, i) =>
      Math.max(
        0,
        consts.reduce((acc, c, k) => acc + c[k % 2 ? i % 3 : i], v),
      ),
    );
    expect(relL2(got.y.data, want)).toBeLessThan(1e-5);
    session.dispose();
  });

  it('reuses activation buffers by liveness', async () => {
    // A chain of 12 elementwise steps over [1, 64, 32, 32]: every value is 256 KiB.
    const { g, b } = newGraph([1, 64, 32, 32]);
    let v = 'x';
    const scale = b.weight('scale', [64, 1, 1], 'glorot');
    for (let i = 0; i < 6; i++) {
      v = b.op('Mul', [v, scale]);
      v = b.op('Sigmoid', [v]);
    }
    g.outputs = [{ name: v, dtype: 'float32' }];
    const session = await Session.create(g, { gpu });
    const x = randomFloat32Array(65536, 4);
    const out = await session.run({ x: { dims: [1, 64, 32, 32], data: x } });
    const s = g.initializers.get(scale)!.value.data as Float32Array;
    const want = new Float64Array(65536);
    for (let i = 0; i < 65536; i++) {
      let y = x[i];
      for (let k = 0; k < 6; k++) y = 1 / (1 + Math.exp(-(y * s[Math.floor(i / 1024)])));
      want[i] = y;
    }
    expect(relL2(out[v].data, want)).toBeLessThan(1e-5);
    // 13 values of 256 KiB; input, output and two ping-pong buffers suffice.
    expect(session.peakActivationBytes).toBeLessThanOrEqual(4 * 262144);
    session.dispose();
  });
  it('refuses bad calls with typed errors that say what is accepted', async () => {
    const m = classifier(2);
    await expectTyped(
      Session.create(null as unknown as Graph, { gpu }),
      SessionUsageError,
      /ONNX bytes \(a Uint8Array\) or a Graph/,
      /got null/,
    );
    await expectTyped(Session.create(m.g, {} as SessionOptions), SessionUsageError, /needs options\.gpu, a GpuContext/);
    await expectTyped(Session.create(m.g, undefined as unknown as SessionOptions), SessionUsageError, /options\.gpu/);
    await expectTyped(
      Session.create(m.g, { gpu, gemm: 'fast' as unknown as 'tune' }),
      SessionUsageError,
      `options.gemm = "fast" is not accepted; accepted: 'default', 'tune' or one of GEMM_VARIANTS`,
    );
    // A variant the device cannot run is named with the feature it lacks: the context is seen as
    // one whose device did not enable 'subgroups' (as in Deno, or Chromium with 4-lane subgroups).
    const withoutSubgroups = {
      device: gpu.device,
      info: { ...gpu.info, deviceFeatures: gpu.info.deviceFeatures.filter((f) => f !== 'subgroups') },
    } as unknown as GpuContext;
    const unrunnable = GEMM_VARIANTS.find((v) => !variantRuns(v, gemmTarget(withoutSubgroups)));
    expect(unrunnable, 'a subgroup GEMM variant').toBeDefined();
    await expectTyped(
      Session.create(m.g, { gpu: withoutSubgroups, gemm: unrunnable! }),
      SessionUsageError,
      /options\.gemm: GEMM variant .* needs the 'subgroups' feature with subgroups of exactly \d+ lanes; this device has/,
    );
    const session = await Session.create(m.g, { gpu });
    const run = (feeds: unknown) => session.run(feeds as Record<string, Tensor>);
    await expectTyped(run(undefined), SessionUsageError, /object of input tensors/, /'x'/, /got undefined/);
    await expectTyped(run(null), SessionUsageError, /got null/);
    await expectTyped(run({ x: null }), SessionUsageError, "input 'x' must be a tensor", /got null/);
    const good = randomFloat32Array(2 * 192, 3);
    expect((await session.run({ x: { dims: [2, 3, 8, 8], data: good } })).prob.dims).toEqual([2, 5]);
    session.dispose();
    const disposed = await expectTyped(
      session.run({ x: { dims: [2, 3, 8, 8], data: good } }),
      SessionDisposedError,
      'run() on a disposed session',
    );
    expect(disposed).toBeInstanceOf(SessionUsageError);
  });

  it('refuses a negative batch in inputShapes at create time (no internal GEMM assert)', async () => {
    const m = classifier('N');
    await expectRejected(Session.create(m.g, { gpu, inputShapes: { x: [-1, 3, 8, 8] } }), "inputShapes['x']", /-1/);
    await expectRejected(Session.create(encodeModel(m.g), { gpu, inputShapes: { x: [Number.NaN, 3, 8, 8] } }), /NaN/);
  });

  it('reads Gemm transA = 10000000 as true, as onnxruntime does (same output)', async () => {
    const { g, b } = newGraph([4, 3]);
    const w = b.weight('w', [4, 5], 'glorot');
    const c = b.weight('c', [5], 'glorot');
    const y = b.node('Gemm', ['x', w, c], { transA: 10_000_000, alpha: 0.5 }, { outputs: ['y'] })[0];
    g.outputs = [{ name: y, dtype: 'float32' }];
    const x = randomFloat32Array(12, 8);
    const session = await Session.create(g, { gpu });
    const got = await session.run({ x: { dims: [4, 3], data: x } });
    const want = await runOrt(encodeModel(g), { x: { dims: [4, 3], data: x } });
    expect(got.y.dims).toEqual([3, 5]);
    expect(want.y.dims).toEqual([3, 5]);
    expect(relL2(got.y.data, want.y.data)).toBeLessThan(1e-5);
    session.dispose();
  });
  it('refuses an empty constant reaching a kernel, naming the value (not a GEMM assert)', async () => {
    const { g, b } = newGraph([4, 5]);
    const a = b.weight('a', [0, 4], 'glorot');
    b.node('Gemm', [a, 'x'], {}, { name: 'fc', outputs: ['y'] });
    g.outputs = [{ name: 'y', dtype: 'float32' }];
    await expectRejected(Session.create(g, { gpu }), "node 'fc' (Gemm)", "value 'a' is [0, 4], an empty tensor");
  });
  it('reads AveragePool count_include_pad = 2 as true, as onnxruntime does (same output)', async () => {
    const { g } = newGraph([1, 2, 5, 5]);
    g.nodes.push({
      name: 'pool',
      opType: 'AveragePool',
      domain: '',
      inputs: ['x'],
      outputs: ['y'],
      attributes: {
        kernel_shape: { type: 'ints', value: [3, 3] },
        pads: { type: 'ints', value: [1, 1, 1, 1] },
        count_include_pad: { type: 'int', value: 2 },
      },
    });
    g.outputs = [{ name: 'y', dtype: 'float32' }];
    const x = randomFloat32Array(50, 11);
    const session = await Session.create(g, { gpu });
    const got = await session.run({ x: { dims: [1, 2, 5, 5], data: x } });
    const want = await runOrt(encodeModel(g), { x: { dims: [1, 2, 5, 5], data: x } });
    expect(relL2(got.y.data, want.y.data)).toBeLessThan(1e-5);
    session.dispose();
  });
  it('an assert that fires while lowering a node becomes an internal-error ModelError naming it; GPU errors pass through', async () => {
    const m = classifier(2);
    const graph = prepareGraph(m.g.clone());
    const lower = (error: Error) =>
      lowerGraph(graph, {
        chooseVariant: () => Promise.reject(error),
        maxBindingBytes: gpu.device.limits.maxStorageBufferBindingSize,
      });
    const internal = await expectTyped(
      lower(new Error('gemm: M must be a positive integer, got -1')),
      ModelError,
      /node '[^']*' \((Conv|Gemm)\): internal error: gemm: M must be a positive integer, got -1; please report/,
    );
    expect((internal as { cause?: unknown }).cause).toBeInstanceOf(Error);
    await expectTyped(lower(new GpuDeviceLostError('tune', 'destroyed', 'gone')), GpuDeviceLostError, /tune/);
  });
});
