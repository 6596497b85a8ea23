// The portable cases: what must hold wherever WebGPU runs (Deno on wgpu, Chromium on SwiftShader,
// Node on Dawn). Imports only the core, no node:* module; fixtures come through `read`.
//   bad input  the core's device acquisition without WebGPU, and with a limit the adapter lacks
//   programs   every WGSL program the engine builds, compiled into a pipeline (programs.ts)
//   forward    the conformance subset against ONNX's expected outputs
//   model      light SqueezeNet against onnxruntime-node's output
//   training   one SGD step of a small CNN against the engine's Node/Dawn step
// Each failure names the case (for programs: the kernel's factory, label and key) and the runtime.
import { decodeModel } from '../../src/graph/codec.ts';
import { prepareGraph } from '../../src/graph/load.ts';
import { GpuAdapterError, GpuError } from '../../src/kernels/errors.ts';
import { defaultVariant, gemmTarget, variantRefusal, variantRuns } from '../../src/kernels/gemm.ts';
import { GpuContext, type GpuContextOptions } from '../../src/kernels/gpu-context.ts';
import { wgslOf } from '../../src/kernels/shader.ts';
import { ConstantStore } from '../../src/runtime/plan.ts';
import { Session, type Tensor } from '../../src/runtime/session.ts';
import { createOptimizer } from '../../src/train/optimizers.ts';
import { TrainingPlan } from '../../src/train/training-plan.ts';
import { relL2 } from '../helpers/reference-ops.ts';
import { MANIFEST, readTensor, uint32Of, type Manifest, type ModelCase, type ReadFixture } from './fixtures.ts';
import { enginePrograms } from './programs.ts';

export interface PortableOptions {
  /** How failures name where they ran: 'deno/wgpu', 'chromium/swiftshader'. */
  runtime: string;
  read: ReadFixture;
  log: (line: string) => void;
  /** The WebGPU entry point: navigator.gpu when not given; Node passes dawn.node's create() result. */
  gpu?: GPU;
  /** Only the cases whose group ('bad input', 'programs', 'forward', 'model', 'training') is listed. */
  groups?: readonly string[];
}

export interface PortableResult {
  passed: number;
  failed: number;
  failures: string[];
  adapter: string;
}

class Tally {
  passed = 0;
  readonly failures: string[] = [];
  constructor(readonly o: PortableOptions) {}

  wants(group: string): boolean {
    return !this.o.groups || this.o.groups.includes(group);
  }

  async check(group: string, name: string, body: () => Promise<void>): Promise<void> {
    if (!this.wants(group)) return;
    const started = performance.now();
    try {
      await body();
      this.passed++;
      this.o.log(`ok   ${group}: ${name} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
    } catch (error) {
      const line = `FAIL ${group}: ${name} on ${this.o.runtime}: ${messageOf(error)}`;
      this.failures.push(line);
      this.o.log(line);
    }
  }
}

export async function runPortableCases(o: PortableOptions): Promise<PortableResult> {
  const tally = new Tally(o);
  const manifest = JSON.parse(new TextDecoder().decode(await o.read(MANIFEST))) as Manifest;

  await badInput(tally);
  let gpu: GpuContext;
  try {
    gpu = await GpuContext.create(contextOptions(o));
  } catch (error) {
    const line = `FAIL device on ${o.runtime}: ${messageOf(error)}`;
    return {
      passed: tally.passed,
      failed: tally.failures.length + 1,
      failures: [...tally.failures, line],
      adapter: '',
    };
  }
  const adapter = `${gpu.info.vendor} ${gpu.info.architecture} ${gpu.info.device} ${gpu.info.description}`.trim();
  o.log(`${o.runtime}: adapter ${adapter}; features [${gpu.info.deviceFeatures.join(', ')}]`);
  try {
    if (tally.wants('programs')) await programs(tally, gpu);
    for (const c of manifest.conformance.cases)
      await tally.check('forward', c.name, () => forward(gpu, o.read, c, manifest.conformance));
    await tally.check('model', manifest.model.name, () => model(gpu, o.read, manifest.model));
    await tally.check('training', manifest.training.name, () => training(gpu, o.read, manifest.training));
  } finally {
    gpu.dispose();
  }
  return { passed: tally.passed, failed: tally.failures.length, failures: tally.failures, adapter };
}

/** The context's WebGPU: the one given (held until dispose: dawn.node's must outlive the device), or navigator.gpu. */
function contextOptions(o: PortableOptions): GpuContextOptions {
  return o.gpu ? { gpu: o.gpu, keepAlive: o.gpu } : {};
}

async function badInput(tally: Tally): Promise<void> {
  await tally.check('bad input', 'a runtime without WebGPU (navigator.gpu undefined)', async () => {
    // An own property shadows the prototype's getter for as long as the check runs (Node 20 has
    // no navigator at all: nothing to hide).
    const nav = (globalThis as { navigator?: object }).navigator;
    if (nav) Object.defineProperty(nav, 'gpu', { value: undefined, configurable: true });
    let error: unknown;
    try {
      (await GpuContext.create()).dispose();
    } catch (e) {
      error = e;
    } finally {
      if (nav) delete (nav as { gpu?: unknown }).gpu;
    }
    if (!(error instanceof GpuAdapterError) || error.problem !== 'no-webgpu')
      throw new Error(`expected GpuAdapterError 'no-webgpu', got ${describe(error)}`);
    expectMatch(error.message, /no WebGPU is available \(navigator\.gpu is undefined\)/);
  });
  await tally.check('bad input', 'a limit beyond the adapter', async () => {
    const adapter = await (tally.o.gpu ?? navigatorGpu()).requestAdapter();
    if (!adapter) throw new Error('requestAdapter() returned null');
    const offered = adapter.limits.maxStorageBufferBindingSize;
    let error: unknown;
    try {
      const requiredLimits = { maxStorageBufferBindingSize: offered + 4 };
      (await GpuContext.create({ ...contextOptions(tally.o), requiredLimits })).dispose();
    } catch (e) {
      error = e;
    }
    if (!(error instanceof GpuError)) throw new Error(`expected a GpuError, got ${describe(error)}`);
    expectMatch(
      error.message,
      new RegExp(`requiredLimits\\.maxStorageBufferBindingSize = ${offered + 4} but the adapter offers ${offered}`),
    );
  });
}

async function programs(tally: Tally, gpu: GpuContext): Promise<void> {
  const target = gemmTarget(gpu);
  await tally.check('programs', 'the default GEMM variant of every shape runs on this device', async () => {
    for (const M of [1, 3, 8, 16, 24, 33, 64, 65, 1024, 5000]) {
      const v = defaultVariant({ M, N: 64 }, target);
      if (!variantRuns(v, target))
        throw new Error(`M = ${M}: the default variant ${JSON.stringify(v)} cannot run here`);
    }
  });
  const { programs: list, skippedVariants } = enginePrograms((v) => {
    const reason = variantRefusal(v, target);
    return reason === undefined ? { runs: true } : { runs: false, reason };
  }, gpu.info.isSoftware);
  for (const s of skippedVariants) tally.o.log(`note programs: GEMM variant not built for this device: ${s}`);
  const seen = new Set<string>();
  const distinct = list.filter((p) => !seen.has(p.program.key) && seen.add(p.program.key));
  tally.o.log(`programs: ${list.length} built, ${distinct.length} distinct pipeline keys`);
  // One at a time: WebGPU's error scopes are one stack per device, so concurrent compiles could
  // blame one kernel's error on another.
  for (const { factory, program } of distinct) {
    await tally.check('programs', `kernel '${factory}' (${program.label}; key ${program.key})`, async () => {
      await gpu.createComputePipeline(program.label, wgslOf(program));
    });
  }
}

function feedsOf(read: ReadFixture, c: ModelCase): Promise<Record<string, Tensor>> {
  return Promise.all(
    c.feeds.map(async (t) => [t.name, { dims: t.dims, data: await readTensor(read, t) }] as const),
  ).then(Object.fromEntries);
}

async function runModel(gpu: GpuContext, read: ReadFixture, c: ModelCase): Promise<Record<string, Tensor>> {
  const session = await Session.create(await read(c.model), { gpu, file: c.model });
  try {
    return await session.run(await feedsOf(read, c));
  } finally {
    session.dispose();
  }
}

async function forward(
  gpu: GpuContext,
  read: ReadFixture,
  c: ModelCase,
  tol: { rtol: number; atol: number },
): Promise<void> {
  const got = await runModel(gpu, read, c);
  for (const o of c.outputs) {
    const want = await readTensor(read, o);
    const g = outputOf(got, o.name, o.dims);
    for (let i = 0; i < want.length; i++) {
      if (!(Math.abs(g[i] - want[i]) <= tol.atol + tol.rtol * Math.abs(want[i])))
        throw new Error(
          `output '${o.name}' [${i}] = ${g[i]}, expected ${want[i]} (|Δ| ≤ ${tol.atol} + ${tol.rtol}·|expected|)`,
        );
    }
  }
}

async function model(gpu: GpuContext, read: ReadFixture, c: Manifest['model']): Promise<void> {
  const got = await runModel(gpu, read, c);
  for (const o of c.outputs) {
    const error = relL2(outputOf(got, o.name, o.dims), await readTensor(read, o));
    if (!(error < c.relL2)) throw new Error(`output '${o.name}': relative L2 ${error} vs onnxruntime ≥ ${c.relL2}`);
  }
}

async function training(gpu: GpuContext, read: ReadFixture, c: Manifest['training']): Promise<void> {
  const graph = prepareGraph(decodeModel(await read(c.model), { file: c.model }));
  const constants = new ConstantStore(gpu);
  const plan = await TrainingPlan.create(gpu, graph, { constants });
  try {
    const feeds = new Map(await Promise.all(c.feeds.map(async (t) => [t.name, await readTensor(read, t)] as const)));
    const labels = uint32Of(await read(c.labels));
    const stats = await plan.step(feeds, labels, await createOptimizer(gpu, c.optimizer));
    if (!(Math.abs(stats.loss - c.loss) <= 1e-5 * Math.max(1, Math.abs(c.loss))))
      throw new Error(`loss ${stats.loss}, Node/Dawn's ${c.loss}`);
    const compare = async (what: string, got: Map<string, Float32Array>, want: Manifest['training']['gradients']) => {
      const names = [...got.keys()].sort().join(', ');
      const expected = want
        .map((t) => t.name)
        .sort()
        .join(', ');
      if (names !== expected) throw new Error(`${what} of [${names}], Node/Dawn's of [${expected}]`);
      for (const t of want) {
        const error = relL2(got.get(t.name)!, await readTensor(read, t));
        if (!(error < c.relL2))
          throw new Error(`${what} of '${t.name}': relative L2 ${error} vs Node/Dawn ≥ ${c.relL2}`);
      }
    };
    await compare('gradient', await plan.readGradients(), c.gradients);
    await compare('parameter after the step', await plan.readParameters(), c.parameters);
  } finally {
    plan.dispose();
    constants.dispose();
  }
}

function outputOf(got: Record<string, Tensor>, name: string, dims: number[]): Float32Array {
  const t = got[name];
  if (!t) throw new Error(`no output '${name}' (outputs: ${Object.keys(got).join(', ')})`);
  if (t.dims.join() !== dims.join()) throw new Error(`output '${name}' has dims [${t.dims}], expected [${dims}]`);
  return t.data;
}

function navigatorGpu(): GPU {
  const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
  if (!gpu) throw new Error('navigator.gpu is undefined in this runtime');
  return gpu;
}

function expectMatch(message: string, pattern: RegExp): void {
  if (!pattern.test(message)) throw new Error(`message ${JSON.stringify(message)} does not match ${pattern}`);
}

function describe(error: unknown): string {
  if (error === undefined) return 'no error';
  return error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error);
}
