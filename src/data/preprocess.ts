// A model's PreprocessSpec as transforms: the evaluation pipeline the network was trained for and
// the training pipeline with augmentation. Bytes stay bytes through every geometric step (Pillow's
// 8-bit resample, as torchvision's PIL path), floats appear only at the normalise. Browser-safe.
//
// Augmentation (what `graft train --augment-*` exposes):
// - flip: RandomHorizontalFlip(0.5).
// - crop 'center': no geometric augmentation, the evaluation resize + centre crop.
// - crop 'random': shorter side → spec.resize, then a uniformly placed crop×crop window (the
//   AlexNet/Caffe training crop: 256 → random 224). Mild; keeps the whole object in view.
// - crop 'resized': torchvision's RandomResizedCrop(crop, scale, ratio 3/4–4/3), the crop every
//   torchvision ImageNet recipe trains with: a random area fraction (default 0.08–1) and aspect,
//   resized to crop×crop. Strong; wants many epochs.

import type { PreprocessSpec } from '../graph/model-metadata.ts';
import { DataError } from './errors.ts';
import { describeSize, isFloatImage, type ByteImage, type FloatImage, type Image } from './tensor-image.ts';
import {
  centerCrop,
  crop,
  horizontalFlip,
  randomCrop,
  resize,
  resizeShorter,
  roundHalfEven,
  type Rng,
} from './transforms.ts';

export type CropAugment = 'center' | 'random' | 'resized';
export const CROP_AUGMENTS: readonly CropAugment[] = ['center', 'random', 'resized'];

export interface Augment {
  /** Random horizontal flip with probability 0.5. */
  readonly flip?: boolean;
  /** How the crop is chosen (see the file comment); default 'center'. */
  readonly crop?: CropAugment;
  /** RandomResizedCrop's area fraction range (default [0.08, 1]). */
  readonly scale?: readonly [number, number];
}

/** A transform from decoded bytes to the network's input (3×crop×crop floats, CHW). */
export type Preprocess = (image: Image, rng: Rng) => FloatImage;

/** Shorter side → spec.resize, centre crop spec.crop, gray if asked, normalise. */
export function evalTransform(spec: PreprocessSpec): Preprocess {
  checkSpec(spec);
  return (image) => finish(centerCrop(resizeShorter(bytesOf(image, spec), spec.resize), spec.crop), spec);
}

/** The training pipeline: the crop `augment.crop` says, then an optional flip, then as evalTransform. */
export function trainTransform(spec: PreprocessSpec, augment: Augment = {}): Preprocess {
  checkSpec(spec);
  const mode = augment.crop ?? 'center';
  if (!CROP_AUGMENTS.includes(mode)) {
    throw new DataError(`augment crop '${String(mode)}' is not known; accepted: ${CROP_AUGMENTS.join(', ')}`);
  }
  const scale = augment.scale ?? [0.08, 1];
  if (!(scale[0] > 0 && scale[0] <= scale[1] && scale[1] <= 1)) {
    throw new DataError(`augment scale must satisfy 0 < min ≤ max ≤ 1, got [${scale.join(', ')}]`);
  }
  return (image, rng) => {
    const bytes = bytesOf(image, spec);
    let out: ByteImage;
    if (mode === 'resized') out = randomResizedCrop(bytes, spec.crop, rng, scale);
    else if (mode === 'random') out = randomCrop(resizeShorter(bytes, spec.resize), spec.crop, spec.crop, rng);
    else out = centerCrop(resizeShorter(bytes, spec.resize), spec.crop);
    if (augment.flip && rng() < 0.5) out = horizontalFlip(out);
    return finish(out, spec);
  };
}

/**
 * torchvision's RandomResizedCrop.get_params (ratio 3/4–4/3, ten tries, then the centre crop
 * clamped to the ratio range), then crop and resize to size×size.
 */
export function randomResizedCrop(
  image: ByteImage,
  size: number,
  rng: Rng,
  scale: readonly [number, number],
): ByteImage {
  const { width, height } = image;
  const area = width * height;
  const logLo = Math.log(3 / 4);
  const logHi = Math.log(4 / 3);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * (scale[0] + rng() * (scale[1] - scale[0]));
    const aspect = Math.exp(logLo + rng() * (logHi - logLo));
    const w = roundHalfEven(Math.sqrt(target * aspect));
    const h = roundHalfEven(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const top = Math.floor(rng() * (height - h + 1));
      const left = Math.floor(rng() * (width - w + 1));
      return resize(crop(image, left, top, w, h), size, size);
    }
  }
  const ratio = width / height;
  let w = width;
  let h = height;
  if (ratio < 3 / 4) h = roundHalfEven(w / (3 / 4));
  else if (ratio > 4 / 3) w = roundHalfEven(h * (4 / 3));
  return resize(crop(image, Math.floor((width - w) / 2), Math.floor((height - h) / 2), w, h), size, size);
}

/** Pillow's convert('L') (ITU-R 601-2 luma in 16-bit fixed point), one channel out. */
export function toGray(image: ByteImage): ByteImage {
  if (image.channels === 1) return image;
  const n = image.width * image.height;
  const out = new Uint8Array(n);
  const d = image.data;
  for (let p = 0; p < n; p++) out[p] = (d[3 * p] * 19595 + d[3 * p + 1] * 38470 + d[3 * p + 2] * 7471 + 0x8000) >>> 16;
  return { width: image.width, height: image.height, channels: 1, data: out };
}

function bytesOf(image: Image, spec: PreprocessSpec): ByteImage {
  if (isFloatImage(image)) {
    throw new DataError(
      `preprocess(${spec.name}): expects decoded bytes (a ByteImage, 0–255, HWC), got a FloatImage ${describeSize(image)}`,
    );
  }
  return image;
}

/** Gray (if asked), then normalise into CHW floats; a gray image feeds all three channels. */
function finish(image: ByteImage, spec: PreprocessSpec): FloatImage {
  const src = spec.grayscale ? toGray(image) : image;
  const { width, height, channels, data } = src;
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const from = channels === 1 ? 0 : spec.channelOrder === 'bgr' ? 2 - c : c;
    const { scale } = spec;
    const mean = spec.mean[c];
    const inv = 1 / spec.std[c];
    const dst = c * plane;
    for (let p = 0; p < plane; p++) out[dst + p] = (data[p * channels + from] * scale - mean) * inv;
  }
  return { width, height, channels: 3, data: out };
}

function checkSpec(spec: PreprocessSpec): void {
  if (!Number.isInteger(spec.resize) || !Number.isInteger(spec.crop) || spec.crop < 1 || spec.resize < spec.crop) {
    throw new DataError(
      `preprocess(${spec.name}): needs integer sizes with 1 ≤ crop ≤ resize, got resize ${spec.resize}, crop ${spec.crop}`,
    );
  }
}
