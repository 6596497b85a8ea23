// onnx-graft's engine API: runs anywhere WebGPU does (Node via src/node, browsers, edge).
// Node-only helpers (files, Dawn) live in 'onnx-graft/node'.
export { Graph, type Node, type Initializer, type ValueInfo, type Attribute, type Dim } from './graph/ir.ts';
export {
  decodeModel,
  encodeModel,
  MAX_IR_VERSION,
  type DecodeOptions,
  type EncodeOptions,
  type ExternalDataReader,
} from './graph/codec.ts';
export {
  loadModel,
  prepareGraph,
  MAX_SUPPORTED_OPSET,
  MIN_SUPPORTED_OPSET,
  type PrepareOptions,
} from './graph/load.ts';
export { ModelError, HostMemoryError } from './graph/errors.ts';
export { decodeModelSource, type ByteSource } from './graph/model-source.ts';
export { SUPPORTED_OPS } from './ops/registry.ts';
export {
  preprocessPreset,
  readLabels,
  readPreprocess,
  writeLabels,
  writePreprocess,
  LABELS_KEY,
  PREPROCESS_KEY,
  PREPROCESS_PRESETS,
  type PreprocessPreset,
  type PreprocessSpec,
} from './graph/model-metadata.ts';
export { summarizeGraph, type GraphSummary, type NodeSummary } from './graph/summary.ts';
export { GraphBuilder } from './graph/builder.ts';
export { crc32 } from './graph/crc32.ts';
export { MAX_TENSOR_ELEMENTS, type DataType, type TensorValue } from './graph/tensor.ts';
export { MAX_FOLDED_BYTES } from './graph/fold.ts';
export { GpuContext, type AdapterReport, type GpuContextOptions } from './kernels/gpu-context.ts';
export * from './kernels/errors.ts';
export * as data from './data/index.ts';
export * as surgery from './graph/surgery/index.ts';
export {
  buildArchitecture,
  ARCHITECTURES,
  type ArchitectureName,
  type BuildOptions,
} from './graph/architectures/index.ts';
export { Session, type SessionOptions, type Tensor } from './runtime/session.ts';
export { SessionDisposedError, SessionUsageError, WeightsTooLargeError } from './runtime/errors.ts';
export { BindingLimitError } from './runtime/lower.ts';
export { BatchMemoryError, BatchSliceError } from './runtime/batch-slices.ts';
export * as train from './train/index.ts';
