// The sum of two gradients of one value: how autodiff accumulates where a value has several readers.
import type { KernelProgram } from '../program.ts';
import { vectorElementProgram } from './common.ts';

/** y = a + b (same sizes): how autodiff sums two gradients of one value (vec4 units). Bindings: a, b, y, params. */
export function gradientSumProgram(size: number): KernelProgram {
  return vectorElementProgram({
    label: `gradient sum ${size}`,
    key: 'gradient-sum',
    total: size,
    reads: ['a', 'b'],
    writes: ['y'],
    body: () => '    y[i] = a[i] + b[i];',
  });
}
