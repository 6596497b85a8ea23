// What the backward program builders share: the `accumulate` option (add into an existing
// gradient instead of overwriting it, for tensors with several consumers) and binding lists.
import type { ProgramBinding } from '../program.ts';

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
