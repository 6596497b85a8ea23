// How many inputs and outputs each supported op takes, by opset: ONNX's operator schemas
// (onnx.defs in ONNX 1.12, `min_input`/`max_input`/`min_output`/`max_output` at each
// since_version), plus opset 18's changes (Pad and ReduceMean take their axes as an input).
// onnxruntime refuses a node outside these counts; so does the loader (checkNodeArity).

/** [since opset, min inputs, max inputs, min outputs, max outputs], oldest first. */
type ArityRow = readonly [since: number, minIn: number, maxIn: number, minOut: number, maxOut: number];

const VARIADIC = 2147483647;
const UNARY: readonly ArityRow[] = [[1, 1, 1, 1, 1]];
const BINARY: readonly ArityRow[] = [[1, 2, 2, 1, 1]];

export const ONNX_ARITY: Readonly<Record<string, readonly ArityRow[]>> = {
  Conv: [[1, 2, 3, 1, 1]],
  MaxPool: [
    [1, 1, 1, 1, 1],
    [8, 1, 1, 1, 2],
  ],
  AveragePool: UNARY,
  GlobalAveragePool: UNARY,
  GlobalMaxPool: UNARY,
  BatchNormalization: [
    [1, 5, 5, 1, 5],
    [14, 5, 5, 1, 3],
  ],
  LRN: UNARY,
  Relu: UNARY,
  LeakyRelu: UNARY,
  Clip: [
    [1, 1, 1, 1, 1],
    [11, 1, 3, 1, 1],
  ],
  Sigmoid: UNARY,
  Tanh: UNARY,
  Softmax: UNARY,
  Add: BINARY,
  Sub: BINARY,
  Mul: BINARY,
  Div: BINARY,
  Sum: [[1, 1, VARIADIC, 1, 1]],
  Gemm: [
    [1, 3, 3, 1, 1],
    [11, 2, 3, 1, 1],
  ],
  MatMul: BINARY,
  Identity: UNARY,
  Flatten: UNARY,
  Reshape: [
    [1, 1, 1, 1, 1],
    [5, 2, 2, 1, 1],
  ],
  Squeeze: [
    [1, 1, 1, 1, 1],
    [13, 1, 2, 1, 1],
  ],
  Unsqueeze: [
    [1, 1, 1, 1, 1],
    [13, 2, 2, 1, 1],
  ],
  Dropout: [
    [1, 1, 1, 1, 2],
    [12, 1, 3, 1, 2],
  ],
  Transpose: UNARY,
  Pad: [
    [1, 1, 1, 1, 1],
    [11, 2, 3, 1, 1],
    [18, 2, 4, 1, 1],
  ],
  Concat: [[1, 1, VARIADIC, 1, 1]],
  Shape: UNARY,
  Gather: [[1, 2, 2, 1, 1]],
  ConstantOfShape: UNARY,
  Constant: [[1, 0, 0, 1, 1]],
  Cast: UNARY,
  Slice: [
    [1, 1, 1, 1, 1],
    [10, 3, 5, 1, 1],
  ],
  Range: [[11, 3, 3, 1, 1]],
  ReduceMean: [
    [1, 1, 1, 1, 1],
    [18, 1, 2, 1, 1],
  ],
};

/** The counts in force at `opset` (undefined for an op the table lacks). */
export function arityAt(opType: string, opset: number): ArityRow | undefined {
  const rows = ONNX_ARITY[opType];
  return rows && [...rows].reverse().find((r) => r[0] <= opset);
}
