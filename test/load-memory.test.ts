// Host memory while loading. VGG-16 (as `graft build vgg16` writes it, 553 MB) is loaded with its
// tensors left in the file, compiled and run once in a child process, whose peak RSS (VmHWM) is
// compared with the file size, over the child's RSS once its GPU context is open (Node, tsx and
// Dawn with lavapipe, about 190 MB here: the runtime's own cost, the same for any model). On
// lavapipe the GPU's buffers are host memory in this process, so the weights' GPU copy is
// counted too: the file size is a floor. The output is compared with onnxruntime-node CPU on the
// same input.
//
// The smaller checks: a file decoded in pieces (decodeModelFile) decodes to the same Graph as
// its bytes decoded whole, with raw_data at every alignment; a file whose structure the piecewise
// reader does not follow gets decodeModel's own error; a session lets go of its own weights but
// never of the Graph given it; weights over the session's budget are refused before anything is
// uploaded (the per-weight maxBufferSize check is not exercised: lavapipe allows 4 GiB buffers).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildArchitecture } from '../src/graph/architectures/index.ts';
import { decodeModel, encodeModel } from '../src/graph/codec.ts';
import { allocateHostBytes, HostMemoryError, ModelError } from '../src/graph/errors.ts';
import { GraphBuilder } from '../src/graph/builder.ts';
import { Graph } from '../src/graph/ir.ts';
import { readFloats } from '../src/graph/tensor.ts';
import { DEFER_RAW_DATA_FROM } from '../src/graph/model-source.ts';
import type { GpuContext } from '../src/kernels/gpu-context.ts';
import { decodeModelFile, loadModelFile, saveModelFile } from '../src/node/files.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { WeightsTooLargeError } from '../src/runtime/errors.ts';
import { Session } from '../src/runtime/session.ts';
import { describeGraphDifference } from './helpers/graph-equal.ts';
import { randomFloat32Array } from './helpers/random.ts';
import { onnxBytesForOrt, runOrt } from './helpers/reference-models.ts';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const childScript = fileURLToPath(new URL('./fixtures/load-memory-child.ts', import.meta.url));
const CHILD_TIMEOUT_MS = 240_000;

/**
 * Peak RSS over the runtime's own, as a multiple of the file size. Measured on lavapipe: 3.22×
 * with the file read whole; 2.33× with each tensor read into a buffer of its own and each packed
 * weight uploaded as it was made; 2.14× with packed weights made and uploaded in bands; 1.20–1.27×
 * with the tensors left in the file and read a column chunk (128 MiB) at a time; 1.18–1.23×
 * (six runs) read a band (16 MiB) at a time. The peak is now in the first run, not in loading:
 * the weights' GPU copy (1.00×) and activations (0.05×), with the kernels lavapipe compiled and
 * Dawn's own buffers beside them, all kept for as long as the session is. The margin (0.07×) is
 * for the shader compiles.
 */
const PEAK_OVER_RUNTIME = 1.3;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'graft-load-memory-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('VGG-16 loaded, compiled and run in a fresh process', () => {
  it(
    `peak RSS over the runtime's is at most ${PEAK_OVER_RUNTIME}× the file; output as onnxruntime-node's`,
    async () => {
      const file = join(dir, 'vgg16.onnx');
      saveModelFile(buildArchitecture('vgg16'), file);
      const size = statSync(file).size;
      const outputFile = join(dir, 'vgg16-output.f32');
      const child = spawnSync(process.execPath, ['--import', 'tsx', childScript, file, outputFile], {
        cwd: repoRoot,
        encoding: 'utf8',
        timeout: CHILD_TIMEOUT_MS,
      });
      const diagnostics = `exit ${child.status}, signal ${child.signal}\nstdout:\n${child.stdout}\nstderr:\n${child.stderr}`;
      expect(child.status, diagnostics).toBe(0);
      const report = JSON.parse(child.stdout.trim().split('\n').pop()!) as ChildReport;
      const runtime = report.phases.gpu.rss;
      const ratio = (bytes: number) => (bytes / size).toFixed(2);
      console.log(
        `VGG-16 file ${size} bytes; RSS ÷ file: ` +
          Object.entries(report.phases)
            .map(([phase, m]) => `${phase} ${ratio(m.rss)}`)
            .join(', ') +
          `; peak ${ratio(report.peak)} (${ratio(report.peak - runtime)} over the runtime's ${ratio(runtime)})`,
      );
      expect(report.peak - runtime).toBeLessThanOrEqual(PEAK_OVER_RUNTIME * size);

      const dims = report.dims;
      const data = randomFloat32Array(
        dims.reduce((a, b) => a * b, 1),
        report.seed,
      );
      const reference = await runOrtFile(file, report.input, dims, data, report.output);
      const ours = new Float32Array(new Uint8Array(readFileSync(outputFile)).buffer);
      expect(ours.length).toBe(reference.length);
      expect(maxRelativeError(ours, reference)).toBeLessThan(1e-4);
    },
    CHILD_TIMEOUT_MS + 120_000,
  );
});

describe('decoding a file in pieces', () => {
  it('gives the Graph its bytes decode to, raw_data at every alignment, small and large', () => {
    const graph = modelWithTensors();
    const file = join(dir, 'pieces.onnx');
    saveModelFile(graph, file);
    const bytes = new Uint8Array(readFileSync(file));
    const whole = decodeModel(bytes, { file });
    // Decoded whole, aligned raw_data is viewed in place and misaligned raw_data copied: both occur here.
    const viewed = [...whole.initializers.values()].map((i) => (i.value.data as Float32Array).buffer === bytes.buffer);
    expect(viewed).toContain(true);
    expect(viewed).toContain(false);
    const pieces = decodeModelFile(file);
    expect(describeGraphDifference(pieces, whole)).toBeUndefined();
    for (const init of pieces.initializers.values()) {
      const data = init.value.data as Float32Array;
      // A large tensor has a buffer of its own (it can be freed alone); a small one stays in the structure.
      if (data.byteLength >= DEFER_RAW_DATA_FROM) expect(data.buffer.byteLength).toBe(data.byteLength);
    }
  });

  it('with leaveTensorsInFile, gives the same Graph, its large tensors read from the file each time and in pieces', () => {
    const graph = modelWithTensors();
    const file = join(dir, 'stored.onnx');
    saveModelFile(graph, file);
    const stored = decodeModelFile(file, { leaveTensorsInFile: true });
    expect(describeGraphDifference(stored, decodeModelFile(file))).toBeUndefined();
    const w = stored.initializers.get('W')!.value;
    const first = w.data as Float32Array;
    // Read afresh: nothing holds the bytes between reads.
    expect(w.data).not.toBe(first);
    expect(w.data).toEqual(first);
    // Three pieces of 7 floats, 50 apart, from float 100 (W is [64, 40]): only those read.
    const pieces = new Float32Array(21);
    readFloats(w, 100, 7, 50, 3, pieces);
    expect(pieces).toEqual(
      Float32Array.from([0, 1, 2].flatMap((i) => [...first.subarray(100 + 50 * i, 107 + 50 * i)])),
    );
    // A small tensor stays in the structure, as decoded whole.
    const small = stored.initializers.get('bb')!.value;
    expect(small.data).toBe(small.data);
  });

  it('refuses to read a tensor left in a file that changed since, naming the file', () => {
    const file = join(dir, 'changed.onnx');
    saveModelFile(modelWithTensors(), file);
    const stored = decodeModelFile(file, { leaveTensorsInFile: true });
    const other = modelWithTensors();
    other.setInitializer('extra', { dtype: 'float32', dims: [3], data: randomFloat32Array(3, 15) });
    saveModelFile(other, file);
    const error = captureError(() => stored.initializers.get('W')!.value.data);
    expect(error).toBeInstanceOf(ModelError);
    expect((error as Error).message).toContain(file);
    expect((error as Error).message).toMatch(/changed .* since it was loaded with its tensors left in it/);
  });

  it('refuses to read a tensor left in a file deleted since, naming the file', () => {
    const file = join(dir, 'deleted.onnx');
    saveModelFile(modelWithTensors(), file);
    const stored = decodeModelFile(file, { leaveTensorsInFile: true });
    rmSync(file);
    const error = captureError(() => stored.initializers.get('W')!.value.data);
    expect(error).toBeInstanceOf(ModelError);
    expect((error as Error).message).toContain(file);
    expect((error as Error).message).toMatch(/cannot open the file again \(ENOENT: .*\) since it was loaded/);
  });

  it('refuses a truncated file with the error decodeModel gives its bytes', () => {
    const file = join(dir, 'truncated.onnx');
    const bytes = encodeModel(modelWithTensors());
    writeFileSync(file, bytes.subarray(0, bytes.byteLength - 1000));
    const expected = captureError(() => decodeModel(new Uint8Array(readFileSync(file)), { file }));
    expect(expected).toBeInstanceOf(ModelError);
    expect(captureError(() => decodeModelFile(file))).toEqual(expected);
  });

  it('names the file and the bytes when the host cannot allocate them', () => {
    const error = captureError(() => allocateHostBytes(2 ** 53, 'the model', 'big.onnx'));
    expect(error).toBeInstanceOf(HostMemoryError);
    expect((error as HostMemoryError).bytes).toBe(2 ** 53);
    expect((error as Error).message).toMatch(/^big\.onnx: out of host memory: cannot allocate 9007199254740992 bytes/);
  });
});

describe('a session and the host weights', () => {
  let gpu: GpuContext;
  beforeAll(async () => {
    gpu = await createNodeGpuContext();
  });
  afterAll(() => gpu?.dispose());

  it('lets go of its own weights, never of the Graph given it, and runs as before', async () => {
    const graph = modelWithTensors();
    const before = new Map([...graph.initializers].map(([name, i]) => [name, (i.value.data as Float32Array).slice()]));
    const x = { dims: [1, 64], data: randomFloat32Array(64, 21) };
    const lean = await Session.create(graph, { gpu });
    const kept = await Session.create(graph, { gpu, keepHostWeights: true });
    try {
      for (const [name, data] of before) expect(graph.initializers.get(name)!.value.data, name).toEqual(data);
      const reference = (await runOrt(onnxBytesForOrt(graph), { x })).y.data;
      for (const session of [lean, lean, kept])
        expect(maxRelativeError((await session.run({ x })).y.data, reference)).toBeLessThan(1e-5);
    } finally {
      lean.dispose();
      kept.dispose();
    }
  });

  it('runs a Gemm and a MatMul whose weights, left in the file, are read and packed as they upload', async () => {
    // B [N, K] with transB: a binding of 40 columns' worth cuts N = 100 into chunks of 40, 40, 20,
    // each read from the file on its own; then a MatMul's B [N, 30] read from the file whole.
    const [K, N, P] = [1000, 100, 30];
    const g = new Graph();
    g.irVersion = 8;
    g.opsetImports = [{ domain: '', version: 17 }];
    g.inputs = [{ name: 'x', dtype: 'float32', shape: [2, K] }];
    g.outputs = [{ name: 'y', dtype: 'float32', shape: [2, P] }];
    for (const v of [...g.inputs, ...g.outputs]) g.values.set(v.name, { ...v });
    g.setInitializer('B', { dtype: 'float32', dims: [N, K], data: randomFloat32Array(N * K, 31) });
    g.setInitializer('c', { dtype: 'float32', dims: [N], data: randomFloat32Array(N, 32) });
    g.setInitializer('D', { dtype: 'float32', dims: [N, P], data: randomFloat32Array(N * P, 34) });
    g.nodes = [
      {
        name: 'fc',
        opType: 'Gemm',
        domain: '',
        inputs: ['x', 'B', 'c'],
        outputs: ['h'],
        attributes: { transB: { type: 'int', value: 1 } },
      },
      { name: 'mm', opType: 'MatMul', domain: '', inputs: ['h', 'D'], outputs: ['y'], attributes: {} },
    ];
    const file = join(dir, 'gemm.onnx');
    saveModelFile(g, file);
    const x = { dims: [2, K], data: randomFloat32Array(2 * K, 33) };
    const reference = (await runOrt(onnxBytesForOrt(g), { x })).y.data;
    const session = await Session.create(loadModelFile(file, { leaveTensorsInFile: true }), {
      gpu,
      maxBindingBytes: 40 * K * 4,
    });
    try {
      expect(maxRelativeError((await session.run({ x })).y.data, reference)).toBeLessThan(1e-5);
    } finally {
      session.dispose();
    }
  });

  it('shares the uploads of weights left in one file between sessions without reading them again; another file gets its own', async () => {
    // A Conv (packed on the host), a transB Gemm (bound as stored) and a MatMul (packed in bands),
    // every weight over the size left in the file.
    const model = (seed: number) => {
      const g = new Graph();
      g.irVersion = 8;
      g.opsetImports = [{ domain: '', version: 13 }];
      g.inputs = [{ name: 'x', dtype: 'float32', shape: [1, 8, 8, 8] }];
      g.values.set('x', { ...g.inputs[0] });
      const b = new GraphBuilder(g, seed);
      const h = b.op('Relu', [b.op('Conv', ['x', b.weight('w', [32, 8, 3, 3], 'glorot')], { pads: [1, 1, 1, 1] })]);
      const f = b.op('Gemm', [b.op('Flatten', [h]), b.weight('fc', [10, 2048], 'glorot')], { transB: 1 });
      const y = b.op('MatMul', [f, b.weight('d', [10, 200], 'glorot')]);
      g.outputs = [{ name: y, dtype: 'float32' }];
      return g;
    };
    const x = { dims: [1, 8, 8, 8], data: randomFloat32Array(512, 41) };
    const [fileA, fileB] = [join(dir, 'shared-a.onnx'), join(dir, 'shared-b.onnx')];
    const [a, b] = [model(42), model(43)];
    saveModelFile(a, fileA);
    saveModelFile(b, fileB);
    const first = await Session.create(loadModelFile(fileA, { leaveTensorsInFile: true }), { gpu });
    const second = loadModelFile(fileA, { leaveTensorsInFile: true });
    // Gone from the disk: the second session cannot read a weight, only share the first's uploads.
    const bytesA = readFileSync(fileA);
    rmSync(fileA);
    const uploadedBefore = gpu.bytesUploaded;
    const sharing = await Session.create(second, { gpu });
    const uploadedBySecond = gpu.bytesUploaded - uploadedBefore;
    writeFileSync(fileA, bytesA); // a new file (inode, time): not the one the first two read
    const other = await Session.create(loadModelFile(fileB, { leaveTensorsInFile: true }), { gpu });
    const uploadedByOther = gpu.bytesUploaded - uploadedBefore - uploadedBySecond;
    try {
      expect(uploadedBySecond, 'bytes uploaded by the second create').toBeLessThan(1024);
      expect(uploadedByOther).toBeGreaterThan(4 * (32 * 8 * 9 + 10 * 2048 + 10 * 200));
      const [wantA, wantB] = await Promise.all(
        [a, b].map(async (g) => (await runOrt(onnxBytesForOrt(g), { x }))[g.outputs[0].name].data),
      );
      for (const [session, want] of [
        [first, wantA],
        [sharing, wantA],
        [other, wantB],
      ] as const)
        expect(maxRelativeError((await session.run({ x }))[session.outputNames[0]].data, want)).toBeLessThan(1e-5);
    } finally {
      for (const session of [first, sharing, other]) session.dispose();
    }
  });

  it('refuses weights over the session budget before uploading, with the sizes', async () => {
    const graph = modelWithTensors();
    const total = [...graph.initializers.values()].reduce((n, i) => n + (i.value.data as Float32Array).byteLength, 0);
    const error = await Session.create(graph, { gpu, weightBudgetBytes: total - 4 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WeightsTooLargeError);
    expect(error).toMatchObject({ bytes: total, limit: total - 4 });
    expect((error as Error).message).toContain(
      `${total} bytes as float32, over the weight budget of ${total - 4} bytes`,
    );
    const session = await Session.create(graph, { gpu, weightBudgetBytes: total });
    session.dispose();
  });
});

interface ChildReport {
  phases: Record<string, { rss: number; hwm: number }>;
  peak: number;
  input: string;
  dims: number[];
  seed: number;
  output: string;
}

/** A model x → MatMul(·, W) → Add(·, bb) → Mul(·, sss) → MatMul(·, WWWW): four tensors whose
 * raw_data lie at several offsets modulo 4, two below the size read on its own and two above. */
function modelWithTensors(): Graph {
  const g = new Graph();
  g.irVersion = 8;
  g.opsetImports = [{ domain: '', version: 17 }];
  const K = 64;
  const N = 40; // W: 2560 floats, 10 KiB: read on its own
  g.inputs = [{ name: 'x', dtype: 'float32', shape: [1, K] }];
  g.outputs = [{ name: 'y', dtype: 'float32', shape: [1, N] }];
  for (const v of [...g.inputs, ...g.outputs]) g.values.set(v.name, { ...v });
  g.setInitializer('W', { dtype: 'float32', dims: [K, N], data: randomFloat32Array(K * N, 11) });
  g.setInitializer('bb', { dtype: 'float32', dims: [N], data: randomFloat32Array(N, 12) });
  g.setInitializer('sss', { dtype: 'float32', dims: [1, N], data: randomFloat32Array(N, 13) });
  g.setInitializer('WWWW', { dtype: 'float32', dims: [N, N], data: randomFloat32Array(N * N, 14) });
  g.nodes = [
    { name: 'mm', opType: 'MatMul', domain: '', inputs: ['x', 'W'], outputs: ['p'], attributes: {} },
    { name: 'add', opType: 'Add', domain: '', inputs: ['p', 'bb'], outputs: ['q'], attributes: {} },
    { name: 'mul', opType: 'Mul', domain: '', inputs: ['q', 'sss'], outputs: ['r'], attributes: {} },
    { name: 'mm2', opType: 'MatMul', domain: '', inputs: ['r', 'WWWW'], outputs: ['y'], attributes: {} },
  ];
  return g;
}

/** The largest absolute difference over the largest magnitude of the reference. */
function maxRelativeError(got: Float32Array, want: Float32Array): number {
  const scale = Math.max(...Array.from(want, Math.abs));
  let worst = 0;
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  return worst / scale;
}

function captureError(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected an error');
}

async function runOrtFile(
  file: string,
  input: string,
  dims: number[],
  data: Float32Array,
  output: string,
): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(file, { executionProviders: ['cpu'], logSeverityLevel: 3 });
  try {
    const out = await session.run({ [input]: new ort.Tensor('float32', data, dims) });
    return new Float32Array(out[output].data as Float32Array);
  } finally {
    await session.release();
  }
}
