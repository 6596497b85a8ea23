// Decoding a model from random-access bytes (a file) without holding the whole file: the
// protobuf structure is read in small windows, and each large initializer's raw_data is read
// on its own, straight into a buffer of its own, once its dims have been checked. So the host
// never holds the file and its tensors at once, each tensor is aligned (no copy to make it a
// typed array), and each can be released on its own.
import { decodeModel, decodeModelWithDeferredData, type DecodeOptions, type DeferredTensorData } from './codec.ts';
import type { Graph } from './ir.ts';

/** Random access to a model's bytes (in Node, an open file; see src/node/files.ts). */
export interface ByteSource {
  readonly byteLength: number;
  /** `length` bytes at `offset`, in a fresh buffer of their own. */
  read(offset: number, length: number): Uint8Array;
  /** Bytes [offset + i·stride, offset + i·stride + length) for i < count, one after another,
   * into `out` (a file reads them with one open); without it, read() is called per piece. */
  readStrided?(offset: number, length: number, stride: number, count: number, out: Uint8Array): void;
  /** Names the source's bytes while they are unchanged (a file: its path, inode, size and
   * modification time); a tensor left in it is named by this and its byte range. */
  readonly identity?: string;
}

/** raw_data shorter than this stays in the decoded structure (one read is not worth it). */
export const DEFER_RAW_DATA_FROM = 4096;

export interface SourceDecodeOptions extends DecodeOptions {
  /**
   * Leave each large raw_data in the source: its tensor reads it each time its data is asked for
   * (storedTensor), so the Graph holds no weights and the runtime can read the largest in
   * pieces. The source must stay readable, and unchanged, while the Graph is used.
   */
  leaveTensorsInSource?: boolean;
}

/**
 * Decodes the model in `source` as decodeModel would decode its bytes. A structure this reader
 * does not follow (a protobuf group, a length past the end) is decoded from the whole bytes
 * instead, so that decodeModel reports what is wrong with it.
 */
export function decodeModelSource(source: ByteSource, options: SourceDecodeOptions = {}): Graph {
  let hollow: HollowModel;
  try {
    hollow = hollowModel(source);
  } catch (e) {
    if (!(e instanceof UnfollowedStructure)) throw e;
    return decodeModel(source.read(0, source.byteLength), options);
  }
  const leaveStored = options.leaveTensorsInSource === true;
  const deferred = hollow.rawData.map((r): DeferredTensorData | undefined => {
    if (!r) return undefined;
    const check = (offset: number, length: number) => {
      if (offset < 0 || length < 0 || offset + length > r.length)
        throw new Error(`internal: bytes [${offset}, ${offset + length}) of a raw_data of ${r.length}`);
    };
    const read = (offset: number, length: number) => {
      check(offset, length);
      return source.read(r.offset + offset, length);
    };
    const readStrided = (offset: number, length: number, stride: number, count: number, out: Uint8Array) => {
      if (count === 0) return;
      check(offset, (count - 1) * stride + length);
      if (source.readStrided) return source.readStrided(r.offset + offset, length, stride, count, out);
      for (let i = 0; i < count; i++) out.set(source.read(r.offset + offset + i * stride, length), i * length);
    };
    const identity = source.identity === undefined ? undefined : `${source.identity} bytes ${r.offset}+${r.length}`;
    return { length: r.length, read, readStrided, leaveStored, identity };
  });
  return decodeModelWithDeferredData(hollow.skeleton, options, deferred);
}

// ModelProto.graph, GraphProto.initializer, TensorProto.raw_data (onnx.proto field numbers).
const MODEL_GRAPH = 7;
const GRAPH_INITIALIZER = 5;
const TENSOR_RAW_DATA = 9;
const LENGTH_DELIMITED = 2;

interface HollowModel {
  /** The model's bytes without the deferred raw_data fields (lengths rewritten to match). */
  skeleton: Uint8Array;
  /** Per initializer of the (last) graph, where its raw_data lies in the source. */
  rawData: ({ offset: number; length: number } | undefined)[];
}

class UnfollowedStructure extends Error {}

function hollowModel(source: ByteSource): HollowModel {
  const reader = new WindowReader(source);
  let rawData: HollowModel['rawData'] = [];
  const pieces: Uint8Array[] = [];
  for (const f of reader.fields(0, source.byteLength)) {
    if (f.field === MODEL_GRAPH && f.wireType === LENGTH_DELIMITED) {
      // A repeated message field: protobufjs keeps the last graph whole, so its initializers count.
      rawData = [];
      const graph = hollowGraph(reader, f.payload, f.end, rawData);
      pieces.push(lengthDelimited(MODEL_GRAPH, graph));
    } else {
      pieces.push(reader.bytes(f.start, f.end));
    }
  }
  return { skeleton: concat(pieces), rawData };
}

function hollowGraph(reader: WindowReader, start: number, end: number, rawData: HollowModel['rawData']): Uint8Array {
  const pieces: Uint8Array[] = [];
  for (const f of reader.fields(start, end)) {
    if (f.field === GRAPH_INITIALIZER && f.wireType === LENGTH_DELIMITED) {
      const tensor: Uint8Array[] = [];
      let raw: { offset: number; length: number } | undefined;
      for (const t of reader.fields(f.payload, f.end)) {
        // The last raw_data given is the one protobuf keeps.
        const length = t.end - t.payload;
        if (t.field === TENSOR_RAW_DATA && t.wireType === LENGTH_DELIMITED && length >= DEFER_RAW_DATA_FROM) {
          raw = { offset: t.payload, length };
        } else {
          if (t.field === TENSOR_RAW_DATA) raw = undefined;
          tensor.push(reader.bytes(t.start, t.end));
        }
      }
      rawData.push(raw);
      pieces.push(lengthDelimited(GRAPH_INITIALIZER, concat(tensor)));
    } else {
      pieces.push(reader.bytes(f.start, f.end));
    }
  }
  return concat(pieces);
}

interface Field {
  field: number;
  wireType: number;
  /** Where the field's tag starts, its payload starts, and the field ends. */
  start: number;
  payload: number;
  end: number;
}

/** Reads a source through a small window, so that walking the structure costs few reads. */
class WindowReader {
  static readonly WINDOW = 1 << 16;
  #window: Uint8Array = new Uint8Array(0);
  #at = 0;

  constructor(readonly source: ByteSource) {}

  *fields(start: number, end: number): Generator<Field> {
    let pos = start;
    while (pos < end) {
      const [tag, afterTag] = this.#varint(pos, end);
      const wireType = tag % 8;
      let payload = afterTag;
      let next: number;
      switch (wireType) {
        case 0:
          next = this.#varint(afterTag, end)[1];
          break;
        case 1:
          next = afterTag + 8;
          break;
        case 5:
          next = afterTag + 4;
          break;
        case LENGTH_DELIMITED: {
          const [length, afterLength] = this.#varint(afterTag, end);
          payload = afterLength;
          next = afterLength + length;
          break;
        }
        default:
          throw new UnfollowedStructure(`wire type ${wireType} at byte ${pos}`);
      }
      if (next > end) throw new UnfollowedStructure(`field at byte ${pos} runs past its message`);
      yield { field: Math.floor(tag / 8), wireType, start: pos, payload, end: next };
      pos = next;
    }
  }

  /** The bytes in [start, end): a copy, so that no piece keeps the window alive. */
  bytes(start: number, end: number): Uint8Array {
    if (start >= this.#at && end <= this.#at + this.#window.byteLength)
      return this.#window.slice(start - this.#at, end - this.#at);
    return this.source.read(start, end - start);
  }

  #byte(pos: number): number {
    if (pos < this.#at || pos >= this.#at + this.#window.byteLength) {
      this.#at = pos;
      this.#window = this.source.read(pos, Math.min(WindowReader.WINDOW, this.source.byteLength - pos));
    }
    return this.#window[pos - this.#at];
  }

  /** A varint at `pos` (at most 10 bytes, within `end`): its value and where the next field starts. */
  #varint(pos: number, end: number): [number, number] {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (pos + i >= end) throw new UnfollowedStructure(`varint at byte ${pos} runs past its message`);
      const b = this.#byte(pos + i);
      value += (b & 0x7f) * scale;
      scale *= 128;
      if (b < 0x80) return [value, pos + i + 1];
    }
    throw new UnfollowedStructure(`varint at byte ${pos} is longer than 10 bytes`);
  }
}

function lengthDelimited(field: number, payload: Uint8Array): Uint8Array {
  return concat([varint(field * 8 + LENGTH_DELIMITED), varint(payload.byteLength), payload]);
}

function varint(value: number): Uint8Array {
  const out: number[] = [];
  while (value >= 0x80) {
    out.push((value % 128) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return Uint8Array.from(out);
}

function concat(pieces: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(pieces.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of pieces) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
