// The gradient rule of Conv (2-D): training forward and backward on the shared GEMM core.
import { windowGeometry } from '../graph/geometry.ts';
import type { Node } from '../graph/ir.ts';
import {
  channelSumProgram,
  col2imProgram,
  conv2dBackwardDataPrograms,
  conv2dBackwardDataProblem,
  conv2dBackwardFilterPrograms,
  conv2dBackwardFilterProblem,
  conv2dTrainForwardPrograms,
  conv2dTrainForwardProblem,
  convGradRowsProgram,
  convTrainSizes,
  im2colProgram,
} from './conv-backward.ts';
import type { Conv2dParams } from './conv.ts';
import { registerGradientRule, type RuleContext, type RuleStep } from './gradient-registry.ts';

// ---- Conv ----

/** Conv params of a 2-D Conv node (1-D and 3-D are refused). */
export function convParamsOf(ctx: Pick<RuleContext, 'node' | 'attrs' | 'shape' | 'error'>): Conv2dParams {
  const n = ctx.node;
  const x = ctx.shape(n.inputs[0]);
  const w = ctx.shape(n.inputs[1]);
  if (x.length !== 4 || w.length !== 4) throw ctx.error(`training supports 2-D convolutions only; X is [${x}], W is [${w}]`);
  const group = ctx.attrs.int('group', 1);
  const g = windowGeometry(ctx.attrs, [x[2], x[3]], ctx.attrs.ints('kernel_shape', w.slice(2)));
  return {
    images: x[0], inChannels: x[1], height: x[2], width: x[3], outChannels: w[0], group,
    kernelH: w[2], kernelW: w[3], strideH: g.strides[0], strideW: g.strides[1],
    pads: [g.pads[0], g.pads[1], g.pads[2], g.pads[3]], dilationH: g.dilations[0], dilationW: g.dilations[1],
    outH: g.output[0], outW: g.output[1], hasBias: Boolean(n.inputs[2]),
  };
}

const colName = (node: Node) => `${node.outputs[0]}@im2col`;

registerGradientRule('Conv', {
  forward(ctx) {
    const p = convParamsOf(ctx);
    const n = ctx.node;
    const s = convTrainSizes(p);
    const col = colName(n);
    ctx.temp(col, [p.group, s.M, s.K]);
    const steps: RuleStep[] = [{ program: im2colProgram(p), bind: { x: n.inputs[0], col } }];
    const bind: Record<string, string> = { col, w: n.inputs[1], y: n.outputs[0] };
    if (p.hasBias) bind.bias = n.inputs[2];
    for (const program of conv2dTrainForwardPrograms(p, ctx.variant(conv2dTrainForwardProblem(p)), ctx.maxWorkgroupsPerDimension)) {
      steps.push({ program, bind });
    }
    return steps;
  },
  backward(ctx, [dy]) {
    const n = ctx.node;
    const grads: (string | undefined)[] = [undefined, undefined, undefined];
    if (!dy) return { steps: [], grads };
    const p = convParamsOf(ctx);
    const s = convTrainSizes(p);
    const steps: RuleStep[] = [];
    const rows = ctx.temp(`${n.outputs[0]}@dy-rows`, [p.group, s.M, s.groupOut]);
    if (ctx.wants(0) || ctx.wants(1)) steps.push({ program: convGradRowsProgram(p), bind: { dy, rows } });
    if (ctx.wants(1)) {
      const dw = ctx.temp(`grad ${n.inputs[1]}`, ctx.shape(n.inputs[1]));
      for (const program of conv2dBackwardFilterPrograms(p, ctx.variant(conv2dBackwardFilterProblem(p)), ctx.maxWorkgroupsPerDimension)) {
        steps.push({ program, bind: { rows, col: colName(n), dw } });
      }
      grads[1] = dw;
    }
    if (p.hasBias && ctx.wants(2)) {
      const db = ctx.temp(`grad ${n.inputs[2]}`, [p.outChannels]);
      steps.push({ program: channelSumProgram(p.images, p.outChannels, s.spatial), bind: { dy, db } });
      grads[2] = db;
    }
    if (ctx.wants(0)) {
      const dcol = ctx.temp(`${n.outputs[0]}@dcol`, [p.group, s.M, s.K]);
      for (const program of conv2dBackwardDataPrograms(p, ctx.variant(conv2dBackwardDataProblem(p)), ctx.maxWorkgroupsPerDimension)) {
        steps.push({ program, bind: { rows, w: n.inputs[1], dcol } });
      }
      const dx = ctx.temp(`grad ${n.inputs[0]}`, ctx.shape(n.inputs[0]));
      steps.push({ program: col2imProgram(p), bind: { dcol, dx } });
      grads[0] = dx;
    }
    return { steps, grads };
  },
});
