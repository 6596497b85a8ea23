// Host-side tensors: the dtype names, the typed arrays behind them, and ONNX's data_type codes.

export type DataType =
  | 'float32'
  | 'float64'
  | 'float16'
  | 'bfloat16'
  | 'int8'
  | 'int16'
  | 'int32'
  | 'int64'
  | 'uint8'
  | 'uint16'
  | 'uint32'
  | 'uint64'
  | 'bool'
  | 'string'
  | 'complex64'
  | 'complex128'
  | 'float8e4m3fn'
  | 'float8e4m3fnuz'
  | 'float8e5m2'
  | 'float8e5m2fnuz'
  | 'uint4'
  | 'int4';

/** float16/bfloat16 keep their raw bits in a Uint16Array; bool is a Uint8Array of 0/1;
 * string tensors hold their byte strings; complex and 8/4-bit types keep raw bytes. */
export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array
  | Uint8Array[];

export interface TensorValue {
  dtype: DataType;
  dims: number[];
  data: TensorData;
}

const CODES: [number, DataType][] = [
  [1, 'float32'],
  [2, 'uint8'],
  [3, 'int8'],
  [4, 'uint16'],
  [5, 'int16'],
  [6, 'int32'],
  [7, 'int64'],
  [8, 'string'],
  [9, 'bool'],
  [10, 'float16'],
  [11, 'float64'],
  [12, 'uint32'],
  [13, 'uint64'],
  [14, 'complex64'],
  [15, 'complex128'],
  [16, 'bfloat16'],
  [17, 'float8e4m3fn'],
  [18, 'float8e4m3fnuz'],
  [19, 'float8e5m2'],
  [20, 'float8e5m2fnuz'],
  [21, 'uint4'],
  [22, 'int4'],
];
const BY_CODE = new Map(CODES);
const BY_NAME = new Map(CODES.map(([c, n]) => [n, c]));

export function dataTypeFromOnnx(code: number): DataType | undefined {
  return BY_CODE.get(code);
}

export function dataTypeToOnnx(dtype: DataType): number {
  return BY_NAME.get(dtype)!;
}

/** Bytes per element, for the types stored byte-aligned (undefined for string and 4-bit). */
export function bytesPerElement(dtype: DataType): number | undefined {
  switch (dtype) {
    case 'float64':
    case 'int64':
    case 'uint64':
    case 'complex64':
      return 8;
    case 'complex128':
      return 16;
    case 'float32':
    case 'int32':
    case 'uint32':
      return 4;
    case 'float16':
    case 'bfloat16':
    case 'int16':
    case 'uint16':
      return 2;
    case 'int8':
    case 'uint8':
    case 'bool':
    case 'float8e4m3fn':
    case 'float8e4m3fnuz':
    case 'float8e5m2':
    case 'float8e5m2fnuz':
      return 1;
    default:
      return undefined;
  }
}

export function isFloatType(dtype: DataType): boolean {
  return dtype === 'float32' || dtype === 'float64' || dtype === 'float16' || dtype === 'bfloat16';
}

/** The most elements one tensor may have (2^31 - 1: what a GPU kernel indexes with an i32, and
 * far above any weight of the supported models). Every shape read from a file, an attribute or
 * a constant is checked against it before anything of that size is allocated. */
export const MAX_TENSOR_ELEMENTS = 2 ** 31 - 1;

/**
 * Why `dims` cannot describe a tensor (a dim that is not a non-negative safe integer, or more
 * than MAX_TENSOR_ELEMENTS elements), or undefined when they can. A dim of 0 makes the product 0
 * whatever the others are, so every dim is checked on its own too.
 */
export function invalidDims(dims: readonly number[]): string | undefined {
  const bad = dims.find((d) => !Number.isSafeInteger(d) || d < 0 || d > MAX_TENSOR_ELEMENTS);
  if (bad !== undefined) return `dim ${bad} is not an integer in 0…${MAX_TENSOR_ELEMENTS} (MAX_TENSOR_ELEMENTS)`;
  const n = sizeOf(dims);
  if (n > MAX_TENSOR_ELEMENTS)
    return `[${dims.join(', ')}] is ${n} elements, over MAX_TENSOR_ELEMENTS = ${MAX_TENSOR_ELEMENTS}`;
  return undefined;
}

export function sizeOf(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

/** A typed array of `length` elements for a byte-aligned dtype, in a fresh buffer holding a copy
 * of `bytes`: the source may be a view into a larger shared pool, unaligned, or a protobuf read
 * buffer that must not be kept alive. */
export function typedArrayFromBytes(dtype: DataType, bytes: Uint8Array, length: number): TensorData {
  const width = bytesPerElement(dtype);
  if (width === undefined) throw new Error(`no raw-byte layout for dtype ${dtype}`);
  const copy = new Uint8Array(length * width);
  copy.set(bytes.subarray(0, copy.byteLength));
  const ArrayType = TYPED_ARRAYS[dtype];
  return ArrayType ? new ArrayType(copy.buffer) : copy; // uint8, bool, complex and 8-bit floats keep raw bytes
}

/**
 * A typed array of `length` elements for a byte-aligned dtype over `bytes` itself, without a
 * copy: the tensor then keeps `bytes`' buffer (a decoded file) alive. Only where the offset is
 * not a multiple of the element size (a typed array cannot start there) are the bytes copied.
 */
export function typedArrayView(dtype: DataType, bytes: Uint8Array, length: number): TensorData {
  const width = bytesPerElement(dtype);
  if (width === undefined) throw new Error(`no raw-byte layout for dtype ${dtype}`);
  const ArrayType = TYPED_ARRAYS[dtype];
  if (!ArrayType) return bytes.subarray(0, length * width); // uint8, bool, complex and 8-bit floats keep raw bytes
  if (bytes.byteOffset % width !== 0) return typedArrayFromBytes(dtype, bytes, length);
  return new ArrayType(bytes.buffer as ArrayBuffer, bytes.byteOffset, length);
}

/** The typed array of each dtype not kept as raw bytes (float16/bfloat16 as their bits). */
const TYPED_ARRAYS: Partial<
  Record<DataType, new (buffer: ArrayBuffer, byteOffset?: number, length?: number) => Exclude<TensorData, Uint8Array[]>>
> = {
  float32: Float32Array,
  float64: Float64Array,
  int32: Int32Array,
  uint32: Uint32Array,
  int64: BigInt64Array,
  uint64: BigUint64Array,
  int16: Int16Array,
  uint16: Uint16Array,
  float16: Uint16Array,
  bfloat16: Uint16Array,
  int8: Int8Array,
};

/** Where a tensor's bytes are stored (its raw_data in a file, say). */
export interface StoredBytes {
  /** `length` bytes at `offset`, in a buffer of their own (aligned for any element type). */
  read(offset: number, length: number): Uint8Array;
  /** Bytes [offset + i·stride, offset + i·stride + length) for i < count, one after another, into `out`. */
  readStrided(offset: number, length: number, stride: number, count: number, out: Uint8Array): void;
  /**
   * Names these bytes while they can be read (a file's identity and the byte range): equal
   * identities mean equal bytes, so a runtime can share what it computed from them without
   * reading them. Absent where the store cannot tell.
   */
  readonly identity?: string;
}

const storedBytes = new WeakMap<TensorValue, StoredBytes>();

/** Whether `value` is a storedTensor: its `data` reads the store (the whole tensor) at each access. */
export function isStoredTensor(value: TensorValue): boolean {
  return storedBytes.has(value);
}

/** The identity of a storedTensor's bytes (StoredBytes.identity), or undefined. */
export function storedIdentity(value: TensorValue): string | undefined {
  return storedBytes.get(value)?.identity;
}

/**
 * A tensor whose bytes stay where they are stored (a model file): each read of `data` reads
 * them whole, afresh, and nothing keeps them, so a Graph of such tensors holds no weights;
 * readFloats reads parts. Writes into an array `data` gave are not kept; `data` cannot be set.
 */
export function storedTensor(dtype: DataType, dims: number[], bytes: StoredBytes): TensorValue {
  const count = sizeOf(dims);
  const width = bytesPerElement(dtype);
  if (width === undefined) throw new Error(`no raw-byte layout for dtype ${dtype}`);
  const value = { dtype, dims } as TensorValue;
  Object.defineProperty(value, 'data', {
    enumerable: true,
    get: () => typedArrayView(dtype, bytes.read(0, count * width), count),
  });
  storedBytes.set(value, bytes);
  return value;
}

/**
 * Floats [start + i·stride, start + i·stride + length) for i < count of a float32 tensor, one
 * after another, into `out`: for a stored tensor only these are read.
 */
export function readFloats(
  value: TensorValue,
  start: number,
  length: number,
  stride: number,
  count: number,
  out: Float32Array,
): void {
  if (value.dtype !== 'float32') throw new Error(`readFloats: a ${value.dtype} tensor, not float32`);
  const size = sizeOf(value.dims);
  const last = start + (count - 1) * stride + length;
  if (start < 0 || length < 0 || count < 0 || (count > 0 && last > size) || out.length < count * length)
    throw new Error(`readFloats: ${count} × ${length} floats from ${start} by ${stride} of a tensor of ${size}`);
  if (count === 0 || length === 0) return;
  const stored = storedBytes.get(value);
  if (stored) {
    const bytes = new Uint8Array(out.buffer, out.byteOffset, count * length * 4);
    stored.readStrided(start * 4, length * 4, stride * 4, count, bytes);
    return;
  }
  const data = value.data as Float32Array;
  for (let i = 0; i < count; i++) out.set(data.subarray(start + i * stride, start + i * stride + length), i * length);
}

/** An empty typed array of `length` elements of `dtype`. */
export function allocate(dtype: DataType, length: number): TensorData {
  if (dtype === 'string') return Array.from({ length }, () => new Uint8Array(0));
  const width = bytesPerElement(dtype);
  if (width === undefined) throw new Error(`cannot allocate dtype ${dtype}`);
  return typedArrayFromBytes(dtype, new Uint8Array(length * width), length);
}

/** The tensor's bytes in little-endian order (string tensors excluded). */
export function tensorBytes(t: TensorValue): Uint8Array {
  if (Array.isArray(t.data)) throw new Error('string tensors have no raw bytes');
  const d = t.data as Exclude<TensorData, Uint8Array[]>;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

/** Elements as JavaScript numbers (int64 converted; precision beyond 2^53 is lost). */
export function toNumbers(t: TensorValue): number[] {
  if (Array.isArray(t.data)) throw new Error('string tensor has no numbers');
  if (t.dtype === 'float16') return Array.from(t.data as Uint16Array, halfToFloat);
  if (t.dtype === 'bfloat16')
    return Array.from(t.data as Uint16Array, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0]);
  const out: number[] = new Array(t.data.length);
  for (let i = 0; i < t.data.length; i++) out[i] = Number((t.data as ArrayLike<number | bigint>)[i]);
  return out;
}

/** Builds a tensor of `dtype` from JavaScript numbers (the inverse of toNumbers for the
 * numeric types the folder produces). */
export function fromNumbers(dtype: DataType, dims: number[], values: ArrayLike<number>): TensorValue {
  const data = allocate(dtype, values.length);
  if (data instanceof BigInt64Array) {
    // Clamp: 2^63 - 1 (INT64_MAX, torch's "to the end") rounds up to 2^63 as a double.
    for (let i = 0; i < values.length; i++) data[i] = clampInt64(values[i]);
  } else if (data instanceof BigUint64Array) {
    for (let i = 0; i < values.length; i++) data[i] = BigInt(Math.max(0, Math.trunc(values[i])));
  } else if (dtype === 'float16' || dtype === 'bfloat16') {
    throw new Error(`cannot build ${dtype} tensors from numbers`);
  } else {
    (data as Float32Array).set(Array.from(values, (v) => (dtype === 'bool' ? (v ? 1 : 0) : v)));
  }
  return { dtype, dims: [...dims], data };
}

export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);

function clampInt64(v: number): bigint {
  if (v >= 2 ** 63) return INT64_MAX;
  if (v <= -(2 ** 63)) return INT64_MIN;
  return BigInt(Math.trunc(v));
}
