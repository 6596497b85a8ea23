/// <reference types="@webgpu/types" />
// Where a model's time goes, kernel by kernel: runs one inference (Session.run) or one training
// step (TrainingPlan.step) while recording every dispatch it encodes (pipeline, bind group,
// workgroups), then replays each recorded dispatch alone, timed with pass timestamps (median of
// `runs`) and by the CPU time of lavapipe's worker threads (every thread but the main one: it
// holds under load, when GPU times stretch), and sums both per kernel kind (the pipeline label
// up to its first size or ':'). Each replay reads whatever the buffers hold by then: timings
// only, no results.
//
//   npx tsx bench/profile-steps.ts infer inception_v1 8     (a light model at batch 8)
//   npx tsx bench/profile-steps.ts train resnet50 8 112     (a training step at 112×112)
//   [--runs 3] [--top 25] [--ceiling]  (--ceiling: each kind's GFLOP/s is not known here, but the
//   FMA ceiling is timed first and last so that the totals can be read against it)
import os from 'node:os';
import { Session } from '../src/runtime/session.ts';
import { ConstantStore } from '../src/runtime/plan.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { createOptimizer } from '../src/train/optimizers.ts';
import { TrainingPlan } from '../src/train/training-plan.ts';
import { LIGHT_MODELS, randomizedLightModel, type LightModel } from '../test/helpers/reference-models.ts';
import { measureCeiling, timeSteps } from './ceiling.ts';
import { workerCpuNs } from './harness.ts';
import { trainingGraph } from './train-step.ts';
import { withBatch } from './workloads.ts';
import type { KernelStep } from '../src/kernels/program.ts';

const argv = process.argv.slice(2);
const option = (name: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const positional = argv.filter((a, i) => !a.startsWith('--') && !argv[i - 1]?.startsWith('--'));
const [mode = 'infer', model = 'inception_v1', batchArg = '8', sizeArg = '112'] = positional;
const batch = Number(batchArg);
const RUNS = Number(option('--runs') ?? 3);
const TOP = Number(option('--top') ?? 25);
if (mode !== 'infer' && mode !== 'train') throw new Error(`mode: 'infer' or 'train', got '${mode}'`);

/** One recorded dispatch: what a KernelStep needs to run again. */
type Recorded = Pick<KernelStep, 'pipeline' | 'bindGroup' | 'dispatch'> & { label: string };

/** Records the dispatches of every compute pass encoded while `recording` is set. */
function installRecorder(): { recorded: Recorded[]; setRecording: (on: boolean) => void } {
  const recorded: Recorded[] = [];
  let recording = false;
  const proto = GPUComputePassEncoder.prototype;
  const state = new WeakMap<GPUComputePassEncoder, { pipeline?: GPUComputePipeline; bindGroup?: GPUBindGroup }>();
  const at = (pass: GPUComputePassEncoder) => {
    let s = state.get(pass);
    if (!s) state.set(pass, (s = {}));
    return s;
  };
  const { setPipeline, setBindGroup, dispatchWorkgroups } = proto;
  proto.setPipeline = function (this: GPUComputePassEncoder, pipeline: GPUComputePipeline) {
    at(this).pipeline = pipeline;
    return setPipeline.call(this, pipeline);
  };
  proto.setBindGroup = function (this: GPUComputePassEncoder, ...args: Parameters<typeof setBindGroup>) {
    if (args[0] === 0) at(this).bindGroup = args[1] ?? undefined;
    return (setBindGroup as (...a: unknown[]) => void).apply(this, args);
  } as typeof setBindGroup;
  proto.dispatchWorkgroups = function (this: GPUComputePassEncoder, x: number, y = 1, z = 1) {
    const s = at(this);
    if (recording && s.pipeline && s.bindGroup)
      recorded.push({ pipeline: s.pipeline, bindGroup: s.bindGroup, dispatch: [x, y, z], label: s.pipeline.label });
    return dispatchWorkgroups.call(this, x, y, z);
  };
  return { recorded, setRecording: (on) => (recording = on) };
}

/** A kernel's kind: its label up to the first word that is a size ('512ch', '3x3', 's2': a digit
 * and no three letters in a row, unlike 'im2col') or a ':' (sizes vary per layer). */
function kindOf(label: string): string {
  const kept: string[] = [];
  for (const w of label.split(/[\s:]+/)) {
    if (w === '' || (/\d/.test(w) && !/[a-zA-Z]{3}/.test(w))) break;
    kept.push(w);
  }
  return kept.join(' ') || label;
}

const gpu = await createNodeGpuContext();
const recorder = installRecorder();
try {
  const ceilingStart = argv.includes('--ceiling') ? await measureCeiling(gpu) : undefined;
  let runOnce: () => Promise<void>;
  let dispose: () => void;
  if (mode === 'infer') {
    if (!(LIGHT_MODELS as readonly string[]).includes(model))
      throw new Error(`model: one of ${LIGHT_MODELS.join(', ')}, got '${model}'`);
    const base = randomizedLightModel(model as LightModel, 42);
    const graph = batch === 1 ? base : withBatch(base, batch);
    const feed = graph.feedInputs[0];
    const dims = feed.shape as number[];
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i * 0.37));
    const session = await Session.create(graph, { gpu });
    runOnce = async () => void (await session.run({ [feed.name]: { dims, data } }));
    dispose = () => session.dispose();
  } else {
    const graph = trainingGraph(model, Number(sizeArg), batch);
    const constants = new ConstantStore(gpu);
    const plan = await TrainingPlan.create(gpu, graph, { constants });
    const optimizer = await createOptimizer(gpu, { type: 'sgd', lr: 1e-3 });
    const input = graph.feedInputs[0];
    const x = new Float32Array((input.shape as number[]).reduce((a, b) => a * b, 1)).map((_, i) => Math.sin(i * 0.37));
    const labels = Uint32Array.from({ length: batch }, (_, i) => i % plan.classes);
    runOnce = async () => void (await plan.step(new Map([[input.name, x]]), labels, optimizer));
    dispose = () => {
      plan.dispose();
      constants.dispose();
    };
  }
  await runOnce(); // compiles every pipeline
  const t0 = performance.now();
  await runOnce();
  const wallMs = performance.now() - t0;
  recorder.setRecording(true);
  await runOnce();
  recorder.setRecording(false);

  const perKind = new Map<string, { count: number; ms: number; cpuMs: number }>();
  let totalMs = 0;
  let totalCpuMs = 0;
  for (const r of recorder.recorded) {
    const c0 = workerCpuNs();
    const ms = await timeSteps(gpu, [{ ...r, owned: [] }], RUNS);
    // timeSteps runs the step once untimed, then RUNS times.
    const cpuMs = (workerCpuNs() - c0) / 1e6 / (RUNS + 1);
    totalMs += ms;
    totalCpuMs += cpuMs;
    const k = kindOf(r.label);
    const e = perKind.get(k) ?? { count: 0, ms: 0, cpuMs: 0 };
    e.count++;
    e.ms += ms;
    e.cpuMs += cpuMs;
    perKind.set(k, e);
  }
  // The same dispatches replayed in one pass: what running them back to back costs beyond their sum.
  const wholeMs = await timeSteps(
    gpu,
    recorder.recorded.map((r) => ({ ...r, owned: [] })),
    RUNS,
  );
  const ceilingEnd = ceilingStart ? await measureCeiling(gpu) : undefined;
  console.log(
    `${mode} ${model} batch ${batch}${mode === 'train' ? ` at ${sizeArg}×${sizeArg}` : ''}: ${recorder.recorded.length} dispatches, ` +
      `sum of lone dispatches ${totalMs.toFixed(0)} ms (worker CPU ${totalCpuMs.toFixed(0)} ms), all of them in one pass ${wholeMs.toFixed(0)} ms, ` +
      `one whole run ${wallMs.toFixed(0)} ms wall; load ${os.loadavg()[0].toFixed(2)}` +
      (ceilingStart && ceilingEnd
        ? `; FMA ceiling ${ceilingStart.fmaGflops.toFixed(1)} → ${ceilingEnd.fmaGflops.toFixed(1)} GFLOP/s (plain loop ${ceilingStart.fmaLoopGflops.toFixed(1)} → ${ceilingEnd.fmaLoopGflops.toFixed(1)})`
        : ''),
  );
  const rows = [...perKind.entries()].sort((a, b) => b[1].cpuMs - a[1].cpuMs).slice(0, TOP);
  console.log(`  ${'kind'.padEnd(40)} count    GPU ms  share   CPU ms  share`);
  for (const [k, e] of rows)
    console.log(
      `  ${k.padEnd(40)} ${String(e.count).padStart(5)} ${e.ms.toFixed(1).padStart(9)} ${((100 * e.ms) / totalMs).toFixed(1).padStart(5)}% ` +
        `${e.cpuMs.toFixed(1).padStart(8)} ${((100 * e.cpuMs) / totalCpuMs).toFixed(1).padStart(5)}%`,
    );
  dispose();
} finally {
  gpu.dispose();
}
process.exit(0);
