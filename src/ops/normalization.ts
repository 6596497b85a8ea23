// BatchNormalization (inference on running statistics, or training mode when its scale or bias
// trains) and LRN.
import type { AttributeReader } from '../graph/attributes.ts';
import type { Node } from '../graph/ir.ts';
import { sameShape, showDim, showShape, type InferredValue, type ShapeRule } from '../graph/shape-context.ts';
import { sizeOf } from '../graph/tensor.ts';
import {
  batchNormCombineGradientSumsProgram,
  batchNormCombineStatisticsProgram,
  batchNormFrozenBackwardProgram,
  batchNormPartialStatisticsProgram,
  batchNormTrainingBackwardPrograms,
  batchNormTrainingForwardPrograms,
  lrnBackwardProgram,
  type BatchNormShape,
} from '../kernels/backward/index.ts';
import { batchNormProgram, lrnProgram, type LrnParams } from '../kernels/normalization.ts';
import { oneKernelBackward, type OpDefinition, type RuleContext, type RuleStep, LEGACY_CONSUMED } from './op.ts';

export interface BatchNormAttributes {
  epsilon: number;
  momentum: number;
  trainingMode: boolean;
}

/** BatchNormalization's attributes; refuses per-activation statistics (spatial=0, opset < 9). */
export function batchNormAttributes(attrs: AttributeReader, opset: number): BatchNormAttributes {
  if (opset < 9 && attrs.int('spatial', 1) !== 1)
    throw attrs.error('spatial=0 (per-activation statistics, opset < 9) is not supported; accepted: spatial=1');
  return {
    epsilon: attrs.float('epsilon', 1e-5),
    momentum: attrs.float('momentum', 0.9),
    trainingMode: attrs.int('training_mode', 0) !== 0,
  };
}

const batchNormShape: ShapeRule = (ctx) => {
  batchNormAttributes(ctx.attrs, ctx.opset);
  const x = ctx.shape(0);
  const c = x.length > 1 ? x[1] : 1;
  for (let i = 1; i <= 4; i++) {
    const s = ctx.shape(i);
    if (s.length !== 1 || (typeof c === 'number' && typeof s[0] === 'number' && s[0] !== c)) {
      throw ctx.error(
        `input ${i} ('${ctx.node.inputs[i]}') has shape ${showShape(s)}; expected [${showDim(c)}] (one value per channel)`,
      );
    }
  }
  const out: InferredValue[] = [{ dtype: ctx.dtype(0), shape: [...x] }];
  for (let i = 1; i < ctx.node.outputs.length; i++) out.push({ dtype: ctx.dtype(0), shape: [c] });
  return out;
};

function bnShapeOf(ctx: RuleContext): BatchNormShape {
  const x = ctx.shape(ctx.node.inputs[0]);
  return {
    images: x[0],
    channels: x[1] ?? 1,
    spatial: sizeOf(x.slice(2)),
    epsilon: batchNormAttributes(ctx.attrs, ctx.graph.opset).epsilon,
  };
}
const bnTrainsItself = (ctx: RuleContext) => ctx.wants(1) || ctx.wants(2);
const bnSaved = (n: Node) => ({ mean: `${n.outputs[0]}@bn-mean`, invStd: `${n.outputs[0]}@bn-invstd` });

// Frozen scale and bias (inference mode, running statistics as constants): dx =
// dy·scale/√(var + ε), the runtime's own forward. Trainable scale or bias: training mode — the
// forward normalizes with the batch statistics (saved for the backward) and updates the running
// statistics in place with ONNX's momentum (running = momentum·running + (1 − momentum)·batch;
// they are state, read back on export); evaluation uses the running statistics over the same
// buffers. The running statistics never get a gradient.
export const batchNormalization: OpDefinition = {
  attributes: [
    'epsilon',
    'momentum',
    { name: 'spatial', until: 8 },
    { name: 'is_test', until: 6 },
    LEGACY_CONSUMED,
    { name: 'training_mode', since: 14 },
  ],
  shape: batchNormShape,
  runtime: {
    kind: 'steps',
    check(ctx) {
      if (batchNormAttributes(ctx.attrs, ctx.opset).trainingMode)
        throw ctx.error('training_mode=1 is not supported (inference only); accepted: 0');
      ctx.unusedExtraOutputs('the running statistics outputs (training mode)');
    },
    lower(ctx) {
      const x = ctx.shape(0);
      const channels = x.length > 1 ? x[1] : 1;
      const refs = [0, 1, 2, 3, 4].map((i) => ctx.ref(ctx.node.inputs[i]));
      refs.push({ value: ctx.node.outputs[0] });
      const { epsilon } = batchNormAttributes(ctx.attrs, ctx.opset);
      return [ctx.step(batchNormProgram(x[0], channels, sizeOf(x.slice(2)), epsilon), refs)];
    },
  },
  gradient: {
    nonDifferentiable: [3, 4],
    forward(ctx): RuleStep[] | undefined {
      if (!bnTrainsItself(ctx)) return undefined;
      const n = ctx.node;
      const p = bnShapeOf(ctx);
      const [x, scale, bias, mean, variance] = n.inputs;
      if (!mean || !variance || !ctx.graph.initializers.has(mean) || !ctx.graph.initializers.has(variance)) {
        throw ctx.error(`training mode needs the running mean and variance as initializers ('${mean}', '${variance}')`);
      }
      if (!ctx.training) {
        return [
          {
            program: batchNormProgram(p.images, p.channels, p.spatial, p.epsilon),
            bind: { x, scale, bias, mean, var: variance, y: n.outputs[0] },
          },
        ];
      }
      const saved = bnSaved(n);
      ctx.temp(saved.mean, [p.channels]);
      ctx.temp(saved.invStd, [p.channels]);
      ctx.state(mean);
      ctx.state(variance);
      const { momentum } = batchNormAttributes(ctx.attrs, ctx.graph.opset);
      const [stats, apply] = batchNormTrainingForwardPrograms(p, momentum);
      const statistics = { saveMean: saved.mean, saveInvStd: saved.invStd, runningMean: mean, runningVar: variance };
      return [
        {
          program: stats,
          bind: { x, ...statistics },
          batchReduction: {
            partLength: p.channels,
            partial: { program: batchNormPartialStatisticsProgram(p), bind: { x }, parts: ['partMean', 'partM2'] },
            combine: (layout, first) => ({
              program: batchNormCombineStatisticsProgram(p.channels, p.spatial, layout, p.epsilon, momentum, first),
              bind: statistics,
              partials: 'partials',
            }),
          },
        },
        { program: apply, bind: { x, scale, bias, saveMean: saved.mean, saveInvStd: saved.invStd, y: n.outputs[0] } },
      ];
    },
    backward(ctx, [dy]) {
      const n = ctx.node;
      const grads: (string | undefined)[] = [undefined, undefined, undefined, undefined, undefined];
      if (!dy) return { steps: [], grads };
      const p = bnShapeOf(ctx);
      const x = ctx.shape(n.inputs[0]);
      if (bnTrainsItself(ctx)) {
        const saved = bnSaved(n);
        const dScale = ctx.temp(`grad ${n.inputs[1]}`, [p.channels]);
        const dBias = ctx.temp(`grad ${n.inputs[2]}`, [p.channels]);
        const [sums, data] = batchNormTrainingBackwardPrograms(p);
        const reads = { x: n.inputs[0], dy, saveMean: saved.mean, saveInvStd: saved.invStd };
        const steps: RuleStep[] = [
          {
            program: sums,
            bind: { ...reads, dScale, dBias },
            // Each slice's own sums go to its parts (the same program, its outputs bound there).
            batchReduction: {
              partLength: p.channels,
              partial: { program: sums, bind: reads, parts: ['dScale', 'dBias'] },
              combine: (layout) => ({
                program: batchNormCombineGradientSumsProgram(p.channels, layout),
                bind: { dScale, dBias },
                partials: 'partials',
              }),
            },
          },
        ];
        if (ctx.wants(0)) {
          const dx = ctx.temp(`grad ${n.inputs[0]}`, x);
          steps.push({
            program: data,
            bind: {
              x: n.inputs[0],
              dy,
              scale: n.inputs[1],
              saveMean: saved.mean,
              saveInvStd: saved.invStd,
              dScale,
              dBias,
              dx,
            },
          });
          grads[0] = dx;
        }
        if (ctx.wants(1)) grads[1] = dScale;
        if (ctx.wants(2)) grads[2] = dBias;
        return { steps, grads };
      }
      if (!ctx.wants(0)) return { steps: [], grads };
      const dx = ctx.temp(`grad ${n.inputs[0]}`, x);
      grads[0] = dx;
      return {
        steps: [{ program: batchNormFrozenBackwardProgram(p), bind: { dy, scale: n.inputs[1], var: n.inputs[4], dx } }],
        grads,
      };
    },
  },
};

/**
 * LRN's attributes, as onnxruntime accepts them: size odd and positive (the window is centred
 * on its channel; at most 2^31 - 1, as the kernel indexes channels with 32-bit integers), alpha
 * and beta positive, bias finite.
 */
function lrnAttributes(attrs: AttributeReader): Pick<LrnParams, 'size' | 'alpha' | 'beta' | 'bias'> {
  const size = attrs.int('size');
  if (!Number.isSafeInteger(size) || size < 1 || size % 2 !== 1 || size > 2 ** 31 - 1)
    throw attrs.error(`size=${size}; accepted: an odd integer in 1…${2 ** 31 - 1}`);
  const positive = (name: string, fallback: number) => {
    const v = attrs.float(name, fallback);
    if (!(v > 0 && Number.isFinite(v))) throw attrs.error(`${name}=${v}; accepted: a finite number > 0`);
    return v;
  };
  const bias = attrs.float('bias', 1);
  if (!Number.isFinite(bias)) throw attrs.error(`bias=${bias}; accepted: a finite number`);
  return { size, alpha: positive('alpha', 1e-4), beta: positive('beta', 0.75), bias };
}

/** LRN's window over X [N, C, spatial…]. */
function lrnParams(attrs: AttributeReader, x: number[]): LrnParams {
  return { images: x[0], channels: x[1], spatial: sizeOf(x.slice(2)), ...lrnAttributes(attrs) };
}

export const lrn: OpDefinition = {
  attributes: ['alpha', 'beta', 'bias', 'size'],
  shape: (ctx) => {
    lrnAttributes(ctx.attrs);
    return sameShape(ctx);
  },
  runtime: {
    kind: 'steps',
    check(ctx) {
      lrnAttributes(ctx.attrs);
    },
    lower(ctx) {
      const program = lrnProgram(lrnParams(ctx.attrs, ctx.shape(0)));
      return [ctx.inputToOutputStep(program)];
    },
  },
  gradient: {
    backward: (ctx, [dy]) =>
      oneKernelBackward(ctx, dy, (dims, x) => ({
        program: lrnBackwardProgram(lrnParams(ctx.attrs, dims)),
        reads: { x },
      })),
  },
};
