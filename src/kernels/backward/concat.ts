// Backward of the data-movement family (forward: ../transform.ts) and of the shape-only ops.
// Each kernel gathers: one invocation per element of the gradient it writes.
//
// Flatten, Reshape, Squeeze, Unsqueeze and Identity need no kernel: their input and output
// share one buffer layout (row-major, same element order), so dx IS dy with the input's dims.
// Autodiff binds dy's buffer as dx (or, where dx must be accumulated into, adds dy with
// gradientSumProgram). They save nothing.
import { concatSliceProgram, MAX_RANK } from '../transform.ts';
import { elementProgram, input, output, type KernelProgram } from '../shader.ts';

/**
 * The gradients of every input of Concat along `axis`, one program each (in input order).
 * Bindings of each: dy, dx, params.
 */
export function concatBackwardPrograms(inputDims: number[][], axis: number): KernelProgram[] {
  const rank = inputDims[0].length;
  const a = axis < 0 ? axis + rank : axis;
  const outer = product(inputDims[0].slice(0, a));
  const inners = inputDims.map((d) => product(d.slice(a)));
  const outputInner = inners.reduce((s, v) => s + v, 0);
  let offset = 0;
  return inners.map((inner) => {
    const program = concatSliceProgram('backward', outer, inner, outputInner, offset);
    offset += inner;
    return program;
  });
}

/**
 * Transpose backward: dx = transpose(dy, inverse perm), i.e. dx[i] = dy[j] where j is i's
 * position in the output (output dim d is input dim perm[d]). `dims` are the FORWARD input's.
 * Needs saved: nothing. Bindings: dy, dx, params.
 */
export function transposeBackwardProgram(dims: number[], perm: number[]): KernelProgram {
  const rank = dims.length;
  if (perm.length !== rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
    throw new Error(`transpose backward: perm (${perm}) is not a permutation of 0…${rank - 1}`);
  }
  const outDims = perm.map((p) => dims[p]);
  const outStrides = stridesOf(outDims);
  // For input dim k, the stride in dy of its coordinate: output dim d with perm[d] = k.
  const dyStride = new Array(rank).fill(0);
  perm.forEach((p, d) => (dyStride[p] = outStrides[d]));
  // Size-1 dims move nothing; adjacent input dims that stay adjacent in dy merge.
  let ds: number[] = [];
  let ss: number[] = [];
  for (let k = 0; k < rank; k++) {
    if (dims[k] === 1) continue;
    ds.push(dims[k]);
    ss.push(dyStride[k]);
  }
  if (ds.length === 0) {
    ds = [1];
    ss = [0];
  }
  for (let d = ds.length - 2; d >= 0; d--) {
    if (ss[d] === ss[d + 1] * ds[d + 1]) {
      ds = [...ds.slice(0, d), ds[d] * ds[d + 1], ...ds.slice(d + 2)];
      ss = [...ss.slice(0, d), ss[d + 1], ...ss.slice(d + 2)];
    }
  }
  if (ds.length > MAX_RANK) throw new Error(`transpose backward: rank ${ds.length} > ${MAX_RANK}`);
  const L = ['  var rem = idx;', '  var src = 0u;'];
  for (let k = ds.length - 1; k >= 0; k--)
    L.push(k > 0 ? `  src += (rem % P.d${k}) * P.s${k}; rem = rem / P.d${k};` : `  src += rem * P.s${k};`);
  return elementProgram({
    label: `transpose backward [${dims}] (${perm})`,
    key: `transpose-bwd|r${ds.length}`,
    total: product(dims),
    inputs: [input('dy')],
    outputs: [output('dx')],
    params: (P) => ds.forEach((d, k) => P.u32(`d${k}`, d).u32(`s${k}`, ss[k])),
    body: `${L.join('\n')}
  dx[idx] = dy[src];`,
  });
}

/**
 * Pad backward (constant mode): crop, dx[i] = dy[i + begin] per axis, with `dims` the FORWARD
 * input's and pads = [begin_0 … begin_{r−1}, end_0 … end_{r−1}]; where a negative pad cropped
 * the input, the cropped elements get 0. Needs saved: nothing. Bindings: dy, dx, params.
 */
export function padBackwardProgram(dims: number[], pads: number[]): KernelProgram {
  const rank = dims.length;
  if (rank > MAX_RANK) throw new Error(`pad backward: rank ${rank} > ${MAX_RANK}`);
  if (pads.length !== 2 * rank)
    throw new Error(`pad backward: ${pads.length} pads for rank ${rank}; 2·rank = ${2 * rank} accepted`);
  const outDims = dims.map((d, i) => d + pads[i] + pads[i + rank]);
  const L = ['  var rem = idx;', '  var src = 0u;', '  var inside = true;', '  var stride = 1u;'];
  for (let d = rank - 1; d >= 0; d--) {
    L.push(`  { let c = i32(rem % P.i${d}) + P.b${d}; rem = rem / P.i${d};`);
    L.push(`    inside = inside && u32(c) < P.o${d}; src += u32(c) * stride; stride *= P.o${d}; }`);
  }
  return elementProgram({
    label: `pad backward [${dims}] (${pads})`,
    key: `pad-bwd|r${rank}`,
    total: product(dims),
    inputs: [input('dy')],
    outputs: [output('dx')],
    params: (P) => {
      for (let d = 0; d < rank; d++) P.u32(`i${d}`, dims[d]).u32(`o${d}`, outDims[d]).i32(`b${d}`, pads[d]);
    },
    body: `${L.join('\n')}
  dx[idx] = select(0.0, dy[select(0u, src, inside)], inside);`,
  });
}

// ---- helpers ----

function product(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

function stridesOf(dims: number[]): number[] {
  const s = new Array(dims.length).fill(1);
  for (let i = dims.length - 2; i >= 0; i--) s[i] = s[i + 1] * dims[i + 1];
  return s;
}
