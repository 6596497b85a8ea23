// The gradient rule of Conv (2-D): training forward and backward on the shared GEMM core
// (conv-backward.ts says how, and how the backward keeps its temporaries bounded).
import { windowGeometry } from '../graph/geometry.ts';
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
} from './conv-backward.ts';
import { conv2dGemmProblem, conv2dPrograms, type Conv2dParams } from './conv.ts';
import { registerGradientRule, type RuleContext, type RuleStep } from './gradient-registry.ts';

// ---- Conv ----

/** Conv params of a 2-D Conv node (1-D and 3-D are refused). */
export function convParamsOf(ctx: Pick<RuleContext, 'node' | 'attrs' | 'shape' | 'error'>): Conv2dParams {
  const n = ctx.node;
  const x = ctx.shape(n.inputs[0]);
  const w = ctx.shape(n.inputs[1]);
  if (x.length !== 4 || w.length !== 4)
    throw ctx.error(`training supports 2-D convolutions only; X is [${x}], W is [${w}]`);
  const group = ctx.attrs.int('group', 1);
  const g = windowGeometry(ctx.attrs, [x[2], x[3]], ctx.attrs.ints('kernel_shape', w.slice(2)));
  return {
    images: x[0],
    inChannels: x[1],
    height: x[2],
    width: x[3],
    outChannels: w[0],
    group,
    kernelH: w[2],
    kernelW: w[3],
    strideH: g.strides[0],
    strideW: g.strides[1],
    pads: [g.pads[0], g.pads[1], g.pads[2], g.pads[3]],
    dilationH: g.dilations[0],
    dilationW: g.dilations[1],
    outH: g.output[0],
    outW: g.output[1],
    hasBias: Boolean(n.inputs[2]),
  };
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

registerGradientRule('Conv', {
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
});
