// The one GEMM core: C[b] = act(alpha · op(A[b]) · op(B[b]) + beta · bias), fp32, generated as
// WGSL from the problem's shapes and layouts and from a variant (tile sizes, memory strategy).
// Conv (implicit GEMM, im2col addressing inside the A load), Gemm and MatMul all run on it.
//
// Variants (platform.md, "What makes WGSL fast on lavapipe"):
//  - 'register': no workgroup memory; each invocation keeps a tileM×tileN block of C in vec4
//    registers and reads A and B straight from storage (B, and A when laid out k-major, as vec4).
//    Fastest on CPU implementations, where a workgroup is one thread and barriers are costly.
//    With subgroupA (lavapipe, subgroups of 8): lane l loads A rows l, l + 8, … and every lane
//    takes each row's value by subgroupBroadcast. Mesa 25's llvmpipe loads per lane inside a
//    loop (a bounds-checked scalar load each), so a row that all lanes share was loaded 8 times.
//  - 'shared': classic workgroup-memory tiling (BM×BK and BK×BN tiles staged cooperatively,
//    barrier, register-blocked inner product). What real GPUs want.
//  - f16 (either kind, F16_GEMM_VARIANTS, 'shader-f16' only): the same tiles with the
//    multiply-adds in f16 (F16Math); storage and the epilogue stay f32. Only chosen by name.
//
// Sizes, strides and epilogue constants travel in a uniform block, not in the WGSL: only the
// structure (variant, layouts, alignment facts, which epilogue) selects the pipeline, so the
// 50 convolutions of a ResNet share a handful of compiles.
import type { GpuContext } from './gpu-context.ts';
import {
  activationParams,
  activationWgsl,
  ceilDiv,
  defineProgram,
  input,
  NO_ACTIVATION,
  output,
  ParamBlock,
  readOnly,
  u32,
  type Activation,
  type KernelProgram,
  type ShaderDeclaration,
} from './shader.ts';

export type GemmVariant =
  /** subgroupA: lane l loads A rows l, l + wgX, … once and every lane takes each row's value by
   * subgroupBroadcast (needs the 'subgroups' feature and a subgroup of exactly wgX lanes, wgY = 1). */
  | { kind: 'register'; tileM: number; tileN: 4 | 8; wgX: number; wgY: number; subgroupA?: boolean; f16?: F16Math }
  | { kind: 'shared'; tileM: number; tileN: number; wgX: number; wgY: number; tileK: number; f16?: F16Math };

/**
 * A 'shader-f16' variant's arithmetic: A and B are read as f32 (storage is unchanged), rounded
 * to f16 in registers and multiplied in f16; 'f16-accumulate' also sums in f16 (vec4<f16> FMAs,
 * error growing with K), 'f32-accumulate' sums the f16 products in f32. The epilogue (alpha,
 * bias, activation, store) is f32 either way. Never chosen by default: it changes the numerics.
 */
export type F16Math = 'f16-accumulate' | 'f32-accumulate';

/** The implicit im2col matrix of a 2-D convolution over an NCHW input. Row m = (image, oh, ow),
 * column k = (kh, kw, ci) within the group (kernel position outer, channel inner); the GEMM
 * batch index is the group. */
export interface Im2col {
  images: number;
  channels: number;
  height: number;
  width: number;
  /** Input channels per group (K = groupChannels · kernelH · kernelW). */
  groupChannels: number;
  kernelH: number;
  kernelW: number;
  strideH: number;
  strideW: number;
  padTop: number;
  padLeft: number;
  dilationH: number;
  dilationW: number;
  outH: number;
  outW: number;
}

export type GemmA =
  /** 'mk': A[b][m][k] (row stride ld, default K); 'km': A[b][k][m] (row stride ld, default M). */
  | { kind: 'matrix'; layout: 'mk' | 'km'; batchStride: number; offset?: number; ld?: number }
  | { kind: 'im2col'; conv: Im2col };

export interface GemmB {
  /** 'kn': B[b][k][n] (row stride ld ≥ N); 'nk': B[b][n][k] (row stride ld ≥ K). */
  layout: 'kn' | 'nk';
  batchStride: number;
  ld: number;
  /** 'kn' only: columns up to ld exist and are readable (packed weights), so no clamping. */
  padded?: boolean;
}

export type GemmC =
  /** C[b·batchStride + m·strideM + (nOffset+n)·strideN + offset] */
  | { kind: 'matrix'; batchStride: number; strideM: number; strideN: number; offset?: number }
  /** Conv output: m = (image, p), p in [0, spatial); channel = batch·batchChannelStride + nOffset + n. */
  | { kind: 'nchw'; spatial: number; imageStride: number; batchChannelStride: number };

/** bias[b·batchStride + m·strideM + (nOffset+n)·strideN] · beta, added before the activation. */
export interface GemmBias {
  batchStride: number;
  strideM: number;
  strideN: number;
  beta?: number;
}

export interface GemmProblem {
  label?: string;
  batch: number;
  M: number;
  N: number;
  K: number;
  a: GemmA;
  b: GemmB;
  c: GemmC;
  alpha?: number;
  bias?: GemmBias;
  activation?: Activation;
  /** Global column of this problem's column 0 (C and bias only): a chunk of a wider GEMM. */
  nOffset?: number;
  /** Compute only rows [offset, offset + count) (all of A and C stay addressable): how a GEMM
   * with more row tiles than one dispatch dimension allows is split (gemmPrograms). */
  rows?: { offset: number; count: number };
  /** C += the result instead of C = (no activation allowed): how a GEMM split along K (chunks of
   * a reduction too long for one binding, or too large to materialise at once) adds up. */
  accumulate?: boolean;
}

/** Bindings: a, b, c, then bias when the problem has one, then the params uniform. */
export function gemmProgram(problem: GemmProblem, variant: GemmVariant): KernelProgram {
  checkProblem(problem, variant);
  const s = structureOf(problem, variant);
  const register = variant.kind === 'register';
  return defineProgram({
    label: problem.label ?? `gemm ${problem.batch}×${problem.M}×${problem.N}×${problem.K}`,
    key: gemmKey(problem, variant),
    dispatch: gemmDispatch(problem, variant),
    // A and B are inputs (arena-shareable with C); the bias is a constant (or a pooled value)
    // and stays read-only.
    bindings: [
      input('a', { vec4: register && s.aVec }),
      input('b', { vec4: register && s.bVec }),
      output('c'),
      ...(problem.bias ? [readOnly('bias')] : []),
    ],
    params: gemmParams(problem, variant, s),
    ...(variant.kind === 'register' ? registerKernel(s, variant) : sharedKernel(s, variant)),
  });
}

export function gemmDispatch(p: GemmProblem, v: GemmVariant): [number, number, number] {
  const rowsPerGroup = v.tileM * v.wgY;
  const colsPerGroup = v.tileN * v.wgX;
  return [ceilDiv(p.N, colsPerGroup), ceilDiv(p.rows?.count ?? p.M, rowsPerGroup), p.batch];
}

/**
 * The problem as one program, or as several over row ranges when its row tiles exceed the
 * per-dimension workgroup limit (a batch-16 VGG conv1 has 100 352 rows of 8).
 */
export function gemmPrograms(
  problem: GemmProblem,
  variant: GemmVariant,
  maxWorkgroupsPerDimension = 65535,
): KernelProgram[] {
  const rowsPerGroup = variant.tileM * variant.wgY;
  if (
    ceilDiv(problem.N, variant.tileN * variant.wgX) > maxWorkgroupsPerDimension ||
    problem.batch > maxWorkgroupsPerDimension
  ) {
    throw new Error(
      `gemm ${problem.label ?? ''}: N = ${problem.N} or batch = ${problem.batch} needs more than ${maxWorkgroupsPerDimension} workgroups in one dimension`,
    );
  }
  const span = maxWorkgroupsPerDimension * rowsPerGroup;
  if (problem.M <= span) return [gemmProgram(problem, variant)];
  const programs: KernelProgram[] = [];
  for (let offset = 0; offset < problem.M; offset += span) {
    programs.push(gemmProgram({ ...problem, rows: { offset, count: Math.min(span, problem.M - offset) } }, variant));
  }
  return programs;
}

export function variantKey(v: GemmVariant): string {
  const f16 = v.f16 === undefined ? '' : v.f16 === 'f16-accumulate' ? 'h' : 'h32';
  return v.kind === 'register'
    ? `reg${v.tileM}x${v.tileN}@${v.wgX}x${v.wgY}${v.subgroupA ? 'sg' : ''}${f16}`
    : `shm${v.tileM}x${v.tileN}@${v.wgX}x${v.wgY}k${v.tileK}${f16}`;
}

/** The pipeline key: everything that changes the WGSL, nothing that only changes params. */
export function gemmKey(p: GemmProblem, v: GemmVariant): string {
  const s = structureOf(p, v);
  return `gemm|${variantKey(v)}|${Object.entries(s)
    .map(([k, x]) => `${k}=${x}`)
    .join(',')}`;
}

/** Every variant the engine ships; tests run each of them against the reference. */
export const GEMM_VARIANTS: readonly GemmVariant[] = [
  { kind: 'register', tileM: 8, tileN: 8, wgX: 8, wgY: 1 },
  { kind: 'register', tileM: 16, tileN: 8, wgX: 8, wgY: 1 },
  { kind: 'register', tileM: 4, tileN: 8, wgX: 8, wgY: 1 },
  { kind: 'register', tileM: 1, tileN: 8, wgX: 32, wgY: 1 },
  { kind: 'register', tileM: 8, tileN: 8, wgX: 8, wgY: 8 },
  { kind: 'shared', tileM: 4, tileN: 4, wgX: 16, wgY: 16, tileK: 16 },
  { kind: 'shared', tileM: 8, tileN: 8, wgX: 16, wgY: 16, tileK: 8 },
  // Subgroup variants (lavapipe with subgroups of 8): the same register tiles, A loaded once
  // per workgroup and broadcast; more rows per tile reuse each B load more.
  { kind: 'register', tileM: 8, tileN: 8, wgX: 8, wgY: 1, subgroupA: true },
  { kind: 'register', tileM: 16, tileN: 8, wgX: 8, wgY: 1, subgroupA: true },
  { kind: 'register', tileM: 24, tileN: 8, wgX: 8, wgY: 1, subgroupA: true },
  { kind: 'register', tileM: 32, tileN: 8, wgX: 8, wgY: 1, subgroupA: true },
  // 32 columns per workgroup instead of 64: for N ≤ 32 (and 96), where 64 would compute columns
  // past N.
  { kind: 'register', tileM: 24, tileN: 4, wgX: 8, wgY: 1, subgroupA: true },
];

const [REG8, REG16, REG4, REG1, REG8_WG8, SHM4, SHM8, SG8, SG16, SG24, SG32, SG24_N4] = GEMM_VARIANTS;

/**
 * The 'shader-f16' variants: f32 tiles of GEMM_VARIANTS computed in f16 (F16Math). Reachable
 * only by name (Session.create's options.gemm); neither defaultVariant nor the autotuner
 * considers them, since they trade accuracy (about 2^-11 relative per product) for speed.
 */
export const F16_GEMM_VARIANTS: readonly GemmVariant[] = [
  { ...REG8, f16: 'f16-accumulate' },
  { ...REG8, f16: 'f32-accumulate' },
  { ...REG16, f16: 'f16-accumulate' },
  { ...SG24, f16: 'f16-accumulate' },
  { ...SG24, f16: 'f32-accumulate' },
  { ...SHM4, f16: 'f16-accumulate' },
  { ...SHM4, f16: 'f32-accumulate' },
];

/** What picking a variant needs to know about the device. */
export interface GemmTarget {
  /** A CPU implementation (lavapipe, SwiftShader): register-blocked variants, no workgroup memory. */
  software: boolean;
  /** Invocations per subgroup, when the device has the 'subgroups' feature and one fixed size. */
  subgroupSize?: number;
  /** Whether the device has the 'shader-f16' feature (f16 arithmetic in WGSL). */
  shaderF16?: boolean;
}

/** The GemmTarget of a context's device. */
export function gemmTarget(gpu: GpuContext): GemmTarget {
  // GPUDevice.adapterInfo carries the subgroup sizes (Chrome 131+, dawn.node).
  const info = (gpu.device as { adapterInfo?: { subgroupMinSize?: number; subgroupMaxSize?: number } }).adapterInfo;
  const fixed = info?.subgroupMinSize !== undefined && info.subgroupMinSize === info.subgroupMaxSize;
  const subgroupSize = gpu.info.deviceFeatures.includes('subgroups') && fixed ? info!.subgroupMinSize : undefined;
  return { software: gpu.info.isSoftware, subgroupSize, shaderF16: gpu.info.deviceFeatures.includes('shader-f16') };
}

/** Why the device cannot run the variant (the f16 ones need 'shader-f16', the subgroup ones
 * subgroups of exactly wgX), or undefined. */
export function variantRefusal(v: GemmVariant, target: GemmTarget): string | undefined {
  if (v.f16 !== undefined && target.shaderF16 !== true)
    return `GEMM variant ${variantKey(v)} needs the 'shader-f16' feature; this device does not have it`;
  if (!(v.kind === 'register' && v.subgroupA) || target.subgroupSize === v.wgX) return undefined;
  const has =
    target.subgroupSize === undefined ? "no fixed-size 'subgroups' feature" : `subgroups of ${target.subgroupSize}`;
  return `GEMM variant ${variantKey(v)} needs the 'subgroups' feature with subgroups of exactly ${v.wgX} lanes; this device has ${has}`;
}

/** Whether the device can run the variant. */
export function variantRuns(v: GemmVariant, target: GemmTarget): boolean {
  return variantRefusal(v, target) === undefined;
}

const asTarget = (t: boolean | GemmTarget): GemmTarget => (typeof t === 'boolean' ? { software: t } : t);

/** The variants the autotuner times for a problem of M rows on this device (a boolean: whether
 * it is a software adapter, subgroups unknown, so none of the subgroup variants). */
export function candidateVariants(target: boolean | GemmTarget, M: number): GemmVariant[] {
  const t = asTarget(target);
  if (!t.software) return M <= 4 ? [REG1, SHM4] : [SHM4, SHM8, REG8];
  if (t.subgroupSize === 8) return M <= 32 ? [SG8, SG16, SG32, REG1] : [SG16, SG24, SG32, SG24_N4];
  if (M <= 4) return [REG1, REG4];
  return M <= 32 ? [REG4, REG8, REG1] : [REG8, REG16, REG4, REG8_WG8];
}

/**
 * A sensible variant without measuring: register blocking on CPU adapters, shared tiles on GPUs.
 * On lavapipe every load inside a loop costs a branchy scalar load per lane (bench/probe-kernels.ts
 * shows it on the adapter at hand), so what counts is loads per multiply-add: the subgroup
 * variants load A once per workgroup, and taller tiles reuse each B load on more rows, up to 24:
 * 32-row tiles (64 vec4 accumulators per invocation) lose more than their loads save. Measured
 * on lavapipe (bench/probe-kernels.ts --ceiling, 2 cores at load 7–12, each run's GPU-time rate
 * over the FMA ceiling timed just before it, median of 4–6 pairs; then FLOP per worker-thread
 * CPU-second over the ceiling's): GEMM 1024³ 24 rows 0.52 (CPU 0.56), 16 rows 0.43 (0.47),
 * 32 rows 0.29 (0.39); conv 3×3 64→64 @56 b8 0.59 (0.67), 0.54 (0.51), 0.48 (0.46); and where
 * M is 25–64 (a conv's dW with 64 output channels, a 7×7 map at batch 1) 16 rows beat 32:
 * 64×25088×576 0.59 (0.57) against 0.42 (0.48), 64×4608×512 0.55 CPU against 0.50, conv 3×3
 * 512→512 @7 b1 (M = 49) 0.44 (0.40) against 0.35 (0.37). Rows a tile computes past M are
 * waste, so M up to 24 takes the smallest tile that holds it in one. Columns past N are waste
 * too: a workgroup of the 24-row tile covers 64 columns (8 lanes × 8), or 32 with 4 per lane,
 * which does about 0.8 of the work per second (fewer multiply-adds per load; GEMM 1024³ CPU-time
 * ratio 0.37 against 0.47) and so wins where 64-column tiles compute over 1.25× the columns
 * that 32-column ones do: N ≤ 32 and N = 96 (conv 1×1 528→32 @14 b8 0.38 against 0.21, conv
 * 3×3 96→96 @28 b8 0.56 against 0.46, both at load 6).
 */
export function defaultVariant(p: Pick<GemmProblem, 'M' | 'N'>, target: boolean | GemmTarget): GemmVariant {
  const t = asTarget(target);
  if (p.M === 1 || (!t.software && p.M <= 4)) return REG1; // a row per invocation: GEMV (batch-1 FC layers)
  if (!t.software) return SHM4;
  if (t.subgroupSize === 8) {
    if (p.M <= 8) return SG8;
    if (p.M <= 16 || (p.M > 24 && p.M <= 64)) return SG16;
    return roundUp(p.N, 32) * 1.25 < roundUp(p.N, 64) ? SG24_N4 : SG24;
  }
  // Without subgroups: 16-row tiles win on tall problems, 8-row tiles waste less on the 7×7 and
  // 14×14 maps of a ResNet's last stages; REG4 suits 2–4 rows.
  return p.M <= 32 ? REG4 : p.M >= 1024 ? REG16 : REG8;
}

// ---- checks ----

function checkProblem(p: GemmProblem, v: GemmVariant): void {
  for (const [name, value] of [
    ['batch', p.batch],
    ['M', p.M],
    ['N', p.N],
    ['K', p.K],
  ] as const) {
    if (!Number.isInteger(value) || value < 1)
      throw new Error(`gemm: ${name} must be a positive integer, got ${value}`);
  }
  if (v.kind === 'register' && v.tileN !== 4 && v.tileN !== 8)
    throw new Error(`gemm: register tileN must be 4 or 8, got ${v.tileN}`);
  if (v.kind === 'register' && v.tileM >= 4 && v.tileM % 4 !== 0)
    throw new Error(`gemm: register tileM must be 1, 2 or a multiple of 4, got ${v.tileM}`);
  if (v.kind === 'register' && v.subgroupA && v.wgY !== 1)
    throw new Error(`gemm: a subgroup variant needs wgY = 1, got ${v.wgY}`);
  if (p.accumulate && (p.activation ?? NO_ACTIVATION).kind !== 'none')
    throw new Error(`gemm: an accumulating GEMM cannot apply an activation (${(p.activation as Activation).kind})`);
  if (p.b.layout === 'kn' && p.b.ld < p.N) throw new Error(`gemm: B ld ${p.b.ld} < N ${p.N}`);
  if (p.b.layout === 'nk' && p.b.ld < p.K) throw new Error(`gemm: B ld ${p.b.ld} < K ${p.K}`);
  if (p.a.kind === 'im2col') {
    const g = p.a.conv;
    if (p.M !== g.images * g.outH * g.outW) throw new Error(`gemm: im2col M ${p.M} ≠ images·outH·outW`);
    if (p.K !== g.groupChannels * g.kernelH * g.kernelW)
      throw new Error(`gemm: im2col K ${p.K} ≠ groupChannels·kernelH·kernelW`);
  }
}

// ---- structure (what selects the WGSL) and params (what fills the uniform block) ----

interface Structure {
  a: 'mk' | 'km' | 'im2col';
  /** A rows loaded as vec4 (k-major, aligned). */
  aVec: boolean;
  /** im2col windows may reach into padding: loads are masked. */
  aPad: boolean;
  b: 'kn' | 'nk';
  bVec: boolean;
  /** B rows readable up to the tile's last column: no clamping. */
  bPadded: boolean;
  c: 'matrix' | 'nchw';
  /** C is added to, not overwritten. */
  accumulate: boolean;
  bias: boolean;
  act: Activation['kind'];
}

function structureOf(p: GemmProblem, v: GemmVariant): Structure {
  const TM = v.tileM;
  const TN = v.tileN;
  const a = p.a;
  const register = v.kind === 'register';
  const bVec = register && p.b.layout === 'kn' && p.b.ld % 4 === 0 && p.b.batchStride % 4 === 0;
  return {
    a: a.kind === 'im2col' ? 'im2col' : a.layout,
    aVec:
      register &&
      !v.subgroupA &&
      a.kind === 'matrix' &&
      a.layout === 'km' &&
      TM % 4 === 0 &&
      p.M % 4 === 0 &&
      (a.ld ?? p.M) % 4 === 0 &&
      a.batchStride % 4 === 0 &&
      (a.offset ?? 0) % 4 === 0,
    aPad: a.kind === 'im2col' && needsBoundsChecks(a.conv),
    b: p.b.layout,
    bVec,
    bPadded: bVec && p.b.padded === true && p.b.ld >= roundUp(p.N, TN),
    ...epilogueStructure(p),
  };
}

function gemmParams(p: GemmProblem, v: GemmVariant, s: Structure): ParamBlock {
  const P = new ParamBlock();
  const TN = v.tileN;
  P.u32('M', p.M)
    .u32('N', p.N)
    .u32('K', p.K)
    .u32('nOffset', p.nOffset ?? 0)
    .u32('mOffset', p.rows?.offset ?? 0);
  P.u32('lastRow', p.M - 1).u32('lastCol', p.N - 1);
  const a = p.a;
  if (a.kind === 'matrix') {
    const ld = a.ld ?? (a.layout === 'mk' ? p.K : p.M);
    P.u32('aBatch', s.aVec ? a.batchStride / 4 : a.batchStride).u32(
      'aOffset',
      s.aVec ? (a.offset ?? 0) / 4 : (a.offset ?? 0),
    );
    P.u32('aLd', s.aVec ? ld / 4 : ld).u32('lastRowVec', s.aVec ? (p.M - 4) / 4 : 0);
  } else {
    const g = a.conv;
    P.u32('spatial', g.outH * g.outW)
      .u32('outW', g.outW)
      .u32('imageSize', g.channels * g.height * g.width);
    P.u32('groupSize', g.groupChannels * g.height * g.width)
      .u32('groupChannels', g.groupChannels)
      .u32('plane', g.height * g.width);
    P.u32('height', g.height).u32('width', g.width).u32('kernelH', g.kernelH).u32('kernelW', g.kernelW);
    P.u32('kernelSize', g.kernelH * g.kernelW)
      .u32('strideH', g.strideH)
      .u32('strideW', g.strideW);
    P.i32('padTop', g.padTop).i32('padLeft', g.padLeft).i32('dilationH', g.dilationH).i32('dilationW', g.dilationW);
    P.i32('rowStep', g.dilationH * g.width);
  }
  P.u32('bBatch', s.bVec ? p.b.batchStride / 4 : p.b.batchStride).u32('bLd', s.bVec ? p.b.ld / 4 : p.b.ld);
  P.u32('lastColBlock', s.bPadded ? (roundUp(p.N, TN) - TN) / 4 : 0).u32('lastColVec', Math.ceil(p.N / 4) - 1);
  return epilogueParams(P, p);
}

/** The uniforms storeC reads (epilogueFunction): C's strides, the bias's, alpha, beta and the activation's constants. */
export function epilogueParams(P: ParamBlock, p: GemmProblem): ParamBlock {
  const c = p.c;
  if (c.kind === 'matrix') {
    P.u32('cBatch', c.batchStride)
      .u32('cOffset', c.offset ?? 0)
      .u32('cStrideM', c.strideM)
      .u32('cStrideN', c.strideN);
  } else {
    P.u32('cSpatial', c.spatial).u32('cImage', c.imageStride).u32('cBatchChannels', c.batchChannelStride);
  }
  if (p.bias) {
    P.u32('biasBatch', p.bias.batchStride)
      .u32('biasStrideM', p.bias.strideM)
      .u32('biasStrideN', p.bias.strideN)
      .f32('beta', p.bias.beta ?? 1);
  }
  P.f32('alpha', p.alpha ?? 1);
  return activationParams(P, p.activation ?? NO_ACTIVATION);
}

/** Whether some window of the conv can reach outside the input (then loads are masked). */
function needsBoundsChecks(g: Im2col): boolean {
  const lastH = (g.outH - 1) * g.strideH - g.padTop + (g.kernelH - 1) * g.dilationH;
  const lastW = (g.outW - 1) * g.strideW - g.padLeft + (g.kernelW - 1) * g.dilationW;
  return g.padTop > 0 || g.padLeft > 0 || lastH >= g.height || lastW >= g.width;
}

// ---- the register-blocked kernel ----

type KernelShader = Omit<ShaderDeclaration, 'workgroupSize'> & { workgroupSize: [number, number, number] };

function registerKernel(s: Structure, v: Extract<GemmVariant, { kind: 'register' }>): KernelShader {
  const sg = v.subgroupA === true;
  const enable = [...(v.f16 ? ['f16'] : []), ...(sg ? ['subgroups'] : [])];
  return {
    ...(enable.length > 0 ? { enable } : {}),
    workgroupSize: [v.wgX, v.wgY, 1],
    builtins: {
      gid: 'global_invocation_id',
      wid: 'workgroup_id',
      ...(sg ? { lane: 'subgroup_invocation_id' as const } : {}),
    },
    prelude: () => epilogueFunction(s).join('\n'),
    body: () => registerBody(s, v),
  };
}

/** The register kernel's entry point statements. */
function registerBody(s: Structure, v: Extract<GemmVariant, { kind: 'register' }>): string {
  const TM = v.tileM;
  const TN = v.tileN;
  const TN4 = TN / 4;
  const rows = range(TM);
  const cols = range(TN4);

  const sg = v.subgroupA === true;
  const L: string[] = [];
  // Rows from the workgroup id alone (wgY = 1): every lane of a workgroup works on the same
  // rows, so A is shared. llvmpipe (Mesa 25) still loads it once per lane inside a loop, each
  // lane a scalar load behind a bounds-check branch; the subgroup variants load each A element
  // once (lane l takes rows l, l + wgX, …) and hand it to every lane by subgroupBroadcast.
  // Nothing returns early on a lane-varying condition (uniform control flow).
  L.push(`  let col0 = gid.x * ${u32(TN)};`);
  L.push(v.wgY === 1 ? `  let row0 = wid.y * ${u32(TM)} + P.mOffset;` : `  let row0 = gid.y * ${u32(TM)} + P.mOffset;`);
  L.push(`  let batch = wid.z;`);
  L.push(`  if (row0 >= P.M) { return; }`);
  // f16 variants: B values become vec4h once per k, A values f16 at the multiply.
  const accType = v.f16 === 'f16-accumulate' ? 'vec4h' : 'vec4f';
  const bValue = (e: string) => (v.f16 ? `vec4h(${e})` : e);
  for (const i of rows) for (const j of cols) L.push(`  var acc${i}_${j} = ${accType}(0.0);`);

  // B addressing: per column block, a base index; per k, + k·ld.
  let bLoad: (k: string) => string[];
  if (s.bVec) {
    L.push(`  let bBase = batch * P.bBatch;`);
    if (s.bPadded) {
      L.push(`  let colBlock = min(col0 / 4u, P.lastColBlock);`);
      for (const j of cols) L.push(`  let bCol${j} = bBase + colBlock + ${u32(j)};`);
    } else {
      for (const j of cols) L.push(`  let bCol${j} = bBase + min(col0 / 4u + ${u32(j)}, P.lastColVec);`);
    }
    bLoad = (k) => cols.map((j) => `let b${j} = ${bValue(`b[bCol${j} + ${k} * P.bLd]`)};`);
  } else {
    L.push(`  let bBase = batch * P.bBatch;`);
    for (const j of cols) {
      for (let e = 0; e < 4; e++) {
        const col = `min(col0 + ${u32(4 * j + e)}, P.lastCol)`;
        L.push(
          s.b === 'kn' ? `  let bCol${j}_${e} = bBase + ${col};` : `  let bCol${j}_${e} = bBase + ${col} * P.bLd;`,
        );
      }
    }
    const kTerm = (k: string) => (s.b === 'kn' ? `${k} * P.bLd` : k);
    bLoad = (k) =>
      cols.map(
        (j) =>
          `let b${j} = ${bValue(`vec4f(${[0, 1, 2, 3].map((e) => `b[bCol${j}_${e} + ${kTerm(k)}]`).join(', ')})`)};`,
      );
  }
  const fma = (i: number, j: number): string => {
    const acc = `acc${i}_${j}`;
    if (v.f16 === undefined) return `${acc} = fma(vec4f(a${i}), b${j}, ${acc});`;
    return v.f16 === 'f16-accumulate'
      ? `${acc} = fma(vec4h(f16(a${i})), b${j}, ${acc});`
      : `${acc} = ${acc} + vec4f(vec4h(f16(a${i})) * b${j});`;
  };
  const fmas = () => {
    const out: string[] = [];
    for (const i of rows) for (const j of cols) out.push(fma(i, j));
    return out;
  };

  // Which A rows this invocation loads (`aL${r}`) and how it gets row i's value (`a${i}`).
  const aRows: ARows = sg
    ? {
        count: Math.ceil(TM / v.wgX),
        row: (r) => `row0 + lane${r ? ` + ${u32(r * v.wgX)}` : ''}`,
        values: () => rows.map((i) => `let a${i} = subgroupBroadcast(aL${Math.floor(i / v.wgX)}, ${u32(i % v.wgX)});`),
      }
    : { count: TM, row: (r) => `row0 + ${u32(r)}`, values: () => rows.map((i) => `let a${i} = aL${i};`) };
  if (s.a === 'im2col') {
    L.push(...im2colRegisterLoop(s, aRows, bLoad, fmas));
  } else if (sg) {
    const loads = range(aRows.count);
    L.push(`  let aBase = batch * P.aBatch + P.aOffset;`);
    for (const r of loads)
      L.push(`  let aRow${r} = aBase + min(${aRows.row(r)}, P.lastRow)${s.a === 'mk' ? ' * P.aLd' : ''};`);
    L.push(`  for (var k = 0u; k < P.K; k++) {`);
    for (const r of loads) L.push(`    let aL${r} = a[aRow${r} + ${s.a === 'mk' ? 'k' : 'k * P.aLd'}];`);
    for (const x of aRows.values()) L.push(`    ${x}`);
    for (const x of bLoad('k')) L.push(`    ${x}`);
    for (const x of fmas()) L.push(`    ${x}`);
    L.push(`  }`);
  } else {
    L.push(`  let aBase = batch * P.aBatch + P.aOffset;`);
    if (s.aVec) {
      for (let q = 0; q < TM / 4; q++) L.push(`  let aRow${q} = aBase + min(row0 / 4u + ${u32(q)}, P.lastRowVec);`);
      L.push(`  for (var k = 0u; k < P.K; k++) {`);
      for (let q = 0; q < TM / 4; q++) L.push(`    let av${q} = a[aRow${q} + k * P.aLd];`);
      for (const i of rows) L.push(`    let a${i} = av${Math.floor(i / 4)}[${i % 4}];`);
    } else if (s.a === 'mk') {
      for (const i of rows) L.push(`  let aRow${i} = aBase + min(row0 + ${u32(i)}, P.lastRow) * P.aLd;`);
      L.push(`  for (var k = 0u; k < P.K; k++) {`);
      for (const i of rows) L.push(`    let a${i} = a[aRow${i} + k];`);
    } else {
      for (const i of rows) L.push(`  let aRow${i} = aBase + min(row0 + ${u32(i)}, P.lastRow);`);
      L.push(`  for (var k = 0u; k < P.K; k++) {`);
      for (const i of rows) L.push(`    let a${i} = a[aRow${i} + k * P.aLd];`);
    }
    for (const x of bLoad('k')) L.push(`    ${x}`);
    for (const x of fmas()) L.push(`    ${x}`);
    L.push(`  }`);
  }

  // Epilogue: accumulators into an array, then a loop over rows (C's and the bias's row index,
  // with the nchw layout's divisions, once per row) around a loop of storeCAt calls. Loops, not
  // unrolled code, and a lane-dependent trip count so that nothing unrolls them: LLVM's compile
  // time on lavapipe grows fast with straight-line code (an unrolled 8×8 epilogue costs seconds).
  L.push(`  var tile: array<vec4f, ${TM * TN4}>;`);
  for (const i of rows)
    for (const j of cols)
      L.push(`  tile[${i * TN4 + j}] = ${accType === 'vec4f' ? `acc${i}_${j}` : `vec4f(acc${i}_${j})`};`);
  L.push(`  let rowCount = min(${u32(TM)}, P.M - row0);`);
  L.push(`  let colCount = min(${u32(TN)}, max(P.N, col0) - col0);`);
  L.push(`  for (var i = 0u; i < rowCount; i++) {`);
  L.push(`    let cRow = cRowIndex(batch, row0 + i);`);
  if (s.bias) L.push(`    let biasRow = biasRowIndex(batch, row0 + i);`);
  L.push(`    for (var j = 0u; j < colCount; j++) {`);
  L.push(`      let col = col0 + j;`);
  L.push(
    `      storeCAt(cRow + cColIndex(batch, col), ${s.bias ? 'biasRow + biasColIndex(col)' : '0u'}, tile[i * ${u32(TN4)} + j / 4u][j % 4u]);`,
  );
  L.push(`    }`);
  L.push(`  }`);
  return L.join('\n');
}

/** The A rows one invocation loads: `count` of them, row r at WGSL `row(r)`; `values()` declares
 * a0 … a(TM−1), the tile's rows, from the loaded aL0 … */
interface ARows {
  count: number;
  row: (r: number) => string;
  values: () => string[];
}

/**
 * The K loop of an implicit-GEMM conv. K runs in (kh, kw, ci) order (packConvWeights lays B out
 * the same way): per kernel position the window origin and padding mask of each row are fixed,
 * so the innermost loop over input channels is as lean as a plain GEMM's: one load per row, no
 * index arithmetic beyond a stride, B rows read in order.
 */
function im2colRegisterLoop(
  s: Structure,
  aRows: ARows,
  bLoad: (k: string) => string[],
  fmas: () => string[],
): string[] {
  const L: string[] = [];
  const rows = range(aRows.count);
  for (const i of rows) {
    L.push(`  let m${i} = min(${aRows.row(i)}, P.lastRow);`);
    L.push(`  let p${i} = m${i} % P.spatial;`);
    L.push(`  let ih0_${i} = i32((p${i} / P.outW) * P.strideH) - P.padTop;`);
    L.push(`  let iw0_${i} = i32((p${i} % P.outW) * P.strideW) - P.padLeft;`);
    L.push(`  let xb${i} = i32((m${i} / P.spatial) * P.imageSize + batch * P.groupSize);`);
  }
  L.push(`  var kk = 0u;`);
  L.push(`  for (var kh = 0; kh < i32(P.kernelH); kh++) {`);
  L.push(`    let dh = kh * P.dilationH;`);
  L.push(`    for (var kw = 0; kw < i32(P.kernelW); kw++) {`);
  L.push(`      let dw = kw * P.dilationW;`);
  for (const i of rows) {
    L.push(`      let ih${i} = ih0_${i} + dh;`);
    L.push(`      let iw${i} = iw0_${i} + dw;`);
    if (s.aPad) {
      L.push(`      let ok${i} = u32(ih${i}) < P.height && u32(iw${i}) < P.width;`);
      L.push(`      let at${i} = u32(select(0, xb${i} + ih${i} * i32(P.width) + iw${i}, ok${i}));`);
    } else {
      L.push(`      let at${i} = u32(xb${i} + ih${i} * i32(P.width) + iw${i});`);
    }
  }
  L.push(`      for (var ci = 0u; ci < P.groupChannels; ci++) {`);
  L.push(`        let cOff = ci * P.plane;`);
  for (const i of rows) {
    L.push(
      s.aPad ? `        let aL${i} = select(0.0, a[at${i} + cOff], ok${i});` : `        let aL${i} = a[at${i} + cOff];`,
    );
  }
  for (const x of aRows.values()) L.push(`        ${x}`);
  for (const x of bLoad('kk')) L.push(`        ${x}`);
  for (const x of fmas()) L.push(`        ${x}`);
  L.push(`        kk++;`);
  L.push(`      }`);
  L.push(`    }`);
  L.push(`  }`);
  return L;
}

/** What the epilogue's WGSL depends on. */
export type EpilogueStructure = Pick<Structure, 'c' | 'accumulate' | 'bias' | 'act'>;

/** The epilogue's structure of a problem. */
export function epilogueStructure(p: GemmProblem): EpilogueStructure {
  return {
    c: p.c.kind,
    accumulate: p.accumulate === true,
    bias: p.bias !== undefined,
    act: (p.activation ?? NO_ACTIVATION).kind,
  };
}

/**
 * storeC(batch, row, col, value): scale, bias, activation and the store of one element
 * (uniforms: epilogueParams); storeCAt does the same at C and bias indices split into a row part
 * (cRowIndex, biasRowIndex) and a column part (cColIndex, biasColIndex), so that a tile's store
 * loop can take the row part, with its divisions, out of the column loop: llvmpipe divides lane
 * by lane, eight scalar divisions per vector.
 */
export function epilogueFunction(s: EpilogueStructure): string[] {
  const L: string[] = [];
  L.push(
    s.c === 'matrix'
      ? `fn cRowIndex(batch: u32, row: u32) -> u32 { return batch * P.cBatch + P.cOffset + row * P.cStrideM; }`
      : `fn cRowIndex(batch: u32, row: u32) -> u32 { return (row / P.cSpatial) * P.cImage + row % P.cSpatial; }`,
  );
  L.push(
    s.c === 'matrix'
      ? `fn cColIndex(batch: u32, col: u32) -> u32 { return (col + P.nOffset) * P.cStrideN; }`
      : `fn cColIndex(batch: u32, col: u32) -> u32 { return (batch * P.cBatchChannels + P.nOffset + col) * P.cSpatial; }`,
  );
  if (s.bias) {
    L.push(`fn biasRowIndex(batch: u32, row: u32) -> u32 { return batch * P.biasBatch + row * P.biasStrideM; }`);
    L.push(`fn biasColIndex(col: u32) -> u32 { return (col + P.nOffset) * P.biasStrideN; }`);
  }
  L.push(`fn storeCAt(at: u32, biasAt: u32, acc: f32) {`);
  L.push(`  let v = acc * P.alpha${s.bias ? ' + bias[biasAt] * P.beta' : ''};`);
  L.push(s.accumulate ? `  c[at] = c[at] + v;` : `  c[at] = ${activationWgsl(s.act, 'v')};`);
  L.push(`}`);
  L.push(`fn storeC(batch: u32, row: u32, col: u32, acc: f32) {`);
  const biasAt = s.bias ? 'biasRowIndex(batch, row) + biasColIndex(col)' : '0u';
  L.push(`  storeCAt(cRowIndex(batch, row) + cColIndex(batch, col), ${biasAt}, acc);`);
  L.push(`}`);
  return L;
}

// ---- the workgroup-memory kernel ----

function sharedKernel(s: Structure, v: Extract<GemmVariant, { kind: 'shared' }>): KernelShader {
  const BK = v.tileK;
  // f16 variants stage f16 tiles: half the workgroup memory and no conversion in the inner loop.
  const tileType = v.f16 ? 'f16' : 'f32';
  return {
    ...(v.f16 ? { enable: ['f16'] } : {}),
    workgroupSize: [v.wgX, v.wgY, 1],
    builtins: { lid: 'local_invocation_id', wid: 'workgroup_id', li: 'local_invocation_index' },
    prelude: () =>
      [
        `var<workgroup> tileA: array<${tileType}, ${BK * v.tileM * v.wgY}>;`,
        `var<workgroup> tileB: array<${tileType}, ${BK * v.tileN * v.wgX}>;`,
        '',
        ...sharedLoadA(s),
        ...sharedLoadB(s),
        ...epilogueFunction(s),
      ].join('\n'),
    body: () => sharedBody(v),
  };
}

/** The workgroup-memory kernel's entry point statements. */
function sharedBody(v: Extract<GemmVariant, { kind: 'shared' }>): string {
  const TM = v.tileM;
  const TN = v.tileN;
  const BM = TM * v.wgY;
  const BN = TN * v.wgX;
  const BK = v.tileK;
  const NT = v.wgX * v.wgY;
  const toTile = (e: string) => (v.f16 ? `f16(${e})` : e);
  const fma = (acc: string, a: string, b: string) =>
    v.f16 === 'f32-accumulate' ? `${acc} = ${acc} + f32(${a} * ${b});` : `${acc} = fma(${a}, ${b}, ${acc});`;
  const L: string[] = [];
  L.push(`  let batch = wid.z;`);
  L.push(`  let m0 = wid.y * ${u32(BM)} + P.mOffset;`);
  L.push(`  let n0 = wid.x * ${u32(BN)};`);
  const zero = v.f16 === 'f16-accumulate' ? 'f16(0.0)' : '0.0';
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) L.push(`  var acc${i}_${j} = ${zero};`);
  L.push(`  for (var k0 = 0u; k0 < P.K; k0 += ${u32(BK)}) {`);
  L.push(`    for (var e = li; e < ${u32(BM * BK)}; e += ${u32(NT)}) {`);
  L.push(`      tileA[e] = ${toTile(`loadA(batch, m0 + e % ${u32(BM)}, k0 + e / ${u32(BM)})`)};`);
  L.push(`    }`);
  L.push(`    for (var e = li; e < ${u32(BK * BN)}; e += ${u32(NT)}) {`);
  L.push(`      tileB[e] = ${toTile(`loadB(batch, k0 + e / ${u32(BN)}, n0 + e % ${u32(BN)})`)};`);
  L.push(`    }`);
  L.push(`    workgroupBarrier();`);
  L.push(`    for (var kk = 0u; kk < ${u32(BK)}; kk++) {`);
  for (let i = 0; i < TM; i++) L.push(`      let a${i} = tileA[kk * ${u32(BM)} + lid.y + ${u32(i * v.wgY)}];`);
  for (let j = 0; j < TN; j++) L.push(`      let b${j} = tileB[kk * ${u32(BN)} + lid.x + ${u32(j * v.wgX)}];`);
  for (let i = 0; i < TM; i++) for (let j = 0; j < TN; j++) L.push(`      ${fma(`acc${i}_${j}`, `a${i}`, `b${j}`)}`);
  L.push(`    }`);
  L.push(`    workgroupBarrier();`);
  L.push(`  }`);
  // Rows m0 + lid.y + i·wgY, columns n0 + lid.x + j·wgX: interleaved, so tile reads are conflict-free.
  L.push(`  var tile: array<f32, ${TM * TN}>;`);
  for (let i = 0; i < TM; i++)
    for (let j = 0; j < TN; j++)
      L.push(`  tile[${i * TN + j}] = ${v.f16 === 'f16-accumulate' ? `f32(acc${i}_${j})` : `acc${i}_${j}`};`);
  L.push(`  for (var i = 0u; i < ${u32(TM)}; i++) {`);
  L.push(`    let row = m0 + lid.y + i * ${u32(v.wgY)};`);
  L.push(`    if (row >= P.M) { break; }`);
  L.push(`    for (var j = 0u; j < ${u32(TN)}; j++) {`);
  L.push(`      let col = n0 + lid.x + j * ${u32(v.wgX)};`);
  L.push(`      if (col < P.N) { storeC(batch, row, col, tile[i * ${u32(TN)} + j]); }`);
  L.push(`    }`);
  L.push(`  }`);
  return L.join('\n');
}

/** loadA(batch, m, k) → f32, zero outside the M×K matrix (and in a conv's padding). */
function sharedLoadA(s: Structure): string[] {
  const L: string[] = [`fn loadA(batch: u32, m: u32, k: u32) -> f32 {`];
  L.push(`  if (m >= P.M || k >= P.K) { return 0.0; }`);
  if (s.a === 'mk') {
    L.push(`  return a[batch * P.aBatch + P.aOffset + m * P.aLd + k];`);
  } else if (s.a === 'km') {
    L.push(`  return a[batch * P.aBatch + P.aOffset + k * P.aLd + m];`);
  } else {
    // K in (kh, kw, ci) order, as packConvWeights lays out B.
    L.push(`  let pos = m % P.spatial;`);
    L.push(`  let r = k / P.groupChannels;`);
    L.push(`  let ci = k % P.groupChannels;`);
    L.push(`  let ih = i32((pos / P.outW) * P.strideH) - P.padTop + i32(r / P.kernelW) * P.dilationH;`);
    L.push(`  let iw = i32((pos % P.outW) * P.strideW) - P.padLeft + i32(r % P.kernelW) * P.dilationW;`);
    L.push(`  if (u32(ih) >= P.height || u32(iw) >= P.width) { return 0.0; }`);
    L.push(
      `  return a[(m / P.spatial) * P.imageSize + batch * P.groupSize + ci * P.plane + u32(ih) * P.width + u32(iw)];`,
    );
  }
  L.push(`}`);
  return L;
}

function sharedLoadB(s: Structure): string[] {
  const L: string[] = [`fn loadB(batch: u32, k: u32, n: u32) -> f32 {`];
  L.push(`  if (k >= P.K || n >= P.N) { return 0.0; }`);
  L.push(
    s.b === 'kn' ? `  return b[batch * P.bBatch + k * P.bLd + n];` : `  return b[batch * P.bBatch + n * P.bLd + k];`,
  );
  L.push(`}`);
  return L;
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

export function roundUp(x: number, multiple: number): number {
  return Math.ceil(x / multiple) * multiple;
}
