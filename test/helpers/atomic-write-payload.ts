// The payload test/atomic-write.test.ts writes and checks: generation `gen` is recognisable in
// every element, so a file mixing two generations or cut short cannot pass for either.
export const PAYLOAD_ELEMENTS = 6_000_000;

export function payload(gen: number): Float32Array {
  const out = new Float32Array(PAYLOAD_ELEMENTS);
  for (let i = 0; i < out.length; i++) out[i] = gen * 1024 + (i % 1021);
  return out;
}

/** The generation every element agrees on, or undefined when they disagree. */
export function generationOf(data: Float32Array, elements = data.length): number | undefined {
  if (data.length !== elements) return undefined;
  const gen = data[0] / 1024;
  for (let i = 0; i < data.length; i++) if (data[i] !== gen * 1024 + (i % 1021)) return undefined;
  return gen;
}
