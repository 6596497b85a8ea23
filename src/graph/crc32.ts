// CRC-32 (IEEE 802.3 polynomial, reflected): the checksum of zlib, gzip and PNG chunks. Shared by
// PNG decoding (data/) and checkpoints (train/), so it lives in the bottom layer.

/**
 * CRC-32 of `bytes`, as zlib's crc32(bytes, seed): pass a previous result as `seed` to continue a
 * checksum over data that arrives in pieces. Slices by 8 bytes: checkpoints hash hundreds of MB.
 */
export function crc32(bytes: Uint8Array, seed = 0): number {
  const t = crcTables();
  let crc = ~seed >>> 0;
  let i = 0;
  const fast = bytes.length - (bytes.length % 8);
  for (; i < fast; i += 8) {
    const a = (crc ^ (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24))) >>> 0;
    crc =
      t[7 * 256 + (a & 0xff)] ^
      t[6 * 256 + ((a >>> 8) & 0xff)] ^
      t[5 * 256 + ((a >>> 16) & 0xff)] ^
      t[4 * 256 + (a >>> 24)] ^
      t[3 * 256 + bytes[i + 4]] ^
      t[2 * 256 + bytes[i + 5]] ^
      t[256 + bytes[i + 6]] ^
      t[bytes[i + 7]];
  }
  for (; i < bytes.length; i++) crc = t[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}

let tables: Uint32Array | null = null;

/** Table k maps a byte to its CRC contribution k bytes further on (slicing-by-8). */
function crcTables(): Uint32Array {
  if (tables) return tables;
  const t = new Uint32Array(8 * 256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  for (let n = 0; n < 256; n++) {
    for (let k = 1; k < 8; k++) t[k * 256 + n] = (t[(k - 1) * 256 + n] >>> 8) ^ t[t[(k - 1) * 256 + n] & 0xff];
  }
  tables = t;
  return t;
}
