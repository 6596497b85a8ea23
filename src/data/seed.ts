// Deriving independent generators from (seed, epoch, index, …) so a sample's randomness depends on
// what it is, never on the order it was fetched in. Browser-safe.

import { seededRandom } from '../graph/random.ts';

export { seededRandom };

/** Hashes integers into one 32-bit seed (a murmur3-style finaliser per part). */
export function mixSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const part of parts) {
    // Two 32-bit halves, so seeds above 2^32 and negative ones still differ.
    const lo = part >>> 0;
    const hi = Math.floor(part / 4294967296) >>> 0;
    h = fmix(h ^ lo);
    h = fmix(h ^ hi ^ 0x85ebca6b);
  }
  return h >>> 0;
}

function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A uniformly random permutation of 0…n−1 (Fisher–Yates) from `seed`. */
export function permutation(n: number, seed: number): Uint32Array {
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  const rng = seededRandom(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
  return out;
}
