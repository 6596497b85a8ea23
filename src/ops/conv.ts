// Conv (1-D and 2-D; training: 2-D): inference on packed weights with a following
// BatchNormalization folded in and a following activation as the epilogue; the training
// forward and backward on the shared GEMM core (kernels/conv-backward.ts says how, and how the
// backward keeps its temporaries bounded).
import type { AttributeReader } from '../graph/attributes.ts';
import { windowGeometry, type WindowGeometry } from '../graph/geometry.ts';
import { showShape, type ShapeRule } from '../graph/shape-context.ts';
import {
  channelSumProgram,
  col2imProgram,
  conv2dBackwardDataPrograms,
  conv2dBackwardDataProblem,
  conv2dBackwardFilterPrograms,
  conv2dBackwardFilterProblem,
  convBackwardChunkRows,
  convBackwardRowBytes,
  convDataGradParams,
  convGradRowsProgram,
  convPackedWeightsSize,
  convPackWeightsProgram,
  convTrainSizes,
  im2colProgram,
} from '../kernels/conv-backward.ts';
import { conv2dGemmProblem, conv2dPrograms, packConvWeights, type Conv2dParams } from '../kernels/conv.ts';
import { batchNormChannelScale, foldBatchNormBias, type BatchNormStatistics } from '../kernels/normalization.ts';
import { batchNormAttributes } from './normalization.ts';
import {
  derivedConstant,
  rawConstant,
  type BindingRef,
  type ConstantTensor,
  type LowerContext,
  type OpDefinition,
  type RuleContext,
  type RuleStep,
  type StepSpec,
} from './op.ts';

/**
 * A Conv's window over spatial input dims `spatial` with a weight of spatial dims `kernelDims`:
 * group, kernel_shape (checked against W), strides, dilations and pads resolved.
 */
function convWindow(
  attrs: AttributeReader,
  spatial: number[],
  kernelDims: number[],
): { group: number; geometry: WindowGeometry } {
  const group = attrs.int('group', 1);
  if (!(group >= 1)) throw attrs.error(`group=${group} must be positive`);
  const kernel = attrs.ints('kernel_shape', kernelDims);
  if (kernel.length !== kernelDims.length || kernel.some((k, i) => k !== kernelDims[i]))
    throw attrs.error(`kernel_shape [${kernel}] disagrees with W's spatial shape [${kernelDims}]`);
  return { group, geometry: windowGeometry(attrs, spatial, kernel) };
}

/**
 * The geometry of a Conv over X [N, C, (H,) W] with W [CO, C/group, (KH,) KW] as a 2-D conv (a
 * 1-D one has height 1); refuses other ranks.
 */
function convParams(attrs: AttributeReader, x: number[], w: number[], hasBias: boolean): Conv2dParams {
  if ((w.length !== 4 && w.length !== 3) || x.length !== w.length)
    throw attrs.error(`only 1-D and 2-D convolutions are supported; X is [${x}], W is [${w}]`);
  const oneD = x.length === 3;
  const [N, C, H, W] = oneD ? [x[0], x[1], 1, x[2]] : x;
  const [CO, , KH, KW] = oneD ? [w[0], w[1], 1, w[2]] : w;
  const { group, geometry: g } = convWindow(attrs, x.slice(2), w.slice(2));
  const [strideH, strideW] = oneD ? [1, g.strides[0]] : g.strides;
  const [dilationH, dilationW] = oneD ? [1, g.dilations[0]] : g.dilations;
  const [outH, outW] = oneD ? [1, g.output[0]] : g.output;
  return {
    images: N,
    inChannels: C,
    height: H,
    width: W,
    outChannels: CO,
    group,
    kernelH: KH,
    kernelW: KW,
    strideH,
    strideW,
    pads: oneD ? [0, g.pads[0], 0, g.pads[1]] : [g.pads[0], g.pads[1], g.pads[2], g.pads[3]],
    dilationH,
    dilationW,
    outH,
    outW,
    hasBias,
  };
}

/** Conv params of a 2-D Conv node for training (1-D and 3-D are refused). */
function convParamsOf(ctx: Pick<RuleContext, 'node' | 'attrs' | 'shape' | 'error'>): Conv2dParams {
  const n = ctx.node;
  const x = ctx.shape(n.inputs[0]);
  const w = ctx.shape(n.inputs[1]);
  if (x.length !== 4 || w.length !== 4)
    throw ctx.error(`training supports 2-D convolutions only; X is [${x}], W is [${w}]`);
  return convParams(ctx.attrs, x, w, Boolean(n.inputs[2]));
}

const convShape: ShapeRule = (ctx) => {
  const x = ctx.shape(0);
  const w = ctx.staticShape(1, 'Conv');
  if (x.length < 3) throw ctx.error(`input X has rank ${x.length}; Conv needs [N, C, spatial…]`);
  if (w.length !== x.length)
    throw ctx.error(`weight W has shape [${w}] of rank ${w.length}; it must match X's rank ${x.length}`);
  const spatial = x.slice(2);
  if (spatial.some((d) => typeof d !== 'number'))
    throw ctx.error(`X's spatial dims ${showShape(spatial)} must be known`);
  const { group, geometry } = convWindow(ctx.attrs, spatial as number[], w.slice(2));
  const channels = x[1];
  if (typeof channels === 'number' && channels !== w[1] * group) {
    throw ctx.error(`X has ${channels} channels but W [${w}] with group=${group} expects ${w[1] * group}`);
  }
  if (w[0] % group !== 0) throw ctx.error(`W has ${w[0]} output channels, not divisible by group=${group}`);
  if (ctx.hasInput(2)) {
    const b = ctx.shape(2);
    if (b.length !== 1 || b[0] !== w[0]) throw ctx.error(`bias B has shape ${showShape(b)}; expected [${w[0]}]`);
  }
  return [{ dtype: ctx.dtype(0), shape: [x[0], w[0], ...geometry.output] }];
};

function checkConv(ctx: LowerContext): void {
  const n = ctx.node;
  const w = ctx.shape(1);
  if (w.length !== 4 && w.length !== 3)
    throw ctx.error(`only 1-D and 2-D convolutions are supported; W has shape [${w}]`);
  if (!ctx.isConstant(n.inputs[1])) throw ctx.error(`weights '${n.inputs[1]}' must be an initializer (a constant)`);
  if (n.inputs[2] && !ctx.isConstant(n.inputs[2]))
    throw ctx.error(`bias '${n.inputs[2]}' must be an initializer (a constant)`);
}

async function lowerConv(ctx: LowerContext): Promise<StepSpec[]> {
  const n = ctx.node;
  const base = convParams(ctx.attrs, ctx.shape(0), ctx.shape(1), Boolean(n.inputs[2]));
  // Read (from its file, for a weight left there) only when packed: not when another session shares the upload.
  const weights = (): Float32Array => ctx.floatConstant(n.inputs[1]);
  const givenBias = n.inputs[2] ? ctx.floatConstant(n.inputs[2]) : undefined;
  // The group is part of the key: one W can be a group-1 conv's and a grouped conv's, packed apart.
  let keyParts = [n.inputs[1], n.inputs[2] ?? '-', `group ${base.group}`];
  // Conv → BatchNormalization: the statistics folded into the weights (while packing) and bias.
  let out = n.outputs[0];
  const bnNode = ctx.absorbNext(
    out,
    ['BatchNormalization'],
    (c) => c.inputs.slice(1).every((i) => ctx.isConstant(i)) && c.outputs.filter(Boolean).length === 1,
  );
  let bn: ConvBatchNorm | undefined;
  if (bnNode) {
    bn = {
      scale: ctx.floatConstant(bnNode.inputs[1]),
      bias: ctx.floatConstant(bnNode.inputs[2]),
      mean: ctx.floatConstant(bnNode.inputs[3]),
      variance: ctx.floatConstant(bnNode.inputs[4]),
      epsilon: batchNormAttributes(ctx.attributesOf(bnNode), ctx.opset).epsilon,
    };
    keyParts = [...keyParts, `bn:${bnNode.name || bnNode.outputs[0]}`];
    out = bnNode.outputs[0];
  }
  const { activation, output } = ctx.absorbActivation(out);
  const p: Conv2dParams = { ...base, hasBias: givenBias !== undefined || bn !== undefined, activation };
  const problem = conv2dGemmProblem(p);
  const options = ctx.options!;
  const variant = await options.chooseVariant(problem, problem.a.kind === 'im2col' ? 'conv' : 'gemm');
  ctx.checkBinding(convPackedWeightsSize(p) * 4, `packed weights of '${n.inputs[1]}'`);
  ctx.checkBinding(p.images * p.inChannels * p.height * p.width * 4, `input '${n.inputs[0]}'`);
  ctx.checkBinding(p.images * p.outChannels * p.outH * p.outW * 4, `output '${output}'`);
  const refs: BindingRef[] = [
    { value: n.inputs[0] },
    { constant: packedConvWeights(`conv:${keyParts.join('|')}`, ctx.sharingSource(n.inputs[1]), weights, p, bn) },
    { value: output },
  ];
  const biasKey = `convbias:${keyParts.join('|')}`;
  if (bn) refs.push({ constant: foldedConvBias(biasKey, givenBias, bn, p.outChannels) });
  else if (givenBias) refs.push({ constant: rawConstant(biasKey, givenBias) });
  return conv2dPrograms(p, variant, options.maxWorkgroupsPerDimension).map((program) => ctx.step(program, refs));
}

/** A BatchNormalization folded into the Conv before it: its statistics are initializers. */
interface ConvBatchNorm extends BatchNormStatistics {
  scale: Float32Array;
  bias: Float32Array;
  mean: Float32Array;
  variance: Float32Array;
}

/** The conv's weights as the kernel reads them (packConvWeights), BN folded in: packed only
 * when no session of the context has uploaded the same. */
function packedConvWeights(
  key: string,
  source: Float32Array | string,
  weights: () => Float32Array,
  p: Conv2dParams,
  bn: ConvBatchNorm | undefined,
): ConstantTensor {
  const layout = `${p.outChannels}x${p.inChannels / p.group}x${p.kernelH}x${p.kernelW} group ${p.group}`;
  if (!bn)
    return derivedConstant(key, { recipe: `conv weights ${layout}`, sources: [source] }, () =>
      packConvWeights(weights(), p),
    );
  return derivedConstant(
    key,
    { recipe: `conv weights ${layout} bn epsilon ${bn.epsilon}`, sources: [source, bn.scale, bn.variance] },
    () => packConvWeights(weights(), p, batchNormChannelScale(bn, p.outChannels)),
  );
}

/** The conv's bias with the BatchNormalization folded in, computed only when not shared. */
function foldedConvBias(
  key: string,
  bias: Float32Array | undefined,
  bn: ConvBatchNorm,
  outChannels: number,
): ConstantTensor {
  const statistics = [bn.scale, bn.bias, bn.mean, bn.variance];
  return derivedConstant(
    key,
    {
      recipe: `conv bias${bias ? '' : ' (none)'} bn epsilon ${bn.epsilon}`,
      sources: bias ? [bias, ...statistics] : statistics,
    },
    () => foldBatchNormBias(bias, bn, outChannels),
  );
}

/** Bytes a backward temporary may take: the device's binding limit, and at most this much
 * (smaller chunks cost a few more dispatches; larger ones only memory). */
export const CONV_BACKWARD_BUDGET_BYTES = 64 * 2 ** 20;

/** The implicit-GEMM conv over a weight packed from the ONNX layout this step: x, w → y. */
function implicitConvSteps(
  ctx: RuleContext,
  p: Conv2dParams,
  x: string,
  w: string,
  y: string,
  bias: string | undefined,
  transposed: boolean,
): RuleStep[] {
  const packed = ctx.temp(`${w} packed${transposed ? ' for dX' : ''}`, [convPackedWeightsSize(p, transposed)]);
  const conv = transposed ? convDataGradParams(p) : p;
  const bind: Record<string, string> = { x, w: packed, y };
  if (bias) bind.bias = bias;
  return [
    { program: convPackWeightsProgram(p, transposed), bind: { w, packed } },
    ...conv2dPrograms(conv, ctx.variant(conv2dGemmProblem(conv)), ctx.maxWorkgroupsPerDimension).map((program) => ({
      program,
      bind,
    })),
  ];
}

export const conv: OpDefinition = {
  attributes: ['auto_pad', 'dilations', 'group', 'kernel_shape', 'pads', 'strides'],
  shape: convShape,
  runtime: { kind: 'steps', check: checkConv, lower: lowerConv },
  gradient: {
    forward(ctx) {
      const p = convParamsOf(ctx);
      const n = ctx.node;
      return implicitConvSteps(
        ctx,
        p,
        n.inputs[0],
        n.inputs[1],
        n.outputs[0],
        p.hasBias ? n.inputs[2] : undefined,
        false,
      );
    },
    backward(ctx, [dy]) {
      const n = ctx.node;
      const grads: (string | undefined)[] = [undefined, undefined, undefined];
      if (!dy) return { steps: [], grads };
      const p = convParamsOf(ctx);
      const s = convTrainSizes(p);
      const steps: RuleStep[] = [];
      if (p.hasBias && ctx.wants(2)) {
        const db = ctx.temp(`grad ${n.inputs[2]}`, [p.outChannels]);
        steps.push({ program: channelSumProgram(p.images, p.outChannels, s.spatial), bind: { dy, db } });
        grads[2] = db;
      }
      const wantsDx = ctx.wants(0);
      const wantsDw = ctx.wants(1);
      const stride1 = p.strideH === 1 && p.strideW === 1;
      const dx = wantsDx ? ctx.temp(`grad ${n.inputs[0]}`, ctx.shape(n.inputs[0])) : undefined;
      if (dx && stride1) steps.push(...implicitConvSteps(ctx, p, dy, n.inputs[1], dx, undefined, true));
      const viaDcol = dx !== undefined && !stride1;
      if (!wantsDw && !viaDcol) {
        grads[0] = dx;
        return { steps, grads };
      }

      // Row chunks: col, dyRows and dCol of a chunk each fit the budget.
      const budget = Math.min(ctx.maxBindingBytes ?? Infinity, CONV_BACKWARD_BUDGET_BYTES);
      const chunk = convBackwardChunkRows(p, budget);
      const rowBytes = convBackwardRowBytes(p);
      if (chunk * rowBytes > budget) {
        throw ctx.error(
          `one output position's backward row takes ${rowBytes} bytes (group ${p.group} · max(K ${s.K}, Cout/group ${s.groupOut}) · 4), over the ${budget}-byte binding budget`,
        );
      }
      if (viaDcol && chunk < s.spatial) {
        throw ctx.error(
          `the gradient of X of this strided conv (${p.inChannels}→${p.outChannels}, ${p.kernelH}x${p.kernelW} s${p.strideH}x${p.strideW}, ` +
            `input ${p.height}x${p.width}) needs one image's im2col at once: ${s.spatial * rowBytes} bytes (${s.spatial} positions · ${rowBytes} bytes), ` +
            `over the ${budget}-byte binding budget; a smaller input size fits, or freeze every layer before this conv (then X needs no gradient)`,
        );
      }
      const rows = ctx.temp(`${n.outputs[0]} dy rows`, [p.group, chunk, s.groupOut]);
      const col = wantsDw ? ctx.temp(`${n.outputs[0]} im2col`, [p.group, chunk, s.K]) : '';
      const dcol = viaDcol ? ctx.temp(`${n.outputs[0]} dcol`, [p.group, chunk, s.K]) : '';
      const dw = wantsDw ? ctx.temp(`grad ${n.inputs[1]}`, ctx.shape(n.inputs[1])) : '';
      for (let offset = 0; offset < s.M; offset += chunk) {
        const range = { offset, count: Math.min(chunk, s.M - offset) };
        steps.push({ program: convGradRowsProgram(p, range), bind: { dy, rows } });
        if (wantsDw) {
          steps.push({ program: im2colProgram(p, range), bind: { x: n.inputs[0], col } });
          const accumulate = offset > 0;
          for (const program of conv2dBackwardFilterPrograms(
            p,
            ctx.variant(conv2dBackwardFilterProblem(p, range, accumulate)),
            ctx.maxWorkgroupsPerDimension,
            range,
            accumulate,
          )) {
            steps.push({ program, bind: { rows, col, dw } });
          }
        }
        if (viaDcol) {
          for (const program of conv2dBackwardDataPrograms(
            p,
            ctx.variant(conv2dBackwardDataProblem(p, range)),
            ctx.maxWorkgroupsPerDimension,
            range,
          )) {
            steps.push({ program, bind: { rows, w: n.inputs[1], dcol } });
          }
          steps.push({
            program: col2imProgram(p, { first: offset / s.spatial, count: range.count / s.spatial }),
            bind: { dcol, dx: dx! },
          });
        }
      }
      grads[0] = dx;
      if (wantsDw) grads[1] = dw;
      return { steps, grads };
    },
  },
};
