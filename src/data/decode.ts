// Encoded image bytes → ByteImage (RGB), choosing the decoder by the bytes' magic, not the name.
// JPEG through jpeg-js (pure JS, the fallback: its pixels differ from libjpeg-turbo's by a few
// levels, see test/data-pillow.test.ts; Node code decodes through ./node/decode-native.ts, which
// matches Pillow exactly); PNG through ./png.ts with a caller-supplied inflate.
// Browser-safe. EXIF orientation is ignored, as PIL's open() and torchvision's loader ignore it.

import jpeg from 'jpeg-js';
import { decodePng, isPng, type Inflate } from './png.ts';
import type { ByteImage } from './tensor-image.ts';

export interface DecodeOptions {
  /** Names the source (a path) in errors. */
  readonly name?: string;
  /** zlib inflate for PNG; the Node readers pass zlib.inflateSync. */
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
      throw new Error(
        `${name}: PNG needs an inflate function (decodeImage's inflate option; the Node readers supply zlib's)`,
      );
    }
    return decodePng(bytes, options.inflate, name);
  }
  const head = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ');
  throw new Error(`${name}: not a JPEG or PNG (first bytes: ${head || 'none, the file is empty'})`);
}

function decodeJpeg(bytes: Uint8Array, name: string, maxMegapixels: number): ByteImage {
  let decoded: { width: number; height: number; data: Uint8Array };
  try {
    decoded = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, maxResolutionInMP: maxMegapixels });
  } catch (e) {
    throw new Error(`${name}: cannot decode JPEG: ${(e as Error).message}`);
  }
  const { width, height, data } = decoded;
  if (!width || !height || data.length !== width * height * 3) {
    throw new Error(`${name}: cannot decode JPEG: decoder returned ${width}×${height} with ${data.length} bytes`);
  }
  return { width, height, channels: 3, data };
}
