// ONNX Gemm and MatMul on the GEMM core: attribute and broadcasting rules turned into a
// GemmProblem. Constant B operands (weights) are packed on the host as [K][N padded to 8], the
// layout the register kernel reads with aligned vec4 loads, and can be split into column chunks
// whose binding fits maxStorageBufferBindingSize (VGG's fc6 weight is 411 MB).
import { roundUp, type GemmProblem } from './gemm.ts';
import { NO_ACTIVATION, type Activation } from './program.ts';

export const PACK_MULTIPLE = 8;

export interface GemmOpParams {
  M: number;
  N: number;
  K: number;
  transA: boolean;
  transB: boolean;
  alpha: number;
  beta: number;
  /** Dims of C (rank ≤ 2, unidirectionally broadcastable to [M, N]), or undefined. */
  cDims?: number[];
  activation?: Activation;
}

export interface BOperand {
  /** B packed by packB (for this chunk): [K][roundUp(columns, 8)]. */
  packed: boolean;
  /** First column of this chunk and its width (default: all N). */
  nOffset?: number;
  columns?: number;
}

/** Y[M, N] = act(alpha·op(A)·op(B) + beta·C). Bindings: a, b, c (Y), bias (C) when given. */
export function gemmOpProblem(p: GemmOpParams, b: BOperand): GemmProblem {
  const nOffset = b.nOffset ?? 0;
  const columns = b.columns ?? p.N;
  return {
    label: `gemm ${p.M}×${p.N}×${p.K}${p.transA ? ' Aᵀ' : ''}${p.transB ? ' Bᵀ' : ''}${columns !== p.N ? ` cols ${nOffset}…${nOffset + columns}` : ''}`,
    batch: 1,
    M: p.M,
    N: columns,
    K: p.K,
    a: { kind: 'matrix', layout: p.transA ? 'km' : 'mk', batchStride: 0 },
    b: b.packed
      ? { layout: 'kn', batchStride: 0, ld: roundUp(columns, PACK_MULTIPLE), padded: true }
      : { layout: p.transB ? 'nk' : 'kn', batchStride: 0, ld: p.transB ? p.K : p.N },
    c: { kind: 'matrix', batchStride: 0, strideM: p.N, strideN: 1 },
    alpha: p.alpha,
    bias: p.cDims ? { ...biasStrides(p.cDims, p.M, p.N), batchStride: 0, beta: p.beta } : undefined,
    activation: p.activation ?? NO_ACTIVATION,
    nOffset,
  };
}

/**
 * numpy MatMul [..., M, K] × [..., K, N] with broadcast batch dims, as one batched GEMM. Each
 * operand's batch must be either the full broadcast batch or all ones (then it is shared).
 * 1-D operands are promoted as numpy does. Bindings: a, b, c.
 */
export function matmulProblem(aDims: number[], bDims: number[], bPacked = false): GemmProblem {
  const a = aDims.length === 1 ? [1, aDims[0]] : aDims;
  const b = bDims.length === 1 ? [bDims[0], 1] : bDims;
  const M = a[a.length - 2];
  const K = a[a.length - 1];
  const N = b[b.length - 1];
  if (b[b.length - 2] !== K) throw new Error(`matmul: inner dimensions differ: [${aDims}] × [${bDims}]`);
  const batchA = a.slice(0, -2);
  const batchB = b.slice(0, -2);
  const rank = Math.max(batchA.length, batchB.length);
  const pa = [...new Array(rank - batchA.length).fill(1), ...batchA];
  const pb = [...new Array(rank - batchB.length).fill(1), ...batchB];
  const batchDims = pa.map((d, i) => Math.max(d, pb[i]));
  const batch = batchDims.reduce((x, y) => x * y, 1);
  const sizeA = pa.reduce((x, y) => x * y, 1);
  const sizeB = pb.reduce((x, y) => x * y, 1);
  const fits = (dims: number[], size: number) => size === 1 || dims.every((d, i) => d === batchDims[i]);
  if (!fits(pa, sizeA) || !fits(pb, sizeB)) {
    throw new Error(
      `matmul: batch dims [${batchA}] and [${batchB}] broadcast partially; supported: equal batches, or one operand without batch`,
    );
  }
  const ldB = bPacked ? roundUp(N, PACK_MULTIPLE) : N;
  if (sizeB === 1 && sizeA === batch && batch > 1) {
    // A shared B: fold A's batch into its rows, one bigger GEMM.
    return {
      label: `matmul ${batch * M}×${N}×${K}`,
      batch: 1,
      M: batch * M,
      N,
      K,
      a: { kind: 'matrix', layout: 'mk', batchStride: 0 },
      b: { layout: 'kn', batchStride: 0, ld: ldB, padded: bPacked },
      c: { kind: 'matrix', batchStride: 0, strideM: N, strideN: 1 },
    };
  }
  return {
    label: `matmul ${batch}×${M}×${N}×${K}`,
    batch,
    M,
    N,
    K,
    a: { kind: 'matrix', layout: 'mk', batchStride: sizeA === 1 ? 0 : M * K },
    b: { layout: 'kn', batchStride: sizeB === 1 ? 0 : K * ldB, ld: ldB, padded: bPacked },
    c: { kind: 'matrix', batchStride: M * N, strideM: N, strideN: 1 },
  };
}

/**
 * Packs columns [n0, n0 + columns) of op(B) (B [K,N], or [N,K] when transB) as [K][roundUp(columns, 8)],
 * zero-padded; a leading batch of `batch` matrices is packed one after another.
 */
export function packB(
  data: Float32Array,
  K: number,
  N: number,
  transB: boolean,
  n0 = 0,
  columns = N,
  batch = 1,
): Float32Array {
  const ld = roundUp(columns, PACK_MULTIPLE);
  const out = new Float32Array(packedBSize(K, columns, batch));
  for (let b = 0; b < batch; b++) {
    const bands = packBBands(floatArrayReader(data.subarray(b * K * N, (b + 1) * K * N)), K, N, transB, n0, columns);
    for (let i = 0, start = b * K * ld; i * bands.bandLength < bands.length; i++, start += bands.bandLength)
      bands.fill(i, out.subarray(start, start + Math.min(bands.bandLength, bands.length - i * bands.bandLength)));
  }
  return out;
}

/** Floats [start + i·stride, start + i·stride + length) for i < count of B, one after another, into `out`. */
export type StridedFloatReader = (
  start: number,
  length: number,
  stride: number,
  count: number,
  out: Float32Array,
) => void;

/** Floats per band of packBBands (16 MiB): for a B left in a file, a transB band reads one piece per column. */
const PACK_BAND_FLOATS = 1 << 22;

/**
 * packB's floats made a band of whole rows (about PACK_BAND_FLOATS floats) at a time, B read
 * through `read` band by band: for uploading a large weight without it or its packed form whole
 * on the host. fill(i, out) writes band i into `out`, which is that band's length.
 */
export function packBBands(
  read: StridedFloatReader,
  K: number,
  N: number,
  transB: boolean,
  n0: number,
  columns: number,
): { length: number; bandLength: number; fill(band: number, out: Float32Array): void } {
  const ld = roundUp(columns, PACK_MULTIPLE);
  const rows = Math.max(1, Math.min(K, Math.floor(PACK_BAND_FLOATS / ld)));
  let gathered: Float32Array | undefined; // B's floats of one band, as read
  return {
    length: K * ld,
    bandLength: rows * ld,
    fill: (band, out) => {
      const k0 = band * rows;
      const bandRows = Math.min(K, k0 + rows) - k0;
      gathered ??= new Float32Array(rows * columns);
      if (transB) {
        // Column n of the packed form is row n0 + n of B, whose floats k0… are one piece.
        read(n0 * K + k0, bandRows, K, columns, gathered);
        for (let n = 0; n < columns; n++)
          for (let k = 0; k < bandRows; k++) out[k * ld + n] = gathered[n * bandRows + k];
      } else {
        read(k0 * N + n0, columns, N, bandRows, gathered);
        for (let k = 0; k < bandRows; k++) out.set(gathered.subarray(k * columns, (k + 1) * columns), k * ld);
      }
      // The padding columns (out may be reused from band to band).
      if (ld > columns) for (let k = 0; k < bandRows; k++) out.fill(0, k * ld + columns, (k + 1) * ld);
      if (k0 + bandRows === K) gathered = undefined;
    },
  };
}

/**
 * Rows [n0, n0 + rows) of a matrix stored with rows of K floats, as they are, made a band
 * (about PACK_BAND_FLOATS floats, one contiguous read) at a time: a weight uploaded as stored
 * (the dot GEMV's B) without it whole on the host.
 */
export function storedRowBands(
  read: StridedFloatReader,
  K: number,
  n0: number,
  rows: number,
): { length: number; bandLength: number; fill(band: number, out: Float32Array): void } {
  const length = rows * K;
  const bandLength = Math.min(length, PACK_BAND_FLOATS);
  return {
    length,
    bandLength,
    fill: (band, out) => read(n0 * K + band * bandLength, out.length, out.length, 1, out),
  };
}

/** B's floats read from an array. */
export function floatArrayReader(data: Float32Array): StridedFloatReader {
  return (start, length, stride, count, out) => {
    for (let i = 0; i < count; i++) out.set(data.subarray(start + i * stride, start + i * stride + length), i * length);
  };
}

/** Floats in packB's output for these columns. */
export function packedBSize(K: number, columns: number, batch = 1): number {
  return batch * K * roundUp(columns, PACK_MULTIPLE);
}

/** Column chunk width so that a packed chunk [K][width] fits `maxBytes` (a multiple of 8, ≥ 8). */
export function columnChunk(K: number, N: number, maxBytes: number): number {
  const perColumn = K * 4;
  const fit = Math.floor(maxBytes / perColumn / PACK_MULTIPLE) * PACK_MULTIPLE;
  if (fit < PACK_MULTIPLE)
    throw new Error(`a B operand with K = ${K} does not fit ${maxBytes} bytes even ${PACK_MULTIPLE} columns at a time`);
  return Math.min(roundUp(N, PACK_MULTIPLE), fit);
}

/** Whole rows of a B stored [N][K] that one binding of `maxBytes` holds (the dot GEMV's chunks), at most N; 0 when not one row fits. */
export function storedRowChunk(K: number, N: number, maxBytes: number): number {
  return Math.min(N, Math.floor(maxBytes / (4 * K)));
}

/** Strides of a C operand of dims (rank ≤ 2) broadcast to [M, N]. */
export function biasStrides(dims: number[], M: number, N: number): { strideM: number; strideN: number } {
  if (dims.length > 2) throw new Error(`gemm: C has rank ${dims.length}; at most 2 accepted`);
  const d = [...new Array(2 - dims.length).fill(1), ...dims];
  if ((d[0] !== 1 && d[0] !== M) || (d[1] !== 1 && d[1] !== N))
    throw new Error(`gemm: C [${dims}] does not broadcast to [${M}, ${N}]`);
  return { strideM: d[0] === 1 ? 0 : d[1], strideN: d[1] === 1 ? 0 : 1 };
}
