// Data movement and row-wise ops: Concat (a strided copy per input), Transpose, constant Pad,
// Softmax (pre-13 coerce-to-2-D and 13+ single-axis semantics). Ranks up to MAX_RANK.
import { elementProgram, input, output, type KernelProgram } from './shader.ts';

export const MAX_RANK = 8;

/**
 * The copy between Concat's input and its slice of the output, y[o, offset + i] ↔ x[o, i] for
 * o < outer, i < inputInner, with rows of outputInner in y. 'forward' writes the slice
 * (bindings x, y, params); 'backward' reads the gradient's slice (bindings dy, dx, params).
 */
export function concatSliceProgram(
  direction: 'forward' | 'backward',
  outer: number,
  inputInner: number,
  outputInner: number,
  offset: number,
): KernelProgram {
  const slice = '(idx / P.inner) * P.outInner + P.offset + idx % P.inner';
  const forward = direction === 'forward';
  return elementProgram({
    label: forward
      ? `concat part ${outer}×${inputInner}→${outputInner}@${offset}`
      : `concat backward ${outer}×${outputInner}@${offset}→${inputInner}`,
    key: forward ? 'concat-copy' : 'concat-bwd',
    total: outer * inputInner,
    ...(forward ? {} : { inputs: [input('dy')], outputs: [output('dx')] }),
    params: (P) => P.u32('inner', inputInner).u32('outInner', outputInner).u32('offset', offset),
    body: forward ? `  y[${slice}] = x[idx];` : `  dx[idx] = dy[${slice}];`,
  });
}

/** Transpose x of `dims` by `perm` (output dim d is input dim perm[d]). Bindings: x, y, params. */
export function transposeProgram(dims: number[], perm: number[]): KernelProgram {
  const { outDims, inStrides } = collapseTranspose(dims, perm);
  const rank = outDims.length;
  const L = [`  var rem = idx;`, `  var src = 0u;`];
  for (let d = rank - 1; d >= 0; d--) {
    L.push(d > 0 ? `  src += (rem % P.d${d}) * P.s${d}; rem = rem / P.d${d};` : `  src += rem * P.s${d};`);
  }
  L.push('  y[idx] = x[src];');
  return elementProgram({
    label: `transpose [${dims}] (${perm})`,
    key: `transpose|r${rank}`,
    total: dims.reduce((a, b) => a * b, 1),
    params: (P) => {
      for (let d = 0; d < rank; d++) P.u32(`d${d}`, outDims[d]).u32(`s${d}`, inStrides[d]);
    },
    body: L.join('\n'),
  });
}

/**
 * Constant Pad: pads = [begin_0 … begin_{r−1}, end_0 … end_{r−1}] (negative values crop).
 * Bindings: x, y, params.
 */
export function padProgram(dims: number[], pads: number[], value: number): KernelProgram {
  const rank = dims.length;
  if (rank > MAX_RANK) throw new Error(`pad: rank ${rank} > ${MAX_RANK}`);
  if (pads.length !== 2 * rank) throw new Error(`pad: ${pads.length} pads for rank ${rank}`);
  const outDims = dims.map((d, i) => d + pads[i] + pads[i + rank]);
  const L = [`  var rem = idx;`, `  var src = 0u;`, `  var inside = true;`, `  var stride = 1u;`];
  for (let d = rank - 1; d >= 0; d--) {
    L.push(`  { let c = i32(rem % P.o${d}) - P.b${d}; rem = rem / P.o${d};`);
    L.push(`    inside = inside && u32(c) < P.i${d}; src += u32(c) * stride; stride *= P.i${d}; }`);
  }
  L.push('  y[idx] = select(P.value, x[select(0u, src, inside)], inside);');
  return elementProgram({
    label: `pad [${dims}] (${pads})`,
    key: `pad|r${rank}`,
    total: outDims.reduce((a, b) => a * b, 1),
    params: (P) => {
      P.f32('value', value);
      for (let d = 0; d < rank; d++) P.u32(`o${d}`, outDims[d]).u32(`i${d}`, dims[d]).i32(`b${d}`, pads[d]);
    },
    body: L.join('\n'),
  });
}

/**
 * Softmax over `length` elements spaced `inner` apart, for `outer`·`inner` rows.
 * opset < 13 (coerce to 2-D at axis): inner = 1, length = ∏dims[axis:]; opset ≥ 13: length =
 * dims[axis], inner = ∏dims[axis+1:]. Bindings: x, y, params.
 */
export function softmaxProgram(outer: number, length: number, inner: number): KernelProgram {
  return elementProgram({
    label: `softmax ${outer}×${length}×${inner}`,
    key: 'softmax',
    total: outer * inner,
    workgroup: 64,
    params: (P) => P.u32('length', length).u32('inner', inner),
    body: `
  let base = (idx / P.inner) * P.length * P.inner + idx % P.inner;
  var m = x[base];
  for (var j = 1u; j < P.length; j++) { m = max(m, x[base + j * P.inner]); }
  var sum = 0.0;
  for (var j = 0u; j < P.length; j++) { sum += exp(x[base + j * P.inner] - m); }
  let scale = 1.0 / sum;
  for (var j = 0u; j < P.length; j++) { y[base + j * P.inner] = exp(x[base + j * P.inner] - m) * scale; }`,
  });
}

/**
 * Softmax backward over rows of `length` elements at stride `inner`: dx = y·(dy − Σ dy·y), one
 * invocation per row (outer × inner of them). Needs saved: y. Bindings: y, dy, dx, params.
 */
export function softmaxBackwardProgram(outer: number, length: number, inner: number): KernelProgram {
  return elementProgram({
    label: `softmax backward ${outer}×${length}×${inner}`,
    key: 'softmax-backward',
    total: outer * inner,
    inputs: [input('y'), input('dy')],
    outputs: [output('dx')],
    params: (P) => P.u32('length', length).u32('inner', inner),
    body: `  let r = idx;
  let base = (r / P.inner) * P.length * P.inner + r % P.inner;
  var dot = 0.0;
  for (var j = 0u; j < P.length; j++) { let at = base + j * P.inner; dot += dy[at] * y[at]; }
  for (var j = 0u; j < P.length; j++) { let at = base + j * P.inner; dx[at] = y[at] * (dy[at] - dot); }`,
  });
}

/** Output dims and, per output dim, the input stride; adjacent dims that stay adjacent are merged. */
function collapseTranspose(dims: number[], perm: number[]): { outDims: number[]; inStrides: number[] } {
  const rank = dims.length;
  if (perm.length !== rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i))
    throw new Error(`transpose: perm (${perm}) is not a permutation of 0…${rank - 1}`);
  const strides = new Array(rank).fill(1);
  for (let d = rank - 2; d >= 0; d--) strides[d] = strides[d + 1] * dims[d + 1];
  let outDims: number[] = [];
  let inStrides: number[] = [];
  for (const p of perm) {
    if (dims[p] === 1) continue;
    outDims.push(dims[p]);
    inStrides.push(strides[p]);
  }
  if (outDims.length === 0) return { outDims: [1], inStrides: [0] };
  for (let d = outDims.length - 2; d >= 0; d--) {
    if (inStrides[d] === inStrides[d + 1] * outDims[d + 1]) {
      outDims = [...outDims.slice(0, d), outDims[d] * outDims[d + 1], ...outDims.slice(d + 2)];
      inStrides = [...inStrides.slice(0, d), inStrides[d + 1], ...inStrides.slice(d + 2)];
    }
  }
  if (outDims.length > MAX_RANK) throw new Error(`transpose: rank ${outDims.length} > ${MAX_RANK}`);
  return { outDims, inStrides };
}
