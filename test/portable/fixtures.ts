// The fixture manifest written in Node (make-fixtures.ts) and read by the portable cases under
// Deno and in the browser: models as .onnx bytes, tensors as raw little-endian float32 files.

/** A tensor stored as a raw float32 file beside the manifest. */
export interface TensorFile {
  name: string;
  dims: number[];
  /** Path relative to the fixture folder. */
  file: string;
}

/** A model with its feeds and the outputs a reference computed. */
export interface ModelCase {
  name: string;
  /** The .onnx file, relative to the fixture folder. */
  model: string;
  /** The ops it exercises (conformance) or a description (light model). */
  ops: string[];
  feeds: TensorFile[];
  outputs: TensorFile[];
}

export interface TrainingCase {
  name: string;
  model: string;
  feeds: TensorFile[];
  /** Raw uint32 class labels. */
  labels: string;
  /** The optimizer both runs take one step with (a train.OptimizerConfig). */
  optimizer: { type: 'sgd'; lr: number; momentum: number; clipNorm: number };
  /** The loss of the step, from the Node/Dawn run. */
  loss: number;
  /** Per parameter: its gradient and its value after the step, from the Node/Dawn run. */
  gradients: TensorFile[];
  parameters: TensorFile[];
}

export interface Manifest {
  /** Element-wise tolerance of ONNX's backend runner: |got − want| ≤ atol + rtol·|want|. */
  conformance: { rtol: number; atol: number; cases: ModelCase[] };
  /** Whole-output relative L2 bound against onnxruntime-node. */
  model: ModelCase & { relL2: number };
  training: TrainingCase & { relL2: number };
}

/** How a runtime reads a fixture file: Deno.readFile, or fetch() in the page. */
export type ReadFixture = (path: string) => Promise<Uint8Array>;

export const MANIFEST = 'manifest.json';

/** A file's bytes as float32 values (copied: the bytes may not be 4-aligned in their buffer). */
export function float32Of(bytes: Uint8Array): Float32Array {
  if (bytes.byteLength % 4 !== 0) throw new Error(`a float32 file has ${bytes.byteLength} bytes, not a multiple of 4`);
  return new Float32Array(bytes.slice().buffer);
}

export function uint32Of(bytes: Uint8Array): Uint32Array {
  if (bytes.byteLength % 4 !== 0) throw new Error(`a uint32 file has ${bytes.byteLength} bytes, not a multiple of 4`);
  return new Uint32Array(bytes.slice().buffer);
}

export async function readTensor(read: ReadFixture, t: TensorFile): Promise<Float32Array> {
  const data = float32Of(await read(t.file));
  const want = t.dims.reduce((a, b) => a * b, 1);
  if (data.length !== want)
    throw new Error(`fixture ${t.file} ('${t.name}') holds ${data.length} floats, dims [${t.dims}] need ${want}`);
  return data;
}
