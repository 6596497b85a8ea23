// Decoding in Node as Pillow does it (torchvision's loader): JPEG through libjpeg-turbo's decoder
// (sharp's bundled libvips + mozjpeg, whose decoder is libjpeg-turbo's: islow IDCT, fancy
// upsampling), PNG through ../png.ts. Pixels come out exactly as PIL's Image.open(f).convert('RGB')
// gives them (test/data-pillow.test.ts), which takes three settings:
// - no colour management: sharp would map an embedded ICC profile, and CMYK through a CMYK
//   profile, to sRGB; Pillow does neither (ignoreIcc, and CMYK read raw, converted below);
// - no EXIF rotation (sharp rotates only when asked; PIL's open() ignores orientation too);
// - no shrink-on-load (sharp only shrinks when a resize is requested, and none is).
// jpeg-js stays available as the pure-JS decoder (`jpeg: 'jpeg-js'`), e.g. to compare.

import { readFile } from 'node:fs/promises';
import { inflateSync } from 'node:zlib';
import type Sharp from 'sharp';
import { decodeImage, sniffImageFormat } from '../decode.ts';
import { DataError } from '../errors.ts';
import { decodePng } from '../png.ts';
import type { ByteImage } from '../tensor-image.ts';

export type JpegDecoder = 'sharp' | 'jpeg-js';
export const JPEG_DECODERS: readonly JpegDecoder[] = ['sharp', 'jpeg-js'];

export interface NativeDecodeOptions {
  /** Names the source in errors (a path). */
  readonly name?: string;
  /** Default 'sharp' (libjpeg-turbo). */
  readonly jpeg?: JpegDecoder;
}

/** Reads and decodes one JPEG or PNG file to 8-bit RGB (gray stays one channel). */
export async function decodeImageFile(
  path: string,
  options: Omit<NativeDecodeOptions, 'name'> = {},
): Promise<ByteImage> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new DataError(`cannot read: ${(e as Error).message}`, { file: path, cause: e });
  }
  return decodeImageBytes(bytes, { ...options, name: path });
}

/** Encoded JPEG/PNG bytes → ByteImage; the format is sniffed from the bytes, not the name. */
export async function decodeImageBytes(bytes: Uint8Array, options: NativeDecodeOptions = {}): Promise<ByteImage> {
  const name = options.name ?? 'image';
  const jpeg = options.jpeg ?? 'sharp';
  if (!JPEG_DECODERS.includes(jpeg)) {
    throw new DataError(`JPEG decoder '${String(jpeg)}' is not known; accepted: ${JPEG_DECODERS.join(', ')}`);
  }
  const format = sniffImageFormat(bytes);
  try {
    if (format === 'png') return decodePng(bytes, (b) => inflateSync(b), name);
    if (format === 'jpeg' && jpeg === 'sharp')
      return await decodeJpegSharp(bytes).catch((e: Error) => Promise.reject(withJpegHint(e, bytes)));
    return decodeImage(bytes, { name });
  } catch (e) {
    if (e instanceof DataError) throw e;
    // libvips repeats its decoder's messages once per attempt: keep each once.
    const parts = (e as Error).message
      .split(/\n|(?=VipsJpeg: )/)
      .map((p) => p.trim())
      .filter(Boolean);
    const message = [...new Set(parts)].join(' ');
    // decodeImage and decodePng already start their messages with the name.
    throw new DataError(
      message.startsWith(name) ? message.slice(name.length + 2) : `cannot decode ${format?.toUpperCase()}: ${message}`,
      {
        file: name,
        cause: e,
      },
    );
  }
}

/**
 * libvips keeps one error buffer per process, so with several worker threads decoding, a
 * failure's message can be lost ("Unknown error"): add what the bytes themselves show.
 */
function withJpegHint(e: Error, bytes: Uint8Array): Error {
  const tail = bytes.subarray(Math.max(0, bytes.length - 1024));
  let ended = false;
  for (let i = tail.length - 2; i >= 0 && !ended; i--) ended = tail[i] === 0xff && tail[i + 1] === 0xd9;
  return ended ? e : new Error(`truncated? (no end-of-image marker) ${e.message}`, { cause: e });
}

/** sharp (libvips, ~25 MiB and half a second to load) is loaded at the first JPEG, not at import. */
let sharpModule: Promise<typeof Sharp> | undefined;
function loadSharp(): Promise<typeof Sharp> {
  return (sharpModule ??= import('sharp').then((m) => m.default));
}

async function decodeJpegSharp(bytes: Uint8Array): Promise<ByteImage> {
  const sharp = await loadSharp();
  // failOn 'error' refuses truncated and corrupt data (Pillow raises on both) but accepts the
  // warnings Pillow accepts too (e.g. extraneous bytes before a marker).
  const input = { failOn: 'error' as const, ignoreIcc: true };
  const meta = await sharp(bytes, input).metadata();
  if (meta.space === 'cmyk') {
    const { data, info } = await sharp(bytes, input)
      .pipelineColourspace('cmyk')
      .toColourspace('cmyk')
      .raw()
      .toBuffer({ resolveWithObject: true });
    return cmykToRgb(data, info.width, info.height);
  }
  const gray = meta.channels === 1;
  const { data, info } = await sharp(bytes, input)
    .toColourspace(gray ? 'b-w' : 'srgb')
    .raw()
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== (gray ? 1 : 3)) {
    throw new Error(`sharp returned ${info.channels} channels for a ${meta.channels}-channel ${meta.space} JPEG`);
  }
  return {
    width: info.width,
    height: info.height,
    channels: gray ? 1 : 3,
    data: new Uint8Array(data.buffer, data.byteOffset, data.length),
  };
}

/**
 * CMYK (ink amounts, 0 = none; libjpeg's Adobe inversion already undone) → RGB exactly as
 * Pillow's cmyk2rgb: r = (255 − k) − c·(255 − k)/255 with its rounded integer divide.
 */
export function cmykToRgb(cmyk: Uint8Array, width: number, height: number): ByteImage {
  const n = width * height;
  const out = new Uint8Array(3 * n);
  for (let p = 0; p < n; p++) {
    const nk = 255 - cmyk[4 * p + 3];
    for (let c = 0; c < 3; c++) {
      const t = cmyk[4 * p + c] * nk + 128;
      const v = nk - (((t >> 8) + t) >> 8);
      out[3 * p + c] = v < 0 ? 0 : v;
    }
  }
  return { width, height, channels: 3, data: out };
}
