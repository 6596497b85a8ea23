// Elementwise ops: unary activations (Relu, LeakyRelu, Clip, Sigmoid, Tanh, Identity) and one
// generic n-ary kernel with numpy broadcasting (Add, Sub, Mul, Div, Sum), with an optional
// fused activation. Broadcasting is resolved on the host into per-input strides over the output
// (0 where an input is broadcast), after merging dimensions that every input treats alike, so
// [1,256,56,56] + [1,256,1,1] runs as a rank-2 problem.
import {
  activationKey,
  activationParams,
  activationWgsl,
  clampKeepingNaN,
  elementProgram,
  input,
  NO_ACTIVATION,
  type Activation,
  type KernelProgram,
} from './shader.ts';

export type UnaryOp = Activation | { kind: 'tanh' } | { kind: 'identity' };

/** y = op(x) over `size` elements. Bindings: x, y, params. */
export function unaryProgram(op: UnaryOp, size: number): KernelProgram {
  return elementProgram({
    label: `${op.kind} ${size}`,
    key: `unary|${op.kind === 'tanh' || op.kind === 'identity' ? op.kind : activationKey(op)}`,
    total: size,
    body: `  let v = x[idx];\n  y[idx] = ${unaryExpr(op, 'v')};`,
  });
}

export type BroadcastOp = 'add' | 'sub' | 'mul' | 'div';

/** Most inputs one broadcast kernel takes; Sum over more is chained by the caller. */
export const MAX_BROADCAST_INPUTS = 6;

/**
 * y = act(x0 op x1 op …) with numpy broadcasting of every input to `outDims`
 * (Sum is 'add' over n inputs). Bindings: x0 … x{n-1}, y, params.
 */
export function broadcastProgram(
  op: BroadcastOp,
  inputDims: number[][],
  outDims: number[],
  activation: Activation = NO_ACTIVATION,
): KernelProgram {
  const n = inputDims.length;
  if (n < 1 || n > MAX_BROADCAST_INPUTS)
    throw new Error(`broadcast ${op}: ${n} inputs; 1…${MAX_BROADCAST_INPUTS} accepted`);
  const { dims, strides } = collapse(inputDims, outDims);
  const rank = dims.length;
  const same = strides.map((s) => isContiguous(s, dims));
  const L: string[] = [];
  if (same.some((s) => !s)) {
    L.push(`  var rem = idx;`);
    for (let i = 0; i < n; i++) if (!same[i]) L.push(`  var o${i} = 0u;`);
    for (let d = rank - 1; d >= 0; d--) {
      L.push(d > 0 ? `  let c${d} = rem % P.d${d}; rem = rem / P.d${d};` : `  let c${d} = rem;`);
      for (let i = 0; i < n; i++) if (!same[i]) L.push(`  o${i} += c${d} * P.s${i}_${d};`);
    }
  }
  const operands = Array.from({ length: n }, (_, i) => `x${i}[${same[i] ? 'idx' : `o${i}`}]`);
  const symbol = { add: '+', sub: '-', mul: '*', div: '/' }[op];
  L.push(`  let v = ${operands.join(` ${symbol} `)};`);
  L.push(`  y[idx] = ${activationWgsl(activation.kind, 'v')};`);
  return elementProgram({
    label: `${op} [${inputDims.map((d) => `[${d}]`).join(' ')}]`,
    key: `broadcast|${op}|${n}|r${rank}|${same.map(Number).join('')}|${activationKey(activation)}`,
    total: outDims.reduce((a, b) => a * b, 1),
    inputs: inputDims.map((_, i) => input(`x${i}`)),
    params: (P) => {
      for (let d = 0; d < rank; d++) P.u32(`d${d}`, dims[d]);
      for (let i = 0; i < n; i++) if (!same[i]) for (let d = 0; d < rank; d++) P.u32(`s${i}_${d}`, strides[i][d]);
      activationParams(P, activation);
    },
    body: L.join('\n'),
  });
}

/** numpy's broadcast of several shapes; throws naming them when they do not fit. */
export function broadcastShape(shapes: number[][]): number[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const e = s[s.length - rank + i] ?? 1;
      if (e === 1) continue;
      if (d !== 1 && d !== e) throw new Error(`shapes ${shapes.map((x) => `[${x}]`).join(', ')} do not broadcast`);
      d = e;
    }
    out.push(d);
  }
  return out;
}

// ---- helpers ----

function unaryExpr(op: UnaryOp, v: string): string {
  switch (op.kind) {
    case 'identity':
      return v;
    case 'tanh':
      // tanh() of large |v| is NaN on some implementations (exp overflow): clamp first.
      return `tanh(${clampKeepingNaN(v, '-20.0', '20.0')})`;
    default:
      return activationWgsl(op.kind, v, op);
  }
}

/** Per-input strides over the output (0 where broadcast), after merging compatible dims. */
function collapse(inputDims: number[][], outDims: number[]): { dims: number[]; strides: number[][] } {
  const rank = outDims.length;
  if (rank === 0) return { dims: [1], strides: inputDims.map(() => [0]) };
  const strides = inputDims.map((dims) => {
    if (dims.length > rank) throw new Error(`input [${dims}] has more dims than the output [${outDims}]`);
    const padded = [...new Array(rank - dims.length).fill(1), ...dims];
    const s = new Array(rank).fill(0);
    let acc = 1;
    for (let d = rank - 1; d >= 0; d--) {
      if (padded[d] !== 1 && padded[d] !== outDims[d])
        throw new Error(`input [${dims}] does not broadcast to [${outDims}]`);
      s[d] = padded[d] === 1 ? 0 : acc;
      acc *= padded[d];
    }
    return s;
  });
  // Drop size-1 output dims, then merge d into d+1 where every input is contiguous across them.
  let dims: number[] = [];
  let st: number[][] = strides.map(() => []);
  for (let d = 0; d < rank; d++) {
    if (outDims[d] === 1) continue;
    dims.push(outDims[d]);
    st.forEach((s, i) => s.push(strides[i][d]));
  }
  if (dims.length === 0) return { dims: [1], strides: inputDims.map(() => [0]) };
  for (let d = dims.length - 2; d >= 0; d--) {
    const mergeable = st.every((s) => s[d] === s[d + 1] * dims[d + 1]);
    if (mergeable) {
      dims = [...dims.slice(0, d), dims[d] * dims[d + 1], ...dims.slice(d + 2)];
      st = st.map((s) => [...s.slice(0, d), s[d + 1], ...s.slice(d + 2)]);
    }
  }
  return { dims, strides: st };
}

function isContiguous(strides: number[], dims: number[]): boolean {
  let acc = 1;
  for (let d = dims.length - 1; d >= 0; d--) {
    if (strides[d] !== acc) return false;
    acc *= dims[d];
  }
  return true;
}
