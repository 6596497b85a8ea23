// evalTransform / trainTransform against the float64 reference in helpers/reference-preprocess.ts
// (Pillow's 8-bit bilinear resample, torchvision's crops, Normalize), on seeded random images of
// odd sizes, shrinking and enlarging, RGB and gray, every preset and a grayscale spec.
import { describe, expect, it } from 'vitest';
import { evalTransform, trainTransform, DataError, type ByteImage, type FloatImage } from '../src/data/index.ts';
import { preprocessPreset, type PreprocessSpec } from '../src/graph/model-metadata.ts';
import { mulberry32 } from './helpers/random.ts';
import {
  referenceCrop,
  referenceEval,
  referenceFinish,
  referenceFlip,
  referenceResize,
  referenceResizedCropBox,
  referenceResizeShorter,
  type RefImage,
} from './helpers/reference-preprocess.ts';

/** Smooth gradients plus noise: resampling has real work to do, never a constant image. */
function randomImage(width: number, height: number, channels: 1 | 3, seed: number): ByteImage {
  const rng = mulberry32(seed);
  const data = new Uint8Array(width * height * channels);
  const phase = [rng() * 6, rng() * 6, rng() * 6];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let c = 0; c < channels; c++) {
        const smooth = 127 + 90 * Math.sin(x / (3 + c) + phase[c]) * Math.cos(y / 5 - phase[c]);
        data[(y * width + x) * channels + c] = Math.max(0, Math.min(255, Math.round(smooth + (rng() - 0.5) * 60)));
      }
    }
  }
  return { width, height, channels, data };
}

function maxAbsDiff(ours: FloatImage, reference: Float64Array): number {
  expect(ours.data.length).toBe(reference.length);
  let worst = 0;
  for (let i = 0; i < reference.length; i++) worst = Math.max(worst, Math.abs(ours.data[i] - reference[i]));
  return worst;
}

const SIZES: [number, number, 1 | 3][] = [
  [301, 157, 3], // shrink, landscape
  [97, 203, 3], // shrink, portrait
  [13, 9, 3], // enlarge both ways
  [41, 17, 1], // gray, mixed
  [64, 64, 3], // square, shorter side equal to resize for one spec below
];

const SPECS: PreprocessSpec[] = [
  preprocessPreset('torchvision', 56),
  preprocessPreset('caffe', 33),
  preprocessPreset('inception', 45),
  { ...preprocessPreset('torchvision', 28), grayscale: true },
  { ...preprocessPreset('torchvision', 60), resize: 64 },
];

describe('evalTransform against the float64 reference', () => {
  for (const spec of SPECS) {
    for (const [w, h, c] of SIZES) {
      it(`${spec.name}${spec.grayscale ? ' gray' : ''} resize ${spec.resize} crop ${spec.crop}: ${w}×${h}×${c}`, () => {
        const image = randomImage(w, h, c, w * 1000 + h + spec.crop);
        const ours = evalTransform(spec)(image, () => 0.5);
        expect([ours.channels, ours.height, ours.width]).toEqual([3, spec.crop, spec.crop]);
        expect(maxAbsDiff(ours, referenceEval(image, spec))).toBeLessThan(1e-5);
      });
    }
  }

  it('the reference is not trivially equal to a plain nearest-pixel pipeline (the resize matters)', () => {
    const spec = preprocessPreset('torchvision', 56);
    const image = randomImage(301, 157, 3, 7);
    const ref = referenceEval(image, spec);
    // Skipping the resize (crop straight from the original) must be far off.
    const noResize = referenceFinish(referenceCrop(image, 0, 0, 56, 56), spec);
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ref[i] - noResize[i]));
    expect(worst).toBeGreaterThan(0.5);
  });
});

describe('trainTransform against the reference with the same draws', () => {
  const spec = preprocessPreset('torchvision', 48);

  it("crop 'center' without flip is the evaluation transform", () => {
    const image = randomImage(123, 77, 3, 3);
    const ours = trainTransform(spec, { crop: 'center' })(image, mulberry32(1));
    expect(maxAbsDiff(ours, referenceEval(image, spec))).toBeLessThan(1e-5);
  });

  for (const seed of [1, 2, 3, 4, 5, 6]) {
    it(`crop 'random' + flip, seed ${seed}`, () => {
      const image = randomImage(131, 89, 3, 10 + seed);
      const ours = trainTransform(spec, { crop: 'random', flip: true })(image, mulberry32(seed));
      const rng = mulberry32(seed);
      const resized = referenceResizeShorter(image, spec.resize);
      const top = Math.floor(rng() * (resized.height - spec.crop + 1));
      const left = Math.floor(rng() * (resized.width - spec.crop + 1));
      let cropped: RefImage = referenceCrop(resized, left, top, spec.crop, spec.crop);
      if (rng() < 0.5) cropped = referenceFlip(cropped);
      expect(maxAbsDiff(ours, referenceFinish(cropped, spec))).toBeLessThan(1e-5);
    });

    it(`crop 'resized' (RandomResizedCrop) + flip, seed ${seed}`, () => {
      const image = randomImage(seed % 2 ? 211 : 40, seed % 2 ? 97 : 150, 3, 20 + seed);
      const scale: [number, number] = seed > 4 ? [0.5, 0.9] : [0.08, 1];
      const ours = trainTransform(spec, { crop: 'resized', flip: true, scale })(image, mulberry32(seed));
      const rng = mulberry32(seed);
      const box = referenceResizedCropBox(image.width, image.height, rng, scale);
      let out = referenceResize(referenceCrop(image, box.left, box.top, box.w, box.h), spec.crop, spec.crop);
      if (rng() < 0.5) out = referenceFlip(out);
      expect(maxAbsDiff(ours, referenceFinish(out, spec))).toBeLessThan(1e-5);
    });
  }

  it('flips about half the time and draws distinct crops across seeds', () => {
    const image = randomImage(90, 70, 3, 99);
    const t = trainTransform(spec, { crop: 'random', flip: true });
    const outputs = Array.from({ length: 40 }, (_, s) => t(image, mulberry32(1000 + s)).data);
    const distinct = new Set(outputs.map((d) => Array.from(d.subarray(0, 64)).join(','))).size;
    expect(distinct).toBeGreaterThan(20);
  });

  it('refuses a FloatImage, an unknown crop mode and a bad scale, naming them', () => {
    const f: FloatImage = { width: 4, height: 4, channels: 3, data: new Float32Array(48) };
    expect(() => evalTransform(spec)(f, () => 0)).toThrow(DataError);
    expect(() => evalTransform(spec)(f, () => 0)).toThrow(/expects decoded bytes/);
    expect(() => trainTransform(spec, { crop: 'zoom' as never })).toThrow(
      /augment crop 'zoom' is not known; accepted: center, random, resized/,
    );
    expect(() => trainTransform(spec, { crop: 'resized', scale: [0.9, 0.2] })).toThrow(/0 < min ≤ max ≤ 1/);
    expect(() => evalTransform({ ...spec, crop: 300 })).toThrow(/1 ≤ crop ≤ resize/);
  });
});
