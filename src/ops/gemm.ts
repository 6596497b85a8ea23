// Gemm and MatMul on the shared GEMM core: inference on packed constant weights with a
// following activation as the epilogue; training forward and backward by blocks of B when B
// exceeds one storage binding.
import type { AttributeReader } from '../graph/attributes.ts';
import { broadcastShapes, dimsDisagree, showDim, showShape, type ShapeRule } from '../graph/shape-context.ts';
import { isStoredTensor, sizeOf, storedIdentity } from '../graph/tensor.ts';
import type { GemmProblem } from '../kernels/gemm.ts';
import {
  backwardAReadsDyFromBlock,
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
  type MatMulShape,
  type WeightBlock,
} from '../kernels/linear-backward.ts';
import { reduceToShapeProgram } from '../kernels/backward/elementwise.ts';
import {
  defaultGemvVariant,
  dotGemvProgram,
  dotGemvUnsupported,
  gemvPrograms,
  gemvUnsupported,
} from '../kernels/gemv.ts';
import {
  columnChunk,
  floatArrayReader,
  gemmOpProblem,
  matmulProblem,
  packB,
  packBBands,
  packedBSize,
  storedRowBands,
  storedRowChunk,
  type GemmOpParams,
  type StridedFloatReader,
} from '../kernels/linear.ts';
import {
  derivedConstant,
  type BindingRef,
  type GradientRule,
  type LowerContext,
  type OpDefinition,
  type RuleContext,
  type RuleStep,
  type StepSpec,
} from './op.ts';

/** A Gemm's problem from A's and B's dims and its attributes (C's dims when it has a C). */
function gemmParams(attrs: AttributeReader, a: number[], b: number[], cDims: number[] | undefined): GemmOpParams {
  if (a.length !== 2 || b.length !== 2) throw attrs.error(`A [${a}] and B [${b}] must be 2-D`);
  const { transA, transB, alpha, beta } = gemmAttributes(attrs);
  const [M, K] = transA ? [a[1], a[0]] : a;
  const N = transB ? b[0] : b[1];
  return { M, N, K, transA, transB, alpha, beta, cDims };
}

interface GemmAttributes {
  transA: boolean;
  transB: boolean;
  alpha: number;
  beta: number;
}

function gemmAttributes(attrs: AttributeReader): GemmAttributes {
  // As onnxruntime reads them: any non-zero value is true.
  const flag = (name: string) => attrs.int(name, 0) !== 0;
  return {
    transA: flag('transA'),
    transB: flag('transB'),
    alpha: attrs.float('alpha', 1),
    beta: attrs.float('beta', 1),
  };
}

function gemmParamsOf(ctx: Pick<RuleContext, 'node' | 'attrs' | 'shape' | 'error'>): GemmOpParams {
  const n = ctx.node;
  return gemmParams(
    ctx.attrs,
    ctx.shape(n.inputs[0]),
    ctx.shape(n.inputs[1]),
    n.inputs[2] ? ctx.shape(n.inputs[2]) : undefined,
  );
}

const gemmShape: ShapeRule = (ctx) => {
  const a = ctx.shape(0);
  const b = ctx.shape(1);
  if (a.length !== 2 || b.length !== 2)
    throw ctx.error(`A ${showShape(a)} and B ${showShape(b)} must both be 2-D (add a Flatten before Gemm)`);
  const { transA, transB } = gemmAttributes(ctx.attrs);
  const [m, ka] = transA ? [a[1], a[0]] : [a[0], a[1]];
  const [kb, n] = transB ? [b[1], b[0]] : [b[0], b[1]];
  if (typeof ka === 'number' && typeof kb === 'number' && ka !== kb) {
    throw ctx.error(
      `inner dimensions differ: A${transA ? 'ᵀ' : ''} is [${showDim(m)}, ${ka}], B${transB ? 'ᵀ' : ''} is [${kb}, ${showDim(n)}]`,
    );
  }
  if (!ctx.hasInput(2)) return [{ dtype: ctx.dtype(0), shape: [m, n] }];
  // C broadcasts to [M, N] one way only (onnxruntime refuses a C that would widen the output).
  const c = ctx.shape(2);
  // Before opset 7 C broadcasts only when the broadcast attribute says so.
  if (ctx.opset < 7 && ctx.attrs.int('broadcast', 0) === 0 && dimsDisagree(c, [m, n]))
    throw ctx.error(
      `C ${showShape(c)} is not [${showDim(m)}, ${showDim(n)}]; before opset 7 C broadcasts only with broadcast=1`,
    );
  const out = broadcastShapes(ctx, [[m, n], c]);
  if (c.length > 2 || out.some((d, i) => typeof d === 'number' && typeof [m, n][i] === 'number' && d !== [m, n][i]))
    throw ctx.error(
      `C ${showShape(c)} does not broadcast to the output [${showDim(m)}, ${showDim(n)}]; accepted: C's dims, right-aligned, each 1 or equal to M and N`,
    );
  return [{ dtype: ctx.dtype(0), shape: out }];
};

const matmulShapeRule: ShapeRule = (ctx) => {
  let a = ctx.shape(0);
  let b = ctx.shape(1);
  const aVector = a.length === 1;
  const bVector = b.length === 1;
  if (aVector) a = [1, a[0]];
  if (bVector) b = [b[0], 1];
  const k1 = a[a.length - 1];
  const k2 = b[b.length - 2];
  if (typeof k1 === 'number' && typeof k2 === 'number' && k1 !== k2)
    throw ctx.error(`inner dimensions differ: ${showShape(a)} × ${showShape(b)}`);
  const batch = broadcastShapes(ctx, [a.slice(0, -2), b.slice(0, -2)]);
  const shape = [...batch];
  if (!aVector) shape.push(a[a.length - 2]);
  if (!bVector) shape.push(b[b.length - 1]);
  return [{ dtype: ctx.dtype(0), shape }];
};

// ---- inference ----

async function lowerGemm(ctx: LowerContext): Promise<StepSpec[]> {
  const n = ctx.node;
  const { activation, output } = ctx.absorbActivation(n.outputs[0]);
  const given = gemmParams(ctx.attrs, ctx.shape(0), ctx.shape(1), n.inputs[2] ? ctx.shape(2) : undefined);
  const { M, N, K, transB } = given;
  const params = { ...given, cDims: given.beta === 0 ? undefined : given.cDims, activation };
  const cRef = params.cDims ? ctx.ref(n.inputs[2]) : undefined;
  const options = ctx.options!;
  ctx.checkBinding(M * K * 4, `input '${n.inputs[0]}'`);
  ctx.checkBinding(M * N * 4, `output '${output}'`);
  if (!ctx.isConstant(n.inputs[1])) {
    ctx.checkBinding(K * N * 4, `input '${n.inputs[1]}'`);
    const problem = gemmOpProblem(params, { packed: false });
    const variant = await options.chooseVariant(problem, 'gemm');
    const refs = [ctx.ref(n.inputs[0]), ctx.ref(n.inputs[1]), { value: output }];
    if (cRef) refs.push(cRef);
    return ctx.gemmSteps(problem, variant, refs);
  }
  if (options.denseKernel === 'dot' && transB) {
    const steps = dotGemvSteps(ctx, params, cRef, output);
    if (steps) return steps;
  }
  // Constant B: packed [K][N'] in column chunks that each fit one binding; a few rows (batch-1
  // dense layers) take the split-K GEMV where options.denseKernel asks for it.
  // Each chunk is packed a band at a time as it uploads, reading only that band's floats of B (from
  // the file, for a weight left there): neither B nor a packed chunk is ever whole on the host.
  const readB = constantReader(ctx, n.inputs[1]);
  const bOrigin = sharedSources(ctx, n.inputs[1]);
  const chunk = columnChunk(K, N, options.maxBindingBytes);
  const steps: StepSpec[] = [];
  for (let n0 = 0; n0 < N; n0 += chunk) {
    const columns = Math.min(chunk, N - n0);
    const problem = gemmOpProblem(params, { packed: true, nOffset: n0, columns });
    const packed = derivedConstant(
      `gemmB:${n.inputs[1]}:${transB}:${n0}:${columns}`,
      bOrigin && { recipe: `gemm B ${K}x${N} transB ${transB} columns ${n0}+${columns}`, sources: bOrigin },
      () => packBBands(readB, K, N, transB, n0, columns),
    );
    const refs: Record<string, BindingRef> = {
      a: ctx.ref(n.inputs[0]),
      b: { constant: packed },
      c: { value: output },
    };
    if (cRef) refs.bias = cRef;
    if (options.denseKernel === 'gemv' && gemvUnsupported(problem) === undefined) {
      steps.push(...gemvSteps(ctx, problem, refs, `${output}#splitK${n0}`));
      continue;
    }
    const variant = await options.chooseVariant(problem, 'gemm');
    steps.push(...ctx.gemmSteps(problem, variant, [refs.a, refs.b, refs.c, ...(cRef ? [cRef] : [])]));
  }
  return steps;
}

/**
 * A dense layer of a few rows whose constant B is stored [N][K] (transB), on the dot GEMV: B
 * bound as stored, in chunks of whole rows that each fit one binding, so nothing is transposed
 * on the host; a weight left in its file is read a band at a time. Undefined where the dot GEMV
 * does not apply (too many rows, or one row of B over the binding limit).
 */
function dotGemvSteps(
  ctx: LowerContext,
  params: GemmOpParams,
  cRef: BindingRef | undefined,
  output: string,
): StepSpec[] | undefined {
  const { N, K } = params;
  const name = ctx.node.inputs[1];
  const rowsPerChunk = storedRowChunk(K, N, ctx.options!.maxBindingBytes);
  if (rowsPerChunk < 1) return undefined;
  const problems: GemmProblem[] = [];
  for (let n0 = 0; n0 < N; n0 += rowsPerChunk) {
    const problem = gemmOpProblem(params, { packed: false, nOffset: n0, columns: Math.min(rowsPerChunk, N - n0) });
    if (dotGemvUnsupported(problem) !== undefined) return undefined;
    problems.push(problem);
  }
  const value = ctx.constantOf(name);
  const inMemory = value?.dtype === 'float32' && !isStoredTensor(value);
  const readB = constantReader(ctx, name);
  const bOrigin = sharedSources(ctx, name);
  return problems.map((problem) => {
    const n0 = problem.nOffset ?? 0;
    const rows = problem.N;
    const bRows = derivedConstant(
      `gemmBRows:${name}:${n0}:${rows}`,
      bOrigin && { recipe: `gemm B ${N}x${K} rows ${n0}+${rows}`, sources: bOrigin },
      // A weight in memory is bound from a view of its rows; one in its file is read in bands.
      () => (inMemory ? ctx.floatConstant(name).subarray(n0 * K, (n0 + rows) * K) : storedRowBands(readB, K, n0, rows)),
    );
    const refs: BindingRef[] = [ctx.ref(ctx.node.inputs[0]), { constant: bRows }, { value: output }];
    if (cRef) refs.push(cRef);
    return ctx.step(dotGemvProgram(problem), refs);
  });
}

/** A constant B as the sources of a shared upload's origin: its floats, or the identity of its
 * bytes when it stays in its file (nothing read); undefined for one left in a store that has
 * none (fingerprinting would read the whole weight, which lean loading avoids). */
function sharedSources(ctx: LowerContext, name: string): (Float32Array | string)[] | undefined {
  const value = ctx.constantOf(name);
  if (!value || (isStoredTensor(value) && storedIdentity(value) === undefined)) return undefined;
  return [ctx.sharingSource(name)];
}

/** Reads a constant B's floats where they are (its file, for a weight left there); a B of
 * another type is converted, or refused naming the node, here. */
function constantReader(ctx: LowerContext, name: string): StridedFloatReader {
  if (ctx.constantOf(name)?.dtype !== 'float32') return floatArrayReader(ctx.floatConstant(name));
  return (...pieces) => ctx.readConstantFloats(name, ...pieces);
}

/** A GEMV's steps, its bindings taken by name from `refs`; the partial sums of a split K go to a temporary named `partial`. */
function gemvSteps(
  ctx: LowerContext,
  problem: GemmProblem,
  refs: Record<string, BindingRef>,
  partial: string,
): StepSpec[] {
  const plan = gemvPrograms(problem, defaultGemvVariant(problem));
  if (plan.partialFloats) {
    ctx.checkBinding(plan.partialFloats * 4, `the split-K partial sums of '${ctx.node.outputs[0]}'`);
    ctx.temporary(partial, [plan.partialFloats]);
    refs = { ...refs, partial: { value: partial } };
  }
  return plan.programs.map((program) =>
    ctx.step(
      program,
      program.bindings.filter((b) => b.name !== 'params').map((b) => refs[b.name]),
    ),
  );
}

function checkMatMul(ctx: LowerContext): void {
  const n = ctx.node;
  const [a, b] = [0, 1].map((i) => ctx.graph.values.get(n.inputs[i])?.shape);
  if (a?.every((d) => typeof d === 'number') && b?.every((d) => typeof d === 'number')) {
    try {
      matmulProblem(a as number[], b as number[]);
    } catch (e) {
      throw ctx.error((e as Error).message);
    }
  }
}

async function lowerMatMul(ctx: LowerContext): Promise<StepSpec[]> {
  const n = ctx.node;
  const aDims = ctx.shape(0);
  const bDims = ctx.shape(1);
  const { activation, output } = ctx.absorbActivation(n.outputs[0]);
  const constantB = ctx.isConstant(n.inputs[1]);
  const problem = { ...matmulProblem(aDims, bDims, constantB), activation };
  ctx.checkBinding(sizeOf(aDims) * 4, `input '${n.inputs[0]}'`);
  ctx.checkBinding(sizeOf(ctx.outputShape()) * 4, `output '${output}'`);
  const variant = await ctx.options!.chooseVariant(problem, 'gemm');
  let bRef: BindingRef;
  if (constantB) {
    const b2 = bDims.length === 1 ? [bDims[0], 1] : bDims;
    const K = b2[b2.length - 2];
    const N = b2[b2.length - 1];
    const batch = sizeOf(b2.slice(0, -2));
    ctx.checkBinding(packedBSize(K, N, batch) * 4, `packed weights '${n.inputs[1]}'`);
    // One B is packed in bands as it uploads (see lowerGemm); a batch of them whole.
    const sources = sharedSources(ctx, n.inputs[1]);
    const packed = derivedConstant(
      `matmulB:${n.inputs[1]}`,
      sources && { recipe: `matmul B ${batch}x${K}x${N}`, sources },
      () =>
        batch === 1
          ? packBBands(constantReader(ctx, n.inputs[1]), K, N, false, 0, N)
          : packB(ctx.floatConstant(n.inputs[1]), K, N, false, 0, N, batch),
    );
    bRef = { constant: packed };
  } else {
    bRef = ctx.ref(n.inputs[1]);
    ctx.checkBinding(sizeOf(bDims) * 4, `input '${n.inputs[1]}'`);
  }
  return ctx.gemmSteps(problem, variant, [ctx.ref(n.inputs[0]), bRef, { value: output }]);
}

// ---- training ----

/** Block starts are multiples of this many floats (256 bytes: the largest minStorageBufferOffsetAlignment WebGPU allows). */
const BLOCK_ALIGN_FLOATS = 64;

/**
 * The blocks of B's stored rows when B (and so dB) is larger than one binding (see WeightBlock),
 * or undefined when it fits whole. Every block fits maxBindingBytes and starts at a multiple of
 * 64 floats in B (and at column 64·j of dY when dY is read through a view). Refuses, naming the
 * node, a B whose rows are too long to split so.
 */
function weightBlocks(
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

const gemmGradient: GradientRule = {
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
};

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

const matmulGradient: GradientRule = {
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
};

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

export const gemm: OpDefinition = {
  attributes: ['alpha', 'beta', 'transA', 'transB', { name: 'broadcast', until: 6 }],
  shape: gemmShape,
  runtime: { kind: 'steps', lower: lowerGemm },
  gradient: gemmGradient,
};

export const matmul: OpDefinition = {
  attributes: [],
  shape: matmulShapeRule,
  runtime: { kind: 'steps', check: checkMatMul, lower: lowerMatMul },
  gradient: matmulGradient,
};
