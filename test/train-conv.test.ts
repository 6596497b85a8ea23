// The Conv gradient rule end to end with its temporaries bounded: the rule's own forward and
// backward steps (implicit-GEMM forward on a GPU-packed weight; backward in row chunks, dx of a
// stride-1 conv as a conv of dy) run under a tiny binding limit that forces several chunks, on
// odd shapes (strides, padding, dilation, groups, depthwise, 1×1), against float64 finite
// differences. Every buffer a kernel writes starts as random junk, so a chunk that misses rows
// or a first chunk that accumulates instead of overwriting shows. A training plan under a small
// binding limit matches the unchunked one; VGG-16 at 224×224 batch 8 (im2col of conv1_2: 925 MB)
// compiles into a full-training plan on the device's real limits.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildArchitecture } from '../src/graph/architectures/index.ts';
import { AttributeReader } from '../src/graph/attributes.ts';
import { GraphBuilder } from '../src/graph/builder.ts';
import { ModelError } from '../src/graph/errors.ts';
import { Graph } from '../src/graph/ir.ts';
import { prepareGraph } from '../src/graph/load.ts';
import { convDataGradParams, convPackedWeightsSize, convPackWeightsProgram } from '../src/kernels/conv-backward.ts';
import { packConvWeights, type Conv2dParams } from '../src/kernels/conv.ts';
import { defaultVariant } from '../src/kernels/gemm.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { CONV_BACKWARD_BUDGET_BYTES } from '../src/ops/conv.ts';
import type { RuleContext, RuleStep } from '../src/ops/op.ts';
import { gradientRule } from '../src/ops/registry.ts';
import { encodeSteps, prepareStep, storageUsage, type KernelStep } from '../src/kernels/program.ts';
import { runProgram } from './helpers/run-program.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { ConstantStore } from '../src/runtime/plan.ts';
import { TrainingPlan } from '../src/train/training-plan.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { finiteDifferenceGradient } from './helpers/reference-backward.ts';
import { convRef, relL2 } from './helpers/reference-ops.ts';

interface ConvCase {
  name: string;
  x: number[];
  w: number[];
  strides?: [number, number];
  pads?: [number, number, number, number];
  dilation?: number;
  group?: number;
  bias: boolean;
  /** The rule's binding limit, in rows of the largest temporary (group·max(K, Cout/group) floats). */
  rowsPerChunk: number;
}

const numel = (dims: number[]) => dims.reduce((a, b) => a * b, 1);

/** A graph of one Conv node 'conv' over input 'x', weight 'w' (and bias 'b'), shapes inferred. */
function convGraph(c: ConvCase): Graph {
  const g = new Graph();
  g.inputs = [{ name: 'x', dtype: 'float32', shape: c.x }];
  g.values.set('x', { ...g.inputs[0] });
  const b = new GraphBuilder(g, 5);
  const w = b.weight('w', c.w, 'he');
  g.setInitializer(w, { dtype: 'float32', dims: c.w, data: randomFloat32Array(numel(c.w), 2, 0.5) }, true);
  const inputs = ['x', w];
  if (c.bias) {
    inputs.push(b.weight('b', [c.w[0]], 'glorot'));
    g.setInitializer(inputs[2], { dtype: 'float32', dims: [c.w[0]], data: randomFloat32Array(c.w[0], 3) }, true);
  }
  const y = b.op(
    'Conv',
    inputs,
    {
      kernel_shape: c.w.slice(2),
      strides: c.strides ?? [1, 1],
      pads: c.pads ?? [0, 0, 0, 0],
      dilations: [c.dilation ?? 1, c.dilation ?? 1],
      group: c.group ?? 1,
    },
    'conv',
  );
  g.outputs = [{ name: y, dtype: 'float32' }];
  return prepareGraph(g);
}

/** A RuleContext over a one-node graph, every input wanted, with the given binding limit. */
function ruleContext(graph: Graph, maxBindingBytes: number, temps: Map<string, number[]>): RuleContext {
  const node = graph.nodes[0];
  return {
    graph,
    node,
    attrs: new AttributeReader(node, 'conv test'),
    shape: (name) => temps.get(name) ?? (graph.values.get(name)!.shape as number[]),
    wants: () => true,
    temp(label, dims) {
      let name = label;
      for (let i = 1; temps.has(name) || graph.values.has(name); i++) name = `${label}#${i}`;
      temps.set(name, [...dims]);
      return name;
    },
    variant: (p) => defaultVariant(p, true),
    maxBindingBytes,
    error: (message) => new ModelError(message, { file: 'conv test', node }),
    training: true,
    dropout: false,
    state() {},
  };
}

describe('Conv training with bounded temporaries', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  /** Runs steps over buffers named by value: `inputs` uploaded, everything else random junk; reads `outputs` back. */
  async function runSteps(
    steps: RuleStep[],
    inputs: Map<string, Float32Array>,
    sizes: (name: string) => number,
    outputs: string[],
  ): Promise<Map<string, Float32Array>> {
    const buffers = new Map<string, GPUBuffer>();
    const kernelSteps: KernelStep[] = [];
    try {
      let seed = 900;
      for (const s of steps) {
        const ranges = s.program.bindings
          .filter((b) => b.name !== 'params')
          .map((b) => {
            const value = s.bind[b.name];
            let buffer = buffers.get(value);
            if (!buffer) {
              const floats = inputs.get(value)?.length ?? sizes(value);
              buffer = gpu.createBuffer(value, Math.max(16, floats * 4), storageUsage());
              gpu.upload(buffer, inputs.get(value) ?? randomFloat32Array(floats, seed++, 1e3));
              buffers.set(value, buffer);
            }
            return { buffer };
          });
        kernelSteps.push(await prepareStep(gpu, s.program, ranges));
      }
      await gpu.scope('conv rule', () => {
        const encoder = gpu.device.createCommandEncoder();
        encodeSteps(encoder, kernelSteps);
        gpu.device.queue.submit([encoder.finish()]);
      });
      const out = new Map<string, Float32Array>();
      for (const name of outputs) out.set(name, new Float32Array(await gpu.read(buffers.get(name)!, sizes(name) * 4)));
      return out;
    } finally {
      for (const b of buffers.values()) b.destroy();
      for (const s of kernelSteps) for (const b of s.owned) b.destroy();
    }
  }

  const cases: ConvCase[] = [
    {
      name: '3x3 stride 2, asymmetric pad: 2 images, then 1',
      x: [3, 4, 9, 8],
      w: [5, 4, 3, 3],
      strides: [2, 2],
      pads: [1, 0, 1, 1],
      bias: true,
      rowsPerChunk: 2 * 20 + 7,
    },
    {
      name: '3x3 pad 1, odd sizes: chunks within an image',
      x: [2, 3, 7, 5],
      w: [4, 3, 3, 3],
      pads: [1, 1, 1, 1],
      bias: true,
      rowsPerChunk: 13,
    },
    {
      name: 'grouped 2x2 dilation 2',
      x: [2, 6, 7, 7],
      w: [4, 3, 2, 2],
      dilation: 2,
      group: 2,
      bias: false,
      rowsPerChunk: 25,
    },
    {
      name: 'depthwise 3x3 stride 2',
      x: [3, 4, 6, 6],
      w: [4, 1, 3, 3],
      strides: [2, 2],
      pads: [1, 1, 1, 1],
      group: 4,
      bias: true,
      rowsPerChunk: 9,
    },
    {
      name: 'depthwise 3x3 stride 1, pad 1',
      x: [2, 4, 5, 6],
      w: [4, 1, 3, 3],
      pads: [1, 1, 1, 1],
      group: 4,
      bias: false,
      rowsPerChunk: 11,
    },
    { name: 'pointwise 1x1', x: [3, 5, 3, 4], w: [6, 5, 1, 1], bias: true, rowsPerChunk: 12 },
    {
      name: '1x1 stride 2 (downsample)',
      x: [3, 6, 7, 5],
      w: [4, 6, 1, 1],
      strides: [2, 2],
      bias: false,
      rowsPerChunk: 12,
    },
    {
      name: '1x1 pad 1 (pads beyond the kernel)',
      x: [2, 3, 4, 5],
      w: [4, 3, 1, 1],
      pads: [1, 1, 1, 1],
      bias: true,
      rowsPerChunk: 30,
    },
    {
      name: '3x3 pad 3 (negative pads of the dX conv)',
      x: [2, 3, 4, 5],
      w: [2, 3, 3, 3],
      pads: [3, 2, 1, 3],
      bias: false,
      rowsPerChunk: 17,
    },
    {
      name: 'strides 1x2, dilation 2, groups 3',
      x: [2, 6, 8, 9],
      w: [3, 2, 3, 2],
      strides: [1, 2],
      pads: [2, 1, 0, 1],
      dilation: 2,
      group: 3,
      bias: true,
      rowsPerChunk: 2 * 15,
    },
  ];

  for (const c of cases) {
    it(`${c.name}: y, dX, dW, dB in chunks`, async () => {
      const graph = convGraph(c);
      const node = graph.nodes[0];
      const temps = new Map<string, number[]>();
      const group = c.group ?? 1;
      const K = c.w[1] * c.w[2] * c.w[3];
      const limit = c.rowsPerChunk * 4 * group * Math.max(K, c.w[0] / group);
      const ctx = ruleContext(graph, limit, temps);
      const rule = gradientRule('Conv')!;
      const forward = rule.forward!(ctx)!;
      const yName = node.outputs[0];
      const yDims = graph.values.get(yName)!.shape as number[];
      const dyName = ctx.temp('dy', yDims);
      const backward = rule.backward(ctx, [dyName]);
      const [dxName, dwName, dbName] = backward.grads;
      // Both gradients are wanted (x and W feed the loss), so the rule must name a value for each.
      expect(typeof dxName).toBe('string');
      expect(typeof dwName).toBe('string');
      expect(Boolean(dbName)).toBe(c.bias);

      // Bounded: no temporary over the limit, and the rows really came in several chunks.
      for (const [name, dims] of temps) {
        if (name === dyName || name === dxName || name === dwName) continue;
        expect(numel(dims) * 4, name).toBeLessThanOrEqual(limit);
      }
      const M = yDims[0] * yDims[2] * yDims[3];
      const chunks = backward.steps.filter((s) => s.program.key === 'im2col').length;
      expect(chunks).toBe(
        Math.ceil(M / ctx.shape(backward.steps.find((s) => s.program.key === 'im2col')!.bind.col)[1]),
      );
      expect(chunks).toBeGreaterThan(1);
      // Only x (and the weight) is read from the forward: nothing the forward wrote is saved.
      const forwardWrites = new Set(
        forward.flatMap((s) =>
          s.program.bindings.filter((b) => b.access === 'read_write' && b.writes !== false).map((b) => s.bind[b.name]),
        ),
      );
      const backwardReads = new Set(backward.steps.flatMap((s) => Object.values(s.bind)));
      expect([...forwardWrites].filter((v) => backwardReads.has(v))).toEqual([]);

      const x = randomFloat32Array(numel(c.x), 1);
      const w = graph.initializers.get('w')!.value.data as Float32Array;
      const b = c.bias ? (graph.initializers.get('b')!.value.data as Float32Array) : undefined;
      const dy = randomFloat32Array(numel(yDims), 4);
      const inputs = new Map<string, Float32Array>([
        ['x', x],
        ['w', w],
        [dyName, dy],
      ]);
      if (b) inputs.set('b', b);
      const outputs = [yName, dxName!, dwName!, ...(dbName ? [dbName] : [])];
      const got = await runSteps([...forward, ...backward.steps], inputs, (name) => numel(ctx.shape(name)), outputs);

      const opts = {
        strides: c.strides ?? [1, 1],
        pads: c.pads ?? [0, 0, 0, 0],
        dilations: [c.dilation ?? 1, c.dilation ?? 1],
        group,
      };
      expect(relL2(got.get(yName)!, convRef(x, c.x, w, c.w, b, opts).data)).toBeLessThan(1e-5);
      const fd = (theta: Float32Array, f: (t: Float64Array) => ArrayLike<number>) =>
        finiteDifferenceGradient(f, theta, dy, 1e-3);
      expect(
        relL2(
          got.get(dxName!)!,
          fd(x, (t) => convRef(t, c.x, w, c.w, b, opts).data),
        ),
        'dX',
      ).toBeLessThan(1e-3);
      expect(
        relL2(
          got.get(dwName!)!,
          fd(w, (t) => convRef(x, c.x, t, c.w, b, opts).data),
        ),
        'dW',
      ).toBeLessThan(1e-3);
      if (b)
        expect(
          relL2(
            got.get(dbName!)!,
            fd(b, (t) => convRef(x, c.x, w, c.w, t, opts).data),
          ),
          'dB',
        ).toBeLessThan(1e-3);
    });
  }

  it('a strided conv whose one image does not fit is refused for dX, naming node, op and sizes; dW alone still chunks', async () => {
    const c: ConvCase = {
      name: 'big',
      x: [2, 4, 9, 8],
      w: [5, 4, 3, 3],
      strides: [2, 2],
      pads: [1, 1, 1, 1],
      bias: false,
      rowsPerChunk: 10,
    };
    const graph = convGraph(c);
    const limit = 10 * 4 * 36;
    const rule = gradientRule('Conv')!;
    const ctx = ruleContext(graph, limit, new Map());
    expect(() => rule.backward(ctx, ['conv_output'])).toThrow(ModelError);
    expect(() => rule.backward(ctx, ['conv_output'])).toThrow(
      /node 'conv' \(Conv\).*strided conv \(4→5, 3x3 s2x2, input 9x8\).*over the 1440-byte binding budget/s,
    );
    // With x frozen (no dX wanted), dW is computed in row ranges inside an image.
    const dwOnly = { ...ruleContext(graph, limit, new Map()), wants: (i: number) => i === 1 };
    const steps = rule.backward(dwOnly, ['conv_output']).steps;
    expect(steps.filter((s) => s.program.key === 'im2col').length).toBe(Math.ceil((2 * 5 * 4) / 10));
  });

  it('the GPU weight packs equal packConvWeights; the transposed pack is the dX conv weight', async () => {
    const p: Conv2dParams = {
      images: 1,
      inChannels: 6,
      height: 5,
      width: 5,
      outChannels: 9,
      group: 3,
      kernelH: 2,
      kernelW: 3,
      strideH: 1,
      strideW: 1,
      pads: [1, 1, 0, 1],
      dilationH: 1,
      dilationW: 2,
      outH: 5,
      outW: 3,
      hasBias: false,
    };
    const w = randomFloat32Array(9 * 2 * 2 * 3, 77);
    const packed = (await runProgram(gpu, convPackWeightsProgram(p), { w }, { packed: convPackedWeightsSize(p) }))
      .packed;
    expect(Array.from(packed)).toEqual(Array.from(packConvWeights(w, p)));
    // The dX conv's weight in ONNX layout [Cin, Cout/group, KH, KW], flipped, packed on the host.
    const t = convDataGradParams(p);
    const flipped = new Float32Array(w.length);
    const [gi, go, kernel] = [2, 3, 6];
    for (let g = 0; g < 3; g++)
      for (let co = 0; co < go; co++)
        for (let ci = 0; ci < gi; ci++)
          for (let r = 0; r < kernel; r++) {
            flipped[((g * gi + ci) * go + co) * kernel + r] = w[((g * go + co) * gi + ci) * kernel + (kernel - 1 - r)];
          }
    const packedT = (
      await runProgram(gpu, convPackWeightsProgram(p, true), { w }, { packed: convPackedWeightsSize(p, true) })
    ).packed;
    expect(Array.from(packedT)).toEqual(Array.from(packConvWeights(flipped, t)));
  });

  it('a training plan under a small binding limit (chunked backward) gives the gradients of the unchunked plan', async () => {
    // x [2,3,10,9] → conv3×3 p1 (6) → relu → conv3×3 s2 p1 (8) → relu → conv1×1 (8) → GAP → flatten → gemm (5)
    const g = new Graph();
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [2, 3, 10, 9] }];
    g.values.set('x', { ...g.inputs[0] });
    const b = new GraphBuilder(g, 31);
    const c1 = b.op('Relu', [
      b.op('Conv', ['x', b.weight('w1', [6, 3, 3, 3], 'he'), b.weight('b1', [6], 'glorot')], {
        kernel_shape: [3, 3],
        pads: [1, 1, 1, 1],
      }),
    ]);
    const c2 = b.op('Relu', [
      b.op('Conv', [c1, b.weight('w2', [8, 6, 3, 3], 'he'), b.weight('b2', [8], 'glorot')], {
        kernel_shape: [3, 3],
        pads: [1, 1, 1, 1],
        strides: [2, 2],
      }),
    ]);
    const c3 = b.op('Conv', [c2, b.weight('w3', [8, 8, 1, 1], 'he')], { kernel_shape: [1, 1] });
    const f = b.op('Flatten', [b.op('GlobalAveragePool', [c3])], { axis: 1 });
    g.outputs = [{ name: b.op('Gemm', [f, b.weight('fc', [5, 8], 'glorot')], { transB: 1 }), dtype: 'float32' }];
    const graph = prepareGraph(g);
    const x = randomFloat32Array(2 * 3 * 10 * 9, 32);
    const labels = Uint32Array.from([3, 1]);
    const run = async (maxBindingBytes?: number) => {
      const constants = new ConstantStore(gpu);
      const plan = await TrainingPlan.create(gpu, graph, { constants, maxBindingBytes });
      try {
        const stats = await plan.step(new Map([['x', x]]), labels, undefined);
        const im2col = plan.lowered.steps.filter((s) => s.program.key === 'im2col').length;
        return { loss: stats.loss, grads: await plan.readGradients(), im2col };
      } finally {
        plan.dispose();
        constants.dispose();
      }
    };
    const whole = await run();
    // 8 KiB: every activation fits; conv1's col (19 KiB) takes 3 chunks, conv2's (11 KiB) 2.
    const chunked = await run(8192);
    expect(whole.im2col).toBe(3);
    expect(chunked.im2col).toBe(3 + 2 + 1);
    expect(chunked.loss).toBeCloseTo(whole.loss, 6);
    for (const [name, want] of whole.grads) expect(relL2(chunked.grads.get(name)!, want), name).toBeLessThan(1e-5);
  });

  it('VGG-16 (torchvision layout) at 224×224 batch 8, full fine-tuning, compiles into a training plan on the device limits', async () => {
    // conv1_2's im2col alone would be 8·224·224·576 floats (925 MB); fc6's weight (4096×25088,
    // 411 MB) is split by the Gemm rule. Compile only: a step takes minutes on lavapipe.
    const graph = buildArchitecture('vgg16', { inputSize: 224, batch: 8 });
    const constants = new ConstantStore(gpu);
    const plan = await TrainingPlan.create(gpu, graph, { constants });
    try {
      const limit = gpu.device.limits.maxStorageBufferBindingSize;
      const convTemps = [...plan.lowered.temporaries].filter(([name]) => /im2col|dy rows|dcol/.test(name));
      expect(convTemps.length).toBeGreaterThan(0);
      for (const [name, dims] of convTemps)
        expect(numel(dims) * 4, name).toBeLessThanOrEqual(Math.min(limit, CONV_BACKWARD_BUDGET_BYTES));
      expect(plan.parameters.filter((p) => p.dims.length === 4)).toHaveLength(13);
      expect(plan.parameters).toHaveLength(32);
      console.log(
        `VGG-16, 224×224 batch 8, full fine-tuning: activation bytes ${plan.stats.activationBytes} (${(plan.stats.activationBytes / 2 ** 30).toFixed(2)} GiB), ` +
          `peak live ${(plan.stats.peakLiveBytes / 2 ** 30).toFixed(2)} GiB (binding limit ${limit}, conv backward budget ${CONV_BACKWARD_BUDGET_BYTES})`,
      );
    } finally {
      plan.dispose();
      constants.dispose();
    }
  }, 120_000);
});
