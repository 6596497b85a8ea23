// Seeded randomness for tests: same seed, same numbers, on every machine and run.
import { seededRandom } from '../../src/graph/random.ts';

/** mulberry32, the engine's own seeded generator: floats uniform in [0, 1). */
export const mulberry32 = seededRandom;

/** Standard normal sample by Box–Muller (one of the pair; simplicity over speed). */
export function randomNormal(rng: () => number): number {
  // 1 - u keeps the log argument in (0, 1].
  const u = 1 - rng();
  const v = rng();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** n normal samples times scale, as float32 (never all zeros, so a kernel that writes nothing fails). */
export function randomFloat32Array(n: number, seed: number, scale = 1): Float32Array {
  const rng = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = randomNormal(rng) * scale;
  return out;
}
