// Encoded image bytes → ByteImage (RGB), choosing the decoder by the bytes' magic, not the name.
// JPEG through jpeg-js (pure JS, the fallback: its pixels differ from libjpeg-turbo's by a few
// levels, see test/data-pillow.test.ts; Node code decodes through ./node/decode-native.ts, which
// matches Pillow exactly); PNG through ./png.ts, inflated by a caller-supplied function
// (decodeImage) or by the platform's DecompressionStream (decodeImageAsync). Browser-safe.
// EXIF orientation is ignored, as PIL's open() and torchvision's loader ignore it.

import jpeg from 'jpeg-js';
import { DataError } from './errors.ts';
import { decodePng, decodePngAsync, isPng, type AsyncInflate, type Inflate } from './png.ts';
import type { ByteImage } from './tensor-image.ts';

export interface DecodeOptions {
  /** Names the source (a path) in errors. */
  readonly name?: string;
  /** zlib inflate for PNG; the Node readers pass zlib.inflateSync. decodeImageAsync defaults to the platform's. */
  readonly inflate?: Inflate;
  /** jpeg-js's guard against huge images (default 100 megapixels). */
  readonly maxMegapixels?: number;
}

export type ImageFormat = 'jpeg' | 'png';

export function sniffImageFormat(bytes: Uint8Array): ImageFormat | undefined {
  if (bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff) return 'jpeg';
  if (isPng(bytes)) return 'png';
  return undefined;
}

/** Decodes a JPEG or PNG to 8-bit RGB (gray and CMYK are converted, alpha dropped). */
export function decodeImage(bytes: Uint8Array, options: DecodeOptions = {}): ByteImage {
  const name = options.name ?? 'image';
  const format = sniffImageFormat(bytes);
  if (format === 'jpeg') return decodeJpeg(bytes, name, options.maxMegapixels ?? 100);
  if (format === 'png') {
    if (!options.inflate) {
      throw new DataError(
        "PNG needs an inflate function (decodeImage's inflate option; the Node readers supply zlib's), or use decodeImageAsync, which inflates with the platform's DecompressionStream",
        { file: name },
      );
    }
    return decodePng(bytes, options.inflate, name);
  }
  throw notAnImage(bytes, name);
}

/** decodeImage for platforms without a synchronous inflate: PNG inflates through DecompressionStream unless `inflate` is given. */
export async function decodeImageAsync(
  bytes: Uint8Array,
  options: Omit<DecodeOptions, 'inflate'> & { readonly inflate?: AsyncInflate } = {},
): Promise<ByteImage> {
  const name = options.name ?? 'image';
  const format = sniffImageFormat(bytes);
  if (format === 'jpeg') return decodeJpeg(bytes, name, options.maxMegapixels ?? 100);
  if (format === 'png') return decodePngAsync(bytes, name, options.inflate);
  throw notAnImage(bytes, name);
}

function notAnImage(bytes: Uint8Array, name: string): DataError {
  const head = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ');
  return new DataError(`not a JPEG or PNG (first bytes: ${head || 'none, the file is empty'})`, { file: name });
}

function decodeJpeg(bytes: Uint8Array, name: string, maxMegapixels: number): ByteImage {
  let decoded: { width: number; height: number; data: Uint8Array };
  try {
    decoded = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, maxResolutionInMP: maxMegapixels });
  } catch (e) {
    throw new DataError(`cannot decode JPEG: ${(e as Error).message}`, { file: name, cause: e });
  }
  const { width, height, data } = decoded;
  if (!width || !height || data.length !== width * height * 3) {
    throw new DataError(`cannot decode JPEG: decoder returned ${width}×${height} with ${data.length} bytes`, {
      file: name,
    });
  }
  return { width, height, channels: 3, data };
}
