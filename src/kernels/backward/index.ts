// The backward program builders, one file per op family (pool, normalization, elementwise,
// concat); autodiff wires them to ops through the gradient rules.
export * from './pool.ts';
export * from './normalization.ts';
export * from './elementwise.ts';
export * from './concat.ts';
