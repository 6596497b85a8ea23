// A plain float64 reference of the preprocessing pipeline, written from Pillow's and
// torchvision's sources (Pillow 9 libImaging/Resample.c, Convert.c; torchvision
// transforms.Resize/CenterCrop/RandomResizedCrop/Normalize), independent of src/data: per output
// pixel loops, its own filter coefficients, Python's rounding spelled out. Images are HWC arrays of
// bytes, as a PIL image; the result is CHW float64, as a torch tensor before the float32 cast.

export interface RefImage {
  readonly width: number;
  readonly height: number;
  readonly channels: number;
  /** HWC bytes. */
  readonly data: ArrayLike<number>;
}

export interface RefSpec {
  readonly resize: number;
  readonly crop: number;
  readonly channelOrder: 'rgb' | 'bgr';
  readonly scale: number;
  readonly mean: readonly number[];
  readonly std: readonly number[];
  readonly grayscale?: boolean;
}

/** torchvision eval: Resize(resize) on the shorter side, CenterCrop(crop), [Grayscale(3)], ToTensor/scale, Normalize. */
export function referenceEval(image: RefImage, spec: RefSpec): Float64Array {
  const resized = referenceResizeShorter(image, spec.resize);
  return referenceFinish(referenceCenterCrop(resized, spec.crop), spec);
}

/** Resize(int): the shorter side becomes `size`, the other int(size · long / short). */
export function referenceResizeShorter(image: RefImage, size: number): RefImage {
  const { width: w, height: h } = image;
  if (w <= h) return referenceResize(image, size, Math.trunc((size * h) / w));
  return referenceResize(image, Math.trunc((size * w) / h), size);
}

/**
 * Pillow's Image.resize(BILINEAR) on an 8-bit image: horizontal pass then vertical pass, each a
 * normalised triangle filter widened by the scale when shrinking, weights in 22-bit fixed point,
 * each pass rounded to a byte.
 */
export function referenceResize(image: RefImage, width: number, height: number): RefImage {
  let cur = image;
  if (width !== image.width) cur = resamplePass(cur, width, true);
  if (height !== image.height) cur = resamplePass(cur, height, false);
  return cur;
}

function resamplePass(image: RefImage, outSize: number, horizontal: boolean): RefImage {
  const inSize = horizontal ? image.width : image.height;
  const { channels } = image;
  const width = horizontal ? outSize : image.width;
  const height = horizontal ? image.height : outSize;
  const out = new Uint8Array(width * height * channels);
  for (let o = 0; o < outSize; o++) {
    const { first, weights } = pillowWeights(inSize, outSize, o);
    const fixed = weights.map((w) => (w < 0 ? Math.trunc(-0.5 + w * 2 ** 22) : Math.trunc(0.5 + w * 2 ** 22)));
    const across = horizontal ? image.height : image.width;
    for (let a = 0; a < across; a++) {
      for (let c = 0; c < channels; c++) {
        let sum = 2 ** 21;
        for (let t = 0; t < fixed.length; t++) {
          const s = first + t;
          const [x, y] = horizontal ? [s, a] : [a, s];
          sum += image.data[(y * image.width + x) * channels + c] * fixed[t];
        }
        const v = Math.floor(sum / 2 ** 22);
        const [x, y] = horizontal ? [o, a] : [a, o];
        out[(y * width + x) * channels + c] = Math.min(255, Math.max(0, v));
      }
    }
  }
  return { width, height, channels, data: out };
}

/** Pillow's precompute_coeffs for one output index, bilinear filter (support 1). */
function pillowWeights(inSize: number, outSize: number, o: number): { first: number; weights: number[] } {
  const scale = inSize / outSize;
  const filterScale = scale < 1 ? 1 : scale;
  const support = filterScale;
  const center = (o + 0.5) * scale;
  const first = Math.max(Math.trunc(center - support + 0.5), 0);
  const last = Math.min(Math.trunc(center + support + 0.5), inSize);
  const weights: number[] = [];
  for (let x = first; x < last; x++) {
    const d = Math.abs((x - center + 0.5) / filterScale);
    weights.push(d < 1 ? 1 - d : 0);
  }
  const total = weights.reduce((a, b) => a + b, 0);
  return { first, weights: total === 0 ? weights : weights.map((w) => w / total) };
}

/** CenterCrop: top = int(round((H − h) / 2)) with Python's half-to-even round. */
export function referenceCenterCrop(image: RefImage, size: number): RefImage {
  const top = pythonRound((image.height - size) / 2);
  const left = pythonRound((image.width - size) / 2);
  return referenceCrop(image, left, top, size, size);
}

export function referenceCrop(image: RefImage, left: number, top: number, width: number, height: number): RefImage {
  const { channels } = image;
  const out = new Uint8Array(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) {
        const sx = left + x;
        const sy = top + y;
        const inside = sx >= 0 && sy >= 0 && sx < image.width && sy < image.height;
        out[(y * width + x) * channels + c] = inside ? image.data[(sy * image.width + sx) * channels + c] : 0;
      }
    }
  }
  return { width, height, channels, data: out };
}

export function referenceFlip(image: RefImage): RefImage {
  const { width, height, channels } = image;
  const out = new Uint8Array(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++)
        out[(y * width + x) * channels + c] = image.data[(y * width + (width - 1 - x)) * channels + c];
    }
  }
  return { width, height, channels, data: out };
}

/** [convert('L')], channel order, scale and normalise → CHW float64 with three channels. */
export function referenceFinish(image: RefImage, spec: RefSpec): Float64Array {
  const { width, height, channels } = image;
  const plane = width * height;
  const out = new Float64Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    const px = Array.from({ length: channels }, (_, c) => image.data[p * channels + c]);
    let rgb = channels === 1 ? [px[0], px[0], px[0]] : px;
    if (spec.grayscale) {
      // Pillow's L = R·299/1000 + G·587/1000 + B·114/1000 in 16-bit fixed point, rounded.
      const l = Math.floor((rgb[0] * 19595 + rgb[1] * 38470 + rgb[2] * 7471 + 0x8000) / 65536);
      rgb = [l, l, l];
    }
    for (let c = 0; c < 3; c++) {
      const v = spec.channelOrder === 'bgr' ? rgb[2 - c] : rgb[c];
      out[c * plane + p] = (v * spec.scale - spec.mean[c]) / spec.std[c];
    }
  }
  return out;
}

/**
 * torchvision RandomResizedCrop.get_params(img, scale, ratio=(3/4, 4/3)) with uniform draws from
 * `rng` in the order torch draws them: area, log-ratio, then top, then left.
 */
export function referenceResizedCropBox(
  width: number,
  height: number,
  rng: () => number,
  scale: readonly [number, number],
): { top: number; left: number; h: number; w: number } {
  const area = height * width;
  const logRatio = [Math.log(3 / 4), Math.log(4 / 3)];
  for (let i = 0; i < 10; i++) {
    const targetArea = area * (scale[0] + (scale[1] - scale[0]) * rng());
    const aspect = Math.exp(logRatio[0] + (logRatio[1] - logRatio[0]) * rng());
    const w = pythonRound(Math.sqrt(targetArea * aspect));
    const h = pythonRound(Math.sqrt(targetArea / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const top = Math.floor(rng() * (height - h + 1));
      const left = Math.floor(rng() * (width - w + 1));
      return { top, left, h, w };
    }
  }
  const inRatio = width / height;
  let w: number;
  let h: number;
  if (inRatio < 3 / 4) {
    w = width;
    h = pythonRound(w / (3 / 4));
  } else if (inRatio > 4 / 3) {
    h = height;
    w = pythonRound(h * (4 / 3));
  } else {
    w = width;
    h = height;
  }
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), h, w };
}

/** Python 3's round(): ties to even. */
export function pythonRound(v: number): number {
  const f = Math.floor(v);
  const r = v - f;
  if (r !== 0.5) return r < 0.5 ? f : f + 1;
  return f % 2 === 0 ? f : f + 1;
}
