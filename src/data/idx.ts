// IDX, the MNIST family's file format (yann.lecun.com/exdb/mnist): two zero bytes, a type byte, a
// dimension count, that many big-endian uint32 sizes, then the values row-major, big-endian.
// Parses bytes that are already gunzipped (src/data/node/idx-files.ts does that). Browser-safe.

export type IdxType = 'uint8' | 'int8' | 'int16' | 'int32' | 'float32' | 'float64';

export interface IdxArray {
  readonly type: IdxType;
  readonly dims: readonly number[];
  /** uint8 data is a view into the input bytes; the other types are copied into native order. */
  readonly data: Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;
}

const TYPES: Record<number, { type: IdxType; size: number }> = {
  0x08: { type: 'uint8', size: 1 },
  0x09: { type: 'int8', size: 1 },
  0x0b: { type: 'int16', size: 2 },
  0x0c: { type: 'int32', size: 4 },
  0x0d: { type: 'float32', size: 4 },
  0x0e: { type: 'float64', size: 8 },
};

/** Parses one IDX file's bytes; `name` (a path, say) goes into every error. */
export function parseIdx(bytes: Uint8Array, name = 'IDX data'): IdxArray {
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    throw new Error(`${name}: is gzip-compressed; gunzip it first (readIdxFile in onnx-graft/node does)`);
  }
  if (bytes.length < 4) throw new Error(`${name}: ${bytes.length} bytes is too short for an IDX header (4 bytes)`);
  if (bytes[0] !== 0 || bytes[1] !== 0) {
    throw new Error(`${name}: not an IDX file: magic starts ${hex(bytes[0])} ${hex(bytes[1])}, expected 0x00 0x00`);
  }
  const kind = TYPES[bytes[2]];
  if (!kind) {
    throw new Error(
      `${name}: unknown IDX type byte ${hex(bytes[2])}; accepted 0x08 uint8, 0x09 int8, 0x0B int16, ` +
        `0x0C int32, 0x0D float32, 0x0E float64`,
    );
  }
  const rank = bytes[3];
  if (rank === 0) throw new Error(`${name}: IDX header declares 0 dimensions`);
  const headerBytes = 4 + 4 * rank;
  if (bytes.length < headerBytes) {
    throw new Error(
      `${name}: truncated header: ${rank} dimensions need ${headerBytes} bytes, file has ${bytes.length}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  for (let d = 0; d < rank; d++) dims.push(view.getUint32(4 + 4 * d, false));
  const count = dims.reduce((a, b) => a * b, 1);
  const expected = headerBytes + count * kind.size;
  if (bytes.length !== expected) {
    throw new Error(
      `${name}: dims [${dims.join(', ')}] of ${kind.type} need ${expected} bytes, file has ${bytes.length}` +
        (bytes.length < expected ? ' (truncated?)' : ' (trailing bytes)'),
    );
  }
  return { type: kind.type, dims, data: readValues(view, headerBytes, count, kind.type, bytes) };
}

function readValues(view: DataView, offset: number, count: number, type: IdxType, bytes: Uint8Array): IdxArray['data'] {
  if (type === 'uint8') return bytes.subarray(offset, offset + count);
  if (type === 'int8') return new Int8Array(bytes.buffer, bytes.byteOffset + offset, count).slice();
  const { array, size, read } = BIG_ENDIAN[type];
  const out = new array(count);
  for (let i = 0; i < count; i++) out[i] = read(view, offset + size * i);
  return out;
}

/** The multi-byte types: their native array, width, and big-endian read. */
const BIG_ENDIAN: Record<
  Exclude<IdxType, 'uint8' | 'int8'>,
  {
    array: new (length: number) => Int16Array | Int32Array | Float32Array | Float64Array;
    size: number;
    read: (view: DataView, at: number) => number;
  }
> = {
  int16: { array: Int16Array, size: 2, read: (view, at) => view.getInt16(at, false) },
  int32: { array: Int32Array, size: 4, read: (view, at) => view.getInt32(at, false) },
  float32: { array: Float32Array, size: 4, read: (view, at) => view.getFloat32(at, false) },
  float64: { array: Float64Array, size: 8, read: (view, at) => view.getFloat64(at, false) },
};

function hex(b: number | undefined): string {
  return b === undefined ? '(none)' : `0x${b.toString(16).padStart(2, '0').toUpperCase()}`;
}
