// The gradient rules of Gemm and MatMul on the shared GEMM core.
import type { GemmProblem } from './gemm.ts';
import { registerGradientRule, type RuleContext, type RuleStep } from './gradient-registry.ts';
import {
  gemmBackwardAPrograms,
  gemmBackwardAProblem,
  gemmBackwardBPrograms,
  gemmBackwardBProblem,
  gemmTrainForwardPrograms,
  gemmTrainForwardProblem,
  matmulBackwardAPrograms,
  matmulBackwardBPrograms,
  matmulShape,
  matmulTrainForwardPrograms,
  reduceToBroadcastProgram,
} from './linear-backward.ts';
import type { GemmOpParams } from './linear.ts';

// ---- Gemm and MatMul ----

export function gemmParamsOf(ctx: Pick<RuleContext, 'node' | 'attrs' | 'shape' | 'error'>): GemmOpParams {
  const n = ctx.node;
  const a = ctx.shape(n.inputs[0]);
  const b = ctx.shape(n.inputs[1]);
  if (a.length !== 2 || b.length !== 2) throw ctx.error(`A [${a}] and B [${b}] must be 2-D`);
  const transA = ctx.attrs.int('transA', 0) === 1;
  const transB = ctx.attrs.int('transB', 0) === 1;
  const [M, K] = transA ? [a[1], a[0]] : a;
  const N = transB ? b[0] : b[1];
  return {
    M, N, K, transA, transB,
    alpha: ctx.attrs.float('alpha', 1), beta: ctx.attrs.float('beta', 1),
    cDims: n.inputs[2] ? ctx.shape(n.inputs[2]) : undefined,
  };
}

registerGradientRule('Gemm', {
  forward(ctx) {
    const p = gemmParamsOf(ctx);
    const n = ctx.node;
    const bind: Record<string, string> = { a: n.inputs[0], b: n.inputs[1], y: n.outputs[0] };
    if (p.cDims) bind.bias = n.inputs[2];
    return gemmTrainForwardPrograms(p, ctx.variant(gemmTrainForwardProblem(p)), ctx.maxWorkgroupsPerDimension).map((program) => ({ program, bind }));
  },
  backward(ctx, [dy]) {
    const n = ctx.node;
    const grads: (string | undefined)[] = [undefined, undefined, undefined];
    if (!dy) return { steps: [], grads };
    const p = gemmParamsOf(ctx);
    const steps: RuleStep[] = [];
    if (ctx.wants(0)) {
      const da = ctx.temp(`grad ${n.inputs[0]}`, ctx.shape(n.inputs[0]));
      for (const program of gemmBackwardAPrograms(p, ctx.variant(gemmBackwardAProblem(p)), ctx.maxWorkgroupsPerDimension)) {
        steps.push({ program, bind: { dy, b: n.inputs[1], da } });
      }
      grads[0] = da;
    }
    if (ctx.wants(1)) {
      const db = ctx.temp(`grad ${n.inputs[1]}`, ctx.shape(n.inputs[1]));
      for (const program of gemmBackwardBPrograms(p, ctx.variant(gemmBackwardBProblem(p)), ctx.maxWorkgroupsPerDimension)) {
        steps.push({ program, bind: { a: n.inputs[0], dy, db } });
      }
      grads[1] = db;
    }
    if (p.cDims && ctx.wants(2)) {
      const dc = ctx.temp(`grad ${n.inputs[2]}`, p.cDims);
      steps.push({ program: reduceToBroadcastProgram(p.cDims, p.M, p.N, p.beta), bind: { dy, dc } });
      grads[2] = dc;
    }
    return { steps, grads };
  },
});

function matmulShapeOf(ctx: RuleContext) {
  try {
    return matmulShape(ctx.shape(ctx.node.inputs[0]), ctx.shape(ctx.node.inputs[1]));
  } catch (e) {
    throw ctx.error((e as Error).message);
  }
}

registerGradientRule('MatMul', {
  forward(ctx) {
    const s = matmulShapeOf(ctx);
    const n = ctx.node;
    const probe = { M: s.bShared ? s.batch * s.M : s.M, N: s.N } as GemmProblem;
    return matmulTrainForwardPrograms(s, ctx.variant(probe), ctx.maxWorkgroupsPerDimension).map((program) => ({
      program, bind: { a: n.inputs[0], b: n.inputs[1], y: n.outputs[0] },
    }));
  },
  backward(ctx, [dy]) {
    const n = ctx.node;
    const grads: (string | undefined)[] = [undefined, undefined];
    if (!dy) return { steps: [], grads };
    const s = matmulShapeOf(ctx);
    const steps: RuleStep[] = [];
    if (ctx.wants(0)) {
      const da = ctx.temp(`grad ${n.inputs[0]}`, ctx.shape(n.inputs[0]));
      const probe = { M: s.bShared ? s.batch * s.M : s.M, N: s.K } as GemmProblem;
      for (const program of matmulBackwardAPrograms(s, ctx.variant(probe), ctx.maxWorkgroupsPerDimension)) steps.push({ program, bind: { dy, b: n.inputs[1], da } });
      grads[0] = da;
    }
    if (ctx.wants(1)) {
      const db = ctx.temp(`grad ${n.inputs[1]}`, ctx.shape(n.inputs[1]));
      const probe = { M: s.K, N: s.N } as GemmProblem;
      for (const program of matmulBackwardBPrograms(s, ctx.variant(probe), ctx.maxWorkgroupsPerDimension)) steps.push({ program, bind: { a: n.inputs[0], dy, db } });
      grads[1] = db;
    }
    return { steps, grads };
  },
});
