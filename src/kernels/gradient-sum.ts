// Gradients summed over the slices of a batch (a batch too large for one binding trains as
// slices through one plan): sum = scale·g for the first slice, sum += scale·g for the others,
// scale = the slice's share of the batch, so the sum is the full batch's mean gradient.
import { elementProgram, input, output, type KernelProgram } from './shader.ts';

/** sum[i] = scale·g[i] (`first`) or sum[i] += scale·g[i], over `size` floats. Bindings: g, sum, params. */
export function gradientSumProgram(size: number, scale: number, first: boolean): KernelProgram {
  return elementProgram({
    label: `gradient ${first ? 'sum start' : 'sum add'} ${size}`,
    key: `gradient-sum|${first ? 'start' : 'add'}`,
    total: size,
    inputs: [input('g')],
    outputs: [output('sum')],
    params: (P) => P.f32('scale', scale),
    body: first ? `  sum[idx] = P.scale * g[idx];` : `  sum[idx] = sum[idx] + P.scale * g[idx];`,
  });
}
