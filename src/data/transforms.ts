// Preprocessing as pure functions on images, torchvision's semantics (PIL path) unless a comment
// says otherwise, plus `compose` to chain them with one seeded generator. Browser-safe.
//
// resize: Pillow's BILINEAR resample (ImagingResample): a triangle filter whose support widens by
// the downscale factor, so upsampling is plain bilinear with half-pixel centres (torch
// `interpolate(bilinear, align_corners=False, antialias=False)`) and downsampling averages every
// source pixel under the output pixel (what torchvision.Resize does on PIL images and on tensors
// with antialias=True). `antialias: false` keeps the 2-tap kernel when shrinking (torch's
// antialias=False). Bytes go through Pillow's 22-bit fixed point with a rounded byte between the
// horizontal and vertical passes; floats are filtered in float and never rounded.

import { seededRandom } from '../graph/random.ts';
import { describeSize, isFloatImage, toFloat, type ByteImage, type FloatImage, type Image } from './tensor-image.ts';

/** Uniform floats in [0, 1); every random transform draws from one of these. */
export type Rng = () => number;

/** One pipeline step. Deterministic steps ignore `rng`. */
export type Transform = (image: Image, rng: Rng) => Image;

/** How pixels become network input: out[c] = (in[order[c]]·scale − mean[c]) / std[c]. */
export interface NormalizeSpec {
  readonly name: string;
  /** Channel order of the output: 'bgr' swaps R and B (Caffe). */
  readonly channelOrder: 'rgb' | 'bgr';
  /** Multiplies the 0–255 byte first: 1/255 for torchvision, 1 for Caffe. */
  readonly scale: number;
  /** Per output channel, after scaling. */
  readonly mean: readonly [number, number, number];
  readonly std: readonly [number, number, number];
}

/** torchvision's ImageNet models: RGB in [0, 1], then mean/std. */
export const IMAGENET_TORCHVISION: NormalizeSpec = {
  name: 'imagenet-torchvision',
  channelOrder: 'rgb',
  scale: 1 / 255,
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
};

/** Caffe / Caffe2 zoo models (BVLC AlexNet, GoogLeNet, …): BGR on 0–255, mean subtracted, no std. */
export const CAFFE_BGR: NormalizeSpec = {
  name: 'caffe-bgr',
  channelOrder: 'bgr',
  scale: 1,
  mean: [103.939, 116.779, 123.68],
  std: [1, 1, 1],
};

export interface ResizeOptions {
  /** Widen the filter when shrinking (default true, as Pillow and torchvision ≥ 0.17). */
  readonly antialias?: boolean;
}

/** Resizes to exactly width × height (see the file comment for the filter). */
export function resize<T extends Image>(image: T, width: number, height: number, options: ResizeOptions = {}): T {
  checkSize('resize', width, height);
  const antialias = options.antialias ?? true;
  if (width === image.width && height === image.height) return image;
  if (isFloatImage(image)) return resizeFloat(image, width, height, antialias) as T;
  return resizeBytes(image as ByteImage, width, height, antialias) as T;
}

/**
 * Resizes so the shorter side becomes `size`, keeping the aspect ratio: the longer side is
 * ⌊size · long / short⌋, as torchvision's Resize(int).
 */
export function resizeShorter<T extends Image>(image: T, size: number, options: ResizeOptions = {}): T {
  const { width: w, height: h } = image;
  const [ow, oh] = w <= h ? [size, Math.floor((size * h) / w)] : [Math.floor((size * w) / h), size];
  return resize(image, ow, oh, options);
}

/**
 * The width × height window at (left, top). Parts outside the image read `fill` (one value or
 * one per channel), as PIL's crop does with 0.
 */
export function crop<T extends Image>(
  image: T,
  left: number,
  top: number,
  width: number,
  height: number,
  fill: number | readonly number[] = 0,
): T {
  checkSize('crop', width, height);
  if (!Number.isInteger(left) || !Number.isInteger(top)) {
    throw new RangeError(`crop: left and top must be integers, got ${left}, ${top}`);
  }
  const { channels } = image;
  const fills = typeof fill === 'number' ? new Array<number>(channels).fill(fill) : [...fill];
  if (fills.length !== channels) {
    throw new RangeError(`crop: fill has ${fills.length} values for a ${channels}-channel image`);
  }
  if (isFloatImage(image)) {
    const out = new Float32Array(width * height * channels);
    const plane = image.width * image.height;
    for (let c = 0; c < channels; c++) {
      const dst = c * width * height;
      for (let y = 0; y < height; y++) {
        const sy = top + y;
        for (let x = 0; x < width; x++) {
          const sx = left + x;
          const inside = sy >= 0 && sy < image.height && sx >= 0 && sx < image.width;
          out[dst + y * width + x] = inside ? image.data[c * plane + sy * image.width + sx] : fills[c];
        }
      }
    }
    return { width, height, channels, data: out } as T;
  }
  const src = image as ByteImage;
  const out = new Uint8Array(width * height * channels);
  for (let y = 0; y < height; y++) {
    const sy = top + y;
    for (let x = 0; x < width; x++) {
      const sx = left + x;
      const o = (y * width + x) * channels;
      if (sy >= 0 && sy < src.height && sx >= 0 && sx < src.width) {
        const i = (sy * src.width + sx) * channels;
        for (let c = 0; c < channels; c++) out[o + c] = src.data[i + c];
      } else {
        for (let c = 0; c < channels; c++) out[o + c] = fills[c];
      }
    }
  }
  return { width, height, channels: src.channels, data: out } as T;
}

/**
 * The central width × height window, torchvision's CenterCrop: offsets round((H − h) / 2) with
 * Python's half-to-even rounding; a crop larger than the image pads it with zeros first.
 */
export function centerCrop<T extends Image>(image: T, width: number, height: number = width): T {
  checkSize('centerCrop', width, height);
  if (width === image.width && height === image.height) return image;
  const offset = (have: number, want: number) =>
    want > have ? -Math.floor((want - have) / 2) : roundHalfEven((have - want) / 2);
  return crop(image, offset(image.width, width), offset(image.height, height), width, height);
}

export interface RandomCropOptions {
  /** Zero padding added before cropping: all sides, [left/right, top/bottom] or [l, t, r, b]. */
  readonly padding?: number | readonly [number, number] | readonly [number, number, number, number];
  /** Pad by the shortfall on each side when the (padded) image is smaller than the crop. */
  readonly padIfNeeded?: boolean;
  readonly fill?: number | readonly number[];
}

/** torchvision's RandomCrop: pad, then a uniformly placed width × height window (top drawn first). */
export function randomCrop<T extends Image>(
  image: T,
  width: number,
  height: number,
  rng: Rng,
  options: RandomCropOptions = {},
): T {
  checkSize('randomCrop', width, height);
  const [pl, pt, pr, pb] = paddingLtrb(options.padding ?? 0);
  let left = -pl;
  let top = -pt;
  let w = image.width + pl + pr;
  let h = image.height + pt + pb;
  if (options.padIfNeeded) {
    if (w < width) {
      left -= width - w;
      w += 2 * (width - w);
    }
    if (h < height) {
      top -= height - h;
      h += 2 * (height - h);
    }
  }
  if (w < width || h < height) {
    throw new RangeError(
      `randomCrop: a ${width}×${height} crop does not fit the ${w}×${h} (padded) image; ` +
        `pass padIfNeeded: true or resize first`,
    );
  }
  const i = Math.floor(rng() * (h - height + 1));
  const j = Math.floor(rng() * (w - width + 1));
  return crop(image, left + j, top + i, width, height, options.fill ?? 0);
}

/** Mirrors left ↔ right. */
export function horizontalFlip<T extends Image>(image: T): T {
  const { width, height, channels } = image;
  if (isFloatImage(image)) {
    const out = new Float32Array(image.data.length);
    for (let row = 0; row < channels * height; row++) {
      const base = row * width;
      for (let x = 0; x < width; x++) out[base + x] = image.data[base + width - 1 - x];
    }
    return { width, height, channels, data: out } as T;
  }
  const src = image as ByteImage;
  const out = new Uint8Array(src.data.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * channels;
      const i = (y * width + width - 1 - x) * channels;
      for (let c = 0; c < channels; c++) out[o + c] = src.data[i + c];
    }
  }
  return { width, height, channels: src.channels, data: out } as T;
}

/** Flips with probability p (torchvision's RandomHorizontalFlip): one draw per call. */
export function randomHorizontalFlip<T extends Image>(image: T, rng: Rng, p = 0.5): T {
  return rng() < p ? horizontalFlip(image) : image;
}

/** Gray → three equal channels (for Fashion-MNIST into an ImageNet network); RGB passes through. */
export function grayscaleToRgb<T extends Image>(image: T): T {
  if (image.channels === 3) return image;
  if (image.channels !== 1) {
    throw new RangeError(`grayscaleToRgb: expects 1 or 3 channels, got ${describeSize(image)}`);
  }
  const { width, height } = image;
  const n = width * height;
  if (isFloatImage(image)) {
    const out = new Float32Array(3 * n);
    for (let c = 0; c < 3; c++) out.set(image.data, c * n);
    return { width, height, channels: 3, data: out } as T;
  }
  const out = new Uint8Array(3 * n);
  for (let p = 0; p < n; p++) {
    const v = image.data[p];
    out[3 * p] = v;
    out[3 * p + 1] = v;
    out[3 * p + 2] = v;
  }
  return { width, height, channels: 3, data: out } as T;
}

/** Bytes (HWC) → normalised floats (CHW) per `spec`. Takes a ByteImage: normalise last. */
export function normalize(image: Image, spec: NormalizeSpec): FloatImage {
  if (isFloatImage(image)) {
    throw new TypeError(
      `normalize(${spec.name}): expects a ByteImage (0–255, HWC) but got a FloatImage ${describeSize(image)}; ` +
        `apply geometric steps before normalize, or to the bytes`,
    );
  }
  if (image.channels !== 3) {
    throw new RangeError(
      `normalize(${spec.name}): expects 3 channels, got ${describeSize(image)}; add grayscaleToRgb first`,
    );
  }
  const { width, height, data } = image;
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const src = spec.channelOrder === 'bgr' ? 2 - c : c;
    const { scale } = spec;
    const mean = spec.mean[c];
    const inv = 1 / spec.std[c];
    const dst = c * plane;
    for (let p = 0; p < plane; p++) out[dst + p] = (data[p * 3 + src] * scale - mean) * inv;
  }
  return { width, height, channels: 3, data: out };
}

/** Runs steps left to right with one generator. */
export function compose(...transforms: Transform[]): Transform {
  return (image, rng) => transforms.reduce((img, t) => t(img, rng), image);
}

/** Applies a transform with a fresh generator seeded by `seed` (same seed, same output). */
export function applyTransform(transform: Transform, image: Image, seed: number): Image {
  return transform(image, seededRandom(seed));
}

/** Step factories for `compose`: each wraps the pure function of the same name. */
export const steps = {
  resize:
    (width: number, height: number, options?: ResizeOptions): Transform =>
    (img) =>
      resize(img, width, height, options),
  resizeShorter:
    (size: number, options?: ResizeOptions): Transform =>
    (img) =>
      resizeShorter(img, size, options),
  centerCrop:
    (width: number, height: number = width): Transform =>
    (img) =>
      centerCrop(img, width, height),
  randomCrop:
    (width: number, height: number = width, options?: RandomCropOptions): Transform =>
    (img, rng) =>
      randomCrop(img, width, height, rng, options),
  horizontalFlip: (): Transform => (img) => horizontalFlip(img),
  randomHorizontalFlip:
    (p = 0.5): Transform =>
    (img, rng) =>
      randomHorizontalFlip(img, rng, p),
  grayscaleToRgb: (): Transform => (img) => grayscaleToRgb(img),
  normalize:
    (spec: NormalizeSpec): Transform =>
    (img) =>
      normalize(img, spec),
  toFloat: (): Transform => (img) => (isFloatImage(img) ? img : toFloat(img)),
} as const;

/** The standard ImageNet evaluation pipeline: shorter side → 256, centre 224 crop, normalise. */
export function imagenetEval(spec: NormalizeSpec, options: { resize?: number; crop?: number } = {}): Transform {
  return compose(
    steps.grayscaleToRgb(),
    steps.resizeShorter(options.resize ?? 256),
    steps.centerCrop(options.crop ?? 224),
    steps.normalize(spec),
  );
}

/** Python's round(): halves go to the even neighbour. */
export function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

// ---- resampling ---------------------------------------------------------------------------

const PRECISION_BITS = 32 - 8 - 2; // Pillow's fixed point for 8-bit images
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

/** Per output index: the first source index and the normalised weights of its window. */
interface Coefficients {
  readonly start: Int32Array;
  readonly count: Int32Array;
  readonly weights: Float64Array; // out × ksize
  readonly ksize: number;
}

/** Pillow's precompute_coeffs with the bilinear (triangle, support 1) filter. */
export function resampleCoefficients(inSize: number, outSize: number, antialias: boolean): Coefficients {
  const scale = inSize / outSize;
  const filterScale = antialias ? Math.max(scale, 1) : 1;
  const support = filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let total = 0;
    for (let x = 0; x < xmax; x++) {
      const w = triangle((x + xmin - center + 0.5) / filterScale);
      weights[xx * ksize + x] = w;
      total += w;
    }
    if (total !== 0) for (let x = 0; x < xmax; x++) weights[xx * ksize + x] /= total;
    start[xx] = xmin;
    count[xx] = xmax;
  }
  return { start, count, weights, ksize };
}

function triangle(x: number): number {
  const a = Math.abs(x);
  return a < 1 ? 1 - a : 0;
}

function resizeFloat(image: FloatImage, width: number, height: number, antialias: boolean): FloatImage {
  const { channels } = image;
  let cur = image.data;
  let curW = image.width;
  const curH = image.height;
  if (width !== image.width) {
    const { start, count, ksize, weights } = resampleCoefficients(image.width, width, antialias);
    const next = new Float32Array(channels * curH * width);
    for (let row = 0; row < channels * curH; row++) {
      const src = row * curW;
      const dst = row * width;
      for (let x = 0; x < width; x++) {
        let s = 0;
        const w0 = x * ksize;
        const first = src + start[x];
        const taps = count[x];
        for (let t = 0; t < taps; t++) s += cur[first + t] * weights[w0 + t];
        next[dst + x] = s;
      }
    }
    cur = next;
    curW = width;
  }
  if (height !== curH) {
    const { start, count, ksize, weights } = resampleCoefficients(curH, height, antialias);
    const next = new Float32Array(channels * height * curW);
    const acc = new Float64Array(curW);
    for (let c = 0; c < channels; c++) {
      const src = c * curH * curW;
      const dst = c * height * curW;
      for (let y = 0; y < height; y++) {
        acc.fill(0);
        const w0 = y * ksize;
        for (let t = 0; t < count[y]; t++) {
          const w = weights[w0 + t];
          const row = src + (start[y] + t) * curW;
          for (let x = 0; x < curW; x++) acc[x] += cur[row + x] * w;
        }
        next.set(acc, dst + y * curW);
      }
    }
    cur = next;
  }
  return { width, height, channels, data: cur };
}

/** Pillow's 8-bit path: weights as 22-bit integers, a rounded byte after each pass. */
function resizeBytes(image: ByteImage, width: number, height: number, antialias: boolean): ByteImage {
  const { channels } = image;
  let cur = image.data;
  let curW = image.width;
  const curH = image.height;
  if (width !== image.width) {
    const { start, count, ksize, ints } = fixedPoint(resampleCoefficients(image.width, width, antialias));
    const next = new Uint8Array(curH * width * channels);
    for (let y = 0; y < curH; y++) {
      const src = y * curW * channels;
      const dst = y * width * channels;
      if (channels === 3) {
        // RGB in one sweep over the taps: three times fewer loads of weights and loop overhead.
        for (let x = 0; x < width; x++) {
          const w0 = x * ksize;
          const taps = count[x];
          let p = src + start[x] * 3;
          let r = HALF;
          let g = HALF;
          let b = HALF;
          for (let t = 0; t < taps; t++, p += 3) {
            const w = ints[w0 + t];
            r += cur[p] * w;
            g += cur[p + 1] * w;
            b += cur[p + 2] * w;
          }
          const o = dst + x * 3;
          next[o] = clip8(r);
          next[o + 1] = clip8(g);
          next[o + 2] = clip8(b);
        }
        continue;
      }
      for (let x = 0; x < width; x++) {
        const w0 = x * ksize;
        const first = src + start[x] * channels;
        const taps = count[x];
        for (let c = 0; c < channels; c++) {
          let s = HALF;
          for (let t = 0; t < taps; t++) s += cur[first + t * channels + c] * ints[w0 + t];
          next[dst + x * channels + c] = clip8(s);
        }
      }
    }
    cur = next;
    curW = width;
  }
  if (height !== curH) {
    const { start, count, ksize, ints } = fixedPoint(resampleCoefficients(curH, height, antialias));
    const rowLen = curW * channels;
    const next = new Uint8Array(height * rowLen);
    const acc = new Int32Array(rowLen);
    for (let y = 0; y < height; y++) {
      // Row-at-a-time accumulation keeps the inner loop a straight sweep over memory.
      acc.fill(HALF);
      const w0 = y * ksize;
      for (let t = 0; t < count[y]; t++) {
        const w = ints[w0 + t];
        const row = (start[y] + t) * rowLen;
        for (let i = 0; i < rowLen; i++) acc[i] += cur[row + i] * w;
      }
      const dst = y * rowLen;
      for (let i = 0; i < rowLen; i++) next[dst + i] = clip8(acc[i]);
    }
    cur = next;
  }
  return { width, height, channels, data: cur };
}

function fixedPoint(k: Coefficients): Coefficients & { ints: Int32Array } {
  // Pillow: (int)(0.5 + w·2^22), (int)(-0.5 + …) for negatives. The triangle is never negative
  // and its weights sum to 2^22, so 255·Σw + 2^21 stays inside int32.
  const ints = new Int32Array(k.weights.length);
  for (let i = 0; i < ints.length; i++) {
    const w = k.weights[i];
    ints[i] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
  }
  return { ...k, ints };
}

function clip8(s: number): number {
  const v = s >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function checkSize(what: string, width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`${what}: width and height must be positive integers, got ${width}×${height}`);
  }
}

function paddingLtrb(p: NonNullable<RandomCropOptions['padding']>): [number, number, number, number] {
  if (typeof p === 'number') return [p, p, p, p];
  if (p.length === 2) return [p[0], p[1], p[0], p[1]];
  return [p[0], p[1], p[2], p[3]];
}
