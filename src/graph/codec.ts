// ONNX bytes ⇄ Graph. Decoding keeps everything the file says (including parts the engine does
// not interpret) so that encode(decode(bytes)) decodes to an equal Graph. The messages are the
// typed classes generated from the official onnx.proto (src/graph/onnx/, `npm run gen:onnx`).
import protobuf from 'protobufjs/minimal.js';
import { ModelError } from './errors.ts';
import { Graph, type Attribute, type Dim, type Initializer, type Node, type ValueInfo } from './ir.ts';
import { onnx } from './onnx/onnx-pb.js';
import {
  bytesPerElement,
  dataTypeFromOnnx,
  isFloatType,
  dataTypeToOnnx,
  invalidDims,
  sizeOf,
  storedTensor,
  tensorBytes,
  typedArrayFromBytes,
  typedArrayView,
  type DataType,
  type StoredBytes,
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

/** The newest ONNX IR version accepted: onnxruntime-node 1.30 refuses newer ones ("max
 * supported IR version: 13"), and a newer file may use what this decoder does not know. */
export const MAX_IR_VERSION = 13;

/** An int64 field: protobufjs reads it as a Long (all 64 bits kept) and writes numbers or Longs. */
type Int64 = NonNullable<onnx.IModelProto['ir_version']>;
type Long = Exclude<Int64, number>;
type StringEntry = onnx.IStringStringEntryProto;

/**
 * Decodes ONNX bytes into a Graph. Tensor bytes stored as raw_data become views into `bytes`
 * (copied only where misaligned for their element type): the Graph keeps `bytes` alive, and
 * `bytes` must not be changed afterwards.
 */
export function decodeModel(bytes: Uint8Array, options: DecodeOptions = {}): Graph {
  return decodeModelWithDeferredData(bytes, options, []);
}

/** An initializer's raw_data left out of the bytes decoded: its length, and how to read it. */
export interface DeferredTensorData extends StoredBytes {
  length: number;
  /** The bytes stay where they are: the tensor reads them each time its data is asked for (storedTensor). */
  leaveStored?: boolean;
}

/**
 * decodeModel for bytes whose initializers' raw_data may have been left out: `deferred[i]`, when
 * present, stands for the raw_data of the i-th initializer, read only once its dims and type
 * are known to need exactly that many bytes.
 */
export function decodeModelWithDeferredData(
  bytes: Uint8Array,
  options: DecodeOptions,
  deferred: readonly (DeferredTensorData | undefined)[],
): Graph {
  const file = options.file ?? '<bytes>';
  if (!(bytes instanceof Uint8Array))
    throw new ModelError(
      `decodeModel takes the model's bytes as a Uint8Array, got ${bytes === null ? 'null' : typeof bytes}`,
      { file },
    );
  if (bytes.byteLength === 0) throw new ModelError('the file is empty, not an ONNX model', { file });
  let model: onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new ModelError(
      `not a valid ONNX model: the protobuf data is ${/index out of range/i.test(String(e)) ? 'truncated' : 'malformed'} (${(e as Error).message})`,
      { file },
    );
  }
  if (!model.graph || !has(model, 'ir_version')) {
    throw new ModelError('not an ONNX model: no ir_version or no graph in the ModelProto', { file });
  }
  const g = new Graph();
  g.source = file;
  g.irVersion = toNumber(model.ir_version);
  if (g.irVersion < 0 || g.irVersion > MAX_IR_VERSION)
    throw new ModelError(
      `IR version ${g.irVersion} is not supported (accepted: 0…${MAX_IR_VERSION}, as onnxruntime 1.30); re-export with an older onnx`,
      { file },
    );
  g.opsetImports = model.opset_import.map((o) => ({ domain: o.domain ?? '', version: toNumber(o.version) }));
  g.producerName = model.producer_name;
  g.producerVersion = model.producer_version;
  g.domain = model.domain;
  g.modelVersion = toNumber(model.model_version);
  g.modelDocString = model.doc_string;
  g.metadataProps = model.metadata_props.map((p) => ({ key: p.key ?? '', value: p.value ?? '' }));
  const frozenEntry = g.metadataProps.find((p) => p.key === FROZEN_KEY);
  g.metadataProps = g.metadataProps.filter((p) => p !== frozenEntry);
  keepIfPresent(g.extra, model, MODEL_EXTRAS);

  const graph = model.graph;
  g.name = graph.name ?? '';
  g.docString = graph.doc_string ?? '';
  keepIfPresent(g.extra, graph, GRAPH_EXTRAS, 'graph.');

  const ctx = { file, readExternal: options.readExternal, irVersion: g.irVersion };
  for (const [index, t] of (graph.initializer ?? []).entries()) {
    const init: Initializer = {
      name: t.name ?? '',
      value: decodeTensor(t, ctx, deferred[index]),
      trainable: false,
      docString: t.doc_string || undefined,
    };
    if (t.metadata_props?.length) init.extra = { metadata_props: t.metadata_props };
    g.setInitializer(init.name, init.value);
    g.initializers.set(init.name, { ...init, trainable: g.initializers.get(init.name)!.trainable });
  }
  g.inputs = (graph.input ?? []).map(decodeValueInfo);
  g.outputs = (graph.output ?? []).map(decodeValueInfo);
  const valueInfo = (graph.value_info ?? []).map(decodeValueInfo);
  for (const v of [...g.inputs, ...valueInfo, ...g.outputs]) {
    g.values.set(v.name, { ...g.values.get(v.name), ...v, shape: v.shape ?? g.values.get(v.name)?.shape });
  }
  // The file's own value_info entries, written back as they were (while the value exists).
  if (valueInfo.length) g.extra.valueInfo = valueInfo;
  g.nodes = (graph.node ?? []).map((n) => decodeNode(n, ctx));
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
  const graph: onnx.IGraphProto = {
    node: g.nodes.map(encodeNode),
    name: g.name,
    initializer: [...g.initializers.values()].map((i) => ({
      ...encodeTensor(i.value),
      name: i.name,
      doc_string: i.docString,
      metadata_props: i.extra?.metadata_props as StringEntry[] | undefined,
    })),
    doc_string: g.docString || undefined,
    input: g.inputs.map(encodeValueInfo),
    output: g.outputs.map(encodeValueInfo),
    value_info: valueInfo.map(encodeValueInfo),
    ...keptExtras<onnx.IGraphProto>(g.extra, GRAPH_EXTRAS, 'graph.'),
  };
  const model: onnx.IModelProto = {
    ir_version: g.irVersion,
    opset_import: g.opsetImports.map((o) => ({ domain: o.domain, version: o.version })),
    producer_name: g.producerName || undefined,
    producer_version: g.producerVersion || undefined,
    domain: g.domain || undefined,
    model_version: g.modelVersion || undefined,
    doc_string: g.modelDocString || undefined,
    graph,
    metadata_props: withFrozenList(g),
    ...keptExtras<onnx.IModelProto>(g.extra, MODEL_EXTRAS),
  };
  return onnx.ModelProto.encode(model).finish();
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

// Fields the engine does not interpret, kept in Graph.extra (graph-level ones prefixed 'graph.')
// and written back as they were.
const MODEL_EXTRAS = ['training_info', 'functions', 'configuration'] as const satisfies (keyof onnx.IModelProto)[];
const GRAPH_EXTRAS = [
  'sparse_initializer',
  'quantization_annotation',
  'metadata_props',
] as const satisfies (keyof onnx.IGraphProto)[];
const NODE_EXTRAS = [
  'overload',
  'metadata_props',
  'device_configurations',
] as const satisfies (keyof onnx.INodeProto)[];

// ─── tensors ────────────────────────────────────────────────────────────────────────────────

interface TensorContext {
  file: string;
  readExternal?: ExternalDataReader;
  /** The model's IR version: from IR 2 an attribute must state its type (onnx.checker, onnxruntime). */
  irVersion?: number;
}

export function decodeTensor(t: onnx.ITensorProto, ctx: TensorContext, deferred?: DeferredTensorData): TensorValue {
  const name = t.name || '(unnamed tensor)';
  const dtype = dataTypeFromOnnx(t.data_type ?? 0);
  if (!dtype) throw new ModelError(`tensor '${name}' has unknown data_type ${t.data_type}`, { file: ctx.file });
  const dims = (t.dims ?? []).map(toNumber);
  const invalid = invalidDims(dims);
  if (invalid) throw new ModelError(`tensor '${name}' has invalid dims [${dims}]: ${invalid}`, { file: ctx.file });
  const count = sizeOf(dims);
  const fail = (what: string) =>
    new ModelError(`tensor '${name}' (${dtype}, dims [${dims}]): ${what}`, { file: ctx.file });

  if (t.data_location === onnx.TensorProto.DataLocation.EXTERNAL) {
    const entries = new Map((t.external_data ?? []).map((e) => [e.key, e.value ?? '']));
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
    if (!Number.isSafeInteger(offset) || offset < 0)
      throw fail(`external_data offset '${entries.get('offset')}' is not a non-negative integer`);
    const expected = count * width;
    if (declared !== undefined && declared !== expected)
      throw fail(`external_data length ${declared} does not match the ${expected} bytes its dims need`);
    const bytes = ctx.readExternal(location, offset, declared ?? expected);
    if (bytes.byteLength < expected)
      throw fail(
        `external file '${location}' has only ${bytes.byteLength} bytes at offset ${offset}, ${expected} needed`,
      );
    return { dtype, dims, data: typedArrayView(dtype, bytes, count) };
  }

  if (dtype === 'string') {
    const s = t.string_data ?? [];
    if (s.length !== count) throw fail(`string_data has ${s.length} entries, expected ${count}`);
    return { dtype, dims, data: s.map((b) => new Uint8Array(b)) };
  }
  const raw = t.raw_data;
  const rawLength = deferred ? deferred.length : (raw?.byteLength ?? 0);
  if (rawLength > 0) {
    const width = bytesPerElement(dtype);
    if (width === undefined) throw fail('raw_data for this type is not supported');
    if (rawLength !== count * width) throw fail(`raw_data has ${rawLength} bytes, expected ${count * width}`);
    if (deferred?.leaveStored) return storedTensor(dtype, dims, deferred);
    return { dtype, dims, data: typedArrayView(dtype, deferred ? deferred.read(0, deferred.length) : raw!, count) };
  }
  if (bytesPerElement(dtype) === undefined) throw fail('this data type is not supported');
  const field = typedField(dtype);
  const values: readonly Int64[] = t[field] ?? [];
  const perElement = dtype === 'complex64' || dtype === 'complex128' ? 2 : 1;
  if (values.length !== count * perElement)
    throw fail(`${field} has ${values.length} values, expected ${count * perElement}`);
  return { dtype, dims, data: fillTyped(dtype, values, count) };
}

type TypedField = 'float_data' | 'double_data' | 'int64_data' | 'uint64_data' | 'int32_data';

/** ONNX's typed field for each dtype, when raw_data is not used. */
function typedField(dtype: DataType): TypedField {
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

function fillTyped(dtype: DataType, values: readonly Int64[], count: number): TensorData {
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

/** The tensor's dims, type and data (raw_data viewing the tensor's bytes: the writer copies them). */
export function encodeTensor(t: TensorValue): onnx.ITensorProto {
  const msg: onnx.ITensorProto = { dims: t.dims, data_type: dataTypeToOnnx(t.dtype) };
  if (t.dtype === 'string') msg.string_data = t.data as Uint8Array[];
  else msg.raw_data = tensorBytes(t); // little-endian, as ONNX requires
  return msg;
}

// ─── nodes and attributes ───────────────────────────────────────────────────────────────────

const AttributeType = onnx.AttributeProto.AttributeType;
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

function decodeNode(n: onnx.INodeProto, ctx: TensorContext): Node {
  const node: Node = {
    name: n.name ?? '',
    opType: n.op_type ?? '',
    domain: n.domain ?? '',
    inputs: [...(n.input ?? [])],
    outputs: [...(n.output ?? [])],
    attributes: {},
  };
  if (n.doc_string) node.docString = n.doc_string;
  keepIfPresent((node.extra ??= {}), n, NODE_EXTRAS);
  if (!Object.keys(node.extra).length) delete node.extra;
  for (const a of n.attribute ?? []) {
    const name = a.name ?? '';
    if (Object.hasOwn(node.attributes, name))
      throw new ModelError(`attribute '${name}' is given twice; a node names each attribute once`, {
        file: ctx.file,
        node,
      });
    try {
      node.attributes[name] = decodeAttribute(a, ctx);
    } catch (e) {
      if (e instanceof ModelError)
        throw new ModelError(`attribute '${name}': ${e.message.replace(`${ctx.file}: `, '')}`, {
          file: ctx.file,
          node,
        });
      throw e;
    }
  }
  return node;
}

function decodeAttribute(a: onnx.IAttributeProto, ctx: TensorContext): Attribute {
  if (a.type && AttributeType[a.type] === undefined)
    throw new ModelError(`attribute '${a.name}' has type ${a.type}, which is not an ONNX attribute type`, {
      file: ctx.file,
    });
  if (!a.type && (ctx.irVersion ?? 0) >= 2)
    throw new ModelError(`attribute '${a.name}' has no type; from IR version 2 every attribute states its type`, {
      file: ctx.file,
    });
  const type = a.type ? a.type : guessAttributeType(a);
  if (a.ref_attr_name || a.doc_string) return { type: 'opaque', proto: a };
  switch (type) {
    case AttributeType.FLOAT:
      return { type: 'float', value: a.f ?? 0 };
    case AttributeType.INT:
      return { type: 'int', value: toNumber(a.i) };
    case AttributeType.STRING: {
      const text = a.s?.length ? exactUtf8(a.s) : '';
      return text === undefined ? { type: 'opaque', proto: a } : { type: 'string', value: text };
    }
    case AttributeType.TENSOR:
      if (!a.t) throw new ModelError(`attribute '${a.name}' has type TENSOR but no tensor`, { file: ctx.file });
      return { type: 'tensor', value: decodeTensor(a.t, ctx) };
    case AttributeType.FLOATS:
      return { type: 'floats', value: [...(a.floats ?? [])] };
    case AttributeType.INTS:
      return { type: 'ints', value: (a.ints ?? []).map(toNumber) };
    case AttributeType.STRINGS: {
      const texts = (a.strings ?? []).map(exactUtf8);
      return texts.some((t) => t === undefined)
        ? { type: 'opaque', proto: a }
        : { type: 'strings', value: texts as string[] };
    }
    case AttributeType.TENSORS:
      return { type: 'tensors', value: (a.tensors ?? []).map((t) => decodeTensor(t, ctx)) };
    default:
      return { type: 'opaque', proto: a };
  }
}

/** IR versions before 2 had no `type` field: the one field that is set tells (a list field when
 * it is not empty, checked before the single values). */
function guessAttributeType(a: onnx.IAttributeProto): onnx.AttributeProto.AttributeType {
  for (const [field, type] of TYPE_BY_FIELD) {
    const value = a[field];
    if (Array.isArray(value) ? value.length > 0 : has(a, field)) return type;
  }
  return AttributeType.UNDEFINED;
}

const TYPE_BY_FIELD = [
  ['floats', AttributeType.FLOATS],
  ['ints', AttributeType.INTS],
  ['strings', AttributeType.STRINGS],
  ['tensors', AttributeType.TENSORS],
  ['graphs', AttributeType.GRAPHS],
  ['f', AttributeType.FLOAT],
  ['i', AttributeType.INT],
  ['s', AttributeType.STRING],
  ['t', AttributeType.TENSOR],
  ['g', AttributeType.GRAPH],
] as const;

function encodeNode(n: Node): onnx.INodeProto {
  return {
    input: n.inputs,
    output: n.outputs,
    name: n.name || undefined,
    op_type: n.opType,
    domain: n.domain || undefined,
    attribute: Object.entries(n.attributes).map(([name, a]) => encodeAttribute(name, a)),
    doc_string: n.docString,
    ...keptExtras<onnx.INodeProto>(n.extra, NODE_EXTRAS),
  };
}

function encodeAttribute(name: string, a: Attribute): onnx.IAttributeProto {
  switch (a.type) {
    case 'float':
      return { name, type: AttributeType.FLOAT, f: a.value };
    case 'int':
      return { name, type: AttributeType.INT, i: int64(a.value) };
    case 'string':
      return { name, type: AttributeType.STRING, s: utf8Encoder.encode(a.value) };
    case 'tensor':
      return { name, type: AttributeType.TENSOR, t: encodeTensor(a.value) };
    case 'floats':
      return { name, type: AttributeType.FLOATS, floats: a.value };
    case 'ints':
      return { name, type: AttributeType.INTS, ints: a.value.map(int64) };
    case 'strings':
      return { name, type: AttributeType.STRINGS, strings: a.value.map((s) => utf8Encoder.encode(s)) };
    case 'tensors':
      return { name, type: AttributeType.TENSORS, tensors: a.value.map(encodeTensor) };
    case 'opaque':
      return a.proto;
  }
}

// ─── value infos ────────────────────────────────────────────────────────────────────────────

function decodeValueInfo(v: onnx.IValueInfoProto): ValueInfo {
  const info: ValueInfo = { name: v.name ?? '' };
  if (v.doc_string) info.docString = v.doc_string;
  if (v.metadata_props?.length) info.extra = { metadata_props: v.metadata_props };
  const type = v.type;
  if (!type) return info;
  if (type.denotation) info.extra = { ...info.extra, denotation: type.denotation };
  if (!type.tensor_type) {
    info.otherType = type;
    return info;
  }
  const tt = type.tensor_type;
  if (tt.elem_type) info.dtype = dataTypeFromOnnx(tt.elem_type);
  // A type newer than this codec knows, or none (0): keep its code so that it is written back
  // unchanged and the loader can say what is wrong with it.
  if (!info.dtype) info.extra = { ...info.extra, elemType: tt.elem_type ?? 0 };
  if (tt.shape) {
    const dims = tt.shape.dim ?? [];
    const denotations = dims.map((d) => d.denotation || '');
    if (denotations.some(Boolean)) info.extra = { ...info.extra, dimDenotations: denotations };
    info.shape = dims.map((d): Dim => {
      if (has(d, 'dim_value')) return toNumber(d.dim_value);
      if (has(d, 'dim_param') && d.dim_param) return d.dim_param;
      return null;
    });
  }
  return info;
}

function encodeValueInfo(v: ValueInfo): onnx.IValueInfoProto {
  const msg: onnx.IValueInfoProto = {
    name: v.name,
    doc_string: v.docString,
    metadata_props: v.extra?.metadata_props as StringEntry[] | undefined,
  };
  if (v.otherType) {
    msg.type = v.otherType;
  } else if (v.dtype || v.shape || v.extra?.elemType) {
    const tensor_type: onnx.TypeProto.ITensor = {
      elem_type: v.dtype ? dataTypeToOnnx(v.dtype) : ((v.extra?.elemType as number | undefined) ?? 0),
    };
    if (v.shape) {
      const denotations = v.extra?.dimDenotations as string[] | undefined;
      tensor_type.shape = {
        dim: v.shape.map((d, i) => {
          const dim: onnx.TensorShapeProto.IDimension =
            typeof d === 'number' ? { dim_value: d } : typeof d === 'string' ? { dim_param: d } : {};
          if (denotations?.[i]) dim.denotation = denotations[i];
          return dim;
        }),
      };
    }
    msg.type = { tensor_type, denotation: v.extra?.denotation as string | undefined };
  }
  return msg;
}

// ─── small helpers ──────────────────────────────────────────────────────────────────────────

/** Whether the decoded message carries `field` (generated messages keep defaults on the prototype). */
function has<M extends object>(msg: M, field: keyof M): boolean {
  return Object.prototype.hasOwnProperty.call(msg, field) && msg[field] !== null && msg[field] !== undefined;
}

function keepIfPresent<M extends object>(
  into: Record<string, unknown>,
  msg: M,
  fields: readonly (keyof M & string)[],
  prefix = '',
): void {
  for (const f of fields) {
    const v = msg[f];
    if (v === undefined || v === null || v === '' || (Array.isArray(v) && v.length === 0)) continue;
    into[prefix + f] = v;
  }
}

/** The fields keepIfPresent stored, as the message's own fields again. */
function keptExtras<M extends object>(
  from: Record<string, unknown> | undefined,
  fields: readonly (keyof M & string)[],
  prefix = '',
): Partial<M> {
  const out: Partial<M> = {};
  for (const f of fields) {
    const v = from?.[prefix + f];
    if (v !== undefined) out[f] = v as M[typeof f];
  }
  return out;
}

/** int64 fields arrive as numbers or Long objects, depending on protobufjs's setup. */
export function toNumber(v: Int64 | bigint | null | undefined): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (v) return v.toNumber();
  return Number(v ?? 0);
}

/** Saturates at the int64 range: 2^63 - 1 (torch's "to the end") reads back as the double
 * 2^63, which protobufjs would otherwise wrap to INT64_MIN. */
function int64(v: number): Int64 {
  const { MAX_VALUE, MIN_VALUE } = protobuf.util.Long as unknown as { MAX_VALUE: Long; MIN_VALUE: Long };
  if (v >= 2 ** 63) return MAX_VALUE;
  if (v <= -(2 ** 63)) return MIN_VALUE;
  return v;
}

function longString(v: Int64): string {
  if (typeof v === 'number') return Math.trunc(v).toString();
  return String(v);
}
