// Seeded randomness for weight initialisation: the same seed gives the same weights everywhere.

/** mulberry32: a small, fast 32-bit generator; returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box–Muller) from a uniform generator. */
export function normalSampler(uniform: () => number): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const u = 1 - uniform(); // (0, 1]: log never sees 0
    const v = uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}

export type InitScheme = 'he' | 'glorot' | 'zeros' | 'ones';

/**
 * Fills a weight of `dims` ([out, in, k…] for Conv, [out, in] for a transB Gemm, 1-D for biases).
 * He (Kaiming) normal: std √(2/fan_in), for layers followed by ReLU; Glorot (Xavier) uniform:
 * limit √(6/(fan_in+fan_out)), for the final classifier.
 */
export function initWeights(dims: number[], scheme: InitScheme, seed: number): Float32Array {
  const n = dims.reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  if (scheme === 'zeros') return out;
  if (scheme === 'ones') return out.fill(1);
  const receptive = dims.slice(2).reduce((a, b) => a * b, 1);
  const fanIn = (dims[1] ?? 1) * receptive;
  const fanOut = dims[0] * receptive;
  const uniform = seededRandom(seed);
  if (scheme === 'he') {
    // normalSampler's arithmetic, inlined a pair at a time: building VGG draws 10^8 of these.
    const std = Math.sqrt(2 / fanIn);
    for (let i = 0; i < n; i += 2) {
      const r = Math.sqrt(-2 * Math.log(1 - uniform()));
      const angle = 2 * Math.PI * uniform();
      out[i] = r * Math.cos(angle) * std;
      if (i + 1 < n) out[i + 1] = r * Math.sin(angle) * std;
    }
  } else {
    const limit = Math.sqrt(6 / (fanIn + fanOut));
    for (let i = 0; i < n; i++) out[i] = (uniform() * 2 - 1) * limit;
  }
  return out;
}

/** A seed derived from a base seed and a name, so each tensor gets its own stream. */
export function seedFor(base: number, name: string): number {
  let h = (base ^ 0x811c9dc5) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}
