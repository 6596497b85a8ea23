// What the backward program builders share: the `accumulate` option (add into an existing
// gradient instead of overwriting it, for tensors with several consumers) and binding lists.
import { ELEMENT_WORKGROUP, LINEAR_INDEX, linearDispatch, ParamBlock, type KernelProgram, type ProgramBinding } from '../program.ts';

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
