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
  type MatMulShape,
  matmulTrainForwardPrograms,
  backwardAReadsDyFromBlock,
  type WeightBlock,
} from './linear-backward.ts';
import type { GemmOpParams } from './linear.ts';
import { reduceToShapeProgram } from './backward/elementwise.ts';

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
    M,
    N,
    K,
    transA,
    transB,
    alpha: ctx.attrs.float('alpha', 1),
    beta: ctx.attrs.float('beta', 1),
    cDims: n.inputs[2] ? ctx.shape(n.inputs[2]) : undefined,
  };
}

/** Block starts are multiples of this many floats (256 bytes: the largest minStorageBufferOffsetAlignment WebGPU allows). */
const BLOCK_ALIGN_FLOATS = 64;

/**
 * The blocks of B's stored rows when B (and so dB) is larger than one binding (see WeightBlock),
 * or undefined when it fits whole. Every block fits maxBindingBytes and starts at a multiple of
 * 64 floats in B (and at column 64·j of dY when dY is read through a view). Refuses, naming the
 * node, a B whose rows are too long to split so.
 */
export function weightBlocks(
  ctx: Pick<RuleContext, 'maxBindingBytes' | 'error' | 'node'>,
  p: GemmOpParams,
): WeightBlock[] | undefined {
  const max = ctx.maxBindingBytes;
  const [rows, rowLength] = p.transB ? [p.N, p.K] : [p.K, p.N];
  const bytes = 4 * rows * rowLength;
  if (max === undefined || Math.ceil(bytes / 16) * 16 <= max) return undefined;
  // Rows per block: a multiple of `step`, so that every block's first float is 64-aligned.
  const step = backwardAReadsDyFromBlock(p)
    ? BLOCK_ALIGN_FLOATS
    : BLOCK_ALIGN_FLOATS / gcd(rowLength, BLOCK_ALIGN_FLOATS);
  const count = Math.floor(max / (4 * rowLength * step)) * step;
  if (count === 0) {
    throw ctx.error(
      `weight '${ctx.node.inputs[1]}' [${p.transB ? `${p.N}, ${p.K}` : `${p.K}, ${p.N}`}] takes ${bytes} bytes, over the binding limit of ${max} bytes, ` +
        `and cannot be split into row blocks: ${step} rows of ${rowLength} floats (${4 * step * rowLength} bytes) already exceed it`,
    );
  }
  const blocks: WeightBlock[] = [];
  for (let start = 0; start < rows; start += count) blocks.push({ start, count: Math.min(count, rows - start) });
  return blocks;
}

/** The view of a block of B's rows (rowLength floats each). */
function rowsView(block: WeightBlock, rowLength: number): { offset: number; bytes: number } {
  return { offset: 4 * block.start * rowLength, bytes: 4 * block.count * rowLength };
}

/** The training forward of a Gemm (or of a MatMul with a shared B, a Gemm over its folded rows), by blocks of B when it exceeds one binding. */
function gemmForwardSteps(ctx: RuleContext, p: GemmOpParams, bind: Record<string, string>): RuleStep[] {
  const blocks = weightBlocks(ctx, p);
  if (!blocks)
    return gemmTrainForwardPrograms(p, ctx.variant(gemmTrainForwardProblem(p)), ctx.maxWorkgroupsPerDimension).map(
      (program) => ({ program, bind }),
    );
  const rowLength = p.transB ? p.K : p.N;
  return blocks.flatMap((block) =>
    gemmTrainForwardPrograms(
      p,
      ctx.variant(gemmTrainForwardProblem(p, block)),
      ctx.maxWorkgroupsPerDimension,
      block,
    ).map((program) => ({ program, bind, views: { b: rowsView(block, rowLength) } })),
  );
}

/** dA (bindings dy, b, da) and dB (a, dy, db) of a Gemm, by blocks of B when it exceeds one binding. */
function gemmBackwardSteps(
  ctx: RuleContext,
  p: GemmOpParams,
  names: { a: string; b: string; dy: string },
  da: string | undefined,
  db: string | undefined,
): RuleStep[] {
  const steps: RuleStep[] = [];
  const blocks = weightBlocks(ctx, p);
  const maxPerDim = ctx.maxWorkgroupsPerDimension;
  const rowLength = p.transB ? p.K : p.N;
  for (const block of blocks ?? [undefined]) {
    const view = block && rowsView(block, rowLength);
    if (da) {
      const views: Record<string, { offset: number; bytes: number }> = {};
      if (view) views.b = view;
      if (block && backwardAReadsDyFromBlock(p))
        views.dy = { offset: 4 * block.start, bytes: 4 * (p.M * p.N - block.start) };
      for (const program of gemmBackwardAPrograms(p, ctx.variant(gemmBackwardAProblem(p, block)), maxPerDim, block)) {
        steps.push({ program, bind: { dy: names.dy, b: names.b, da }, ...(view ? { views } : {}) });
      }
    }
    if (db) {
      for (const program of gemmBackwardBPrograms(p, ctx.variant(gemmBackwardBProblem(p, block)), maxPerDim, block)) {
        steps.push({ program, bind: { a: names.a, dy: names.dy, db }, ...(view ? { views: { db: view } } : {}) });
      }
    }
  }
  return steps;
}

registerGradientRule('Gemm', {
  forward(ctx) {
    const p = gemmParamsOf(ctx);
    const n = ctx.node;
    const bind: Record<string, string> = { a: n.inputs[0], b: n.inputs[1], y: n.outputs[0] };
    if (p.cDims) bind.bias = n.inputs[2];
    return gemmForwardSteps(ctx, p, bind);
  },
  backward(ctx, [dy]) {
    const n = ctx.node;
    const grads: (string | undefined)[] = [undefined, undefined, undefined];
    if (!dy) return { steps: [], grads };
    const p = gemmParamsOf(ctx);
    if (ctx.wants(0)) grads[0] = ctx.temp(`grad ${n.inputs[0]}`, ctx.shape(n.inputs[0]));
    if (ctx.wants(1)) grads[1] = ctx.temp(`grad ${n.inputs[1]}`, ctx.shape(n.inputs[1]));
    const steps = gemmBackwardSteps(ctx, p, { a: n.inputs[0], b: n.inputs[1], dy }, grads[0], grads[1]);
    if (p.cDims && ctx.wants(2)) {
      const dc = ctx.temp(`grad ${n.inputs[2]}`, p.cDims);
      steps.push({ program: reduceToShapeProgram([p.M, p.N], p.cDims, { scale: p.beta }), bind: { dy, dx: dc } });
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

/**
 * A MatMul whose B has no batch and is larger than one binding, as the Gemm it is over A's
 * folded rows ([batch·M, K] · [K, N]): split into blocks of B's rows like a Gemm. Undefined when
 * B fits whole or has a batch (then the plan refuses a too-large B, naming it).
 */
function splitMatMul(ctx: RuleContext, s: MatMulShape): GemmOpParams | undefined {
  if (!s.bShared) return undefined;
  const p: GemmOpParams = { M: s.batch * s.M, N: s.N, K: s.K, transA: false, transB: false, alpha: 1, beta: 1 };
  return weightBlocks(ctx, p) ? p : undefined;
}

registerGradientRule('MatMul', {
  forward(ctx) {
    const s = matmulShapeOf(ctx);
    const n = ctx.node;
    const split = splitMatMul(ctx, s);
    if (split) return gemmForwardSteps(ctx, split, { a: n.inputs[0], b: n.inputs[1], y: n.outputs[0] });
    const probe = { M: s.bShared ? s.batch * s.M : s.M, N: s.N } as GemmProblem;
    return matmulTrainForwardPrograms(s, ctx.variant(probe), ctx.maxWorkgroupsPerDimension).map((program) => ({
      program,
      bind: { a: n.inputs[0], b: n.inputs[1], y: n.outputs[0] },
    }));
  },
  backward(ctx, [dy]) {
    const n = ctx.node;
    const grads: (string | undefined)[] = [undefined, undefined];
    if (!dy) return { steps: [], grads };
    const s = matmulShapeOf(ctx);
    const split = splitMatMul(ctx, s);
    if (split) {
      if (ctx.wants(0)) grads[0] = ctx.temp(`grad ${n.inputs[0]}`, ctx.shape(n.inputs[0]));
      if (ctx.wants(1)) grads[1] = ctx.temp(`grad ${n.inputs[1]}`, ctx.shape(n.inputs[1]));
      return {
        steps: gemmBackwardSteps(ctx, split, { a: n.inputs[0], b: n.inputs[1], dy }, grads[0], grads[1]),
        grads,
      };
    }
    const steps: RuleStep[] = [];
    if (ctx.wants(0) && s.aShared) {
      throw ctx.error(
        `'${n.inputs[0]}' [${ctx.shape(n.inputs[0])}] has no batch while B [${ctx.shape(n.inputs[1])}] has one: its gradient (a sum over B's batch) is not supported; accepted: a constant A, or A with B's batch`,
      );
    }
    if (ctx.wants(0)) {
      const da = ctx.temp(`grad ${n.inputs[0]}`, ctx.shape(n.inputs[0]));
      const probe = { M: s.bShared ? s.batch * s.M : s.M, N: s.K } as GemmProblem;
      for (const program of matmulBackwardAPrograms(s, ctx.variant(probe), ctx.maxWorkgroupsPerDimension))
        steps.push({ program, bind: { dy, b: n.inputs[1], da } });
      grads[0] = da;
    }
    if (ctx.wants(1)) {
      const db = ctx.temp(`grad ${n.inputs[1]}`, ctx.shape(n.inputs[1]));
      const probe = { M: s.K, N: s.N } as GemmProblem;
      for (const program of matmulBackwardBPrograms(s, ctx.variant(probe), ctx.maxWorkgroupsPerDimension))
        steps.push({ program, bind: { a: n.inputs[0], dy, db } });
      grads[1] = db;
    }
    return { steps, grads };
  },
});

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}
