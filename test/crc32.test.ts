// The one CRC-32 (PNG chunks, checkpoints) against zlib's, Node's built-in reference.
import { crc32 as zlibCrc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { crc32 } from '../src/graph/crc32.ts';
import { mulberry32 } from './helpers/random.ts';

describe('crc32', () => {
  it('gives the published check values', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
    expect(crc32(new TextEncoder().encode('The quick brown fox jumps over the lazy dog'))).toBe(0x414fa339);
  });

  it('agrees with zlib on random data of every length around the 8-byte slices', () => {
    const rng = mulberry32(5);
    for (const n of [1, 2, 7, 8, 9, 15, 16, 17, 1000, 65_537]) {
      const data = Uint8Array.from({ length: n }, () => Math.floor(rng() * 256));
      expect(crc32(data), `${n} bytes`).toBe(zlibCrc32(data));
      // A subarray at an odd offset reads the right bytes.
      expect(crc32(data.subarray(3)), `${n} bytes from 3`).toBe(zlibCrc32(data.subarray(3)));
    }
  });

  it('continues a checksum from a seed, as zlib does', () => {
    const rng = mulberry32(11);
    const data = Uint8Array.from({ length: 4099 }, () => Math.floor(rng() * 256));
    for (const cut of [0, 1, 8, 1000, 4099]) {
      const first = crc32(data.subarray(0, cut));
      expect(crc32(data.subarray(cut), first), `cut at ${cut}`).toBe(zlibCrc32(data));
      expect(crc32(data.subarray(cut), first)).toBe(zlibCrc32(data.subarray(cut), zlibCrc32(data.subarray(0, cut))));
    }
  });
});
