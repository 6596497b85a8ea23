// Device loss: a device destroyed right before a run, while the run's work is on the GPU, or
// while Session.create compiles, must turn into a GpuDeviceLostError that names the operation,
// promptly (never a hang, never a crash of the process, never a ModelError that blames the
// model); later runs on the dead session fail the same way. Afterwards a new GpuContext and
// Session run the same model and agree with onnxruntime.
import { afterEach, describe, expect, it } from 'vitest';
import type { Graph } from '../src/graph/ir.ts';
import { setBatchSize } from '../src/graph/surgery/batch.ts';
import { GpuDeviceLostError } from '../src/kernels/errors.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Session, type Tensor } from '../src/runtime/session.ts';
import { onnxBytesForOrt, randomizedLightModel, runOrt, topK } from './helpers/reference-models.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { relL2 } from './helpers/reference-ops.ts';

/** Longer than any of these steps takes on lavapipe; reaching it means the promise hung. */
const HANG_MS = 30_000;

const squeezenet: Graph = randomizedLightModel('squeezenet', 77);

function feedsFor(graph: Graph, batch: number, seed: number): Record<string, Tensor> {
  return {
    [graph.feedInputs[0].name]: { dims: [batch, 3, 224, 224], data: randomFloat32Array(batch * 3 * 224 * 224, seed) },
  };
}

/** The error `promise` rejects with, failing the test if it resolves or hangs. */
async function rejection(promise: Promise<unknown>, what: string): Promise<Error> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what} neither resolved nor rejected within ${HANG_MS / 1000} s`)),
      HANG_MS,
    );
  });
  try {
    await Promise.race([promise, hang]);
  } catch (e) {
    if ((e as Error).message.includes('neither resolved nor rejected')) throw e;
    return e as Error;
  } finally {
    clearTimeout(timer);
  }
  throw new Error(`${what} succeeded on a destroyed device`);
}

function expectLost(error: Error, operation: RegExp): void {
  expect(error, `${error.name}: ${error.message}`).toBeInstanceOf(GpuDeviceLostError);
  expect((error as GpuDeviceLostError).operation).toMatch(operation);
  expect(error.message).toMatch(/GPU device lost \(destroyed\)/);
}

describe('device loss', () => {
  const contexts: GpuContext[] = [];
  const sessions: Session[] = [];
  const open = async () => {
    const gpu = await createNodeGpuContext();
    contexts.push(gpu);
    return gpu;
  };
  afterEach(() => {
    // Disposing sessions and contexts on a lost device must not throw either.
    for (const s of sessions.splice(0)) s.dispose();
    for (const g of contexts.splice(0)) g.dispose();
  });

  it('destroyed right before a run: run rejects with GpuDeviceLostError, and so does the next', async () => {
    const gpu = await open();
    const session = await Session.create(squeezenet, { gpu });
    sessions.push(session);
    const feeds = feedsFor(squeezenet, 1, 1);
    await session.run(feeds); // works while the device lives
    gpu.device.destroy();
    const error = await rejection(session.run(feeds), 'run after destroy');
    expectLost(error, /^run plan/);
    console.log(`right before a run: ${error.name}: ${error.message}`);
    expectLost(await rejection(session.run(feeds), 'second run after destroy'), /^run plan/);
    expect(gpu.lost?.reason).toBe('destroyed');
  });

  it('destroyed while the run is on the GPU (just after its submit): run rejects with GpuDeviceLostError', async () => {
    const gpu = await open();
    const session = await Session.create(squeezenet, { gpu });
    sessions.push(session);
    const feeds = feedsFor(squeezenet, 1, 2);
    await session.run(feeds);
    // Destroy the device the moment the run has submitted its work (its readback still pending).
    const queue = gpu.device.queue;
    const submit = queue.submit.bind(queue);
    let submitted = 0;
    queue.submit = (buffers: Iterable<GPUCommandBuffer>) => {
      submit(buffers);
      submitted++;
      gpu.device.destroy();
    };
    const error = await rejection(session.run(feeds), 'run destroyed after submit');
    expect(submitted).toBe(1);
    expectLost(error, /^run plan/);
    console.log(`during a run: ${error.name}: ${error.message}`);
  });

  it('destroyed while Session.create compiles: create rejects with GpuDeviceLostError, not a ModelError', async () => {
    const gpu = await open();
    const graph = setBatchSize(squeezenet, 3);
    let settled = false;
    const creating = Session.create(graph, { gpu });
    creating.then(
      (s) => ((settled = true), sessions.push(s)),
      () => (settled = true),
    );
    // Destroy from inside the first pipeline compile the plan asks for.
    const compile = gpu.createComputePipeline.bind(gpu);
    let compiles = 0;
    gpu.createComputePipeline = (label: string, wgsl: string, entryPoint?: string) => {
      if (compiles++ === 0) gpu.device.destroy();
      return compile(label, wgsl, entryPoint);
    };
    const error = await rejection(creating, 'Session.create on a device destroyed while compiling');
    expect(compiles).toBeGreaterThan(0);
    expect(settled).toBe(true);
    // Weights upload as the lowering makes each step, so the loss may surface at a constant's
    // buffer (named) or at the plan's compile.
    expectLost(error, /^(compile the plan for input dims \[3, 3, 224, 224\]|create buffer 'const )/);
    console.log(`during Session.create: ${error.name}: ${error.message}`);
  });

  it('destroyed before a run that must compile a plan for new dims: run rejects with GpuDeviceLostError', async () => {
    const gpu = await open();
    const flexible = setBatchSize(squeezenet, 'N');
    const input = flexible.feedInputs[0].name;
    const session = await Session.create(flexible, { gpu, inputShapes: { [input]: [1, 3, 224, 224] } });
    sessions.push(session);
    gpu.device.destroy();
    const error = await rejection(session.run(feedsFor(flexible, 2, 3)), 'run with new dims after destroy');
    // The first GPU call of the new plan fails: its activation buffer, or (wrapped) a compile.
    expectLost(error, /^(create buffer 'activation|compile the plan for input dims \[2, 3, 224, 224\])/);
    console.log(`before a run with new dims: ${error.name}: ${error.message}`);
  });

  it('after a loss, a new GpuContext and Session run the model correctly', async () => {
    const lost = await open();
    lost.device.destroy();
    await expect(Session.create(squeezenet, { gpu: lost })).rejects.toBeInstanceOf(GpuDeviceLostError);

    const gpu = await open();
    const feeds = feedsFor(squeezenet, 2, 4);
    const flexible = setBatchSize(squeezenet, 2);
    const want = await runOrt(onnxBytesForOrt(flexible), feeds, 'cpu');
    const batched = await Session.create(flexible, { gpu });
    sessions.push(batched);
    const got = await batched.run(feeds);
    const output = flexible.outputs[0].name;
    expect(got[output].dims).toEqual(want[output].dims);
    expect(relL2(got[output].data, want[output].data)).toBeLessThan(1e-4);
    for (let s = 0; s < 2; s++) {
      const row = (d: Float32Array) => d.subarray(s * 1000, (s + 1) * 1000);
      expect(topK(row(got[output].data), 5)).toEqual(topK(row(want[output].data), 5));
    }
    expect(gpu.lost).toBeNull();
  });
});
