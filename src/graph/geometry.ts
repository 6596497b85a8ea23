// Window geometry shared by Conv and pooling: resolves auto_pad into explicit pads and computes
// output sizes. Shape inference and the kernels both use it, so they cannot disagree.
import type { AttributeReader } from './attributes.ts';

export interface WindowGeometry {
  kernel: number[];
  strides: number[];
  dilations: number[];
  /** [begin_0, begin_1, …, end_0, end_1, …] as ONNX writes them. */
  pads: number[];
  output: number[];
}

/** The largest kernel size, stride, dilation or pad accepted: the kernels index with 32-bit
 * integers (onnxruntime accepts larger strides, but they mean nothing past the input's size). */
export const MAX_WINDOW = 2 ** 31 - 1;

/**
 * `input` and `kernel` are the spatial sizes only. `ceilMode` applies to pooling; PyTorch's and
 * ONNX's rule drops a last window that would start entirely in the end padding.
 */
export function windowGeometry(
  attrs: AttributeReader,
  input: number[],
  kernel: number[],
  ceilMode = false,
): WindowGeometry {
  const rank = input.length;
  const strides = attrs.ints('strides', new Array(rank).fill(1));
  const dilations = attrs.ints('dilations', new Array(rank).fill(1));
  const autoPad = attrs.oneOf('auto_pad', ['NOTSET', 'SAME_UPPER', 'SAME_LOWER', 'VALID'] as const, 'NOTSET');
  if (strides.length !== rank || dilations.length !== rank || kernel.length !== rank) {
    throw attrs.error(
      `kernel_shape [${kernel}], strides [${strides}] and dilations [${dilations}] must each have ${rank} entries (the input's spatial rank)`,
    );
  }
  for (const [name, values] of [
    ['kernel_shape', kernel],
    ['strides', strides],
    ['dilations', dilations],
  ] as const) {
    if (values.some((v) => !Number.isSafeInteger(v) || v < 1 || v > MAX_WINDOW))
      throw attrs.error(`${name} [${values}]: accepted are integers in 1…${MAX_WINDOW}`);
  }
  if (kernel.some((k, i) => (k - 1) * dilations[i] + 1 > MAX_WINDOW))
    throw attrs.error(
      `kernel_shape [${kernel}] with dilations [${dilations}] spans more than ${MAX_WINDOW} elements; accepted: (kernel - 1) · dilation + 1 ≤ ${MAX_WINDOW}`,
    );
  let pads: number[];
  const output: number[] = [];
  if (autoPad === 'NOTSET') {
    pads = attrs.ints('pads', new Array(2 * rank).fill(0));
    if (pads.length !== 2 * rank || pads.some((p) => !Number.isSafeInteger(p) || p < 0 || p > MAX_WINDOW))
      throw attrs.error(`pads [${pads}] must have ${2 * rank} entries, integers in 0…${MAX_WINDOW}`);
    for (let i = 0; i < rank; i++) {
      const span = (kernel[i] - 1) * dilations[i] + 1;
      const room = input[i] + pads[i] + pads[i + rank] - span;
      let out = Math.floor((ceilMode ? room + strides[i] - 1 : room) / strides[i]) + 1;
      if (ceilMode && (out - 1) * strides[i] >= input[i] + pads[i]) out -= 1;
      output.push(out);
    }
  } else {
    pads = new Array(2 * rank).fill(0);
    for (let i = 0; i < rank; i++) {
      const span = (kernel[i] - 1) * dilations[i] + 1;
      if (autoPad === 'VALID') {
        output.push(Math.floor((input[i] - span) / strides[i]) + 1);
        continue;
      }
      const out = Math.ceil(input[i] / strides[i]);
      const total = Math.max(0, (out - 1) * strides[i] + span - input[i]);
      const small = Math.floor(total / 2);
      pads[i] = autoPad === 'SAME_UPPER' ? small : total - small;
      pads[i + rank] = total - pads[i];
      output.push(out);
    }
  }
  if (output.some((o) => o < 1)) {
    throw attrs.error(
      `the window (kernel [${kernel}], dilations [${dilations}], pads [${pads}]) does not fit the input's spatial size [${input}]`,
    );
  }
  return { kernel, strides, dilations, pads, output };
}
