// ONNX bytes ⇄ Graph. Decoding keeps everything the file says (including parts the engine does
// not interpret) so that encode(decode(bytes)) decodes to an equal Graph.
import protobuf from 'protobufjs';
import { ModelError } from './errors.ts';
import { Graph, type Attribute, type Dim, type Initializer, type Node, type ValueInfo } from './ir.ts';
import { onnxModelType } from './onnx-proto.ts';
import {
  bytesPerElement,
  dataTypeFromOnnx,
  isFloatType,
  dataTypeToOnnx,
  sizeOf,
  tensorBytes,
  typedArrayFromBytes,
  type DataType,
  type TensorData,
  type TensorValue,
} from './tensor.ts';

/** Reads `length` bytes (or to the end when undefined) at `offset` of an external-data file
 * named relative to the model. Supplied by the Node entry; browsers pass their own. */
export type ExternalDataReader = (location: string, offset: number, length: number | undefined) => Uint8Array;

export interface DecodeOptions {
  /** The model's file name, used in every error message. */
  file?: string;
  readExternal?: ExternalDataReader;
}

// protobufjs message objects are untyped at this boundary.
type Msg = Record<string, any>;

export function decodeModel(bytes: Uint8Array, options: DecodeOptions = {}): Graph {
  const file = options.file ?? '<bytes>';
  if (bytes.byteLength === 0) throw new ModelError('the file is empty, not an ONNX model', { file });
  let model: Msg;
  try {
    model = onnxModelType().decode(bytes) as unknown as Msg;
  } catch (e) {
    throw new ModelError(
      `not a valid ONNX model: the protobuf data is ${/index out of range/i.test(String(e)) ? 'truncated' : 'malformed'} (${(e as Error).message})`,
      { file },
    );
  }
  if (!has(model, 'graph') || !has(model, 'ir_version')) {
    throw new ModelError('not an ONNX model: no ir_version or no graph in the ModelProto', { file });
  }
  const g = new Graph();
  g.source = file;
  g.irVersion = toNumber(model.ir_version);
  g.opsetImports = (model.opset_import as Msg[]).map((o) => ({ domain: o.domain ?? '', version: toNumber(o.version) }));
  g.producerName = model.producer_name ?? '';
  g.producerVersion = model.producer_version ?? '';
  g.domain = model.domain ?? '';
  g.modelVersion = toNumber(model.model_version ?? 0);
  g.modelDocString = model.doc_string ?? '';
  g.metadataProps = (model.metadata_props as Msg[]).map((p) => ({ key: p.key ?? '', value: p.value ?? '' }));
  const frozenEntry = g.metadataProps.find((p) => p.key === FROZEN_KEY);
  g.metadataProps = g.metadataProps.filter((p) => p !== frozenEntry);
  keepIfPresent(g.extra, model, ['training_info', 'functions']);

  const graph = model.graph as Msg;
  g.name = graph.name ?? '';
  g.docString = graph.doc_string ?? '';
  keepIfPresent(g.extra, graph, ['sparse_initializer', 'quantization_annotation', 'metadata_props'], 'graph.');

  const ctx = { file, readExternal: options.readExternal };
  for (const t of graph.initializer as Msg[]) {
    const init: Initializer = {
      name: t.name,
      value: decodeTensor(t, ctx),
      trainable: false,
      docString: t.doc_string || undefined,
    };
    if ((t.metadata_props as Msg[])?.length) init.extra = { metadata_props: t.metadata_props };
    g.setInitializer(init.name, init.value);
    g.initializers.set(init.name, { ...init, trainable: g.initializers.get(init.name)!.trainable });
  }
  g.inputs = (graph.input as Msg[]).map(decodeValueInfo);
  g.outputs = (graph.output as Msg[]).map(decodeValueInfo);
  const valueInfo = (graph.value_info as Msg[]).map(decodeValueInfo);
  for (const v of [...g.inputs, ...valueInfo, ...g.outputs]) {
    g.values.set(v.name, { ...g.values.get(v.name), ...v, shape: v.shape ?? g.values.get(v.name)?.shape });
  }
  // The file's own value_info entries, written back as they were (while the value exists).
  if (valueInfo.length) g.extra.valueInfo = valueInfo;
  g.nodes = (graph.node as Msg[]).map((n) => decodeNode(n, ctx));
  if (frozenEntry) {
    let names: unknown;
    try {
      names = JSON.parse(frozenEntry.value);
    } catch {
      names = undefined;
    }
    if (!Array.isArray(names))
      throw new ModelError(`metadata_props '${FROZEN_KEY}' must be a JSON list of initializer names`, { file });
    for (const name of names) {
      const init = g.initializers.get(String(name));
      if (init) init.trainable = false;
    }
  }
  return g;
}

export interface EncodeOptions {
  /** Also write value_info for every value whose shape is known (as onnx's shape inference does). */
  writeInferredShapes?: boolean;
}

export function encodeModel(g: Graph, options: EncodeOptions = {}): Uint8Array {
  const valueInfo = ((g.extra.valueInfo as ValueInfo[] | undefined) ?? []).filter((v) => g.values.has(v.name));
  if (options.writeInferredShapes) {
    const written = new Set<string>([...g.inputs, ...g.outputs, ...valueInfo].map((v) => v.name));
    for (const v of g.values.values()) {
      if (!written.has(v.name) && !g.initializers.has(v.name) && v.dtype) valueInfo.push(v);
    }
  }
  const graph: Msg = {
    node: g.nodes.map(encodeNode),
    name: g.name,
    initializer: [...g.initializers.values()].map((i) => ({
      ...encodeTensor(i.value),
      name: i.name,
      doc_string: i.docString,
      ...i.extra,
    })),
    doc_string: g.docString || undefined,
    input: g.inputs.map(encodeValueInfo),
    output: g.outputs.map(encodeValueInfo),
    value_info: valueInfo.map(encodeValueInfo),
  };
  for (const [k, v] of Object.entries(g.extra)) if (k.startsWith('graph.')) graph[k.slice(6)] = v;
  const model: Msg = {
    ir_version: g.irVersion,
    opset_import: g.opsetImports.map((o) => ({ domain: o.domain, version: o.version })),
    producer_name: g.producerName || undefined,
    producer_version: g.producerVersion || undefined,
    domain: g.domain || undefined,
    model_version: g.modelVersion || undefined,
    doc_string: g.modelDocString || undefined,
    graph,
    metadata_props: withFrozenList(g),
    training_info: g.extra.training_info,
    functions: g.extra.functions,
  };
  return onnxModelType().encode(model).finish();
}

/** ONNX has no trainable flag: the names of frozen float initializers travel in this
 * metadata_props entry (a JSON list), so a frozen model stays frozen through a save and load. */
export const FROZEN_KEY = 'onnx_graft.frozen';

function withFrozenList(g: Graph): { key: string; value: string }[] {
  const frozen = [...g.initializers.values()]
    .filter((i) => !i.trainable && isFloatType(i.value.dtype))
    .map((i) => i.name);
  return frozen.length ? [...g.metadataProps, { key: FROZEN_KEY, value: JSON.stringify(frozen) }] : g.metadataProps;
}

// ─── tensors ────────────────────────────────────────────────────────────────────────────────

interface TensorContext {
  file: string;
  readExternal?: ExternalDataReader;
}

export function decodeTensor(t: Msg, ctx: TensorContext): TensorValue {
  const name = t.name || '(unnamed tensor)';
  const dtype = dataTypeFromOnnx(t.data_type ?? 0);
  if (!dtype) throw new ModelError(`tensor '${name}' has unknown data_type ${t.data_type}`, { file: ctx.file });
  const dims = (t.dims as unknown[]).map(toNumber);
  if (dims.some((d) => d < 0 || !Number.isFinite(d)))
    throw new ModelError(`tensor '${name}' has invalid dims [${dims}]`, { file: ctx.file });
  const count = sizeOf(dims);
  const fail = (what: string) =>
    new ModelError(`tensor '${name}' (${dtype}, dims [${dims}]): ${what}`, { file: ctx.file });

  if (t.data_location === 1) {
    const entries = new Map((t.external_data as Msg[]).map((e) => [e.key, e.value as string]));
    const location = entries.get('location');
    if (!location) throw fail('data_location is EXTERNAL but external_data has no location');
    if (!ctx.readExternal)
      throw fail(
        `its data is in the external file '${location}'; load the model from a file path (loadModelFile) or pass readExternal`,
      );
    const width = bytesPerElement(dtype);
    if (width === undefined) throw fail('external data is only supported for fixed-width types');
    const offset = Number(entries.get('offset') ?? 0);
    const declared = entries.has('length') ? Number(entries.get('length')) : undefined;
    const expected = count * width;
    if (declared !== undefined && declared !== expected)
      throw fail(`external_data length ${declared} does not match the ${expected} bytes its dims need`);
    const bytes = ctx.readExternal(location, offset, declared ?? expected);
    if (bytes.byteLength < expected)
      throw fail(
        `external file '${location}' has only ${bytes.byteLength} bytes at offset ${offset}, ${expected} needed`,
      );
    return { dtype, dims, data: typedArrayFromBytes(dtype, bytes, count) };
  }

  if (dtype === 'string') {
    const s = t.string_data as Uint8Array[];
    if (s.length !== count) throw fail(`string_data has ${s.length} entries, expected ${count}`);
    return { dtype, dims, data: s.map((b) => new Uint8Array(b)) };
  }
  const raw = t.raw_data as Uint8Array | undefined;
  if (raw && raw.byteLength > 0) {
    const width = bytesPerElement(dtype);
    if (width === undefined) throw fail('raw_data for this type is not supported');
    if (raw.byteLength !== count * width) throw fail(`raw_data has ${raw.byteLength} bytes, expected ${count * width}`);
    return { dtype, dims, data: typedArrayFromBytes(dtype, raw, count) };
  }
  if (bytesPerElement(dtype) === undefined) throw fail('this data type is not supported');
  const field = typedField(dtype);
  const values = (t[field] as unknown[]) ?? [];
  const perElement = dtype === 'complex64' || dtype === 'complex128' ? 2 : 1;
  if (values.length !== count * perElement)
    throw fail(`${field} has ${values.length} values, expected ${count * perElement}`);
  return { dtype, dims, data: fillTyped(dtype, values, count) };
}

/** ONNX's typed field for each dtype, when raw_data is not used. */
function typedField(dtype: DataType): string {
  switch (dtype) {
    case 'float32':
    case 'complex64':
      return 'float_data';
    case 'float64':
    case 'complex128':
      return 'double_data';
    case 'int64':
      return 'int64_data';
    case 'uint32':
    case 'uint64':
      return 'uint64_data';
    default:
      return 'int32_data'; // int8/16/32, uint8/16, bool, float16/bfloat16 bits, float8
  }
}

function fillTyped(dtype: DataType, values: unknown[], count: number): TensorData {
  const width = bytesPerElement(dtype)!;
  const out = typedArrayFromBytes(dtype, new Uint8Array(count * width), count);
  if (out instanceof BigInt64Array || out instanceof BigUint64Array) {
    for (let i = 0; i < values.length; i++) out[i] = BigInt(longString(values[i]));
  } else if (dtype === 'complex64' || dtype === 'complex128') {
    const view =
      dtype === 'complex64'
        ? new Float32Array((out as Uint8Array).buffer)
        : new Float64Array((out as Uint8Array).buffer);
    for (let i = 0; i < values.length; i++) view[i] = values[i] as number;
  } else {
    const o = out as Float32Array;
    for (let i = 0; i < values.length; i++) o[i] = toNumber(values[i]);
  }
  return out;
}

export function encodeTensor(t: TensorValue): Msg {
  const msg: Msg = { dims: t.dims, data_type: dataTypeToOnnx(t.dtype) };
  if (t.dtype === 'string') msg.string_data = t.data as Uint8Array[];
  else msg.raw_data = new Uint8Array(tensorBytes(t)); // little-endian, as ONNX requires
  return msg;
}

// ─── nodes and attributes ───────────────────────────────────────────────────────────────────

const ATTRIBUTE_TYPES: Record<number, string> = {
  1: 'float',
  2: 'int',
  3: 'string',
  4: 'tensor',
  5: 'graph',
  6: 'floats',
  7: 'ints',
  8: 'strings',
  9: 'tensors',
  10: 'graphs',
  11: 'sparse_tensor',
  12: 'sparse_tensors',
  13: 'type_proto',
  14: 'type_protos',
};
// Fatal and BOM-keeping, so that a string attribute decodes only when it re-encodes to the same
// bytes; anything else stays opaque.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

function exactUtf8(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

function decodeNode(n: Msg, ctx: TensorContext): Node {
  const node: Node = {
    name: n.name ?? '',
    opType: n.op_type ?? '',
    domain: n.domain ?? '',
    inputs: [...(n.input as string[])],
    outputs: [...(n.output as string[])],
    attributes: {},
  };
  if (n.doc_string) node.docString = n.doc_string;
  keepIfPresent((node.extra ??= {}), n, ['overload', 'metadata_props']);
  if (!Object.keys(node.extra).length) delete node.extra;
  for (const a of n.attribute as Msg[]) {
    try {
      node.attributes[a.name] = decodeAttribute(a, ctx);
    } catch (e) {
      if (e instanceof ModelError)
        throw new ModelError(`attribute '${a.name}': ${e.message.replace(`${ctx.file}: `, '')}`, {
          file: ctx.file,
          node,
        });
      throw e;
    }
  }
  return node;
}

function decodeAttribute(a: Msg, ctx: TensorContext): Attribute {
  const type = ATTRIBUTE_TYPES[a.type] ?? guessAttributeType(a);
  if (a.ref_attr_name || a.doc_string) return { type: 'opaque', proto: a };
  switch (type) {
    case 'float':
      return { type, value: a.f };
    case 'int':
      return { type, value: toNumber(a.i) };
    case 'string': {
      const text = a.s?.length ? exactUtf8(a.s) : '';
      return text === undefined ? { type: 'opaque', proto: a } : { type, value: text };
    }
    case 'tensor':
      if (!a.t) throw new ModelError(`attribute '${a.name}' has type TENSOR but no tensor`, { file: ctx.file });
      return { type, value: decodeTensor(a.t, ctx) };
    case 'floats':
      return { type, value: [...(a.floats as number[])] };
    case 'ints':
      return { type, value: (a.ints as unknown[]).map(toNumber) };
    case 'strings': {
      const texts = (a.strings as Uint8Array[]).map(exactUtf8);
      return texts.some((t) => t === undefined) ? { type: 'opaque', proto: a } : { type, value: texts as string[] };
    }
    case 'tensors':
      return { type, value: (a.tensors as Msg[]).map((t) => decodeTensor(t, ctx)) };
    default:
      return { type: 'opaque', proto: a };
  }
}

/** IR versions before 2 had no `type` field: the one field that is set tells. */
function guessAttributeType(a: Msg): string {
  for (const [field, type] of [
    ['floats', 'floats'],
    ['ints', 'ints'],
    ['strings', 'strings'],
    ['tensors', 'tensors'],
    ['graphs', 'graphs'],
  ] as const) {
    if ((a[field] as unknown[])?.length) return type;
  }
  for (const [field, type] of [
    ['f', 'float'],
    ['i', 'int'],
    ['s', 'string'],
    ['t', 'tensor'],
    ['g', 'graph'],
  ] as const) {
    if (has(a, field)) return type;
  }
  return 'undefined';
}

function encodeNode(n: Node): Msg {
  return {
    input: n.inputs,
    output: n.outputs,
    name: n.name || undefined,
    op_type: n.opType,
    domain: n.domain || undefined,
    attribute: Object.entries(n.attributes).map(([name, a]) => encodeAttribute(name, a)),
    doc_string: n.docString,
    ...n.extra,
  };
}

function encodeAttribute(name: string, a: Attribute): Msg {
  switch (a.type) {
    case 'float':
      return { name, type: 1, f: a.value };
    case 'int':
      return { name, type: 2, i: int64(a.value) };
    case 'string':
      return { name, type: 3, s: utf8Encoder.encode(a.value) };
    case 'tensor':
      return { name, type: 4, t: encodeTensor(a.value) };
    case 'floats':
      return { name, type: 6, floats: a.value };
    case 'ints':
      return { name, type: 7, ints: a.value.map(int64) };
    case 'strings':
      return { name, type: 8, strings: a.value.map((s) => utf8Encoder.encode(s)) };
    case 'tensors':
      return { name, type: 9, tensors: a.value.map(encodeTensor) };
    case 'opaque':
      return a.proto;
  }
}

// ─── value infos ────────────────────────────────────────────────────────────────────────────

function decodeValueInfo(v: Msg): ValueInfo {
  const info: ValueInfo = { name: v.name ?? '' };
  if (v.doc_string) info.docString = v.doc_string;
  if ((v.metadata_props as Msg[])?.length) info.extra = { metadata_props: v.metadata_props };
  const type = v.type as Msg | undefined;
  if (!type) return info;
  if (type.denotation) info.extra = { ...info.extra, denotation: type.denotation };
  if (!type.tensor_type) {
    info.otherType = type;
    return info;
  }
  const tt = type.tensor_type as Msg;
  if (tt.elem_type) {
    info.dtype = dataTypeFromOnnx(tt.elem_type);
    // A type newer than this codec knows: keep its code so that it is written back unchanged.
    if (!info.dtype) info.extra = { ...info.extra, elemType: tt.elem_type };
  }
  if (tt.shape) {
    const denotations = (tt.shape.dim as Msg[]).map((d) => (d.denotation as string) || '');
    if (denotations.some(Boolean)) info.extra = { ...info.extra, dimDenotations: denotations };
    info.shape = (tt.shape.dim as Msg[]).map((d): Dim => {
      if (has(d, 'dim_value')) return toNumber(d.dim_value);
      if (has(d, 'dim_param') && d.dim_param) return d.dim_param as string;
      return null;
    });
  }
  return info;
}

function encodeValueInfo(v: ValueInfo): Msg {
  const msg: Msg = { name: v.name, doc_string: v.docString, metadata_props: v.extra?.metadata_props };
  if (v.otherType) {
    msg.type = v.otherType;
  } else if (v.dtype || v.shape || v.extra?.elemType) {
    const tensor_type: Msg = {
      elem_type: v.dtype ? dataTypeToOnnx(v.dtype) : ((v.extra?.elemType as number | undefined) ?? 0),
    };
    if (v.shape) {
      const denotations = v.extra?.dimDenotations as string[] | undefined;
      tensor_type.shape = {
        dim: v.shape.map((d, i) => {
          const dim: Msg = typeof d === 'number' ? { dim_value: d } : typeof d === 'string' ? { dim_param: d } : {};
          if (denotations?.[i]) dim.denotation = denotations[i];
          return dim;
        }),
      };
    }
    msg.type = { tensor_type, denotation: v.extra?.denotation };
  }
  return msg;
}

// ─── small helpers ──────────────────────────────────────────────────────────────────────────

function has(msg: Msg, field: string): boolean {
  return Object.prototype.hasOwnProperty.call(msg, field) && msg[field] !== null && msg[field] !== undefined;
}

function keepIfPresent(into: Record<string, unknown>, msg: Msg, fields: string[], prefix = ''): void {
  for (const f of fields) {
    const v = msg[f];
    if (v === undefined || v === null || v === '' || (Array.isArray(v) && v.length === 0)) continue;
    into[prefix + f] = v;
  }
}

/** int64 fields arrive as numbers or Long objects, depending on protobufjs's setup. */
export function toNumber(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (v && typeof (v as { toNumber?: unknown }).toNumber === 'function')
    return (v as { toNumber(): number }).toNumber();
  return Number(v ?? 0);
}

/** Saturates at the int64 range: 2^63 - 1 (torch's "to the end") reads back as the double
 * 2^63, which protobufjs would otherwise wrap to INT64_MIN. */
function int64(v: number): number | protobuf.Long {
  const Long = protobuf.util.Long as unknown as { MAX_VALUE: protobuf.Long; MIN_VALUE: protobuf.Long };
  if (v >= 2 ** 63) return Long.MAX_VALUE;
  if (v <= -(2 ** 63)) return Long.MIN_VALUE;
  return v;
}

function longString(v: unknown): string {
  if (typeof v === 'number') return Math.trunc(v).toString();
  return String(v);
}
