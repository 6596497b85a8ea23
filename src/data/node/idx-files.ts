// Reading IDX files from disk, gzipped (the usual .gz distribution) or not. Node-only.

import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { parseIdx, type IdxArray } from '../idx.ts';

/** Reads and parses one IDX file; gzip is detected by its magic bytes, not the name. */
export function readIdxFile(path: string): IdxArray {
  const bytes = readFileSync(path);
  let raw: Uint8Array = bytes;
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      raw = gunzipSync(bytes);
    } catch (e) {
      throw new Error(`${path}: corrupt gzip data: ${(e as Error).message}`);
    }
  }
  return parseIdx(raw, path);
}
