// Writes the portable cases' fixtures into a folder (argv[2]), in Node: a forward conformance
// subset of libonnx-testdata that covers every runtime op (each case checked here on Node/Dawn
// first), light SqueezeNet at 112×112 with random weights and onnxruntime-node's output, and a
// small CNN's training step (loss, gradients, updated parameters) from the engine on Node/Dawn.
// Usage: node --import tsx test/portable/make-fixtures.ts <folder>
import fs from 'node:fs';
import path from 'node:path';
import { decodeModel, encodeModel } from '../../src/graph/codec.ts';
import { GraphBuilder } from '../../src/graph/builder.ts';
import { Graph } from '../../src/graph/ir.ts';
import { prepareGraph } from '../../src/graph/load.ts';
import { adaptToInputSize } from '../../src/graph/surgery/index.ts';
import { toNumbers } from '../../src/graph/tensor.ts';
import type { GpuContext } from '../../src/kernels/gpu-context.ts';
import { createNodeGpuContext } from '../../src/node/index.ts';
import { RUNTIME_SUPPORTED_OPS } from '../../src/ops/registry.ts';
import { ConstantStore } from '../../src/runtime/plan.ts';
import { Session, type Tensor } from '../../src/runtime/session.ts';
import { createOptimizer } from '../../src/train/optimizers.ts';
import { TrainingPlan } from '../../src/train/training-plan.ts';
import { listCases, readBytes, readTestDataSets } from '../helpers/onnx-testdata.ts';
import { randomFloat32Array } from '../helpers/random.ts';
import { onnxBytesForOrt, randomizedLightModel, runOrt } from '../helpers/reference-models.ts';
import { MANIFEST, type Manifest, type ModelCase, type TensorFile, type TrainingCase } from './fixtures.ts';

/** The conformance subset: every runtime op, then evenly spread extra cases up to this many. */
const CONFORMANCE_CASES = 30;
const RTOL = 1e-3;
const ATOL = 1e-7;
const LIGHT_SIZE = 112;

class FixtureWriter {
  constructor(readonly dir: string) {}

  bytes(file: string, data: Uint8Array | ArrayBufferView): string {
    const full = path.join(this.dir, file);
    fs.mkdirSync(path.dirname(full), { recursive: true });
    fs.writeFileSync(full, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return file;
  }

  tensor(file: string, name: string, t: Tensor): TensorFile {
    return { name, dims: [...t.dims], file: this.bytes(file, t.data) };
  }
}

const safe = (name: string) => name.replace(/[^A-Za-z0-9._-]+/g, '_');

interface Candidate {
  name: string;
  bytes: Uint8Array;
  ops: string[];
  feeds: Record<string, Tensor>;
  outputs: Record<string, Tensor>;
}

/**
 * A case whose fed inputs and outputs are float32, or undefined. Integer inputs (Reshape's
 * shape, axes, …) are constants to the runtime: they become initializers of the model written.
 */
function candidate(dir: string, name: string, file: string, supported: Set<string>): Candidate | undefined {
  const raw = readBytes(file);
  const graph = decodeModel(raw, { file });
  if (!graph.nodes.every((n) => supported.has(n.opType) && (n.domain === '' || n.domain === 'ai.onnx'))) return;
  if ([...graph.inputs, ...graph.outputs].some((v) => v.otherType)) return;
  if (graph.outputs.some((v) => v.dtype !== 'float32')) return;
  const [set] = readTestDataSets(dir, { sets: 1 });
  const fed = graph.feedInputs;
  if (!set || set.inputs.length !== fed.length || set.outputs.length !== graph.outputs.length) return;
  const tensor = (t: (typeof set.inputs)[number]): Tensor => ({
    dims: [...t.dims],
    data: t.data instanceof Float32Array ? t.data : Float32Array.from(toNumbers(t)),
  });
  const constant = fed.map((input) => input.dtype !== 'float32');
  let bytes = raw;
  if (constant.some(Boolean)) {
    fed.forEach((input, k) => {
      if (constant[k]) graph.setInitializer(input.name, set.inputs[k]);
    });
    graph.inputs = graph.inputs.filter((i) => !graph.initializers.has(i.name));
    graph.irVersion = Math.max(graph.irVersion, 4);
    bytes = encodeModel(graph);
  }
  const feeds = Object.fromEntries(
    fed.flatMap((input, k) => (constant[k] ? [] : [[input.name, tensor(set.inputs[k])] as const])),
  );
  const outputs = Object.fromEntries(graph.outputs.map((o, k) => [o.name, tensor(set.outputs[k])]));
  return { name, bytes, ops: [...new Set(graph.nodes.map((n) => n.opType))].sort(), feeds, outputs };
}

/** Whether the engine on Node/Dawn runs the case within tolerance (the portable runs must match it). */
async function passesOnNode(gpu: GpuContext, c: Candidate): Promise<boolean> {
  let session: Session;
  try {
    session = await Session.create(c.bytes, { gpu, file: c.name });
  } catch {
    return false; // refused by design (a constant input fed, integer data, …): not a portable case
  }
  try {
    const got = await session.run(c.feeds);
    return Object.entries(c.outputs).every(([name, want]) => {
      const g = got[name]?.data;
      return (
        g?.length === want.data.length && want.data.every((w, i) => Math.abs(g[i] - w) <= ATOL + RTOL * Math.abs(w))
      );
    });
  } finally {
    session.dispose();
  }
}

async function conformanceCases(gpu: GpuContext, out: FixtureWriter): Promise<ModelCase[]> {
  const supported = new Set<string>(RUNTIME_SUPPORTED_OPS);
  const all: { dir: string; name: string; file: string }[] = [];
  for (const suite of ['node', 'pytorch-converted'] as const)
    for (const c of listCases(suite)) all.push({ dir: c.dir, name: `${suite}/${c.name}`, file: c.modelPath });

  const chosen: Candidate[] = [];
  const covered = new Set<string>();
  const tried = new Set<string>();
  const consider = async (c: (typeof all)[number], wantsNewOp: boolean) => {
    tried.add(c.name);
    const found = candidate(c.dir, c.name, c.file, supported);
    if (!found || (wantsNewOp && found.ops.every((op) => covered.has(op)))) return;
    if (!(await passesOnNode(gpu, found))) return;
    chosen.push(found);
    found.ops.forEach((op) => covered.add(op));
  };
  for (const c of all) if (!RUNTIME_SUPPORTED_OPS.every((op) => covered.has(op))) await consider(c, true);
  const uncovered = RUNTIME_SUPPORTED_OPS.filter((op) => !covered.has(op));
  if (uncovered.length) throw new Error(`no conformance case of [${uncovered.join(', ')}] runs on Node/Dawn`);
  const rest = all.filter((c) => !tried.has(c.name));
  const stride = Math.max(1, Math.floor(rest.length / (CONFORMANCE_CASES - chosen.length + 1)));
  for (let i = stride; i < rest.length && chosen.length < CONFORMANCE_CASES; i += stride)
    await consider(rest[i], false);

  return chosen.map((c) => {
    const base = `conformance/${safe(c.name)}`;
    return {
      name: c.name,
      model: out.bytes(`${base}/model.onnx`, c.bytes),
      ops: c.ops,
      feeds: Object.entries(c.feeds).map(([n, t], k) => out.tensor(`${base}/input_${k}.f32`, n, t)),
      outputs: Object.entries(c.outputs).map(([n, t], k) => out.tensor(`${base}/output_${k}.f32`, n, t)),
    };
  });
}

async function lightModel(out: FixtureWriter): Promise<ModelCase> {
  const { graph } = adaptToInputSize(randomizedLightModel('squeezenet', 1010), LIGHT_SIZE);
  const bytes = onnxBytesForOrt(graph);
  const input = graph.feedInputs[0];
  const x: Tensor = { dims: [1, 3, LIGHT_SIZE, LIGHT_SIZE], data: randomFloat32Array(3 * LIGHT_SIZE ** 2, 2020) };
  const want = await runOrt(bytes, { [input.name]: x }, 'cpu');
  return {
    name: `light SqueezeNet 1.0 at ${LIGHT_SIZE}×${LIGHT_SIZE}, random weights`,
    model: out.bytes('model/squeezenet.onnx', bytes),
    ops: [...new Set(graph.nodes.map((n) => n.opType))].sort(),
    feeds: [out.tensor('model/input.f32', input.name, x)],
    outputs: Object.entries(want).map(([n, t], k) => out.tensor(`model/output_${k}.f32`, n, t)),
  };
}

const TRAIN_BATCH = 4;
const TRAIN_CLASSES = 5;

/** x [4,3,10,10] → conv 3×3 p1 (no bias) → BN (training) → relu → maxpool 2×2 → conv 3×3 s2 p1 → relu
 * → (+ conv 1×1) → relu → avgpool 2×2 → GAP → flatten → gemm (5) → softmax. */
function smallCnn(): Graph {
  const g = new Graph();
  g.opsetImports = [{ domain: '', version: 17 }];
  g.inputs = [{ name: 'x', dtype: 'float32', shape: [TRAIN_BATCH, 3, 10, 10] }];
  g.values.set('x', { ...g.inputs[0] });
  const b = new GraphBuilder(g, 31);
  // No bias before the BN: its gradient would be zero up to rounding, nothing to compare.
  const c1 = b.op('Conv', ['x', b.weight('w1', [6, 3, 3, 3], 'he')], {
    kernel_shape: [3, 3],
    pads: [1, 1, 1, 1],
  });
  g.setInitializer('mean', { dtype: 'float32', dims: [6], data: randomFloat32Array(6, 32, 0.1) });
  g.setInitializer('var', {
    dtype: 'float32',
    dims: [6],
    data: Float32Array.from({ length: 6 }, (_, i) => 0.6 + i / 10),
  });
  const bn = b.op(
    'BatchNormalization',
    [c1, b.weight('scale', [6], 'ones'), b.weight('shift', [6], 'zeros'), 'mean', 'var'],
    {
      epsilon: 1e-3,
    },
  );
  const mp = b.op('MaxPool', [b.op('Relu', [bn])], { kernel_shape: [2, 2], strides: [2, 2] });
  const c2 = b.op('Conv', [mp, b.weight('w2', [8, 6, 3, 3], 'he'), b.weight('b2', [8], 'glorot')], {
    kernel_shape: [3, 3],
    pads: [1, 1, 1, 1],
    strides: [2, 2],
  });
  const r2 = b.op('Relu', [c2]);
  const c3 = b.op('Conv', [r2, b.weight('w3', [8, 8, 1, 1], 'he')], { kernel_shape: [1, 1] });
  const r3 = b.op('Relu', [b.op('Add', [r2, c3])]);
  const ap = b.op('AveragePool', [r3], { kernel_shape: [2, 2], strides: [1, 1] });
  const f = b.op('Flatten', [b.op('GlobalAveragePool', [ap])], { axis: 1 });
  const logits = b.op(
    'Gemm',
    [f, b.weight('fc', [TRAIN_CLASSES, 8], 'glorot'), b.weight('fcb', [TRAIN_CLASSES], 'glorot')],
    {
      transB: 1,
    },
  );
  const prob = b.node('Softmax', [logits], { axis: 1 }, { outputs: ['prob'] })[0];
  g.outputs = [{ name: prob, dtype: 'float32' }];
  return g;
}

async function trainingStep(gpu: GpuContext, out: FixtureWriter): Promise<TrainingCase> {
  const bytes = encodeModel(smallCnn());
  const x = randomFloat32Array(TRAIN_BATCH * 3 * 100, 33);
  const labels = Uint32Array.from([3, 0, 4, 1]);
  const optimizer = { type: 'sgd', lr: 0.1, momentum: 0.9, clipNorm: 0.5 } as const;
  // The very path the portable run takes: bytes → graph → plan.
  const graph = prepareGraph(decodeModel(bytes, { file: 'training/cnn.onnx' }));
  const constants = new ConstantStore(gpu);
  const plan = await TrainingPlan.create(gpu, graph, { constants });
  try {
    const stats = await plan.step(new Map([['x', x]]), labels, await createOptimizer(gpu, optimizer));
    const gradients = await plan.readGradients();
    const parameters = await plan.readParameters();
    const dims = (name: string) => plan.parameters.find((p) => p.name === name)?.dims ?? [];
    const files = (kind: string, values: Map<string, Float32Array>) =>
      [...values].map(([name, data]) =>
        out.tensor(`training/${kind}/${safe(name)}.f32`, name, { dims: dims(name), data }),
      );
    return {
      name: 'small CNN (conv, BN in training mode, max/avg/global pool, residual add, gemm), one SGD step',
      model: out.bytes('training/cnn.onnx', bytes),
      feeds: [out.tensor('training/x.f32', 'x', { dims: [TRAIN_BATCH, 3, 10, 10], data: x })],
      labels: out.bytes('training/labels.u32', labels),
      optimizer,
      loss: stats.loss,
      gradients: files('gradients', gradients),
      parameters: files('parameters', parameters),
    };
  } finally {
    plan.dispose();
    constants.dispose();
  }
}

async function main(): Promise<void> {
  const dir = process.argv[2];
  if (!dir) throw new Error('usage: make-fixtures.ts <folder>');
  fs.mkdirSync(dir, { recursive: true });
  const out = new FixtureWriter(dir);
  const started = performance.now();
  const gpu = await createNodeGpuContext();
  try {
    const manifest: Manifest = {
      conformance: { rtol: RTOL, atol: ATOL, cases: await conformanceCases(gpu, out) },
      model: { ...(await lightModel(out)), relL2: 1e-4 },
      training: { ...(await trainingStep(gpu, out)), relL2: 1e-4 },
    };
    fs.writeFileSync(path.join(dir, MANIFEST), JSON.stringify(manifest, null, 1));
    const ops = new Set(manifest.conformance.cases.flatMap((c) => c.ops));
    console.log(
      `fixtures in ${dir}: ${manifest.conformance.cases.length} conformance cases over ${ops.size} ops, ` +
        `${manifest.model.name}, ${manifest.training.name} (${((performance.now() - started) / 1000).toFixed(1)} s)`,
    );
  } finally {
    gpu.dispose();
  }
}

await main();
