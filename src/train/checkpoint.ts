// Training checkpoints as one binary blob (engine side: bytes in, bytes out, no file system).
//
// Layout, all integers little-endian:
//   0   "GRAFTCK1"                   magic, 8 bytes
//   8   u32 version                  1
//   12  u32 header bytes             32
//   16  u64 total bytes              the whole blob, checksum included: truncation is detectable
//   24  u32 JSON bytes               the metadata's UTF-8 length (before padding)
//   28  u32 reserved                 0
//   32  JSON metadata                zero-padded to a multiple of 4
//   …   tensor data                  raw little-endian float32, each at a 4-byte-aligned offset
//   end−4  u32 CRC-32                (IEEE, as zlib/PNG) of every byte before it
//
// The metadata holds the architecture fingerprint, step, epoch, rng and schedule state, the
// optimizer's type, step and config, and for each tensor its kind, name, dims and byte offset.

import type { Graph, Initializer } from '../graph/ir.ts';
import type { OptimizerState, ResolvedOptimizerConfig, SlotName } from './optimizers.ts';

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** What makes two graphs the same network for a checkpoint's purposes. */
export interface ArchitectureFingerprint {
  /** FNV-1a 64 (16 hex digits) over node ops, attributes and wiring and every initializer's name, dtype and dims. */
  hash: string;
  /** Every initializer's name and dims, in graph order: to name the first difference when hashes differ. */
  parameters: { name: string; dims: number[] }[];
}

export interface CheckpointTensor {
  dims: number[];
  data: Float32Array;
}

export interface Checkpoint {
  fingerprint: ArchitectureFingerprint;
  /** Float tensors to restore by initializer name: trainable weights and BatchNormalization running statistics. */
  weights: Map<string, CheckpointTensor>;
  optimizer?: OptimizerState;
  /** Optimizer steps taken. */
  step: number;
  /** Completed epochs. */
  epoch: number;
  /** Data-order and augmentation generators' state, as the trainer chooses to describe it. */
  rng?: JsonValue;
  /** The schedule's spec (a schedule is a pure function of the step). */
  schedule?: JsonValue;
  /** Anything else the caller wants back (dataset path, class names, metrics so far). */
  extra?: { [key: string]: JsonValue };
}

export type CheckpointProblem =
  'missing' | 'truncated' | 'not-a-checkpoint' | 'version' | 'checksum' | 'corrupt' | 'architecture';

export class CheckpointError extends Error {
  constructor(
    readonly problem: CheckpointProblem,
    /** The file (or other source) the bytes came from; '' when unknown. */
    readonly file: string,
    readonly detail: string,
  ) {
    super(`${file ? `checkpoint ${file}` : 'checkpoint'}: ${detail}`);
    this.name = 'CheckpointError';
  }
}

export const CHECKPOINT_MAGIC = 'GRAFTCK1';
export const CHECKPOINT_VERSION = 1;
const HEADER_BYTES = 32;
const CHECKSUM_BYTES = 4;
const FORMAT = 'onnx-graft checkpoint';

// ---------------------------------------------------------------------------------------------
// Public functions

/** The architecture fingerprint of a graph: stable across clones, renamed intermediates and batch sizes. */
export function architectureFingerprint(graph: Graph): ArchitectureFingerprint {
  // Value shapes are left out on purpose: they carry the batch size, which may change between
  // runs; initializer dims and node attributes pin everything a checkpoint's weights depend on.
  const ids = new Map<string, string>();
  graph.inputs.forEach((input, i) => {
    if (!graph.initializers.has(input.name))
      ids.set(input.name, `input${i}${JSON.stringify(input.shape?.slice(1) ?? null)}`);
  });
  const parameters: ArchitectureFingerprint['parameters'] = [];
  const lines: string[] = [];
  for (const init of graph.initializers.values()) {
    ids.set(init.name, `init:${init.name}`);
    parameters.push({ name: init.name, dims: [...init.value.dims] });
    lines.push(`init ${JSON.stringify(init.name)} ${init.value.dtype} [${init.value.dims.join(',')}]`);
  }
  graph.nodes.forEach((node, n) => {
    node.outputs.forEach((o, k) => {
      if (o) ids.set(o, `n${n}.${k}`);
    });
    const inputs = node.inputs.map((i) => (i ? (ids.get(i) ?? `?${i}`) : '-'));
    const attributes = Object.keys(node.attributes)
      .sort()
      .map((k) => `${k}=${describeAttribute(node.attributes[k])}`);
    lines.push(
      `node ${node.domain}::${node.opType}(${inputs.join(',')})->${node.outputs.length} {${attributes.join(';')}}`,
    );
  });
  lines.push(`outputs ${graph.outputs.map((o) => ids.get(o.name) ?? `?${o.name}`).join(',')}`);
  return { hash: fnv1a64(new TextEncoder().encode(lines.join('\n'))), parameters };
}

/** Every float32 initializer of the graph (trainable or not, so BatchNorm statistics come along). */
export function graphWeights(graph: Graph): Map<string, CheckpointTensor> {
  const out = new Map<string, CheckpointTensor>();
  for (const init of graph.initializers.values()) {
    if (init.value.dtype === 'float32')
      out.set(init.name, { dims: [...init.value.dims], data: init.value.data as Float32Array });
  }
  return out;
}

/**
 * Puts a checkpoint's weights into the graph's initializers (new tensors; trainable flags kept).
 * Every weight must exist in the graph with the same dims; returns how many were restored.
 */
export function restoreGraphWeights(graph: Graph, weights: Map<string, CheckpointTensor>, file = ''): number {
  for (const [name, w] of weights) {
    const init: Initializer | undefined = graph.initializers.get(name);
    if (!init)
      throw new CheckpointError('architecture', file, `the checkpoint has weight '${name}', which the model lacks`);
    if (!sameDims(init.value.dims, w.dims)) {
      throw new CheckpointError(
        'architecture',
        file,
        `weight '${name}' is ${showDims(w.dims)} in the checkpoint but ${showDims(init.value.dims)} in the model`,
      );
    }
  }
  for (const [name, w] of weights) {
    const init = graph.initializers.get(name)!;
    graph.setInitializer(name, { dtype: 'float32', dims: [...w.dims], data: w.data }, init.trainable);
  }
  return weights.size;
}

/** Throws CheckpointError('architecture') naming the first differing parameter (name and dims). */
export function checkFingerprint(found: ArchitectureFingerprint, expected: ArchitectureFingerprint, file = ''): void {
  if (found.hash === expected.hash) return;
  const prefix = 'the checkpoint is from a different architecture: ';
  const inCheckpoint = new Map(found.parameters.map((p) => [p.name, p.dims]));
  const inModel = new Set<string>();
  for (const p of expected.parameters) {
    inModel.add(p.name);
    const dims = inCheckpoint.get(p.name);
    if (!dims)
      throw new CheckpointError(
        'architecture',
        file,
        `${prefix}the model's parameter '${p.name}' ${showDims(p.dims)} is not in the checkpoint`,
      );
    if (!sameDims(dims, p.dims)) {
      throw new CheckpointError(
        'architecture',
        file,
        `${prefix}parameter '${p.name}' is ${showDims(dims)} in the checkpoint but ${showDims(p.dims)} in the model`,
      );
    }
  }
  const extra = found.parameters.find((p) => !inModel.has(p.name));
  if (extra)
    throw new CheckpointError(
      'architecture',
      file,
      `${prefix}the checkpoint has parameter '${extra.name}' ${showDims(extra.dims)}, which the model lacks`,
    );
  throw new CheckpointError(
    'architecture',
    file,
    `${prefix}every parameter matches, but the layers differ (ops, attributes or wiring): fingerprint ${found.hash} in the checkpoint, ${expected.hash} for the model`,
  );
}

export function serializeCheckpoint(ck: Checkpoint): Uint8Array {
  checkInteger('step', ck.step);
  checkInteger('epoch', ck.epoch);
  const tensors: TensorRecord[] = [];
  const payloads: Float32Array[] = [];
  for (const [name, w] of ck.weights) {
    checkTensor(`weight '${name}'`, w.dims, w.data);
    tensors.push({ kind: 'weight', name, dims: [...w.dims], offset: 0 });
    payloads.push(w.data);
  }
  if (ck.optimizer) {
    for (const [name, slots] of ck.optimizer.slots) {
      for (const slot of Object.keys(slots).sort() as SlotName[]) {
        const data = slots[slot]!;
        const dims = ck.weights.get(name)?.dims ?? [data.length];
        checkTensor(`optimizer ${slot} of '${name}'`, dims, data);
        tensors.push({ kind: 'optimizer', name, slot, dims: [...dims], offset: 0 });
        payloads.push(data);
      }
    }
  }

  // Offsets depend on the JSON's length, which depends on the offsets' digits: iterate to a fixed point.
  let jsonBytes = new Uint8Array(0);
  for (let guess = 0, round = 0; ; round++) {
    let offset = HEADER_BYTES + align4(guess);
    tensors.forEach((t, i) => {
      t.offset = offset;
      offset += payloads[i].byteLength; // multiples of 4: every offset stays aligned
    });
    jsonBytes = new TextEncoder().encode(JSON.stringify(metadataOf(ck, tensors)));
    if (align4(jsonBytes.length) === align4(guess)) break;
    if (round > 8) throw new Error('internal: checkpoint metadata layout did not settle');
    guess = jsonBytes.length;
  }

  const dataStart = HEADER_BYTES + align4(jsonBytes.length);
  const dataBytes = payloads.reduce((s, p) => s + p.byteLength, 0);
  const total = dataStart + dataBytes + CHECKSUM_BYTES;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(new TextEncoder().encode(CHECKPOINT_MAGIC), 0);
  view.setUint32(8, CHECKPOINT_VERSION, true);
  view.setUint32(12, HEADER_BYTES, true);
  view.setBigUint64(16, BigInt(total), true);
  view.setUint32(24, jsonBytes.length, true);
  out.set(jsonBytes, HEADER_BYTES);
  tensors.forEach((t, i) => writeFloat32LE(out, t.offset, payloads[i]));
  view.setUint32(total - CHECKSUM_BYTES, crc32(out.subarray(0, total - CHECKSUM_BYTES)), true);
  return out;
}

export interface DeserializeOptions {
  /** Named in errors: the file path, or any description of where the bytes came from. */
  source?: string;
  /** When given, a checkpoint of another architecture is refused (checkFingerprint). */
  expected?: ArchitectureFingerprint;
}

/**
 * Parses and verifies a checkpoint: magic, version, length, checksum, metadata, then (when
 * `expected` is given) the architecture. The tensors are views into `bytes` when it is 4-byte
 * aligned (copies otherwise), so keep `bytes` unmodified while the checkpoint is in use.
 */
export function deserializeCheckpoint(bytes: Uint8Array, options: DeserializeOptions = {}): Checkpoint {
  const file = options.source ?? '';
  const fail = (problem: CheckpointProblem, detail: string): never => {
    throw new CheckpointError(problem, file, detail);
  };
  const magic = new TextEncoder().encode(CHECKPOINT_MAGIC);
  const prefix = bytes.subarray(0, Math.min(magic.length, bytes.length));
  if (!prefix.every((b, i) => b === magic[i])) {
    fail(
      'not-a-checkpoint',
      `not an onnx-graft checkpoint (it does not start with "${CHECKPOINT_MAGIC}"${describeStart(bytes)})`,
    );
  }
  if (bytes.length < HEADER_BYTES) {
    fail('truncated', `truncated: found ${bytes.length} bytes, the header alone is ${HEADER_BYTES}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== CHECKPOINT_VERSION) {
    fail(
      'version',
      `format version ${version}; this onnx-graft reads version ${CHECKPOINT_VERSION}${version > CHECKPOINT_VERSION ? ' (written by a newer onnx-graft)' : ''}`,
    );
  }
  const headerBytes = view.getUint32(12, true);
  const total = Number(view.getBigUint64(16, true));
  const jsonLength = view.getUint32(24, true);
  if (headerBytes !== HEADER_BYTES) fail('corrupt', `header size ${headerBytes}, expected ${HEADER_BYTES}`);
  if (bytes.length < total)
    fail(
      'truncated',
      `truncated: the header says ${total} bytes, found ${bytes.length} (an interrupted copy or download?)`,
    );
  if (bytes.length > total)
    fail('corrupt', `the header says ${total} bytes but there are ${bytes.length}: trailing data after the checkpoint`);
  if (total < HEADER_BYTES + jsonLength + CHECKSUM_BYTES)
    fail('corrupt', `the header's sizes do not add up (total ${total}, metadata ${jsonLength})`);
  const stored = view.getUint32(total - CHECKSUM_BYTES, true);
  const computed = crc32(bytes.subarray(0, total - CHECKSUM_BYTES));
  if (stored !== computed) {
    fail(
      'checksum',
      `checksum mismatch: stored CRC-32 ${hex32(stored)}, computed ${hex32(computed)}: the file is damaged`,
    );
  }

  let meta: Metadata;
  try {
    meta = JSON.parse(
      new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(HEADER_BYTES, HEADER_BYTES + jsonLength)),
    ) as Metadata;
  } catch (e) {
    return fail('corrupt', `the metadata is not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (meta?.format !== FORMAT || !Array.isArray(meta.tensors) || typeof meta.fingerprint?.hash !== 'string') {
    fail('corrupt', 'the metadata lacks its format, fingerprint or tensor list');
  }
  if (options.expected) checkFingerprint(meta.fingerprint, options.expected, file);

  const dataStart = HEADER_BYTES + align4(jsonLength);
  const dataEnd = total - CHECKSUM_BYTES;
  const weights = new Map<string, CheckpointTensor>();
  const slots = new Map<string, Partial<Record<SlotName, Float32Array>>>();
  for (const t of meta.tensors) {
    const what = t.kind === 'optimizer' ? `optimizer ${t.slot} of '${t.name}'` : `weight '${t.name}'`;
    if (!Array.isArray(t.dims) || !t.dims.every((d) => Number.isInteger(d) && d >= 0))
      fail('corrupt', `${what}: bad dims ${JSON.stringify(t.dims)}`);
    const count = t.dims.reduce((a, b) => a * b, 1);
    if (!Number.isInteger(t.offset) || t.offset % 4 !== 0 || t.offset < dataStart || t.offset + count * 4 > dataEnd) {
      fail(
        'corrupt',
        `${what}: ${count} floats at byte ${t.offset} lie outside the data section [${dataStart}, ${dataEnd})`,
      );
    }
    const data = readFloat32LE(bytes, t.offset, count);
    if (t.kind === 'weight') weights.set(t.name, { dims: t.dims, data });
    else if (t.kind === 'optimizer' && typeof t.slot === 'string') {
      let record = slots.get(t.name);
      if (!record) slots.set(t.name, (record = {}));
      record[t.slot] = data;
    } else fail('corrupt', `tensor '${t.name}' has unknown kind '${String(t.kind)}'`);
  }

  const ck: Checkpoint = {
    fingerprint: meta.fingerprint,
    weights,
    step: meta.step,
    epoch: meta.epoch,
  };
  if (meta.optimizer)
    ck.optimizer = { type: meta.optimizer.type, step: meta.optimizer.step, config: meta.optimizer.config, slots };
  if (meta.rng !== undefined) ck.rng = meta.rng;
  if (meta.schedule !== undefined) ck.schedule = meta.schedule;
  if (meta.extra !== undefined) ck.extra = meta.extra;
  return ck;
}

/** CRC-32 (IEEE 802.3 polynomial, reflected; the zlib/PNG checksum), slicing by 8 bytes. */
export function crc32(bytes: Uint8Array, seed = 0): number {
  const t = crcTables();
  let crc = ~seed >>> 0;
  let i = 0;
  const fast = bytes.length - (bytes.length % 8);
  for (; i < fast; i += 8) {
    const a = (crc ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24))) >>> 0;
    crc =
      t[7 * 256 + (a & 0xff)] ^
      t[6 * 256 + ((a >>> 8) & 0xff)] ^
      t[5 * 256 + ((a >>> 16) & 0xff)] ^
      t[4 * 256 + (a >>> 24)] ^
      t[3 * 256 + bytes[i + 4]] ^
      t[2 * 256 + bytes[i + 5]] ^
      t[256 + bytes[i + 6]] ^
      t[bytes[i + 7]];
  }
  for (; i < bytes.length; i++) crc = t[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Helpers

interface TensorRecord {
  kind: 'weight' | 'optimizer';
  name: string;
  slot?: SlotName;
  dims: number[];
  offset: number;
}

interface Metadata {
  format: string;
  fingerprint: ArchitectureFingerprint;
  step: number;
  epoch: number;
  rng?: JsonValue;
  schedule?: JsonValue;
  extra?: { [key: string]: JsonValue };
  optimizer?: { type: OptimizerState['type']; step: number; config: ResolvedOptimizerConfig };
  tensors: TensorRecord[];
}

function metadataOf(ck: Checkpoint, tensors: TensorRecord[]): Metadata {
  return {
    format: FORMAT,
    fingerprint: ck.fingerprint,
    step: ck.step,
    epoch: ck.epoch,
    ...(ck.rng !== undefined ? { rng: ck.rng } : {}),
    ...(ck.schedule !== undefined ? { schedule: ck.schedule } : {}),
    ...(ck.extra !== undefined ? { extra: ck.extra } : {}),
    ...(ck.optimizer
      ? { optimizer: { type: ck.optimizer.type, step: ck.optimizer.step, config: ck.optimizer.config } }
      : {}),
    tensors,
  };
}

function describeAttribute(a: Graph['nodes'][number]['attributes'][string]): string {
  switch (a.type) {
    case 'tensor':
      return `tensor:${a.value.dtype}[${a.value.dims.join(',')}]`;
    case 'tensors':
      return `tensors:${a.value.length}`;
    case 'opaque':
      return 'opaque';
    default:
      return `${a.type}:${JSON.stringify(a.value)}`;
  }
}

function checkInteger(what: string, x: number): void {
  if (!Number.isSafeInteger(x) || x < 0) throw new Error(`checkpoint: ${what} must be an integer ≥ 0, got ${x}`);
}

function checkTensor(what: string, dims: number[], data: Float32Array): void {
  if (!(data instanceof Float32Array)) throw new Error(`checkpoint: ${what} must be a Float32Array`);
  const count = dims.reduce((a, b) => a * b, 1);
  if (count !== data.length)
    throw new Error(`checkpoint: ${what} has ${data.length} elements but dims ${showDims(dims)} need ${count}`);
}

function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function showDims(dims: readonly number[]): string {
  return `[${dims.join(', ')}]`;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

function hex32(x: number): string {
  return `0x${x.toString(16).padStart(8, '0')}`;
}

function describeStart(bytes: Uint8Array): string {
  if (bytes.length === 0) return '; the file is empty';
  const head = [...bytes.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  // An ONNX model starts with field 1 (ir_version) as a varint: byte 0x08.
  return `; it starts with ${head}${bytes[0] === 0x08 ? ', which looks like an ONNX model' : ''}`;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function writeFloat32LE(out: Uint8Array, offset: number, data: Float32Array): void {
  if (LITTLE_ENDIAN) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), offset);
    return;
  }
  const view = new DataView(out.buffer, out.byteOffset + offset, data.byteLength);
  for (let i = 0; i < data.length; i++) view.setFloat32(i * 4, data[i], true);
}

function readFloat32LE(bytes: Uint8Array, offset: number, count: number): Float32Array {
  if (LITTLE_ENDIAN && (bytes.byteOffset + offset) % 4 === 0)
    return new Float32Array(bytes.buffer, bytes.byteOffset + offset, count);
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, count * 4);
  for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

let tables: Uint32Array | null = null;

function crcTables(): Uint32Array {
  if (tables) return tables;
  const t = new Uint32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    for (let k = 1; k < 8; k++) t[k * 256 + n] = (t[(k - 1) * 256 + n] >>> 8) ^ t[t[(k - 1) * 256 + n] & 0xff];
  }
  tables = t;
  return t;
}

/** FNV-1a, 64-bit, as 16 hex digits (BigInt: a fingerprint hashes kilobytes, not gigabytes). */
function fnv1a64(bytes: Uint8Array): string {
  const prime = 0x100000001b3n;
  const mask = 0xffffffffffffffffn;
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * prime) & mask;
  return h.toString(16).padStart(16, '0');
}
