// Test-side safetensors tools, written from the format's description rather than from the
// engine's reader: read a header, and forge checkpoints whose checksum is valid but whose
// contents are not (what a careless tool or a hostile file would produce).
import { crc32 as zlibCrc32 } from 'node:zlib';

export function readSafetensorsHeader(bytes: Uint8Array): { headerSize: number; header: Record<string, unknown> } {
  const headerSize = Number(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerSize))) as Record<string, unknown>;
  return { headerSize, header };
}

/** The header as onnx-graft checksums it: keys sorted at every level, the checksum entry left out. */
export function canonicalHeader(header: Record<string, unknown>): string {
  const metadata = { ...(header.__metadata__ as Record<string, string>) };
  delete metadata['graft.crc32'];
  const sorted = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(sorted)
      : v !== null && typeof v === 'object'
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((k) => [k, sorted((v as Record<string, unknown>)[k])]),
          )
        : v;
  return JSON.stringify(sorted({ ...header, __metadata__: metadata }));
}

/** A copy of a checkpoint with its header edited and its checksum made valid again. */
export function forgeCheckpoint(bytes: Uint8Array, edit: (header: Record<string, unknown>) => void): Uint8Array {
  const { headerSize, header } = readSafetensorsHeader(bytes);
  const buffer = bytes.subarray(8 + headerSize);
  edit(header);
  const meta = header.__metadata__ as Record<string, string>;
  const canonical = new TextEncoder().encode(canonicalHeader(header));
  meta['graft.crc32'] = zlibCrc32(buffer, zlibCrc32(canonical)).toString(16).padStart(8, '0');
  return withHeader(header, buffer);
}

/** safetensors bytes from a header object and a buffer (header padded with spaces to 8 bytes). */
export function withHeader(header: Record<string, unknown>, buffer: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded + buffer.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.fill(0x20, 8, 8 + padded);
  out.set(json, 8);
  out.set(buffer, 8 + padded);
  return out;
}
