/// <reference types="@webgpu/types" />
// Softmax fused with cross-entropy, forward and backward, for logits [N, C] and u32 class labels.
//
// Two dispatches per batch:
//   1. rows:   one workgroup per sample. Three sweeps over the row: (max, non-finite check),
//              (Σ exp(z − max), Σ (z − max), rank of the label's logit), then dlogits.
//              Writes a 16-byte RowResult per sample: its loss, the label's rank, a status.
//   2. reduce: one workgroup folds the rows into a 48-byte LossStats block: the batch-mean loss
//              (a single f32 that stays on the GPU), top-1 and top-5 correct counts, and flags
//              for labels outside [0, C) and non-finite losses, with the first offending sample.
//
// Top-1/top-5 are counted on the GPU from the label's rank (how many logits beat it), which the
// row kernel gets for one comparison per element during a sweep it makes anyway; reading the
// logits back to rank them on the host would move N·C floats per step instead of 48 bytes.
// Ties count against the label only for lower class indices (the first index wins, like argmax).
import type { GpuContext } from './gpu-context.ts';
import { pipelineFor, type BufferRange, type KernelStep } from './program.ts';
import { defineProgram, dispatch1d, F32_LOWEST, output, ParamBlock, readOnly, type KernelProgram } from './shader.ts';

export interface CrossEntropyOptions {
  /** Samples in the batch: the loss is their mean and dlogits carry a 1/batch factor. */
  batch: number;
  classes: number;
  /** ε in target = (1 − ε)·onehot + ε/C; 0 (the default) is plain cross-entropy. */
  labelSmoothing?: number;
  /** Write dlogits = (softmax − target)/batch (default true); false for evaluation. */
  gradient?: boolean;
}

/** What the reduce kernel leaves in the stats buffer, decoded. */
export interface LossStats {
  /** Mean over the batch of −Σ target·log softmax. */
  loss: number;
  top1: number;
  top5: number;
  batch: number;
  /** Samples whose label is outside [0, classes). */
  badLabels: number;
  /** First such sample and its label (as u32), or -1. */
  firstBadRow: number;
  firstBadLabel: number;
  /** Samples whose logits hold NaN/±Inf or whose loss is not finite. */
  nonFiniteRows: number;
  firstNonFiniteRow: number;
  /** The batch-mean loss itself is NaN or ±Inf. */
  lossNonFinite: boolean;
}

/** Size of the stats block written by the reduce kernel (12 words). */
export const LOSS_STATS_BYTES = 48;
/** Size of one sample's RowResult (loss f32, rank u32, status u32, label u32). */
export const LOSS_ROW_BYTES = 16;

const ROW_WORKGROUP = 64;
const REDUCE_WORKGROUP = 64;
const STATUS_BAD_LABEL = 1;
const STATUS_NON_FINITE = 2;
const FLAG_BAD_LABEL = 1;
const FLAG_NON_FINITE_ROW = 2;
const FLAG_LOSS_NON_FINITE = 4;

/** A label outside [0, classes): the batch's loss and gradient are meaningless, so training stops. */
export class LabelOutOfRangeError extends Error {
  constructor(
    readonly batchIndex: number,
    readonly label: number,
    readonly classes: number,
    readonly count: number,
    readonly batch: number,
    where = '',
  ) {
    const signed = label | 0;
    super(
      `${where ? `${where}: ` : ''}label ${label}${signed < 0 ? ` (${signed} as a signed integer)` : ''} of sample ${batchIndex} ` +
        `in the batch is outside [0, ${classes}): the model has ${classes} classes, so labels must be integers 0…${classes - 1}` +
        (count > 1 ? ` (${count} of ${batch} labels in this batch are out of range)` : '') +
        (signed < 0 ? '; negative "ignore" labels are not supported' : ''),
    );
    this.name = 'LabelOutOfRangeError';
  }
}

/** The loss came out NaN or ±Inf: logits that are themselves non-finite, or an overflow. */
export class NonFiniteLossError extends Error {
  constructor(
    readonly loss: number,
    /** First sample whose logits or loss are not finite, or -1 when only the mean overflowed. */
    readonly firstRow: number,
    readonly rows: number,
    where = '',
  ) {
    super(
      `${where ? `${where}: ` : ''}the loss is ${loss}` +
        (firstRow >= 0
          ? `: sample ${firstRow} has non-finite logits or loss (${rows} sample${rows === 1 ? '' : 's'} in the batch)`
          : ': every sample is finite, the batch mean overflowed') +
        '. Usually a learning rate too high (try a lower one or gradient clipping) or NaN in the input data',
    );
    this.name = 'NonFiniteLossError';
  }
}

/**
 * The per-sample kernel. Bindings: logits (read), labels (read, u32), [dlogits (read_write)],
 * rows (read_write, RowResult per sample), params. Label smoothing and the sizes live in the
 * params block, so every batch size and ε share the two pipelines (with and without gradient).
 */
export function crossEntropyRowsProgram(options: CrossEntropyOptions): KernelProgram {
  const { batch, classes } = checkOptions(options);
  const gradient = options.gradient ?? true;
  const smoothing = options.labelSmoothing ?? 0;
  const dispatch = dispatch1d(batch);
  const P = new ParamBlock()
    .u32('batch', batch)
    .u32('classes', classes)
    .u32('groupsX', dispatch[0])
    .f32('smoothing', smoothing)
    .f32('invBatch', 1 / batch);
  return defineProgram({
    label: `softmax cross-entropy ${batch}×${classes}${smoothing ? ` ε=${smoothing}` : ''}${gradient ? '' : ' (no gradient)'}`,
    key: `softmax-cross-entropy-rows${gradient ? '' : '-nograd'}`,
    dispatch,
    bindings: [
      readOnly('logits'),
      readOnly('labels', { type: 'u32' }),
      ...(gradient ? [output('dlogits')] : []),
      output('rows', { type: 'RowResult' }),
    ],
    params: P,
    workgroupSize: ROW_WORKGROUP,
    builtins: { wg: 'workgroup_id', lid: 'local_invocation_index' },
    prelude: () => `struct RowResult { loss: f32, rank: u32, status: u32, label: u32 }
const WG = ${ROW_WORKGROUP}u;
var<workgroup> redF: array<f32, ${ROW_WORKGROUP}>;
var<workgroup> redG: array<f32, ${ROW_WORKGROUP}>;
var<workgroup> redU: array<u32, ${ROW_WORKGROUP}>;

// By the bits: fast-math compilers may fold isnan-style comparisons away.
fn nonFinite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u; }`,
    body: () => `  let row = wg.x + wg.y * P.groupsX;
  if (row >= P.batch) { return; }
  let C = P.classes;
  let base = row * C;
  let label = labels[row];
  let labelOk = label < C;

  // Sweep 1: row max; any NaN/Inf.
  var m = ${F32_LOWEST};
  var bad = 0u;
  for (var j = lid; j < C; j += WG) {
    let z = logits[base + j];
    m = max(m, z);
    bad |= select(0u, 1u, nonFinite(z));
  }
  redF[lid] = m;
  redU[lid] = bad;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      redF[lid] = max(redF[lid], redF[lid + s]);
      redU[lid] |= redU[lid + s];
    }
    workgroupBarrier();
  }
  m = redF[0];
  let rowNonFinite = redU[0] != 0u;
  workgroupBarrier();

  // Sweep 2: Σ exp(z − m), Σ (z − m) for the smoothing term, and the label's rank.
  var zy = 0.0;
  if (labelOk) { zy = logits[base + label]; }
  var sumExp = 0.0;
  var sumShift = 0.0;
  var rank = 0u;
  for (var j = lid; j < C; j += WG) {
    let z = logits[base + j];
    sumExp += exp(z - m);
    sumShift += z - m;
    rank += select(0u, 1u, z > zy || (z == zy && j < label));
  }
  redF[lid] = sumExp;
  redG[lid] = sumShift;
  redU[lid] = rank;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      redF[lid] += redF[lid + s];
      redG[lid] += redG[lid + s];
      redU[lid] += redU[lid + s];
    }
    workgroupBarrier();
  }
  let S = redF[0];
  let logS = log(S);
  let eps = P.smoothing;
  let onTarget = 1.0 - eps;
  let offTarget = eps / f32(C);
  // −Σ t·log p with log p = z − m − log S and Σ t = 1, grouped so a large common offset cancels.
  let loss = logS + onTarget * (m - zy) - offTarget * redG[0];

  if (lid == 0u) {
    var status = 0u;
    if (!labelOk) { status |= ${STATUS_BAD_LABEL}u; }
    if (rowNonFinite || nonFinite(loss)) { status |= ${STATUS_NON_FINITE}u; }
    rows[row] = RowResult(select(loss, 0.0, !labelOk), select(redU[0], C, !labelOk), status, label);
  }
${
  gradient
    ? `
  // Sweep 3: dlogits = (softmax − target) / N; zeros for a sample with a bad label.
  let invS = 1.0 / S;
  for (var j = lid; j < C; j += WG) {
    let p = exp(logits[base + j] - m) * invS;
    let t = offTarget + select(0.0, onTarget, j == label);
    dlogits[base + j] = select(0.0, (p - t) * P.invBatch, labelOk);
  }`
    : ''
}`,
  });
}

/** The batch reduction. Bindings: rows (read), stats (read_write, LOSS_STATS_BYTES), params. */
export function crossEntropyReduceProgram(batch: number): KernelProgram {
  if (!Number.isInteger(batch) || batch < 1)
    throw new Error(`cross-entropy: batch must be a positive integer, got ${batch}`);
  const NONE = '0xffffffffu';
  return defineProgram({
    label: `cross-entropy batch reduce ×${batch}`,
    key: 'softmax-cross-entropy-reduce',
    dispatch: [1, 1, 1],
    bindings: [readOnly('rows', { type: 'RowResult' }), output('stats', { type: 'Stats', single: true })],
    params: new ParamBlock().u32('batch', batch),
    workgroupSize: REDUCE_WORKGROUP,
    builtins: { lid: 'local_invocation_index' },
    prelude: () => `struct RowResult { loss: f32, rank: u32, status: u32, label: u32 }
struct Stats {
  loss: f32, top1: u32, top5: u32, flags: u32,
  badLabels: u32, firstBadRow: u32, firstBadLabel: u32, nonFiniteRows: u32,
  firstNonFiniteRow: u32, batch: u32, pad0: u32, pad1: u32,
}
const WG = ${REDUCE_WORKGROUP}u;
var<workgroup> sumLoss: array<f32, ${REDUCE_WORKGROUP}>;
var<workgroup> top1: array<u32, ${REDUCE_WORKGROUP}>;
var<workgroup> top5: array<u32, ${REDUCE_WORKGROUP}>;
var<workgroup> badCount: array<u32, ${REDUCE_WORKGROUP}>;
var<workgroup> badFirst: array<u32, ${REDUCE_WORKGROUP}>;
var<workgroup> nfCount: array<u32, ${REDUCE_WORKGROUP}>;
var<workgroup> nfFirst: array<u32, ${REDUCE_WORKGROUP}>;

fn nonFinite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u; }`,
    body: () => `  var s = 0.0;
  var t1 = 0u; var t5 = 0u; var bc = 0u; var bf = ${NONE}; var nc = 0u; var nf = ${NONE};
  for (var i = lid; i < P.batch; i += WG) {
    let r = rows[i];
    s += r.loss;
    t1 += select(0u, 1u, r.rank < 1u);
    t5 += select(0u, 1u, r.rank < 5u);
    if ((r.status & ${STATUS_BAD_LABEL}u) != 0u) { bc += 1u; bf = min(bf, i); }
    if ((r.status & ${STATUS_NON_FINITE}u) != 0u) { nc += 1u; nf = min(nf, i); }
  }
  sumLoss[lid] = s; top1[lid] = t1; top5[lid] = t5;
  badCount[lid] = bc; badFirst[lid] = bf; nfCount[lid] = nc; nfFirst[lid] = nf;
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (lid < h) {
      sumLoss[lid] += sumLoss[lid + h];
      top1[lid] += top1[lid + h];
      top5[lid] += top5[lid + h];
      badCount[lid] += badCount[lid + h];
      badFirst[lid] = min(badFirst[lid], badFirst[lid + h]);
      nfCount[lid] += nfCount[lid + h];
      nfFirst[lid] = min(nfFirst[lid], nfFirst[lid + h]);
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let loss = sumLoss[0] / f32(P.batch);
    var flags = 0u;
    if (badCount[0] > 0u) { flags |= ${FLAG_BAD_LABEL}u; }
    if (nfCount[0] > 0u) { flags |= ${FLAG_NON_FINITE_ROW}u; }
    if (nonFinite(loss)) { flags |= ${FLAG_LOSS_NON_FINITE}u; }
    var badLabel = ${NONE};
    if (badCount[0] > 0u) { badLabel = rows[badFirst[0]].label; }
    stats = Stats(loss, top1[0], top5[0], flags, badCount[0], badFirst[0], badLabel, nfCount[0], nfFirst[0], P.batch, 0u, 0u);
  }`,
  });
}

/** Decodes a stats block (no checks: see checkLossStats). */
export function decodeLossStats(bytes: ArrayBuffer | ArrayBufferView): LossStats {
  const view =
    bytes instanceof ArrayBuffer ? new DataView(bytes) : new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.byteLength < LOSS_STATS_BYTES)
    throw new Error(`loss stats: ${LOSS_STATS_BYTES} bytes expected, got ${view.byteLength}`);
  const u = (i: number) => view.getUint32(i * 4, true);
  const row = (x: number) => (x === 0xffffffff ? -1 : x);
  const flags = u(3);
  return {
    loss: view.getFloat32(0, true),
    top1: u(1),
    top5: u(2),
    badLabels: u(4),
    firstBadRow: row(u(5)),
    firstBadLabel: u(6),
    nonFiniteRows: u(7),
    firstNonFiniteRow: row(u(8)),
    batch: u(9),
    lossNonFinite: (flags & FLAG_LOSS_NON_FINITE) !== 0,
  };
}

/**
 * Throws LabelOutOfRangeError (first, since a bad label also poisons the loss) or
 * NonFiniteLossError; `where` (e.g. "epoch 3, batch 17") goes in front of the message.
 */
export function checkLossStats(stats: LossStats, classes: number, where = ''): LossStats {
  if (stats.badLabels > 0) {
    throw new LabelOutOfRangeError(
      stats.firstBadRow,
      stats.firstBadLabel,
      classes,
      stats.badLabels,
      stats.batch,
      where,
    );
  }
  if (stats.nonFiniteRows > 0 || stats.lossNonFinite || !Number.isFinite(stats.loss)) {
    throw new NonFiniteLossError(stats.loss, stats.firstNonFiniteRow, stats.nonFiniteRows, where);
  }
  return stats;
}

/** The loss bound to its buffers: record it into an encoder, then read the stats back. */
export interface CrossEntropyStep {
  readonly options: Required<CrossEntropyOptions>;
  /** The two kernel steps (rows, reduce), for a plan that encodes its own passes. */
  readonly steps: KernelStep[];
  /** LOSS_STATS_BYTES, STORAGE | COPY_SRC: word 0 is the batch-mean loss. */
  readonly stats: GPUBuffer;
  /** Per-sample RowResults (loss, rank, status, label), STORAGE | COPY_SRC. */
  readonly rows: GPUBuffer;
  /** Records both dispatches into one compute pass of encoder. */
  encode(encoder: GPUCommandEncoder): void;
  /** Reads the stats back; throws LabelOutOfRangeError / NonFiniteLossError unless check is false. */
  readStats(options?: { check?: boolean; where?: string }): Promise<LossStats>;
  /** Per-sample losses (0 for a bad label), for reporting. */
  readRowLosses(): Promise<Float32Array>;
  destroy(): void;
}

export interface CrossEntropyBuffers {
  /** batch × classes f32. */
  logits: BufferRange;
  /** batch u32 class indices. */
  labels: BufferRange;
  /** batch × classes f32; required when options.gradient is not false. */
  dlogits?: BufferRange;
}

/** Compiles (or fetches) both pipelines and binds them to the given buffers. */
export async function prepareCrossEntropy(
  gpu: GpuContext,
  options: CrossEntropyOptions,
  buffers: CrossEntropyBuffers,
): Promise<CrossEntropyStep> {
  const { batch, classes } = checkOptions(options);
  const full: Required<CrossEntropyOptions> = {
    batch,
    classes,
    labelSmoothing: options.labelSmoothing ?? 0,
    gradient: options.gradient ?? true,
  };
  if (full.gradient && !buffers.dlogits) {
    throw new Error(
      'cross-entropy: a dlogits buffer is required when gradient is true (pass gradient: false for evaluation)',
    );
  }
  const rowsProgram = crossEntropyRowsProgram(full);
  const reduceProgram = crossEntropyReduceProgram(batch);
  const [rowsPipeline, reducePipeline] = await Promise.all([
    pipelineFor(gpu, rowsProgram),
    pipelineFor(gpu, reduceProgram),
  ]);

  const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const owned: GPUBuffer[] = [];
  const make = (label: string, size: number, usage: GPUBufferUsageFlags) => {
    const b = gpu.createBuffer(label, size, usage);
    owned.push(b);
    return b;
  };
  const rows = make('cross-entropy rows', batch * LOSS_ROW_BYTES, storage);
  const stats = make('cross-entropy stats', LOSS_STATS_BYTES, storage);
  const rowsParams = make(
    'cross-entropy rows params',
    rowsProgram.params!.byteLength,
    GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  );
  const reduceParams = make(
    'cross-entropy reduce params',
    reduceProgram.params!.byteLength,
    GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  );
  gpu.upload(rowsParams, new Uint8Array(rowsProgram.params!));
  gpu.upload(reduceParams, new Uint8Array(reduceProgram.params!));

  const entry = (binding: number, r: BufferRange): GPUBindGroupEntry => ({
    binding,
    resource: { buffer: r.buffer, offset: r.offset ?? 0, ...(r.size !== undefined ? { size: r.size } : {}) },
  });
  const rowRanges: BufferRange[] = [
    buffers.logits,
    buffers.labels,
    ...(full.gradient ? [buffers.dlogits!] : []),
    { buffer: rows },
    { buffer: rowsParams },
  ];
  const steps = await gpu.scope(`bind '${rowsProgram.label}'`, () => {
    const rowsGroup = gpu.device.createBindGroup({
      label: rowsProgram.label,
      layout: rowsPipeline.getBindGroupLayout(0),
      entries: rowRanges.map((r, i) => entry(i, r)),
    });
    const reduceGroup = gpu.device.createBindGroup({
      label: reduceProgram.label,
      layout: reducePipeline.getBindGroupLayout(0),
      entries: [{ buffer: rows }, { buffer: stats }, { buffer: reduceParams }].map((r, i) => entry(i, r)),
    });
    return [
      {
        label: rowsProgram.label,
        pipeline: rowsPipeline,
        bindGroup: rowsGroup,
        dispatch: rowsProgram.dispatch,
        owned: [],
      },
      {
        label: reduceProgram.label,
        pipeline: reducePipeline,
        bindGroup: reduceGroup,
        dispatch: reduceProgram.dispatch,
        owned,
      },
    ] satisfies KernelStep[];
  });

  return {
    options: full,
    steps,
    stats,
    rows,
    encode(encoder) {
      const pass = encoder.beginComputePass({ label: rowsProgram.label });
      for (const s of steps) {
        pass.setPipeline(s.pipeline);
        pass.setBindGroup(0, s.bindGroup);
        pass.dispatchWorkgroups(...s.dispatch);
      }
      pass.end();
    },
    async readStats({ check = true, where = '' } = {}) {
      const decoded = decodeLossStats(await gpu.read(stats, LOSS_STATS_BYTES));
      return check ? checkLossStats(decoded, classes, where) : decoded;
    },
    async readRowLosses() {
      const raw = new Float32Array(await gpu.read(rows, batch * LOSS_ROW_BYTES));
      const out = new Float32Array(batch);
      for (let i = 0; i < batch; i++) out[i] = raw[i * 4];
      return out;
    },
    destroy() {
      for (const b of owned) b.destroy();
      owned.length = 0;
    },
  };
}

function checkOptions(options: CrossEntropyOptions): { batch: number; classes: number } {
  const { batch, classes } = options;
  if (!Number.isInteger(batch) || batch < 1)
    throw new Error(`cross-entropy: batch must be a positive integer, got ${batch}`);
  if (!Number.isInteger(classes) || classes < 1 || classes >= 2 ** 30) {
    throw new Error(`cross-entropy: classes must be an integer in [1, 2^30), got ${classes}`);
  }
  const eps = options.labelSmoothing ?? 0;
  if (!(eps >= 0 && eps <= 1)) throw new Error(`cross-entropy: labelSmoothing must be in [0, 1], got ${eps}`);
  return { batch, classes };
}
