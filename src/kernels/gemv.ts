// Split-K GEMV: y = act(alpha · x · B + beta · bias) for a few rows of x (M ≤ 4: batch-1 and
// small-batch fully connected layers), where the GEMM core's tiles are mostly empty rows and the
// time is reading B once. B is read as vec4 in its stored [K][ld] layout (the packed weights of
// linear.ts): lane l of a workgroup takes columns 4·l … (colsPerLane of them), so a workgroup
// reads one contiguous run of each B row. The reduction over K is split into `splitK` slices,
// one per workgroup row (dispatch y), so that a layer of few columns still gives every
// core or SM work; with more than one slice each writes its partial sums to a scratch buffer and
// a second small pass adds the slices in order (no atomics: the result does not depend on
// scheduling) and applies the GEMM core's epilogue (bias, activation, C strides, column chunk).
import {
  ceilDiv,
  defineProgram,
  dispatch1d,
  input,
  output,
  ParamBlock,
  readOnly,
  u32,
  type KernelProgram,
} from './shader.ts';
import { epilogueFunction, epilogueParams, epilogueStructure, roundUp, type GemmProblem } from './gemm.ts';

export const GEMV_MAX_ROWS = 4;

export interface GemvVariant {
  /** Columns per invocation (one or two vec4 of B per k). */
  colsPerLane: 4 | 8;
  workgroupSize: number;
  /** Slices of K, each reduced by its own workgroups; 1: one pass straight into C. */
  splitK: number;
}

/**
 * Why the GEMV cannot compute a problem, or undefined when it can: one matrix, at most
 * GEMV_MAX_ROWS rows, A row-major (or a single row), B [K][ld] with ld a multiple of 4 (vec4
 * loads) and readable up to N rounded up to 8 (as linear.ts packs weights), C a matrix written
 * (not accumulated) in full.
 */
export function gemvUnsupported(p: GemmProblem): string | undefined {
  if (p.batch !== 1) return `batch ${p.batch} (one matrix only)`;
  if (p.M > GEMV_MAX_ROWS) return `M = ${p.M} > ${GEMV_MAX_ROWS}`;
  if (p.a.kind !== 'matrix') return 'A is an implicit im2col';
  if (p.a.layout !== 'mk' && !(p.M === 1 && (p.a.ld ?? p.M) === 1)) return 'A is column-major';
  if (p.b.layout !== 'kn' || p.b.ld % 4 !== 0 || p.b.ld < roundUp(p.N, 8))
    return `B is not [K][ld] with ld a multiple of 4 and at least N rounded up to 8 (${roundUp(p.N, 8)})`;
  if (p.c.kind !== 'matrix') return 'C is not a matrix';
  if (p.accumulate) return 'C is accumulated';
  if (p.rows) return 'a row range';
  return undefined;
}

/** A variant for a problem: enough workgroups (about `workgroups`) to fill the device, slices
 * of at least 512 k so that the second pass reads little next to B. */
export function defaultGemvVariant(p: Pick<GemmProblem, 'N' | 'K'>, workgroups = 32): GemvVariant {
  const colsPerLane = 8;
  const workgroupSize = 32;
  const columnGroups = ceilDiv(p.N, colsPerLane * workgroupSize);
  const splitK = Math.max(1, Math.min(ceilDiv(workgroups, columnGroups), Math.floor(p.K / 512)));
  return { colsPerLane, workgroupSize, splitK };
}

export function gemvKey(v: GemvVariant): string {
  return `gemv${v.colsPerLane}@${v.workgroupSize}${v.splitK > 1 ? 'split' : ''}`;
}

/** The programs of a GEMV and the scratch it needs. */
export interface GemvPlan {
  /** In order; bindings by name: a, b, c, bias (when the problem has one), partial. */
  programs: KernelProgram[];
  /** Floats of the 'partial' scratch binding (0: none, one pass). */
  partialFloats: number;
}

export function gemvPrograms(p: GemmProblem, v: GemvVariant): GemvPlan {
  const why = gemvUnsupported(p);
  if (why) throw new Error(`gemv ${p.label ?? ''}: not a GEMV problem: ${why}`);
  if (!Number.isInteger(v.splitK) || v.splitK < 1)
    throw new Error(`gemv: splitK must be a positive integer, got ${v.splitK}`);
  const sliceK = roundUp(ceilDiv(p.K, v.splitK), 4);
  const slices = ceilDiv(p.K, sliceK);
  const lanes4 = v.colsPerLane / 4;
  const groups = ceilDiv(p.N, v.colsPerLane * v.workgroupSize);
  // Partial sums [slice][row][column block], every lane's vec4 blocks (past N too: no guard).
  const partialLd4 = groups * v.workgroupSize * lanes4;
  if (groups > 65535) throw new Error(`gemv: N = ${p.N} needs ${groups} workgroups in one dimension (at most 65535)`);
  const split = slices > 1;
  const label = p.label ?? `gemv ${p.M}×${p.N}×${p.K}`;
  const epi = epilogueStructure(p);
  const aVec =
    p.K % 4 === 0 && (p.a.kind === 'matrix' ? (p.a.ld ?? p.K) % 4 === 0 && (p.a.offset ?? 0) % 4 === 0 : false);
  const structure = { rows: p.M, aVec, split, ...(split ? {} : epi) };
  const key = `${gemvKey(v)}|${Object.entries(structure)
    .map(([k, x]) => `${k}=${x}`)
    .join(',')}`;

  const P = new ParamBlock()
    .u32('K', p.K)
    .u32('N', p.N)
    .u32('M', p.M)
    .u32('sliceK', sliceK)
    .u32('nOffset', p.nOffset ?? 0)
    .u32('lastColBlock', (roundUp(p.N, v.colsPerLane) - v.colsPerLane) / 4);
  const a = p.a as Extract<GemmProblem['a'], { kind: 'matrix' }>;
  const aLd = a.layout === 'mk' ? (a.ld ?? p.K) : p.K;
  P.u32('aOffset', aVec ? (a.offset ?? 0) / 4 : (a.offset ?? 0)).u32('aLd', aVec ? aLd / 4 : aLd);
  P.u32('bLd', p.b.ld / 4).u32('partialLd4', partialLd4);
  if (!split) epilogueParams(P, p);

  const rows = Array.from({ length: p.M }, (_, i) => i);
  const cols = Array.from({ length: lanes4 }, (_, j) => j);
  const body = (): string => {
    const L: string[] = [];
    L.push(`  let block0 = gid.x * ${u32(lanes4)};`);
    L.push(`  let slice = wid.y;`);
    L.push(`  let k0 = slice * P.sliceK;`);
    L.push(`  let k1 = min(k0 + P.sliceK, P.K);`);
    // Lanes past N read the last tile again (uniform control flow, no masked loads) and store
    // nothing. One clamp for the lane's blocks keeps them adjacent: llvmpipe then loads them as
    // one run (two clamped blocks ran at half the speed on VGG-16's fc6).
    L.push(`  let colBlock = min(block0, P.lastColBlock);`);
    for (const j of cols) L.push(`  let bCol${j} = colBlock + ${u32(j)};`);
    for (const i of rows) L.push(`  let aRow${i} = P.aOffset + ${u32(i)} * P.aLd;`);
    for (const i of rows) for (const j of cols) L.push(`  var acc${i}_${j} = vec4f(0.0);`);
    const fmaK = (k: string, e: number, value: (i: number) => string) => {
      const out: string[] = [];
      for (const j of cols) out.push(`let b${e}_${j} = b[bCol${j} + (${k}) * P.bLd];`);
      for (const i of rows)
        for (const j of cols) out.push(`acc${i}_${j} = fma(vec4f(${value(i)}), b${e}_${j}, acc${i}_${j});`);
      return out;
    };
    if (aVec) {
      // Four k per step: one vec4 of each x row, four B rows.
      L.push(`  for (var k4 = k0 / 4u; k4 < k1 / 4u; k4++) {`);
      for (const i of rows) L.push(`    let x${i} = a[aRow${i} + k4];`);
      for (let e = 0; e < 4; e++)
        for (const s of fmaK(`k4 * 4u + ${u32(e)}`, e, (i) => `x${i}[${e}]`)) L.push(`    ${s}`);
      L.push(`  }`);
    } else {
      L.push(`  for (var k = k0; k < k1; k++) {`);
      for (const i of rows) L.push(`    let x${i} = a[aRow${i} + k];`);
      for (const s of fmaK('k', 0, (i) => `x${i}`)) L.push(`    ${s}`);
      L.push(`  }`);
    }
    if (split) {
      for (const i of rows)
        for (const j of cols)
          L.push(`  partial[(slice * P.M + ${u32(i)}) * P.partialLd4 + block0 + ${u32(j)}] = acc${i}_${j};`);
    } else {
      // As the GEMM core stores: the tile in an array, a loop of storeC calls.
      L.push(`  var tile: array<vec4f, ${p.M * lanes4}>;`);
      for (const i of rows) for (const j of cols) L.push(`  tile[${i * lanes4 + j}] = acc${i}_${j};`);
      L.push(`  let col0 = block0 * 4u;`);
      L.push(`  let colCount = min(${u32(v.colsPerLane)}, max(P.N, col0) - col0);`);
      L.push(`  for (var i = 0u; i < ${u32(p.M)}; i++) {`);
      L.push(`    for (var j = 0u; j < colCount; j++) {`);
      L.push(`      storeC(0u, i, col0 + j, tile[i * ${u32(lanes4)} + j / 4u][j % 4u]);`);
      L.push(`    }`);
      L.push(`  }`);
    }
    return L.join('\n');
  };
  const main = defineProgram({
    label: split ? `${label} (split-K ${slices})` : label,
    key,
    dispatch: [groups, slices, 1],
    bindings: [
      input('a', { vec4: aVec }),
      input('b', { vec4: true }),
      ...(split ? [output('partial', { vec4: true })] : [output('c'), ...(p.bias ? [readOnly('bias')] : [])]),
    ],
    params: P,
    workgroupSize: v.workgroupSize,
    builtins: { gid: 'global_invocation_id', wid: 'workgroup_id' },
    ...(split ? {} : { prelude: () => epilogueFunction(epi).join('\n') }),
    body,
  });
  if (!split) return { programs: [main], partialFloats: 0 };

  // Second pass: one invocation per output element, slices added in order.
  const count = p.M * p.N;
  const R = new ParamBlock()
    .u32('M', p.M)
    .u32('N', p.N)
    .u32('slices', slices)
    .u32('partialLd', partialLd4 * 4);
  R.u32('count', count).u32('nOffset', p.nOffset ?? 0);
  epilogueParams(R, p);
  const reduceSize = 64;
  const reduceDispatch = dispatch1d(ceilDiv(count, reduceSize));
  R.u32('rowSize', reduceDispatch[0] * reduceSize);
  const reduce = defineProgram({
    label: `${label} (sum of ${slices} slices)`,
    key: `gemv-sum|${Object.entries(epi)
      .map(([k, x]) => `${k}=${x}`)
      .join(',')}`,
    dispatch: reduceDispatch,
    bindings: [input('partial'), output('c'), ...(p.bias ? [readOnly('bias')] : [])],
    params: R,
    workgroupSize: reduceSize,
    builtins: { gid: 'global_invocation_id' },
    guard: { index: { name: 'at', expr: 'gid.x + gid.y * P.rowSize' }, exit: 'at >= P.count' },
    prelude: () => epilogueFunction(epi).join('\n'),
    body: () =>
      [
        `  let row = at / P.N;`,
        `  let col = at % P.N;`,
        `  var sum = 0.0;`,
        `  for (var s = 0u; s < P.slices; s++) {`,
        `    sum += partial[(s * P.M + row) * P.partialLd + col];`,
        `  }`,
        `  storeC(0u, row, col, sum);`,
      ].join('\n'),
  });
  return { programs: [main, reduce], partialFloats: slices * p.M * partialLd4 * 4 };
}

// ---- the dot GEMV: B as stored [N][K] ----

/**
 * The dot GEMV: y[m][n] = act(alpha · A[m]·B[n] + beta · bias) for a few rows of A, with B in
 * its stored [N][K] layout (a Gemm with transB, the layout of every PyTorch export's dense
 * layers): each output is the dot product of an A row and a B row, both contiguous along K, so
 * the weights need no packing (nothing to transpose on the host when the model loads) and each
 * lane streams its own B rows as vec4 along K. An invocation takes rowsPerLane B rows, so that
 * each A load serves several of them; lanes past N read the last row again and store nothing.
 */
export interface DotGemvVariant {
  rowsPerLane: 1 | 2 | 4;
  workgroupSize: number;
}

export const DEFAULT_DOT_GEMV: DotGemvVariant = { rowsPerLane: 2, workgroupSize: 32 };

/** Why the dot GEMV cannot compute a problem, or undefined when it can: one matrix, at most
 * GEMV_MAX_ROWS rows, A row-major (or a single row), B [N][ld] ('nk'), C a matrix written (not
 * accumulated) in full. */
export function dotGemvUnsupported(p: GemmProblem): string | undefined {
  if (p.batch !== 1) return `batch ${p.batch} (one matrix only)`;
  if (p.M > GEMV_MAX_ROWS) return `M = ${p.M} > ${GEMV_MAX_ROWS}`;
  if (p.a.kind !== 'matrix') return 'A is an implicit im2col';
  if (p.a.layout !== 'mk' && !(p.M === 1 && (p.a.ld ?? p.M) === 1)) return 'A is column-major';
  if (p.b.layout !== 'nk') return 'B is not stored as [N][K]';
  if (p.c.kind !== 'matrix') return 'C is not a matrix';
  if (p.accumulate) return 'C is accumulated';
  if (p.rows) return 'a row range';
  return undefined;
}

/** The dot GEMV's one program. Bindings: a, b, c, then bias when the problem has one. */
export function dotGemvProgram(p: GemmProblem, v: DotGemvVariant = DEFAULT_DOT_GEMV): KernelProgram {
  const why = dotGemvUnsupported(p);
  if (why) throw new Error(`dot gemv ${p.label ?? ''}: not a dot GEMV problem: ${why}`);
  const a = p.a as Extract<GemmProblem['a'], { kind: 'matrix' }>;
  const aLd = a.layout === 'mk' ? (a.ld ?? p.K) : p.K;
  const aOffset = a.offset ?? 0;
  // vec4 along K when every row of A and B starts on a vec4.
  const vec = p.K % 4 === 0 && aLd % 4 === 0 && aOffset % 4 === 0 && p.b.ld % 4 === 0;
  const width = vec ? 4 : 1;
  const groups = ceilDiv(p.N, v.rowsPerLane * v.workgroupSize);
  if (groups > 65535)
    throw new Error(`dot gemv: N = ${p.N} needs ${groups} workgroups in one dimension (at most 65535)`);
  const epi = epilogueStructure(p);
  const structure = { rows: p.M, vec, ...epi };
  const key = `dot-gemv${v.rowsPerLane}@${v.workgroupSize}|${Object.entries(structure)
    .map(([k, x]) => `${k}=${x}`)
    .join(',')}`;
  const P = new ParamBlock()
    .u32('K', p.K / width)
    .u32('N', p.N)
    .u32('M', p.M)
    .u32('nOffset', p.nOffset ?? 0)
    .u32('aOffset', aOffset / width)
    .u32('aLd', aLd / width)
    .u32('bLd', p.b.ld / width);
  epilogueParams(P, p);
  const T = vec ? 'vec4f' : 'f32';
  const rows = Array.from({ length: p.M }, (_, i) => i);
  const lanes = Array.from({ length: v.rowsPerLane }, (_, j) => j);
  const body = (): string => {
    const L: string[] = [];
    L.push(`  let n0 = gid.x * ${u32(v.rowsPerLane)};`);
    for (const j of lanes) L.push(`  let bRow${j} = min(n0 + ${u32(j)}, P.N - 1u) * P.bLd;`);
    for (const i of rows) L.push(`  let aRow${i} = P.aOffset + ${u32(i)} * P.aLd;`);
    for (const i of rows) for (const j of lanes) L.push(`  var acc${i}_${j} = ${T}(0.0);`);
    L.push(`  for (var k = 0u; k < P.K; k++) {`);
    for (const i of rows) L.push(`    let x${i} = a[aRow${i} + k];`);
    for (const j of lanes) L.push(`    let b${j} = b[bRow${j} + k];`);
    for (const i of rows) for (const j of lanes) L.push(`    acc${i}_${j} = fma(x${i}, b${j}, acc${i}_${j});`);
    L.push(`  }`);
    // As the GEMM core stores: the sums in an array, a loop of storeC calls.
    L.push(`  var tile: array<f32, ${p.M * v.rowsPerLane}>;`);
    for (const i of rows)
      for (const j of lanes)
        L.push(`  tile[${i * v.rowsPerLane + j}] = ${vec ? `dot(acc${i}_${j}, vec4f(1.0))` : `acc${i}_${j}`};`);
    L.push(`  let count = min(${u32(v.rowsPerLane)}, max(P.N, n0) - n0);`);
    L.push(`  for (var i = 0u; i < ${u32(p.M)}; i++) {`);
    L.push(`    for (var j = 0u; j < count; j++) {`);
    L.push(`      storeC(0u, i, n0 + j, tile[i * ${u32(v.rowsPerLane)} + j]);`);
    L.push(`    }`);
    L.push(`  }`);
    return L.join('\n');
  };
  return defineProgram({
    label: p.label ?? `dot gemv ${p.M}×${p.N}×${p.K}`,
    key,
    dispatch: [groups, 1, 1],
    bindings: [
      input('a', { vec4: vec }),
      input('b', { vec4: vec }),
      output('c'),
      ...(p.bias ? [readOnly('bias')] : []),
    ],
    params: P,
    workgroupSize: v.workgroupSize,
    builtins: { gid: 'global_invocation_id' },
    prelude: () => epilogueFunction(epi).join('\n'),
    body,
  });
}
