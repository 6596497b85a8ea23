// What the backward program builders share: the `accumulate` option (add into an existing
// gradient instead of overwriting it, for tensors with several consumers) and binding lists.
import {
  dispatch1d,
  ELEMENT_WORKGROUP,
  LINEAR_INDEX,
  linearDispatch,
  ParamBlock,
  type KernelProgram,
  type ProgramBinding,
} from '../program.ts';

export interface GradOptions {
  /**
   * Add this gradient into what the gradient buffer already holds (a tensor read by several
   * nodes) instead of overwriting it. Part of the pipeline key. Default false.
   */
  accumulate?: boolean;
}

/** WGSL statement storing `expr` into `target[index]`, added to the old value when accumulating. */
export function storeGrad(target: string, index: string, expr: string, accumulate: boolean | undefined): string {
  return accumulate ? `${target}[${index}] = ${target}[${index}] + ${expr};` : `${target}[${index}] = ${expr};`;
}

/** Bindings for reads (in order), then read_write outputs, then the params block. */
export function bindingList(reads: string[], writes: string[]): ProgramBinding[] {
  return [
    ...reads.map((name) => ({ name, access: 'read' as const })),
    ...writes.map((name) => ({ name, access: 'read_write' as const })),
    { name: 'params', access: 'uniform' as const },
  ];
}

/** WGSL declarations matching bindingList(reads, writes); the params block goes at the returned index. */
export function bindingDecls(reads: string[], writes: string[]): { decls: string; paramsBinding: number } {
  const lines: string[] = [];
  let b = 0;
  for (const r of reads) lines.push(`@group(0) @binding(${b++}) var<storage, read> ${r}: array<f32>;`);
  for (const w of writes) lines.push(`@group(0) @binding(${b++}) var<storage, read_write> ${w}: array<f32>;`);
  return { decls: lines.join('\n'), paramsBinding: b };
}

export function accKey(o: GradOptions | undefined): string {
  return o?.accumulate ? 'acc' : 'set';
}

/** A read binding: its role name, and its WGSL variable where that differs (a role like 'var' is a WGSL keyword). */
export type GradRead = string | { name: string; wgsl: string };

/** A one-invocation-per-element backward program (see elementProgram in ../program.ts). */
export interface GradElementSpec {
  label: string;
  /** The pipeline key (see KernelProgram.key). */
  key: string;
  /** Invocations: one per element written (or per row, for row-wise kernels). */
  total: number;
  /** Workgroup size (default ELEMENT_WORKGROUP). */
  workgroup?: number;
  /** The read-only storage bindings, in order. */
  reads: GradRead[];
  /** The read_write storage bindings after them, in order (default: one output 'dx'). */
  writes?: string[];
  /** Declares the program's own uniforms, after `size` and `rowSize`. */
  params?: (P: ParamBlock) => void;
  /** WGSL declared between the uniform block and the entry point (helper functions). */
  prelude?: string;
  /** WGSL statements run for `idx` < P.size (`idx` is the linear invocation index). */
  body: string;
}

/**
 * Builds an element-wise backward program: bindings (reads, writes, params) as bindingList and
 * bindingDecls, the uniform block starting with size and rowSize, the linear dispatch and the
 * bounds-checked entry point; the op supplies only its body.
 */
export function gradElementProgram(spec: GradElementSpec): KernelProgram {
  const workgroup = spec.workgroup ?? ELEMENT_WORKGROUP;
  const writes = spec.writes ?? ['dx'];
  const names = spec.reads.map((r) => (typeof r === 'string' ? r : r.name));
  const vars = spec.reads.map((r) => (typeof r === 'string' ? r : r.wgsl));
  const { dispatch, rowSize } = linearDispatch(spec.total, workgroup);
  const P = new ParamBlock().u32('size', spec.total).u32('rowSize', rowSize);
  spec.params?.(P);
  const { decls, paramsBinding } = bindingDecls(vars, writes);
  const wgsl = `
${decls}
${P.wgsl(paramsBinding)}${spec.prelude ? `\n${spec.prelude}` : ''}
@compute @workgroup_size(${workgroup})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let idx = ${LINEAR_INDEX};
  if (idx >= P.size) { return; }
${spec.body}
}`;
  return { label: spec.label, key: spec.key, wgsl, dispatch, bindings: bindingList(names, writes), params: P.bytes() };
}

/** Invocations per workgroup of vectorElementProgram. */
const VECTOR_WORKGROUP = 256;
/** Units each invocation of vectorElementProgram takes, a workgroup apart (neighbouring lanes on neighbouring units). */
const UNITS_PER_INVOCATION = 4;

/** An element-wise backward program over vec4 units where it can (see vectorElementProgram). */
export interface GradVectorSpec {
  label: string;
  /** The pipeline key (see KernelProgram.key); the element type is appended. */
  key: string;
  /** Elements written. */
  total: number;
  /** The read-only storage bindings, in order (all indexed like the output). */
  reads: GradRead[];
  /** The read_write storage bindings after them (default: one output 'dx'). */
  writes?: string[];
  /** Declares the program's own uniforms, after `units` and `groupsX`. */
  params?: (P: ParamBlock) => void;
  /** WGSL statements for the unit at index `i`, every binding an array of `T` (vec4f or f32). */
  body: (T: string) => string;
}

/**
 * An element-wise program whose bindings are arrays of vec4f when 4 divides `total` (else f32),
 * each invocation taking UNITS_PER_INVOCATION units. On lavapipe, where a lane's load costs
 * about the same for a vec4 as for a float, this runs ReLU's backward 2.5× as fast as one
 * float per invocation (1.6 M elements: 3 ms against 8.5 ms).
 */
export function vectorElementProgram(spec: GradVectorSpec): KernelProgram {
  const vector = spec.total % 4 === 0;
  const T = vector ? 'vec4f' : 'f32';
  const units = vector ? spec.total / 4 : spec.total;
  const perGroup = VECTOR_WORKGROUP * UNITS_PER_INVOCATION;
  const dispatch = dispatch1d(Math.max(1, Math.ceil(units / perGroup)));
  const writes = spec.writes ?? ['dx'];
  const names = spec.reads.map((r) => (typeof r === 'string' ? r : r.name));
  const vars = spec.reads.map((r) => (typeof r === 'string' ? r : r.wgsl));
  const P = new ParamBlock().u32('units', units).u32('groupsX', dispatch[0]);
  spec.params?.(P);
  const decls = [...vars.map((v) => ({ v, access: 'read' })), ...writes.map((v) => ({ v, access: 'read_write' }))].map(
    ({ v, access }, i) => `@group(0) @binding(${i}) var<storage, ${access}> ${v}: array<${T}>;`,
  );
  const wgsl = `
${decls.join('\n')}
${P.wgsl(decls.length)}
@compute @workgroup_size(${VECTOR_WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let first = (wid.x + wid.y * P.groupsX) * ${perGroup}u + lid;
  for (var k = 0u; k < ${UNITS_PER_INVOCATION}u; k++) {
    let i = first + k * ${VECTOR_WORKGROUP}u;
    if (i >= P.units) { return; }
${spec.body(T)}
  }
}`;
  return {
    label: spec.label,
    key: `${spec.key}|${T}`,
    wgsl,
    dispatch,
    bindings: bindingList(names, writes),
    params: P.bytes(),
  };
}
