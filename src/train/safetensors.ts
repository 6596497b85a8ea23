// The safetensors layout (Hugging Face's tensor file, read by PyTorch, JAX, transformers and
// numpy alike): bytes in, bytes out, no file system.
//
//   0      u64 LE  N                 the header's byte length
//   8      N bytes UTF-8 JSON        {"<name>": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
//                                     ..., "__metadata__": {"<key>": "<string>"}}; may end in spaces
//   8 + N  the byte buffer           every tensor's little-endian, row-major bytes; offsets are
//                                    relative to the buffer's start and tile it without gaps or overlap
//
// The reader treats the file as hostile: the header size is capped before anything is allocated,
// every entry is checked (dtype known, shape non-negative integers, byte size = elements × dtype
// size, ranges inside the buffer, disjoint and gapless) before a byte of data is read.

import { CheckpointError } from './checkpoint-error.ts';

/** The element types safetensors defines, with their byte sizes. */
export const SAFETENSORS_DTYPES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
} as const;

export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPES;

/** One tensor as the header describes it; `bytes` views the file's buffer. */
export interface SafetensorsEntry {
  dtype: SafetensorsDtype;
  shape: number[];
  bytes: Uint8Array;
}

export interface SafetensorsFile {
  /** In header order. */
  tensors: Map<string, SafetensorsEntry>;
  /** `__metadata__`: strings only, by the format's rule. */
  metadata: Record<string, string>;
  /** The header's entries exactly as parsed (for checksums over the header's meaning, not its spelling). */
  header: Record<string, unknown>;
  /** The byte buffer after the header. */
  buffer: Uint8Array;
}

/** The reference implementation's cap: a header larger than this is refused before allocation. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

const METADATA_KEY = '__metadata__';

/**
 * Parses and checks a safetensors file. `source` names the file in errors; `what` says what the
 * file was meant to be ('checkpoint', 'weights file').
 */
export function parseSafetensors(bytes: Uint8Array, source = '', what = 'safetensors file'): SafetensorsFile {
  const fail = (problem: 'truncated' | 'corrupt' | 'not-a-checkpoint', detail: string): never => {
    throw new CheckpointError(problem, source, detail, what);
  };
  if (bytes.length < 8) fail('truncated', `truncated: found ${bytes.length} bytes, the header size alone is 8`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerSize = view.getBigUint64(0, true);
  if (headerSize > BigInt(MAX_HEADER_BYTES)) {
    fail(
      'not-a-checkpoint',
      `not a safetensors file: its first 8 bytes give a header of ${headerSize} bytes (at most ${MAX_HEADER_BYTES} accepted)${describeStart(bytes)}`,
    );
  }
  const n = Number(headerSize);
  if (8 + n > bytes.length)
    fail('truncated', `truncated: the header alone is ${n} bytes, found ${bytes.length - 8} after the size`);
  const headerBytes = bytes.subarray(8, 8 + n);
  if (headerBytes[0] !== 0x7b)
    fail('not-a-checkpoint', `not a safetensors file: the header does not start with '{'${describeStart(bytes)}`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (e) {
    return fail('corrupt', `the header is not valid UTF-8 JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!isRecord(header)) return fail('corrupt', 'the header is not a JSON object');

  const metadata: Record<string, string> = {};
  const rawMetadata = header[METADATA_KEY];
  if (rawMetadata !== undefined) {
    if (!isRecord(rawMetadata)) fail('corrupt', `${METADATA_KEY} is not an object of strings`);
    for (const [key, value] of Object.entries(rawMetadata as Record<string, unknown>)) {
      if (typeof value !== 'string')
        fail('corrupt', `${METADATA_KEY}['${key}'] is ${JSON.stringify(value)}; the format allows only strings`);
      metadata[key] = value as string;
    }
  }

  const buffer = bytes.subarray(8 + n);
  const ranges: { name: string; begin: number; end: number }[] = [];
  const described: { name: string; dtype: SafetensorsDtype; shape: number[]; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === METADATA_KEY) continue;
    if (!isRecord(entry))
      return fail('corrupt', `tensor '${name}': its entry is ${JSON.stringify(entry)}, not an object`);
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== 'string' || !(dtype in SAFETENSORS_DTYPES))
      fail(
        'corrupt',
        `tensor '${name}': dtype ${JSON.stringify(dtype)}; accepted ${Object.keys(SAFETENSORS_DTYPES).join(', ')}`,
      );
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      fail('corrupt', `tensor '${name}': shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offsets[0] > offsets[1]
    )
      fail(
        'corrupt',
        `tensor '${name}': data_offsets ${JSON.stringify(offsets)} is not [begin, end] with 0 ≤ begin ≤ end`,
      );
    const [begin, end] = offsets as [number, number];
    const elements = (shape as number[]).reduce((a, b) => a * b, 1);
    const size = elements * SAFETENSORS_DTYPES[dtype as SafetensorsDtype];
    if (end - begin !== size) {
      fail(
        'corrupt',
        `tensor '${name}': ${dtype} ${showShape(shape as number[])} needs ${size} bytes, data_offsets [${begin}, ${end}] hold ${end - begin}`,
      );
    }
    ranges.push({ name, begin, end });
    described.push({ name, dtype: dtype as SafetensorsDtype, shape: shape as number[], begin, end });
  }

  // The buffer must be tiled exactly: sorted by begin, each range starts where the previous ended.
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  for (const r of ranges) {
    if (r.begin < covered) fail('corrupt', `tensor '${r.name}': bytes [${r.begin}, ${r.end}) overlap another tensor's`);
    if (r.begin > covered)
      fail('corrupt', `tensor '${r.name}': bytes [${covered}, ${r.begin}) before it belong to no tensor`);
    covered = r.end;
  }
  if (buffer.length < covered) {
    fail(
      'truncated',
      `truncated: the header describes ${8 + n + covered} bytes, found ${bytes.length} (an interrupted copy or download?)`,
    );
  }
  if (buffer.length > covered)
    fail('corrupt', `the header describes ${8 + n + covered} bytes but there are ${bytes.length}: trailing data`);

  const tensors = new Map<string, SafetensorsEntry>();
  for (const d of described)
    tensors.set(d.name, { dtype: d.dtype, shape: d.shape, bytes: buffer.subarray(d.begin, d.end) });
  return { tensors, metadata, header, buffer };
}

export interface SafetensorsTensorInput {
  name: string;
  shape: readonly number[];
  data: Float32Array;
}

/**
 * Writes float32 tensors (in the given order, contiguous) and string metadata as safetensors; the
 * header is space-padded so the buffer starts 8-byte aligned, as the reference writer does.
 */
export function serializeSafetensors(tensors: SafetensorsTensorInput[], metadata: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = { [METADATA_KEY]: metadata };
  let offset = 0;
  for (const t of tensors) {
    if (t.name === METADATA_KEY) throw new Error(`safetensors: '${METADATA_KEY}' cannot name a tensor`);
    if (Object.hasOwn(header, t.name)) throw new Error(`safetensors: tensor '${t.name}' appears twice`);
    const elements = t.shape.reduce((a, b) => a * b, 1);
    if (elements !== t.data.length)
      throw new Error(`safetensors: tensor '${t.name}' has ${t.data.length} elements but shape ${showShape(t.shape)}`);
    header[t.name] = { dtype: 'F32', shape: [...t.shape], data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + padded);
  let at = 8 + padded;
  for (const t of tensors) {
    writeFloat32LE(out, at, t.data);
    at += t.data.byteLength;
  }
  return out;
}

/**
 * A tensor's values as float32: F32 as is (a view when aligned), F16, BF16 and F64 converted.
 * Other dtypes are refused naming the tensor.
 */
export function toFloat32(name: string, entry: SafetensorsEntry, source = '', what = 'safetensors file'): Float32Array {
  const { bytes, dtype } = entry;
  const count = bytes.length / SAFETENSORS_DTYPES[dtype];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'F32':
      if (LITTLE_ENDIAN && bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, count);
      return Float32Array.from({ length: count }, (_, i) => view.getFloat32(4 * i, true));
    case 'F64':
      return Float32Array.from({ length: count }, (_, i) => view.getFloat64(8 * i, true));
    case 'F16':
      return Float32Array.from({ length: count }, (_, i) => halfToFloat(view.getUint16(2 * i, true)));
    case 'BF16': {
      const out = new Float32Array(count);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) bits[i] = view.getUint16(2 * i, true) << 16;
      return out;
    }
    default:
      throw new CheckpointError(
        'corrupt',
        source,
        `tensor '${name}' is ${dtype}; weights must be F32, F16, BF16 or F64`,
        what,
      );
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function showShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function describeStart(bytes: Uint8Array): string {
  if (bytes.length === 0) return '; the file is empty';
  const head = [...bytes.subarray(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
  // An ONNX model starts with field 1 (ir_version) as a varint: byte 0x08.
  return `; it starts with ${head}${bytes[0] === 0x08 ? ', which looks like an ONNX model' : ''}`;
}

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
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
