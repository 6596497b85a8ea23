// A PNG decoder to 8-bit RGB: every colour type and bit depth of PNG 1.2, Adam7 included; alpha
// is dropped and 16-bit samples keep their high byte (what PIL's convert('RGB') gives, the
// loader torchvision's ImageFolder uses). Browser-safe: inflate comes from the caller (Node's
// zlib, synchronous) or from the platform's DecompressionStream (browsers, Deno, Node ≥ 18).

import { crc32 } from '../graph/crc32.ts';
import { DataError } from './errors.ts';
import type { ByteImage } from './tensor-image.ts';

/** zlib (RFC 1950) decompression: Node's zlib.inflateSync, or a wrapper of a browser's. */
export type Inflate = (zlibBytes: Uint8Array) => Uint8Array;

/** zlib decompression that may finish later, as DecompressionStream does. */
export type AsyncInflate = (zlibBytes: Uint8Array) => Uint8Array | Promise<Uint8Array>;

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

export function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);
}

/** Decodes a PNG with a synchronous inflate (Node: `(b) => zlib.inflateSync(b)`). */
export function decodePng(bytes: Uint8Array, inflate: Inflate, name = 'PNG data'): ByteImage {
  const chunks = readChunks(bytes, name);
  let raw: Uint8Array;
  try {
    raw = inflate(chunks.zlib);
  } catch (e) {
    throw notInflating(e, name);
  }
  return reconstruct(chunks, raw, name);
}

/**
 * Decodes a PNG, inflating with `inflate` when given, else with the platform's
 * DecompressionStream('deflate'): the browser path needs no hand-written or bundled inflate.
 * Same pixels and the same errors as decodePng.
 */
export async function decodePngAsync(bytes: Uint8Array, name = 'PNG data', inflate?: AsyncInflate): Promise<ByteImage> {
  const chunks = readChunks(bytes, name);
  let raw: Uint8Array;
  try {
    raw = await (inflate ?? inflateWithPlatform)(chunks.zlib);
  } catch (e) {
    throw notInflating(e, name);
  }
  return reconstruct(chunks, raw, name);
}

/** zlib inflate through the web-standard DecompressionStream ('deflate' is the zlib format). */
export async function inflateWithPlatform(zlibBytes: Uint8Array): Promise<Uint8Array> {
  if (typeof DecompressionStream !== 'function') {
    throw new DataError('this platform has no DecompressionStream: pass an inflate function (e.g. zlib.inflateSync)');
  }
  const stream = new Blob([zlibBytes as Uint8Array<ArrayBuffer>])
    .stream()
    .pipeThrough(new DecompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

interface Chunks {
  header: Header;
  palette: Uint8Array | undefined;
  /** The IDAT chunks' data, joined: one zlib stream. */
  zlib: Uint8Array;
}

/** Walks the chunks, checking each CRC; returns the header, palette and compressed image data. */
function readChunks(bytes: Uint8Array, name: string): Chunks {
  if (!isPng(bytes)) throw new DataError('not a PNG (signature missing)', { file: name });
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let header: Header | undefined;
  let palette: Uint8Array | undefined;
  const idat: Uint8Array[] = [];
  let pos = 8;
  let ended = false;
  while (!ended) {
    if (pos + 12 > bytes.length)
      throw new DataError(`truncated PNG: chunk header at byte ${pos} runs past the end (no IEND)`, { file: name });
    const length = view.getUint32(pos, false);
    const type = String.fromCharCode(bytes[pos + 4], bytes[pos + 5], bytes[pos + 6], bytes[pos + 7]);
    const dataStart = pos + 8;
    const dataEnd = dataStart + length;
    if (dataEnd + 4 > bytes.length)
      throw new DataError(`truncated PNG: ${type} chunk at byte ${pos} runs past the end`, { file: name });
    const stored = view.getUint32(dataEnd, false);
    const actual = crc32(bytes.subarray(pos + 4, dataEnd));
    if (stored !== actual)
      throw new DataError(`corrupt PNG: CRC mismatch in ${type} chunk at byte ${pos}`, { file: name });
    const data = bytes.subarray(dataStart, dataEnd);
    if (type === 'IHDR') header = parseHeader(data, name);
    else if (type === 'PLTE') palette = data;
    else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') ended = true;
    else if ((bytes[pos + 4] & 0x20) === 0)
      throw new DataError(`unsupported critical PNG chunk ${type}`, { file: name });
    pos = dataEnd + 4;
  }
  if (!header) throw new DataError('PNG has no IHDR chunk', { file: name });
  if (idat.length === 0) throw new DataError('PNG has no IDAT chunk', { file: name });
  if (header.colorType === 3 && !palette) throw new DataError('palette PNG has no PLTE chunk', { file: name });
  return { header, palette, zlib: concat(idat) };
}

function notInflating(e: unknown, name: string): DataError {
  return new DataError(`corrupt PNG: image data does not inflate (${(e as Error).message})`, { file: name, cause: e });
}

/** Unfilters the inflated scanlines (every Adam7 pass) into RGB. */
function reconstruct({ header, palette }: Chunks, raw: Uint8Array, name: string): ByteImage {
  const out = new Uint8Array(header.width * header.height * 3);
  let offset = 0;
  for (const pass of passes(header)) {
    if (pass.width === 0 || pass.height === 0) continue;
    const stride = Math.ceil((pass.width * header.bitsPerPixel) / 8);
    const need = (stride + 1) * pass.height;
    if (offset + need > raw.length) {
      throw new DataError(
        `truncated PNG: image data holds ${raw.length} bytes, ${header.width}×${header.height} needs more`,
        { file: name },
      );
    }
    const rows = unfilter(
      raw.subarray(offset, offset + need),
      stride,
      pass.height,
      Math.max(1, header.bitsPerPixel >> 3),
      name,
    );
    offset += need;
    for (let y = 0; y < pass.height; y++) {
      const row = rows.subarray(y * stride, (y + 1) * stride);
      expandRow(row, pass, (pass.y0 + y * pass.dy) * header.width, header, palette, out, name);
    }
  }
  return { width: header.width, height: header.height, channels: 3, data: out };
}

interface Header {
  width: number;
  height: number;
  bitDepth: number;
  colorType: number;
  interlaced: boolean;
  samples: number;
  bitsPerPixel: number;
}

const SAMPLES: Record<number, { samples: number; depths: number[] }> = {
  0: { samples: 1, depths: [1, 2, 4, 8, 16] },
  2: { samples: 3, depths: [8, 16] },
  3: { samples: 1, depths: [1, 2, 4, 8] },
  4: { samples: 2, depths: [8, 16] },
  6: { samples: 4, depths: [8, 16] },
};

function parseHeader(d: Uint8Array, name: string): Header {
  if (d.length !== 13) throw new DataError(`IHDR has ${d.length} bytes, expected 13`, { file: name });
  const v = new DataView(d.buffer, d.byteOffset, d.byteLength);
  const width = v.getUint32(0, false);
  const height = v.getUint32(4, false);
  const [bitDepth, colorType, compression, filter, interlace] = [d[8], d[9], d[10], d[11], d[12]];
  const kind = SAMPLES[colorType];
  if (!kind) throw new DataError(`PNG colour type ${colorType} is not one of 0, 2, 3, 4, 6`, { file: name });
  if (!kind.depths.includes(bitDepth)) {
    throw new DataError(`PNG colour type ${colorType} with bit depth ${bitDepth}; accepted ${kind.depths.join(', ')}`, {
      file: name,
    });
  }
  if (width === 0 || height === 0) throw new DataError(`PNG is ${width}×${height}`, { file: name });
  if (compression !== 0 || filter !== 0 || interlace > 1) {
    throw new DataError(`PNG compression ${compression}, filter ${filter}, interlace ${interlace} are not standard`, {
      file: name,
    });
  }
  return {
    width,
    height,
    bitDepth,
    colorType,
    interlaced: interlace === 1,
    samples: kind.samples,
    bitsPerPixel: kind.samples * bitDepth,
  };
}

interface Pass {
  x0: number;
  y0: number;
  dx: number;
  dy: number;
  width: number;
  height: number;
}

function passes(h: Header): Pass[] {
  if (!h.interlaced) return [{ x0: 0, y0: 0, dx: 1, dy: 1, width: h.width, height: h.height }];
  const adam7 = [
    [0, 0, 8, 8],
    [4, 0, 8, 8],
    [0, 4, 4, 8],
    [2, 0, 4, 4],
    [0, 2, 2, 4],
    [1, 0, 2, 2],
    [0, 1, 1, 2],
  ];
  return adam7.map(([x0, y0, dx, dy]) => ({
    x0,
    y0,
    dx,
    dy,
    width: Math.max(0, Math.ceil((h.width - x0) / dx)),
    height: Math.max(0, Math.ceil((h.height - y0) / dy)),
  }));
}

function unfilter(data: Uint8Array, stride: number, height: number, bpp: number, name: string): Uint8Array {
  const out = new Uint8Array(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = data[y * (stride + 1)];
    const src = y * (stride + 1) + 1;
    const dst = y * stride;
    const prev = dst - stride; // only read when y > 0
    switch (filter) {
      case 0:
        out.set(data.subarray(src, src + stride), dst);
        break;
      case 1:
        for (let i = 0; i < stride; i++) out[dst + i] = data[src + i] + (i >= bpp ? out[dst + i - bpp] : 0);
        break;
      case 2:
        if (y === 0) out.set(data.subarray(src, src + stride), dst);
        else for (let i = 0; i < stride; i++) out[dst + i] = data[src + i] + out[prev + i];
        break;
      case 3:
        for (let i = 0; i < stride; i++) {
          const a = i >= bpp ? out[dst + i - bpp] : 0;
          const b = y > 0 ? out[prev + i] : 0;
          out[dst + i] = data[src + i] + ((a + b) >> 1);
        }
        break;
      case 4:
        for (let i = 0; i < stride; i++) {
          const a = i >= bpp ? out[dst + i - bpp] : 0;
          const b = y > 0 ? out[prev + i] : 0;
          const c = y > 0 && i >= bpp ? out[prev + i - bpp] : 0;
          out[dst + i] = data[src + i] + paeth(a, b, c);
        }
        break;
      default:
        throw new DataError(`corrupt PNG: row ${y} has filter type ${filter} (0–4 exist)`, { file: name });
    }
  }
  return out;
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** Writes one unfiltered row of a pass as RGB into `out` (rowStart = image row × width). */
function expandRow(
  row: Uint8Array,
  pass: Pass,
  rowStart: number,
  h: Header,
  palette: Uint8Array | undefined,
  out: Uint8Array,
  name: string,
): void {
  const { samples, bitDepth, colorType } = h;
  const { x0, dx, width } = pass;
  if (bitDepth === 8 && colorType !== 3) {
    // The common case, without per-sample bit arithmetic.
    for (let x = 0; x < width; x++) {
      const o = (rowStart + x0 + x * dx) * 3;
      const i = x * samples;
      if (samples >= 3) {
        out[o] = row[i];
        out[o + 1] = row[i + 1];
        out[o + 2] = row[i + 2];
      } else {
        out[o] = out[o + 1] = out[o + 2] = row[i];
      }
    }
    return;
  }
  const maxValue = (1 << bitDepth) - 1;
  const sample = (index: number): number => {
    // The index-th sample of the row, as an 8-bit value (palette indices stay indices).
    if (bitDepth === 8) return row[index];
    if (bitDepth === 16) return row[2 * index];
    const bitPos = index * bitDepth;
    const v = (row[bitPos >> 3] >> (8 - bitDepth - (bitPos & 7))) & maxValue;
    return colorType === 3 ? v : (v * 255) / maxValue;
  };
  for (let x = 0; x < width; x++) {
    const o = (rowStart + x0 + x * dx) * 3;
    const i = x * samples;
    if (colorType === 3) {
      const p = sample(i);
      if (3 * p + 2 >= palette!.length) {
        throw new DataError(`corrupt PNG: palette index ${p} past a ${palette!.length / 3}-entry palette`, {
          file: name,
        });
      }
      out[o] = palette![3 * p];
      out[o + 1] = palette![3 * p + 1];
      out[o + 2] = palette![3 * p + 2];
    } else if (samples >= 3) {
      out[o] = sample(i);
      out[o + 1] = sample(i + 1);
      out[o + 2] = sample(i + 2);
    } else {
      out[o] = out[o + 1] = out[o + 2] = sample(i);
    }
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
