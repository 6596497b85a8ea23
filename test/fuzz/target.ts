// One seed, in this process: build its mutant and push it through the engine (decode → prepare
// → Session.create → run for models; deserialize → restore → weights for checkpoints), then
// optionally through onnxruntime-node, and classify what happened.
import * as ort from 'onnxruntime-node';
import { decodeModel } from '../../src/graph/codec.ts';
import { onnx } from '../../src/graph/onnx/onnx-pb.js';
import { prepareGraph } from '../../src/graph/load.ts';
import type { GpuContext } from '../../src/kernels/gpu-context.ts';
import { Session } from '../../src/runtime/session.ts';
import {
  architectureFingerprint,
  deserializeCheckpoint,
  loadSafetensorsWeights,
  restoreGraphWeights,
} from '../../src/train/checkpoint.ts';
import { scheduleFromJson } from '../../src/train/schedules.ts';
import {
  checkpointMutant,
  feedsFor,
  modelMutant,
  type CheckpointBase,
  type Feed,
  type ModelBase,
  type Target,
} from './corpus.ts';

export type Verdict = 'typed' | 'accepted' | 'untyped';
/** What onnxruntime made of a mutant (diff mode): only the first two are defects of ours. */
export type DiffVerdict =
  | 'answers-differ'
  | 'we-accept-ort-refuses'
  | 'ort-accepts-we-refuse'
  | 'known-deviation'
  | 'ort-lacks-kernel'
  | 'agree'
  | 'both-refuse';

/**
 * Ops where onnxruntime's CPU kernels depart from the ONNX definition on NaN and ±Inf, so an
 * answer that differs there is listed apart, not as a defect (test/nan-propagation.test.ts checks
 * the engine against a float64 reference of the definition for each): LRN keeps a running sum
 * over channels (one Inf makes later channels NaN); MaxPool and GlobalMaxPool keep or drop a NaN
 * by its place in the window and start from -FLT_MAX; plain Conv skips padded products (0·NaN).
 */
const ORT_NON_FINITE_DEVIATIONS = new Set(['LRN', 'MaxPool', 'GlobalMaxPool', 'Conv']);

export interface Outcome {
  seed: number;
  target: Target;
  base: string;
  steps: string[];
  bytes: number;
  verdict: Verdict;
  /** The last stage reached ('run' or 'weights' when accepted; 'prepare' for heavy light models). */
  stage: string;
  error?: { name: string; message: string; stack?: string };
  diff?: DiffVerdict;
  diffDetail?: string;
}

export interface SeedContext {
  gpu?: GpuContext;
  models?: ModelBase[];
  checkpoints?: CheckpointBase[];
  /** Run heavy light models through create and run too. */
  fullLight?: boolean;
  diff?: boolean;
  onStage?: (stage: string) => void;
}

// JavaScript's own error classes: a user-reachable failure must be one of the engine's types.
const UNTYPED = new Set(['Error', 'TypeError', 'RangeError', 'SyntaxError', 'ReferenceError', 'EvalError', 'URIError']);

/** Whether a thrown value is one of the engine's typed errors (any Error subclass it declares). */
export function isTyped(e: unknown): boolean {
  return e instanceof Error && !UNTYPED.has(e.constructor.name) && e.constructor !== AggregateError;
}

export async function runSeed(seed: number, target: Target, ctx: SeedContext): Promise<Outcome> {
  return target === 'models' ? runModelSeed(seed, ctx) : runCheckpointSeed(seed, ctx);
}

async function runModelSeed(seed: number, ctx: SeedContext): Promise<Outcome> {
  const mutant = modelMutant(seed, ctx.models!);
  const file = `${mutant.base.name}#${seed}`;
  const { feeds, poison } = feedsFor(seed, mutant.base);
  if (poison) mutant.steps.push(poison);
  let stage = 'decode';
  const at = (s: string) => {
    stage = s;
    ctx.onStage?.(s);
  };
  const outcome: Outcome = {
    seed,
    target: 'models',
    base: mutant.base.name,
    steps: mutant.steps,
    bytes: mutant.bytes.length,
    verdict: 'accepted',
    stage,
  };
  let ours: Record<string, Feed> | undefined;
  let deviatingOps: string[] = [];
  try {
    at('decode');
    const graph = decodeModel(mutant.bytes, { file });
    deviatingOps = graph.nodes.map((n) => n.opType).filter((op) => ORT_NON_FINITE_DEVIATIONS.has(op));
    at('prepare');
    prepareGraph(graph);
    if (!mutant.base.heavy || ctx.fullLight) {
      at('create');
      const session = await Session.create(graph, { gpu: ctx.gpu!, file });
      try {
        at('run');
        ours = await session.run(feeds);
      } finally {
        session.dispose();
      }
    }
  } catch (e) {
    outcome.verdict = isTyped(e) ? 'typed' : 'untyped';
    outcome.error = describe(e);
  }
  outcome.stage = stage;
  if (ctx.diff && (ours || outcome.verdict !== 'accepted')) {
    at('ort');
    const nonFinite = Object.values(feeds).some((f) => f.data.some((v) => !Number.isFinite(v)));
    const deviation = nonFinite && deviatingOps.length ? [...new Set(deviatingOps)].join(', ') : undefined;
    Object.assign(outcome, await compareWithOrt(mutant.bytes, feeds, ours, deviation));
  }
  return outcome;
}

async function runCheckpointSeed(seed: number, ctx: SeedContext): Promise<Outcome> {
  const mutant = checkpointMutant(seed, ctx.checkpoints!);
  const source = `${mutant.base.name}#${seed}`;
  const outcome: Outcome = {
    seed,
    target: 'checkpoints',
    base: mutant.base.name,
    steps: mutant.steps,
    bytes: mutant.bytes.length,
    verdict: 'accepted',
    stage: 'deserialize',
  };
  try {
    const { base } = mutant;
    // The GRAFTCK1 fixture's architecture is whatever its unmutated file says.
    const expected = base.expected.hash ? base.expected : deserializeCheckpoint(base.bytes).fingerprint;
    const ck = deserializeCheckpoint(mutant.bytes, { source, expected });
    if (base.graph.initializers.size > 0) {
      outcome.stage = 'restore';
      const graph = base.graph.clone();
      restoreGraphWeights(graph, ck.weights, source);
      // A restored graph must still have its own architecture.
      if (architectureFingerprint(graph).hash !== expected.hash)
        throw new Error(`restored weights changed the architecture of ${source}`);
      // Weights-only loading reads files without optimizer tensors, as another tool writes them.
      if (!ck.optimizer) {
        outcome.stage = 'weights';
        loadSafetensorsWeights(mutant.bytes, base.graph.clone(), source);
      }
    }
    // What a resume reads next on the host: the schedule, at the saved step. (The optimizer's
    // stored config is already resolved, so resolveConfig would refuse a valid one; loadState
    // needs the GPU.)
    outcome.stage = 'resume';
    if (ck.schedule !== undefined) {
      const lr = scheduleFromJson(ck.schedule).lrAt(ck.step);
      if (!Number.isFinite(lr)) throw new Error(`${source}: the schedule gives lr ${lr} at step ${ck.step}`);
    }
  } catch (e) {
    outcome.verdict = isTyped(e) ? 'typed' : 'untyped';
    outcome.error = describe(e);
  }
  return outcome;
}

/** Tolerance for "the same answer": float32 kernels summing in another order. */
const ATOL = 1e-3;
const RTOL = 1e-3;

async function compareWithOrt(
  bytes: Uint8Array,
  feeds: Record<string, Feed>,
  ours: Record<string, Feed> | undefined,
  /** The deviating ops a non-finite input reaches, if any (ORT_NON_FINITE_DEVIATIONS). */
  deviation?: string,
): Promise<Pick<Outcome, 'diff' | 'diffDetail'>> {
  let theirs: Record<string, Feed>;
  try {
    theirs = await runOrtCpu(bytes, feeds);
  } catch (e) {
    const message = (e instanceof Error ? e.message : String(e)).slice(0, 300);
    if (!ours) return { diff: 'both-refuse' };
    const lacking = /Could not find an implementation for (\w+)\((\d+)\)/.exec(message);
    if (!lacking) return { diff: 'we-accept-ort-refuses', diffDetail: message };
    // onnxruntime's CPU provider registers no kernel for that op at the model's (old) opset. The
    // model is valid ONNX there; the engine is compared with onnxruntime at the first opset it has.
    const at = ORT_FIRST_KERNEL_OPSET;
    try {
      theirs = await runOrtCpu(withDefaultOpset(bytes, at), feeds);
    } catch {
      return { diff: 'ort-lacks-kernel', diffDetail: `${lacking[0]} (nor at opset ${at})` };
    }
    const difference = firstDifference(ours, theirs);
    return difference
      ? { diff: 'answers-differ', diffDetail: `against onnxruntime at opset ${at}: ${difference}` }
      : { diff: 'ort-lacks-kernel', diffDetail: `${lacking[0]}; agrees with onnxruntime at opset ${at}` };
  }
  if (!ours) return { diff: 'ort-accepts-we-refuse' };
  const difference = firstDifference(ours, theirs);
  if (!difference) return { diff: 'agree' };
  return deviation
    ? { diff: 'known-deviation', diffDetail: `non-finite input through ${deviation}: ${difference}` }
    : { diff: 'answers-differ', diffDetail: difference };
}

/** The oldest default-domain opset at which onnxruntime's CPU provider has every op the corpus uses. */
const ORT_FIRST_KERNEL_OPSET = 7;

/** The model with its default-domain opset import set to `version`. */
function withDefaultOpset(bytes: Uint8Array, version: number): Uint8Array {
  const model = onnx.ModelProto.decode(bytes);
  for (const o of model.opset_import) if (!o.domain || o.domain === 'ai.onnx') o.version = version;
  return onnx.ModelProto.encode(model).finish();
}

async function runOrtCpu(bytes: Uint8Array, feeds: Record<string, Feed>): Promise<Record<string, Feed>> {
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ['cpu'], logSeverityLevel: 4 });
  try {
    const inputs: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) inputs[k] = new ort.Tensor('float32', v.data, v.dims);
    const out = await session.run(inputs);
    const theirs: Record<string, Feed> = {};
    for (const [k, v] of Object.entries(out)) {
      if (v.type !== 'float32') throw new Error(`output ${k} is ${v.type}`);
      theirs[k] = { dims: [...v.dims], data: v.data as Float32Array };
    }
    return theirs;
  } finally {
    await session.release();
  }
}

/** Where our outputs and onnxruntime's first differ beyond tolerance (NaN equals NaN), if anywhere. */
export function firstDifference(ours: Record<string, Feed>, theirs: Record<string, Feed>): string | undefined {
  for (const [name, want] of Object.entries(theirs)) {
    const got = ours[name];
    if (!got) return `output ${name}: we give none`;
    if (got.dims.join() !== want.dims.join()) return `output ${name}: dims [${got.dims}] vs onnxruntime [${want.dims}]`;
    for (let i = 0; i < want.data.length; i++) {
      const a = got.data[i];
      const b = want.data[i];
      const same = (Number.isNaN(a) && Number.isNaN(b)) || a === b || Math.abs(a - b) <= ATOL + RTOL * Math.abs(b);
      if (!same) return `output ${name}[${i}]: ${a} vs onnxruntime ${b}`;
    }
  }
  return undefined;
}

function describe(e: unknown): Outcome['error'] {
  if (e instanceof Error)
    return {
      name: e.constructor.name,
      message: e.message.slice(0, 400),
      stack: e.stack?.split('\n').slice(1, 6).join('\n'),
    };
  return { name: typeof e, message: String(e).slice(0, 400) };
}
