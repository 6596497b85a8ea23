// The two image layouts the data layer passes around: bytes as decoders give them (HWC, like a
// PIL image) and floats as the network takes them (CHW, like a torch tensor). Browser-safe.

/** Decoded pixels, 0–255, rows top to bottom, channels interleaved (HWC): 1 = gray, 3 = RGB. */
export interface ByteImage {
  readonly width: number;
  readonly height: number;
  readonly channels: 1 | 3;
  readonly data: Uint8Array;
}

/** Float pixels in planes (CHW): data[c·H·W + y·W + x]. The value range is whatever made it. */
export interface FloatImage {
  readonly width: number;
  readonly height: number;
  readonly channels: number;
  readonly data: Float32Array;
}

export type Image = ByteImage | FloatImage;

export function isFloatImage(image: Image): image is FloatImage {
  return image.data instanceof Float32Array;
}

/** Checks the fields agree (data length = W·H·C, sizes positive integers); throws naming `what`. */
export function checkImage(image: Image, what = 'image'): void {
  const { width, height, channels, data } = image;
  for (const [name, v] of [
    ['width', width],
    ['height', height],
    ['channels', channels],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${what}: ${name} must be a positive integer, got ${v}`);
  }
  if (!isFloatImage(image) && channels !== 1 && channels !== 3) {
    throw new RangeError(`${what}: a ByteImage has 1 (gray) or 3 (RGB) channels, got ${channels}`);
  }
  if (data.length !== width * height * channels) {
    throw new RangeError(
      `${what}: data holds ${data.length} values but ${width}×${height}×${channels} needs ${width * height * channels}`,
    );
  }
}

export function byteImage(width: number, height: number, channels: 1 | 3, data?: Uint8Array): ByteImage {
  const image = { width, height, channels, data: data ?? new Uint8Array(width * height * channels) };
  checkImage(image);
  return image;
}

export function floatImage(width: number, height: number, channels: number, data?: Float32Array): FloatImage {
  const image = { width, height, channels, data: data ?? new Float32Array(width * height * channels) };
  checkImage(image);
  return image;
}

/** Bytes → floats in [0, 1], HWC → CHW: torchvision's ToTensor. */
export function toFloat(image: ByteImage, scale = 1 / 255): FloatImage {
  const { width, height, channels, data } = image;
  const plane = width * height;
  const out = new Float32Array(plane * channels);
  for (let c = 0; c < channels; c++) {
    for (let p = 0; p < plane; p++) out[c * plane + p] = data[p * channels + c] * scale;
  }
  return { width, height, channels, data: out };
}

/**
 * Floats → bytes, CHW → HWC: value·scale rounded and clamped to 0–255 (scale 255 undoes
 * toFloat). Only 1- or 3-channel images have a byte form.
 */
export function toBytes(image: FloatImage, scale = 255): ByteImage {
  const { width, height, channels, data } = image;
  if (channels !== 1 && channels !== 3) {
    throw new RangeError(`toBytes: a ByteImage has 1 or 3 channels, this FloatImage has ${channels}`);
  }
  const plane = width * height;
  const out = new Uint8Array(plane * channels);
  for (let c = 0; c < channels; c++) {
    for (let p = 0; p < plane; p++) out[p * channels + c] = clampByte(data[c * plane + p] * scale);
  }
  return { width, height, channels, data: out };
}

/** Rounds half away from zero (as PIL does for its float → byte step), clamps to 0–255. */
export function clampByte(v: number): number {
  if (!(v > 0)) return 0; // also NaN
  if (v >= 255) return 255;
  return Math.floor(v + 0.5);
}

/** "3×224×224 (C×H×W)": the spelling every size error in the data layer uses. */
export function describeSize(image: Image): string {
  return `${image.channels}×${image.height}×${image.width} (C×H×W)`;
}
