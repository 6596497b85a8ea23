// Training checkpoints in the safetensors layout (engine side: bytes in, bytes out, no file
// system), so PyTorch, numpy and Hugging Face tools open them:
//
//   tensors                 every float32 initializer under its own name (`conv1.weight`, …), then
//                           the optimizer's moments as `optimizer.<slot>/<name>` (PyTorch's slot
//                           names: momentum_buffer, exp_avg, exp_avg_sq), each shaped as its weight
//   __metadata__            strings only, as the format requires:
//     format                "pt" (tensors are in PyTorch's layout: NCHW, OIHW)
//     graft.format          "onnx-graft checkpoint"; graft.version "2"
//     graft.fingerprint     the architecture fingerprint, JSON
//     graft.step, .epoch    decimal integers
//     graft.optimizer       {type, step, config}, JSON; graft.rng, graft.schedule, graft.extra: JSON
//     graft.crc32           CRC-32 (zlib's) over the header's meaning and the byte buffer, 8 hex digits
//
// The checksum covers the header as parsed (keys sorted, this one entry left out) rather than its
// bytes, so damage anywhere is caught while a tool that re-spells the JSON does not break it.
// Files of the previous format ("GRAFTCK1", version 1) still load; none are written.

import { crc32 } from '../graph/crc32.ts';
import type { Graph, Initializer } from '../graph/ir.ts';
import { CheckpointError, type CheckpointProblem } from './checkpoint-error.ts';
import { slotsOf } from '../kernels/optimizer-kernels.ts';
import {
  ruleOf,
  type OptimizerState,
  type OptimizerType,
  type ResolvedOptimizerConfig,
  type SlotName,
} from './optimizers.ts';
import { parseSafetensors, serializeSafetensors, toFloat32, type SafetensorsTensorInput } from './safetensors.ts';

export { CheckpointError, type CheckpointProblem } from './checkpoint-error.ts';

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

/** The version this onnx-graft writes (safetensors); version 1 ("GRAFTCK1") is still read. */
export const CHECKPOINT_VERSION = 2;
/** The first bytes of a version-1 checkpoint. */
export const CHECKPOINT_V1_MAGIC = 'GRAFTCK1';
/** Prefix of the optimizer moments' tensor names: `optimizer.exp_avg/conv1.weight`. */
export const OPTIMIZER_TENSOR_PREFIX = 'optimizer.';

const FORMAT = 'onnx-graft checkpoint';
const SLOT_NAMES: readonly SlotName[] = ['momentum_buffer', 'exp_avg', 'exp_avg_sq'];
const OPTIMIZER_TYPES: readonly OptimizerType[] = ['sgd', 'adam', 'adamw'];
const KEY = {
  format: 'graft.format',
  version: 'graft.version',
  fingerprint: 'graft.fingerprint',
  step: 'graft.step',
  epoch: 'graft.epoch',
  optimizer: 'graft.optimizer',
  rng: 'graft.rng',
  schedule: 'graft.schedule',
  extra: 'graft.extra',
  crc32: 'graft.crc32',
} as const;

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

/** The checkpoint as safetensors bytes (see the layout above); the same checkpoint gives the same bytes. */
export function serializeCheckpoint(ck: Checkpoint): Uint8Array {
  checkInteger('step', ck.step);
  checkInteger('epoch', ck.epoch);
  const tensors: SafetensorsTensorInput[] = [];
  for (const [name, w] of ck.weights) {
    if (name.startsWith(OPTIMIZER_TENSOR_PREFIX))
      throw new Error(
        `checkpoint: weight '${name}' starts with '${OPTIMIZER_TENSOR_PREFIX}', reserved for optimizer moments`,
      );
    checkTensor(`weight '${name}'`, w.dims, w.data);
    tensors.push({ name, shape: w.dims, data: w.data });
  }
  if (ck.optimizer) {
    for (const [name, slots] of ck.optimizer.slots) {
      const dims = ck.weights.get(name)?.dims;
      if (!dims) throw new Error(`checkpoint: optimizer state for '${name}', which is not among the weights`);
      for (const slot of Object.keys(slots).sort() as SlotName[]) {
        checkTensor(`optimizer ${slot} of '${name}'`, dims, slots[slot]!);
        tensors.push({ name: optimizerTensorName(slot, name), shape: dims, data: slots[slot]! });
      }
    }
  }
  const metadata: Record<string, string> = {
    format: 'pt',
    [KEY.format]: FORMAT,
    [KEY.version]: String(CHECKPOINT_VERSION),
    [KEY.fingerprint]: JSON.stringify(ck.fingerprint),
    [KEY.step]: String(ck.step),
    [KEY.epoch]: String(ck.epoch),
  };
  if (ck.optimizer) {
    const { type, step, config } = ck.optimizer;
    metadata[KEY.optimizer] = JSON.stringify({ type, step, config });
  }
  if (ck.rng !== undefined) metadata[KEY.rng] = JSON.stringify(ck.rng);
  if (ck.schedule !== undefined) metadata[KEY.schedule] = JSON.stringify(ck.schedule);
  if (ck.extra !== undefined) metadata[KEY.extra] = JSON.stringify(ck.extra);
  // The checksum's own digits are fixed-width, so filling them in changes no offset.
  metadata[KEY.crc32] = '00000000';
  const bytes = serializeSafetensors(tensors, metadata);
  const file = parseSafetensors(bytes);
  const digits = hex8(checksumOf(file.header, file.buffer));
  const at = indexOf(bytes, new TextEncoder().encode(`"${KEY.crc32}":"00000000"`)) + KEY.crc32.length + 4;
  bytes.set(new TextEncoder().encode(digits), at);
  return bytes;
}

export interface DeserializeOptions {
  /** Named in errors: the file path, or any description of where the bytes came from. */
  source?: string;
  /** When given, a checkpoint of another architecture is refused (checkFingerprint). */
  expected?: ArchitectureFingerprint;
}

/**
 * Parses and verifies a checkpoint: layout, version, checksum, then every metadata value, then
 * (when `expected` is given) the architecture. Reads both the safetensors layout and version 1.
 * The tensors are views into `bytes` where aligned (copies otherwise), so keep `bytes` unmodified
 * while the checkpoint is in use.
 */
export function deserializeCheckpoint(bytes: Uint8Array, options: DeserializeOptions = {}): Checkpoint {
  const file = options.source ?? '';
  const fail = (problem: CheckpointProblem, detail: string): never => {
    throw new CheckpointError(problem, file, detail);
  };
  if (startsWithPrefixOf(bytes, CHECKPOINT_V1_MAGIC)) return readVersion1(bytes, options);

  const st = parseSafetensors(bytes, file, 'checkpoint');
  const meta = st.metadata;
  if (meta[KEY.format] !== FORMAT) {
    fail(
      'not-a-checkpoint',
      `a safetensors file without onnx-graft training state (no ${KEY.format} in __metadata__): ` +
        'to start from its tensors, load them as weights (loadSafetensorsWeights, graft train --init-weights)',
    );
  }
  if (meta[KEY.version] === undefined) fail('corrupt', `__metadata__ lacks ${KEY.version}`);
  const version = Number(meta[KEY.version]);
  if (version !== CHECKPOINT_VERSION) {
    fail(
      'version',
      `format version ${meta[KEY.version]}; this onnx-graft reads versions 1 and ${CHECKPOINT_VERSION}${version > CHECKPOINT_VERSION ? ' (written by a newer onnx-graft)' : ''}`,
    );
  }
  const stored = meta[KEY.crc32];
  if (!/^[0-9a-f]{8}$/.test(stored ?? ''))
    fail('corrupt', `${KEY.crc32} is ${JSON.stringify(stored)}, not 8 hex digits`);
  const computed = checksumOf(st.header, st.buffer);
  if (parseInt(stored, 16) !== computed) {
    fail('checksum', `checksum mismatch: stored CRC-32 0x${stored}, computed 0x${hex8(computed)}: the file is damaged`);
  }

  const json = (key: string): unknown => {
    if (meta[key] === undefined) return undefined;
    try {
      return JSON.parse(meta[key]);
    } catch (e) {
      return fail('corrupt', `${key} is not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
  };
  // A decimal integer string becomes a number only when exact; anything else stays as written, to be named.
  const decimal = (key: string): unknown => {
    const text = meta[key];
    return text !== undefined && /^\d+$/.test(text) && String(Number(text)) === text ? Number(text) : text;
  };
  const ck = checkedState(
    {
      fingerprint: json(KEY.fingerprint),
      step: decimal(KEY.step),
      epoch: decimal(KEY.epoch),
      optimizer: json(KEY.optimizer),
      rng: json(KEY.rng),
      schedule: json(KEY.schedule),
      extra: json(KEY.extra),
    },
    fail,
  );
  if (options.expected) checkFingerprint(ck.fingerprint, options.expected, file);

  const slots = new Map<string, Partial<Record<SlotName, Float32Array>>>();
  const slotDims = new Map<string, number[]>();
  for (const [name, entry] of st.tensors) {
    if (!name.startsWith(OPTIMIZER_TENSOR_PREFIX)) {
      ck.weights.set(name, { dims: entry.shape, data: toFloat32(name, entry, file, 'checkpoint') });
      continue;
    }
    const slash = name.indexOf('/');
    const slot = name.slice(OPTIMIZER_TENSOR_PREFIX.length, slash) as SlotName;
    const weight = name.slice(slash + 1);
    if (slash < 0 || !SLOT_NAMES.includes(slot)) {
      fail(
        'corrupt',
        `tensor '${name}': optimizer tensors are named ${OPTIMIZER_TENSOR_PREFIX}<${SLOT_NAMES.join('|')}>/<weight>`,
      );
    }
    let record = slots.get(weight);
    if (!record) slots.set(weight, (record = {}));
    record[slot] = toFloat32(name, entry, file, 'checkpoint');
    slotDims.set(`${slot}/${weight}`, entry.shape);
  }
  if (slots.size > 0 && !ck.optimizer) fail('corrupt', `optimizer tensors without ${KEY.optimizer}`);
  checkTensorsAgainstState(ck, slots, slotDims, fail);
  return ck;
}

/**
 * Tensors of a safetensors file written by another tool (PyTorch's `save_file`, a Hugging Face
 * export) as weights for `graph`: every tensor must name one of the graph's float32 initializers
 * with the same shape (F32, or F16 / BF16 / F64 converted); the first that does not is named.
 * Initializers the file lacks keep their values. Pass the result to restoreGraphWeights.
 */
export function loadSafetensorsWeights(bytes: Uint8Array, graph: Graph, source = ''): Map<string, CheckpointTensor> {
  const what = 'weights file';
  const st = parseSafetensors(bytes, source, what);
  const out = new Map<string, CheckpointTensor>();
  for (const [name, entry] of st.tensors) {
    const init = graph.initializers.get(name);
    if (!init) {
      const known = [...graph.initializers.keys()].slice(0, 5).join(', ');
      throw new CheckpointError(
        'architecture',
        source,
        `tensor '${name}' is not an initializer of the model (its initializers: ${known}${graph.initializers.size > 5 ? ', …' : ''})`,
        what,
      );
    }
    if (init.value.dtype !== 'float32')
      throw new CheckpointError(
        'architecture',
        source,
        `initializer '${name}' is ${init.value.dtype}, not float32`,
        what,
      );
    if (!sameDims(init.value.dims, entry.shape)) {
      throw new CheckpointError(
        'architecture',
        source,
        `tensor '${name}' is ${showDims(entry.shape)} in the file but ${showDims(init.value.dims)} in the model`,
        what,
      );
    }
    out.set(name, { dims: [...entry.shape], data: toFloat32(name, entry, source, what) });
  }
  if (out.size === 0) throw new CheckpointError('architecture', source, 'the file holds no tensors', what);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function optimizerTensorName(slot: SlotName, weight: string): string {
  return `${OPTIMIZER_TENSOR_PREFIX}${slot}/${weight}`;
}

/** CRC-32 over the header's meaning (sorted keys, the checksum entry left out), then the buffer. */
function checksumOf(header: Record<string, unknown>, buffer: Uint8Array): number {
  const metadata = { ...(header.__metadata__ as Record<string, string>) };
  delete metadata[KEY.crc32];
  const text = canonicalJson({ ...header, __metadata__: metadata });
  return crc32(buffer, crc32(new TextEncoder().encode(text)));
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const record = value as Record<string, unknown>;
    return `{${Object.keys(record)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(record[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

interface UncheckedState {
  fingerprint: unknown;
  step: unknown;
  epoch: unknown;
  optimizer?: unknown;
  rng?: unknown;
  schedule?: unknown;
  extra?: unknown;
}

/** The training state with every value checked (both format versions): a Checkpoint without tensors yet. */
function checkedState(raw: UncheckedState, fail: (problem: CheckpointProblem, detail: string) => never): Checkpoint {
  const f = raw.fingerprint as Partial<ArchitectureFingerprint> | null | undefined;
  if (!isRecord(f) || typeof f.hash !== 'string' || !/^[0-9a-f]{16}$/.test(f.hash) || !Array.isArray(f.parameters))
    fail(
      'corrupt',
      'the architecture fingerprint is missing or malformed (needs hash: 16 hex digits, parameters: a list)',
    );
  for (const p of f!.parameters!) {
    if (!isRecord(p) || typeof p.name !== 'string' || !Array.isArray(p.dims) || !p.dims.every(isCount))
      fail('corrupt', `the fingerprint's parameter ${JSON.stringify(p)} is not {name, dims: non-negative integers}`);
  }
  for (const key of ['step', 'epoch'] as const) {
    if (!isCount(raw[key]))
      fail('corrupt', `${key} is ${JSON.stringify(raw[key])}; a non-negative safe integer is needed`);
  }
  const ck: Checkpoint = {
    fingerprint: f as ArchitectureFingerprint,
    weights: new Map(),
    step: raw.step as number,
    epoch: raw.epoch as number,
  };
  if (raw.optimizer !== undefined) {
    const o = raw.optimizer as Partial<OptimizerState> | null;
    if (!isRecord(o) || !OPTIMIZER_TYPES.includes(o.type as OptimizerType))
      fail('corrupt', `the optimizer's type is ${JSON.stringify(o?.type)}; accepted ${OPTIMIZER_TYPES.join(', ')}`);
    if (!isCount(o!.step))
      fail('corrupt', `the optimizer's step is ${JSON.stringify(o!.step)}; a non-negative safe integer is needed`);
    if (!isRecord(o!.config) || o!.config.type !== o!.type)
      fail(
        'corrupt',
        `the optimizer's config is ${JSON.stringify(o!.config)}; an object of type '${o!.type}' is needed`,
      );
    checkOptimizerConfig(o!.config as Record<string, unknown>, fail);
    ck.optimizer = { type: o!.type!, step: o!.step!, config: o!.config as ResolvedOptimizerConfig, slots: new Map() };
  }
  if (raw.extra !== undefined && !isRecord(raw.extra))
    fail('corrupt', `extra is ${JSON.stringify(raw.extra)}, not an object`);
  if (raw.rng !== undefined) ck.rng = raw.rng as JsonValue;
  if (raw.schedule !== undefined) ck.schedule = raw.schedule as JsonValue;
  if (raw.extra !== undefined) ck.extra = raw.extra as { [key: string]: JsonValue };
  return ck;
}

/** Each value of a resolved optimizer config, in the range the optimizer accepts (resolveConfig's rules). */
const CONFIG_RULES: Record<keyof ResolvedOptimizerConfig, [(v: unknown) => boolean, string]> = {
  type: [(v) => OPTIMIZER_TYPES.includes(v as OptimizerType), OPTIMIZER_TYPES.join(', ')],
  lr: [(v) => isFiniteIn(v, 0, Infinity), 'a finite number ≥ 0'],
  momentum: [(v) => isFiniteIn(v, 0, 1) && v !== 1, 'a number in [0, 1)'],
  nesterov: [(v) => typeof v === 'boolean', 'true or false'],
  beta1: [(v) => isFiniteIn(v, 0, 1) && v !== 1, 'a number in [0, 1)'],
  beta2: [(v) => isFiniteIn(v, 0, 1) && v !== 1, 'a number in [0, 1)'],
  eps: [(v) => isFiniteIn(v, 0, Infinity) && v !== 0, 'a finite number > 0'],
  weightDecay: [(v) => isFiniteIn(v, 0, Infinity), 'a finite number ≥ 0'],
  clipNorm: [(v) => v === null || (isFiniteIn(v, 0, Infinity) && v !== 0), 'null or a finite number > 0'],
  reportGradNorm: [(v) => typeof v === 'boolean', 'true or false'],
};

function checkOptimizerConfig(
  config: Record<string, unknown>,
  fail: (problem: CheckpointProblem, detail: string) => never,
): void {
  for (const [key, [ok, accepted]] of Object.entries(CONFIG_RULES)) {
    if (!ok(config[key]))
      fail(
        'corrupt',
        `the optimizer's config.${key} is ${JSON.stringify(config[key]) ?? 'missing'}; accepted: ${accepted}`,
      );
  }
  const unknown = Object.keys(config).find((k) => !(k in CONFIG_RULES));
  if (unknown !== undefined)
    fail(
      'corrupt',
      `the optimizer's config has unknown key '${unknown}'; accepted: ${Object.keys(CONFIG_RULES).join(', ')}`,
    );
  if (config.nesterov === true && config.momentum === 0)
    fail('corrupt', "the optimizer's config has nesterov without momentum; nesterov needs momentum > 0");
}

/**
 * The tensors agree with the metadata: every weight is a fingerprint parameter of the same shape;
 * every optimizer record holds exactly the slots its update rule keeps, each shaped as its weight;
 * an optimizer that has stepped and keeps slots has some. Puts the slots into ck.optimizer.
 */
function checkTensorsAgainstState(
  ck: Checkpoint,
  slots: Map<string, Partial<Record<SlotName, Float32Array>>>,
  slotDims: Map<string, number[]>,
  fail: (problem: CheckpointProblem, detail: string) => never,
): void {
  const declared = new Map(ck.fingerprint.parameters.map((p) => [p.name, p.dims]));
  for (const [name, w] of ck.weights) {
    const dims = declared.get(name);
    if (!dims) fail('corrupt', `weight '${name}' is not a parameter of the checkpoint's architecture fingerprint`);
    if (!sameDims(dims!, w.dims))
      fail('corrupt', `weight '${name}' is ${showDims(w.dims)}, its architecture fingerprint says ${showDims(dims!)}`);
  }
  if (!ck.optimizer) return;
  const want = slotsOf(ruleOf(ck.optimizer.config));
  for (const [weight, record] of slots) {
    const w = ck.weights.get(weight);
    if (!w) fail('corrupt', `optimizer state for '${weight}', which is not among the checkpoint's weights`);
    const have = Object.keys(record).sort();
    if (have.join() !== [...want].sort().join())
      fail(
        'corrupt',
        `optimizer state for '${weight}' has slots [${have.join(', ')}]; ${ck.optimizer.type} as configured keeps [${want.join(', ')}]`,
      );
    for (const slot of want) {
      const dims = slotDims.get(`${slot}/${weight}`)!;
      if (!sameDims(dims, w!.dims) || record[slot]!.length !== w!.data.length)
        fail('corrupt', `optimizer ${slot} of '${weight}' is ${showDims(dims)}, its weight ${showDims(w!.dims)}`);
    }
  }
  if (want.length > 0 && ck.optimizer.step > 0 && slots.size === 0)
    fail(
      'corrupt',
      `the optimizer has taken ${ck.optimizer.step} steps but the checkpoint holds none of its ${want.join(', ')} tensors`,
    );
  ck.optimizer.slots = slots;
}

function isFiniteIn(x: unknown, min: number, max: number): x is number {
  return typeof x === 'number' && Number.isFinite(x) && x >= min && x <= max;
}

function isCount(x: unknown): x is number {
  return Number.isSafeInteger(x) && (x as number) >= 0;
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

// ---------------------------------------------------------------------------------------------
// Version 1 ("GRAFTCK1"), read only. Layout, integers little-endian: magic (8 bytes), u32 version
// 1, u32 header bytes 32, u64 total bytes, u32 JSON bytes, u32 reserved; the JSON metadata
// (fingerprint, step, epoch, rng, schedule, extra, optimizer, and a list of tensors with kind,
// name, slot, dims, byte offset) zero-padded to 4 bytes; float32 data; a CRC-32 of all before it.

const V1_HEADER_BYTES = 32;
const V1_CHECKSUM_BYTES = 4;

function readVersion1(bytes: Uint8Array, options: DeserializeOptions): Checkpoint {
  const file = options.source ?? '';
  const fail = (problem: CheckpointProblem, detail: string): never => {
    throw new CheckpointError(problem, file, detail);
  };
  if (bytes.length < V1_HEADER_BYTES)
    fail('truncated', `truncated: found ${bytes.length} bytes, the header alone is ${V1_HEADER_BYTES}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== 1)
    fail('version', `a "${CHECKPOINT_V1_MAGIC}" file of version ${version}; only version 1 used that magic`);
  const total = Number(view.getBigUint64(16, true));
  const jsonLength = view.getUint32(24, true);
  if (view.getUint32(12, true) !== V1_HEADER_BYTES)
    fail('corrupt', `header size ${view.getUint32(12, true)}, expected ${V1_HEADER_BYTES}`);
  if (bytes.length < total)
    fail(
      'truncated',
      `truncated: the header says ${total} bytes, found ${bytes.length} (an interrupted copy or download?)`,
    );
  if (bytes.length > total)
    fail('corrupt', `the header says ${total} bytes but there are ${bytes.length}: trailing data after the checkpoint`);
  if (total < V1_HEADER_BYTES + jsonLength + V1_CHECKSUM_BYTES)
    fail('corrupt', `the header's sizes do not add up (total ${total}, metadata ${jsonLength})`);
  const stored = view.getUint32(total - V1_CHECKSUM_BYTES, true);
  const computed = crc32(bytes.subarray(0, total - V1_CHECKSUM_BYTES));
  if (stored !== computed)
    fail(
      'checksum',
      `checksum mismatch: stored CRC-32 0x${hex8(stored)}, computed 0x${hex8(computed)}: the file is damaged`,
    );

  let meta: Record<string, unknown> = {};
  try {
    meta = JSON.parse(
      new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(V1_HEADER_BYTES, V1_HEADER_BYTES + jsonLength)),
    ) as Record<string, unknown>;
  } catch (e) {
    fail('corrupt', `the metadata is not valid JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!isRecord(meta) || meta.format !== FORMAT || !Array.isArray(meta.tensors))
    fail('corrupt', 'the metadata lacks its format or tensor list');
  const ck = checkedState(meta as unknown as UncheckedState, fail);
  if (options.expected) checkFingerprint(ck.fingerprint, options.expected, file);

  const dataStart = V1_HEADER_BYTES + Math.ceil(jsonLength / 4) * 4;
  const dataEnd = total - V1_CHECKSUM_BYTES;
  const slots = new Map<string, Partial<Record<SlotName, Float32Array>>>();
  const slotDims = new Map<string, number[]>();
  for (const t of meta.tensors as unknown[]) {
    if (!isRecord(t) || typeof t.name !== 'string')
      return fail('corrupt', `tensor entry ${JSON.stringify(t)} is not an object with a name`);
    const what = t.kind === 'optimizer' ? `optimizer ${String(t.slot)} of '${t.name}'` : `weight '${t.name}'`;
    if (!Array.isArray(t.dims) || !t.dims.every(isCount))
      fail('corrupt', `${what}: bad dims ${JSON.stringify(t.dims)}`);
    const dims = t.dims as number[];
    const count = dims.reduce((a, b) => a * b, 1);
    const offset = t.offset as number;
    if (!Number.isInteger(offset) || offset % 4 !== 0 || offset < dataStart || offset + count * 4 > dataEnd)
      fail(
        'corrupt',
        `${what}: ${count} floats at byte ${offset} lie outside the data section [${dataStart}, ${dataEnd})`,
      );
    const data = readFloat32LE(bytes, offset, count);
    if (t.kind === 'weight') ck.weights.set(t.name, { dims, data });
    else if (t.kind === 'optimizer' && SLOT_NAMES.includes(t.slot as SlotName)) {
      let record = slots.get(t.name);
      if (!record) slots.set(t.name, (record = {}));
      record[t.slot as SlotName] = data;
      slotDims.set(`${String(t.slot)}/${t.name}`, dims);
    } else fail('corrupt', `tensor '${t.name}' has unknown kind '${String(t.kind)}'`);
  }
  if (slots.size > 0 && !ck.optimizer) fail('corrupt', 'optimizer tensors without optimizer metadata');
  checkTensorsAgainstState(ck, slots, slotDims, fail);
  return ck;
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
  if (!isCount(x)) throw new Error(`checkpoint: ${what} must be an integer ≥ 0, got ${x}`);
}

function checkTensor(what: string, dims: readonly number[], data: Float32Array): void {
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

function hex8(x: number): string {
  return x.toString(16).padStart(8, '0');
}

/** Whether `bytes` starts with `magic`, or is a (truncated) prefix of it. */
function startsWithPrefixOf(bytes: Uint8Array, magic: string): boolean {
  if (bytes.length === 0) return false;
  const n = Math.min(bytes.length, magic.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== magic.charCodeAt(i)) return false;
  return true;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  throw new Error('internal: checkpoint checksum placeholder not found');
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function readFloat32LE(bytes: Uint8Array, offset: number, count: number): Float32Array {
  if (LITTLE_ENDIAN && (bytes.byteOffset + offset) % 4 === 0)
    return new Float32Array(bytes.buffer, bytes.byteOffset + offset, count);
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, count * 4);
  for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

/** FNV-1a, 64-bit, as 16 hex digits (BigInt: a fingerprint hashes kilobytes, not gigabytes). */
function fnv1a64(bytes: Uint8Array): string {
  const prime = 0x100000001b3n;
  const mask = 0xffffffffffffffffn;
  let h = 0xcbf29ce484222325n;
  for (const b of bytes) h = ((h ^ BigInt(b)) * prime) & mask;
  return h.toString(16).padStart(16, '0');
}
