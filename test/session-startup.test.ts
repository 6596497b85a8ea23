// Start-up work shared by the sessions of one GPU context: a second Session.create of a model
// compiles no pipeline and generates no WGSL (the pipeline cache is per context, keyed by the
// program), and both sessions give onnxruntime-node's CPU results on seeded random weights and
// inputs. startPipelines issues every compile before any is awaited.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeModel } from '../src/graph/codec.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { startPipelines } from '../src/kernels/program.ts';
import { unaryProgram } from '../src/kernels/elementwise.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Session } from '../src/runtime/session.ts';
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
    const first = await Session.create(graph, { gpu });
    const compiledByFirst = gpu.pipelinesCompiled - compiledBefore;
    const shadersByFirst = generated.length;
    expect(compiledByFirst).toBeGreaterThan(5); // conv variants, pools, add, gemm
    expect(shadersByFirst).toBe(compiledByFirst);

    // The same model given as ONNX bytes: a new decode and lowering, the same programs.
    const second = await Session.create(encodeModel(graph), { gpu });
    expect(gpu.pipelinesCompiled - compiledBefore, 'pipelines compiled after the second create').toBe(compiledByFirst);
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
