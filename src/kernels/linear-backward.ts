// Backward of ONNX Gemm and MatMul on the shared GEMM core. For Y = alpha·op(A)·op(B) + beta·C:
//   dA = alpha·dY·op(B)ᵀ (transA: alpha·op(B)·dYᵀ),  dB = alpha·op(A)ᵀ·dY (transB: alpha·dYᵀ·op(A)),
//   dC = beta · dY summed over the dims C is broadcast along.
// Each transposition is a layout choice ('mk'/'km' for A, 'kn'/'nk' for B): nothing is copied.
import { gemmPrograms, type GemmProblem, type GemmVariant } from './gemm.ts';
import { renameBindings, type KernelProgram } from './shader.ts';
import { biasStrides, type GemmOpParams } from './linear.ts';

/**
 * A block of B's stored rows, for a B too large for one storage binding: rows [start,
 * start + count) of B as stored, i.e. output columns [start, start + count) when transB (B is
 * [N, K]) and reduction indices [start, start + count) otherwise (B is [K, N]). With a block, the
 * problems below address B and dB as the block alone (the step binds a view of it: contiguous
 * rows) and every other operand whole, at the block's columns or rows:
 *   transB:   y[:, blk] = op(A)·Bblkᵀ;  dA += dY[:, blk]·Bblk;      dBblk = dY[:, blk]ᵀ·op(A)
 *   !transB:  y += op(A)[:, blk]·Bblk;  dA[:, blk] = dY·Bblkᵀ;       dBblk = op(A)[:, blk]ᵀ·dY
 * The sums (y for !transB, dA for transB) overwrite at the first block (start 0) and accumulate
 * after it. Without a block: the whole of B, the problems of an unsplit Gemm.
 */
export interface WeightBlock {
  start: number;
  count: number;
}

function blockOf(p: GemmOpParams, block?: WeightBlock): WeightBlock {
  return block ?? { start: 0, count: p.transB ? p.N : p.K };
}

/**
 * Whether the dA problem of a block reads dY through a view that starts at the block's first
 * column (transA and transB: dY is the GEMM's B operand, which has no offset of its own): the
 * rule binds dY from byte 4·block.start, which block starts at multiples of 64 keep aligned.
 */
export function backwardAReadsDyFromBlock(p: GemmOpParams): boolean {
  return p.transA && p.transB;
}

/** dA (the shape of A as given: [M, K], or [K, M] when transA). Bindings: dy, b, da. */
export function gemmBackwardAProblem(p: GemmOpParams, block?: WeightBlock): GemmProblem {
  const { M, N, K } = p;
  const { start, count } = blockOf(p, block);
  const label = block ? ` (B rows ${start}+${count})` : '';
  if (p.transB) {
    // Over output columns [start, start + count): dA += the block's share, summed over blocks.
    const accumulate = start > 0;
    if (!p.transA) {
      // dA[M][K] = dY[M][blk] · Bblk[blk][K].
      return {
        label: `gemm dA ${M}×${K}${label}`,
        batch: 1,
        M,
        N: K,
        K: count,
        alpha: p.alpha,
        accumulate,
        a: { kind: 'matrix', layout: 'mk', batchStride: 0, ld: N, offset: start },
        b: { layout: 'kn', batchStride: 0, ld: K },
        c: { kind: 'matrix', batchStride: 0, strideM: K, strideN: 1 },
      };
    }
    // dA[K][M] = Bblkᵀ[K][blk] · dY[:, blk]ᵀ (dY bound from column `start`: see backwardAReadsDyFromBlock).
    return {
      label: `gemm dAᵀ ${K}×${M}${label}`,
      batch: 1,
      M: K,
      N: M,
      K: count,
      alpha: p.alpha,
      accumulate,
      a: { kind: 'matrix', layout: 'km', batchStride: 0, ld: K },
      b: { layout: 'nk', batchStride: 0, ld: N },
      c: { kind: 'matrix', batchStride: 0, strideM: M, strideN: 1 },
    };
  }
  // Over reduction indices [start, start + count): the block writes its own columns (rows when transA) of dA.
  if (!p.transA) {
    // dA[M][blk] = dY[M][N] · Bblkᵀ[N][blk].
    return {
      label: `gemm dA ${M}×${K}${label}`,
      batch: 1,
      M,
      N: count,
      K: N,
      alpha: p.alpha,
      a: { kind: 'matrix', layout: 'mk', batchStride: 0, ld: N },
      b: { layout: 'nk', batchStride: 0, ld: N },
      c: { kind: 'matrix', batchStride: 0, strideM: K, strideN: 1, offset: start },
    };
  }
  // dA[blk][M] = Bblk[blk][N] · dYᵀ.
  return {
    label: `gemm dAᵀ ${K}×${M}${label}`,
    batch: 1,
    M: count,
    N: M,
    K: N,
    alpha: p.alpha,
    a: { kind: 'matrix', layout: 'mk', batchStride: 0, ld: N },
    b: { layout: 'nk', batchStride: 0, ld: N },
    c: { kind: 'matrix', batchStride: 0, strideM: M, strideN: 1, offset: start * M },
  };
}

/** dB (the shape of B as given: [K, N], or [N, K] when transB), or its block. Bindings: a, dy, db. */
export function gemmBackwardBProblem(p: GemmOpParams, block?: WeightBlock): GemmProblem {
  const { M, N, K } = p;
  const { start, count } = blockOf(p, block);
  const label = block ? ` (rows ${start}+${count})` : '';
  if (!p.transB) {
    // dBblk[blk][N] = op(A)ᵀ[blk][M] · dY[M][N].
    return {
      label: `gemm dB ${K}×${N}${label}`,
      batch: 1,
      M: count,
      N,
      K: M,
      alpha: p.alpha,
      a: p.transA
        ? { kind: 'matrix', layout: 'mk', batchStride: 0, ld: M, offset: start * M }
        : { kind: 'matrix', layout: 'km', batchStride: 0, ld: K, offset: start },
      b: { layout: 'kn', batchStride: 0, ld: N },
      c: { kind: 'matrix', batchStride: 0, strideM: N, strideN: 1 },
    };
  }
  // dBblk[blk][K] = dY[:, blk]ᵀ · op(A)[M][K].
  return {
    label: `gemm dBᵀ ${N}×${K}${label}`,
    batch: 1,
    M: count,
    N: K,
    K: M,
    alpha: p.alpha,
    a: { kind: 'matrix', layout: 'km', batchStride: 0, ld: N, offset: start },
    b: p.transA ? { layout: 'nk', batchStride: 0, ld: M } : { layout: 'kn', batchStride: 0, ld: K },
    c: { kind: 'matrix', batchStride: 0, strideM: K, strideN: 1 },
  };
}

export function gemmBackwardAPrograms(
  p: GemmOpParams,
  variant: GemmVariant,
  maxPerDim?: number,
  block?: WeightBlock,
): KernelProgram[] {
  const problem = gemmBackwardAProblem(p, block);
  // op(A)'s gradient GEMM reads (dY, B) when !transA and (B, dY) when transA.
  const names = p.transA ? { a: 'b', b: 'dy', c: 'da' } : { a: 'dy', b: 'b', c: 'da' };
  return renameBindings(gemmPrograms(problem, variant, maxPerDim), names, 'gemm-dA');
}

export function gemmBackwardBPrograms(
  p: GemmOpParams,
  variant: GemmVariant,
  maxPerDim?: number,
  block?: WeightBlock,
): KernelProgram[] {
  const problem = gemmBackwardBProblem(p, block);
  const names = p.transB ? { a: 'dy', b: 'a', c: 'db' } : { a: 'a', b: 'dy', c: 'db' };
  return renameBindings(gemmPrograms(problem, variant, maxPerDim), names, 'gemm-dB');
}

/**
 * The training forward of Gemm with B unpacked (a parameter buffer in ONNX layout), or of one
 * block of B (see WeightBlock). Bindings: a, b, y, [bias].
 */
export function gemmTrainForwardProblem(p: GemmOpParams, block?: WeightBlock): GemmProblem {
  const { start, count } = blockOf(p, block);
  const label = `gemm train ${p.M}×${p.N}×${p.K}${block ? ` (B rows ${start}+${count})` : ''}`;
  const bias = p.cDims ? { ...biasStrides(p.cDims, p.M, p.N), batchStride: 0, beta: p.beta } : undefined;
  if (p.transB) {
    // Output columns [start, start + count): nOffset moves C's and the bias's column.
    return {
      label,
      batch: 1,
      M: p.M,
      N: count,
      K: p.K,
      alpha: p.alpha,
      nOffset: start,
      a: { kind: 'matrix', layout: p.transA ? 'km' : 'mk', batchStride: 0, ld: p.transA ? p.M : p.K },
      b: { layout: 'nk', batchStride: 0, ld: p.K },
      c: { kind: 'matrix', batchStride: 0, strideM: p.N, strideN: 1 },
      bias,
    };
  }
  // Reduction indices [start, start + count): op(A)'s columns there; the first block adds the
  // bias, the others accumulate.
  return {
    label,
    batch: 1,
    M: p.M,
    N: p.N,
    K: count,
    alpha: p.alpha,
    accumulate: start > 0,
    a: p.transA
      ? { kind: 'matrix', layout: 'km', batchStride: 0, ld: p.M, offset: start * p.M }
      : { kind: 'matrix', layout: 'mk', batchStride: 0, ld: p.K, offset: start },
    b: { layout: 'kn', batchStride: 0, ld: p.N },
    c: { kind: 'matrix', batchStride: 0, strideM: p.N, strideN: 1 },
    bias: start > 0 ? undefined : bias,
  };
}

export function gemmTrainForwardPrograms(
  p: GemmOpParams,
  variant: GemmVariant,
  maxPerDim?: number,
  block?: WeightBlock,
): KernelProgram[] {
  return renameBindings(
    gemmPrograms(gemmTrainForwardProblem(p, block), variant, maxPerDim),
    { a: 'a', b: 'b', c: 'y' },
    'gemm-train',
  );
}

/** Shapes of a MatMul that the backward supports: rank ≥ 2 operands; batches equal, or one side shared. */
export interface MatMulShape {
  batch: number;
  M: number;
  K: number;
  N: number;
  /** B has no batch (a weight shared by every batch of A): rows of A fold into one GEMM. */
  bShared: boolean;
  /** A has no batch and B has one (an averaging matrix applied to every map): A's batch stride is 0. */
  aShared?: boolean;
}

export function matmulShape(aDims: number[], bDims: number[]): MatMulShape {
  if (aDims.length < 2 || bDims.length < 2)
    throw new Error(`matmul backward: 1-D operands ([${aDims}] × [${bDims}]) are not supported; accepted: rank ≥ 2`);
  const M = aDims[aDims.length - 2];
  const K = aDims[aDims.length - 1];
  const N = bDims[bDims.length - 1];
  const batchA = aDims.slice(0, -2).reduce((x, y) => x * y, 1);
  const batchB = bDims.slice(0, -2).reduce((x, y) => x * y, 1);
  if (batchB === 1) return { batch: batchA, M, K, N, bShared: true };
  if (aDims.length === 2) return { batch: batchB, M, K, N, bShared: false, aShared: true };
  const same = aDims.length === bDims.length && aDims.slice(0, -2).every((d, i) => d === bDims[i]);
  if (!same)
    throw new Error(
      `matmul backward: batch dims of [${aDims}] and [${bDims}] differ; accepted: equal batches, or a B without batch`,
    );
  return { batch: batchA, M, K, N, bShared: false };
}

/** dA = dY · Bᵀ. Bindings: dy, b, da. */
export function matmulBackwardAPrograms(s: MatMulShape, variant: GemmVariant, maxPerDim?: number): KernelProgram[] {
  // Σ over B's batch of dY[b]·B[b]ᵀ would take one accumulating GEMM per batch entry; a shared A
  // is a constant in every graph seen so far (adaptive-pool averaging matrices).
  if (s.aShared)
    throw new Error(
      `matmul backward: the gradient of an A without batch against a batched B (${s.batch} entries) is not supported; accepted: A with B's batch, or a constant A`,
    );
  const rows = s.bShared ? s.batch * s.M : s.M;
  const batch = s.bShared ? 1 : s.batch;
  const problem: GemmProblem = {
    label: `matmul dA ${batch}×${rows}×${s.K}`,
    batch,
    M: rows,
    N: s.K,
    K: s.N,
    a: { kind: 'matrix', layout: 'mk', batchStride: rows * s.N, ld: s.N },
    b: { layout: 'nk', batchStride: s.bShared ? 0 : s.K * s.N, ld: s.N },
    c: { kind: 'matrix', batchStride: rows * s.K, strideM: s.K, strideN: 1 },
  };
  return renameBindings(gemmPrograms(problem, variant, maxPerDim), { a: 'dy', b: 'b', c: 'da' }, 'matmul-dA');
}

/** dB = Aᵀ · dY (summed over A's batch when B is shared). Bindings: a, dy, db. */
export function matmulBackwardBPrograms(s: MatMulShape, variant: GemmVariant, maxPerDim?: number): KernelProgram[] {
  const inner = s.bShared ? s.batch * s.M : s.M;
  const batch = s.bShared ? 1 : s.batch;
  const problem: GemmProblem = {
    label: `matmul dB ${batch}×${s.K}×${s.N}`,
    batch,
    M: s.K,
    N: s.N,
    K: inner,
    a: { kind: 'matrix', layout: 'km', batchStride: s.aShared ? 0 : inner * s.K, ld: s.K },
    b: { layout: 'kn', batchStride: inner * s.N, ld: s.N },
    c: { kind: 'matrix', batchStride: s.K * s.N, strideM: s.N, strideN: 1 },
  };
  return renameBindings(gemmPrograms(problem, variant, maxPerDim), { a: 'a', b: 'dy', c: 'db' }, 'matmul-dB');
}

/** The training forward of MatMul with an unpacked B. Bindings: a, b, y. */
export function matmulTrainForwardPrograms(s: MatMulShape, variant: GemmVariant, maxPerDim?: number): KernelProgram[] {
  const rows = s.bShared ? s.batch * s.M : s.M;
  const batch = s.bShared ? 1 : s.batch;
  const problem: GemmProblem = {
    label: `matmul train ${batch}×${rows}×${s.N}×${s.K}`,
    batch,
    M: rows,
    N: s.N,
    K: s.K,
    a: { kind: 'matrix', layout: 'mk', batchStride: s.aShared ? 0 : rows * s.K, ld: s.K },
    b: { layout: 'kn', batchStride: s.bShared ? 0 : s.K * s.N, ld: s.N },
    c: { kind: 'matrix', batchStride: rows * s.N, strideM: s.N, strideN: 1 },
  };
  return renameBindings(gemmPrograms(problem, variant, maxPerDim), { a: 'a', b: 'b', c: 'y' }, 'matmul-train');
}
