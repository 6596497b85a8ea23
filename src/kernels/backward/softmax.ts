// Softmax backward (forward: ../transform.ts).
import { LINEAR_INDEX, linearDispatch, ParamBlock, type KernelProgram } from '../program.ts';

/**
 * Softmax backward over rows of `length` elements at stride `inner`: dx = y·(dy − Σ dy·y), one
 * invocation per row (outer × inner of them). Needs saved: y. Bindings: y, dy, dx, params.
 */
export function softmaxBackwardProgram(outer: number, length: number, inner: number): KernelProgram {
  const rows = outer * inner;
  const { dispatch, rowSize } = linearDispatch(rows);
  const P = new ParamBlock().u32('size', rows).u32('rowSize', rowSize).u32('length', length).u32('inner', inner);
  const wgsl = `
@group(0) @binding(0) var<storage, read> y: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
${P.wgsl(3)}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let r = ${LINEAR_INDEX};
  if (r >= P.size) { return; }
  let base = (r / P.inner) * P.length * P.inner + r % P.inner;
  var dot = 0.0;
  for (var j = 0u; j < P.length; j++) { let at = base + j * P.inner; dot += dy[at] * y[at]; }
  for (var j = 0u; j < P.length; j++) { let at = base + j * P.inner; dx[at] = y[at] * (dy[at] - dot); }
}`;
  return {
    label: `softmax backward ${outer}×${length}×${inner}`,
    key: 'softmax-backward',
    wgsl,
    dispatch,
    bindings: [
      { name: 'y', access: 'read' },
      { name: 'dy', access: 'read' },
      { name: 'dx', access: 'read_write' },
      { name: 'params', access: 'uniform' },
    ],
    params: P.bytes(),
  };
}
