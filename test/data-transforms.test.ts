// Transforms against float64 references written here from the definitions (Pillow's triangle
// filter, torch's align_corners=False bilinear, torchvision's crop offsets), on seeded random
// images.
import { describe, expect, it } from 'vitest';
import {
  applyTransform,
  CAFFE_BGR,
  centerCrop,
  compose,
  crop,
  grayscaleToRgb,
  horizontalFlip,
  IMAGENET_TORCHVISION,
  imagenetEval,
  normalize,
  randomCrop,
  randomHorizontalFlip,
  resize,
  resizeShorter,
  roundHalfEven,
  steps,
  toBytes,
  toFloat,
  type ByteImage,
  type FloatImage,
} from '../src/data/index.ts';
import { readImageFile } from '../src/data/node/index.ts';
import { mulberry32 } from './helpers/random.ts';

function randomBytes(width: number, height: number, channels: 1 | 3, seed: number): ByteImage {
  const rng = mulberry32(seed);
  return {
    width,
    height,
    channels,
    data: Uint8Array.from({ length: width * height * channels }, () => Math.floor(rng() * 256)),
  };
}

function randomFloats(width: number, height: number, channels: number, seed: number): FloatImage {
  const rng = mulberry32(seed);
  return {
    width,
    height,
    channels,
    data: Float32Array.from({ length: width * height * channels }, () => rng() * 2 - 1),
  };
}

/** Byte pixel (x, y, c) of an HWC image. */
const px = (im: ByteImage, x: number, y: number, c: number) => im.data[(y * im.width + x) * im.channels + c];
/** Float pixel (x, y, c) of a CHW image. */
const fx = (im: FloatImage, x: number, y: number, c: number) => im.data[(c * im.height + y) * im.width + x];

/**
 * Pillow's BILINEAR resample written directly: each output pixel is the 2-D triangle-weighted
 * mean of every source pixel, the triangle widened by the downscale factor (when antialiasing),
 * weights renormalised over the pixels that exist. float64, no separability, no windows.
 */
function resizeReference(
  get: (x: number, y: number) => number,
  inW: number,
  inH: number,
  outW: number,
  outH: number,
  antialias: boolean,
): Float64Array {
  const weights = (inSize: number, outSize: number, o: number): Float64Array => {
    const scale = inSize / outSize;
    const widen = antialias ? Math.max(1, scale) : 1;
    const center = (o + 0.5) * scale;
    const w = new Float64Array(inSize);
    let total = 0;
    for (let j = 0; j < inSize; j++) {
      w[j] = Math.max(0, 1 - Math.abs((j + 0.5 - center) / widen));
      total += w[j];
    }
    return w.map((v) => v / total);
  };
  const out = new Float64Array(outW * outH);
  for (let y = 0; y < outH; y++) {
    const wy = weights(inH, outH, y);
    for (let x = 0; x < outW; x++) {
      const wx = weights(inW, outW, x);
      let s = 0;
      for (let i = 0; i < inH; i++) for (let j = 0; j < inW; j++) s += wy[i] * wx[j] * get(j, i);
      out[y * outW + x] = s;
    }
  }
  return out;
}

/** torch.nn.functional.interpolate(mode='bilinear', align_corners=False, antialias=False). */
function torchBilinear(
  get: (x: number, y: number) => number,
  inW: number,
  inH: number,
  outW: number,
  outH: number,
): Float64Array {
  const source = (o: number, inSize: number, outSize: number) => {
    const s = Math.max((o + 0.5) * (inSize / outSize) - 0.5, 0);
    const i0 = Math.floor(s);
    return { i0, i1: Math.min(i0 + 1, inSize - 1), t: s - i0 };
  };
  const out = new Float64Array(outW * outH);
  for (let y = 0; y < outH; y++) {
    const sy = source(y, inH, outH);
    for (let x = 0; x < outW; x++) {
      const sx = source(x, inW, outW);
      const top = get(sx.i0, sy.i0) * (1 - sx.t) + get(sx.i1, sy.i0) * sx.t;
      const bottom = get(sx.i0, sy.i1) * (1 - sx.t) + get(sx.i1, sy.i1) * sx.t;
      out[y * outW + x] = top * (1 - sy.t) + bottom * sy.t;
    }
  }
  return out;
}

describe('resize', () => {
  const cases: [number, number, number, number][] = [
    [7, 5, 13, 11], // up
    [17, 13, 5, 4], // down, non-integer factors
    [16, 12, 8, 6], // down by 2
    [9, 9, 9, 20], // one axis only
    [30, 7, 11, 19], // down one way, up the other
  ];

  for (const [inW, inH, outW, outH] of cases) {
    it(`floats ${inW}×${inH} → ${outW}×${outH} match the 2-D reference`, () => {
      const im = randomFloats(inW, inH, 2, inW * 100 + outW);
      for (const antialias of [true, false]) {
        const out = resize(im, outW, outH, { antialias });
        expect([out.width, out.height, out.channels]).toEqual([outW, outH, 2]);
        for (let c = 0; c < 2; c++) {
          const ref = resizeReference((x, y) => fx(im, x, y, c), inW, inH, outW, outH, antialias);
          for (let i = 0; i < ref.length; i++)
            expect(Math.abs(out.data[c * outW * outH + i] - ref[i])).toBeLessThan(1e-5);
        }
      }
    });

    it(`bytes ${inW}×${inH} → ${outW}×${outH} are within one level of the reference`, () => {
      const im = randomBytes(inW, inH, 3, inH * 31 + outH);
      const out = resize(im, outW, outH);
      let total = 0;
      for (let c = 0; c < 3; c++) {
        const ref = resizeReference((x, y) => px(im, x, y, c), inW, inH, outW, outH, true);
        for (let y = 0; y < outH; y++) {
          for (let x = 0; x < outW; x++) {
            const d = Math.abs(px(out, x, y, c) - ref[y * outW + x]);
            expect(d).toBeLessThanOrEqual(1); // a rounded byte between the passes, one at the end
            total += d;
          }
        }
      }
      expect(total / (outW * outH * 3)).toBeLessThan(0.5);
    });
  }

  it('upsampling is torch bilinear with align_corners=False, and so is antialias: false shrinking', () => {
    const im = randomFloats(6, 5, 1, 11);
    const get = (x: number, y: number) => fx(im, x, y, 0);
    const up = resize(im, 15, 14);
    torchBilinear(get, 6, 5, 15, 14).forEach((v, i) => expect(Math.abs(up.data[i] - v)).toBeLessThan(1e-5));
    const src = randomFloats(23, 19, 1, 12);
    const down = resize(src, 7, 5, { antialias: false });
    torchBilinear((x, y) => fx(src, x, y, 0), 23, 19, 7, 5).forEach((v, i) =>
      expect(Math.abs(down.data[i] - v)).toBeLessThan(1e-5),
    );
  });

  it('halving averages four taps 1/8, 3/8, 3/8, 1/8 (worked by hand)', () => {
    const row = [10, 50, 90, 130, 20, 200, 7, 255];
    const im: FloatImage = { width: 8, height: 1, channels: 1, data: Float32Array.from(row) };
    const out = resize(im, 4, 1);
    // Output pixel 1 is centred on source x = 3 and sees pixels 1..4 at distances 1.5, .5, .5, 1.5
    // on a triangle of half-width 2.
    expect(out.data[1]).toBeCloseTo((50 + 3 * 90 + 3 * 130 + 20) / 8, 4);
    expect(out.data[2]).toBeCloseTo((130 + 3 * 20 + 3 * 200 + 7) / 8, 4);
  });

  it('resizeShorter keeps the aspect ratio with a truncated long side', () => {
    const im = randomBytes(40, 30, 3, 3);
    expect([resizeShorter(im, 20).width, resizeShorter(im, 20).height]).toEqual([26, 20]); // ⌊20·40/30⌋
    const tall = randomBytes(30, 47, 3, 4);
    expect([resizeShorter(tall, 10).width, resizeShorter(tall, 10).height]).toEqual([10, 15]); // ⌊10·47/30⌋
    expect(resize(im, 40, 30)).toBe(im);
  });
});

describe('crops', () => {
  it('centerCrop uses half-to-even offsets like torchvision and pads when too small', () => {
    expect([
      roundHalfEven(16.5),
      roundHalfEven(17.5),
      roundHalfEven(2.5),
      roundHalfEven(2.4),
      roundHalfEven(2.6),
    ]).toEqual([16, 18, 2, 2, 3]);
    const im = randomBytes(13, 10, 3, 5);
    // W 13 → 8: (13−8)/2 = 2.5 → 2; H 10 → 5: 2.5 → 2.
    const c = centerCrop(im, 8, 5);
    for (let y = 0; y < 5; y++)
      for (let x = 0; x < 8; x++)
        for (let ch = 0; ch < 3; ch++) {
          expect(px(c, x, y, ch)).toBe(px(im, x + 2, y + 2, ch));
        }
    // W 13 → 10: 1.5 → 2; H 10 → 3: 3.5 → 4.
    const d = centerCrop(im, 10, 3);
    expect(px(d, 0, 0, 1)).toBe(px(im, 2, 4, 1));
    // Larger than the image: padded by ⌊(16−13)/2⌋ = 1 left and ⌊(15−10)/2⌋ = 2 top with zeros.
    const big = centerCrop(im, 16, 15);
    expect(px(big, 0, 0, 0)).toBe(0);
    expect(px(big, 1, 2, 0)).toBe(px(im, 0, 0, 0));
    expect(px(big, 13, 11, 2)).toBe(px(im, 12, 9, 2));
    expect(px(big, 14, 12, 2)).toBe(0);
  });

  it('randomCrop with padding reaches every offset, and the same seed gives the same crop', () => {
    const im = randomBytes(6, 5, 3, 6);
    const seen = new Set<string>();
    for (let seed = 0; seed < 400; seed++) {
      const out = applyTransform(steps.randomCrop(6, 5, { padding: 2 }), im, seed) as ByteImage;
      expect(applyTransform(steps.randomCrop(6, 5, { padding: 2 }), im, seed)).toEqual(out);
      // Find the offset: the crop equals crop(im, dx, dy) with zero fill for exactly one (dx, dy).
      const matches: string[] = [];
      for (let dy = -2; dy <= 2; dy++)
        for (let dx = -2; dx <= 2; dx++) {
          const ref = crop(im, dx, dy, 6, 5);
          if (ref.data.every((v, i) => v === out.data[i])) matches.push(`${dx},${dy}`);
        }
      expect(matches.length).toBe(1);
      seen.add(matches[0]);
    }
    expect(seen.size).toBe(25);
  });

  it('randomCrop refuses a crop that does not fit unless padIfNeeded', () => {
    const im = randomBytes(4, 4, 1, 7);
    expect(() => randomCrop(im, 6, 4, mulberry32(1))).toThrow(/6×4 crop does not fit the 4×4 .*padIfNeeded/);
    const out = randomCrop(im, 6, 4, mulberry32(1), { padIfNeeded: true });
    expect([out.width, out.height]).toEqual([6, 4]);
  });

  it('crops floats plane by plane with a per-channel fill', () => {
    const im = randomFloats(5, 4, 2, 8);
    const out = crop(im, -1, 2, 3, 3, [7, -7]);
    expect(fx(out, 0, 0, 0)).toBe(7);
    expect(fx(out, 0, 0, 1)).toBe(-7);
    expect(fx(out, 1, 1, 1)).toBe(fx(im, 0, 3, 1));
    expect(fx(out, 2, 2, 0)).toBe(7); // row 4 is past the bottom
  });
});

describe('flips', () => {
  it('horizontalFlip mirrors bytes and floats, and twice is the identity', () => {
    const b = randomBytes(5, 3, 3, 9);
    const fb = horizontalFlip(b);
    expect(px(fb, 0, 1, 2)).toBe(px(b, 4, 1, 2));
    expect(horizontalFlip(fb)).toEqual(b);
    const f = randomFloats(4, 3, 2, 10);
    expect(fx(horizontalFlip(f), 1, 2, 1)).toBe(fx(f, 2, 2, 1));
  });

  it('randomHorizontalFlip is a function of the seed, flipping about half the time', () => {
    const im = randomBytes(4, 2, 3, 11);
    const flipped = horizontalFlip(im);
    const decisions = Array.from({ length: 200 }, (_, seed) => {
      const out = applyTransform(steps.randomHorizontalFlip(), im, seed) as ByteImage;
      expect(applyTransform(steps.randomHorizontalFlip(), im, seed)).toEqual(out);
      return out.data.every((v, i) => v === flipped.data[i]);
    });
    // The decision is the seed's first draw < 0.5.
    decisions.forEach((d, seed) => expect(d).toBe(mulberry32(seed)() < 0.5));
    const count = decisions.filter(Boolean).length;
    expect(count).toBeGreaterThan(70);
    expect(count).toBeLessThan(130);
    expect(randomHorizontalFlip(im, () => 0.99, 1)).not.toBe(im);
    expect(randomHorizontalFlip(im, () => 0.0, 0)).toBe(im);
  });
});

describe('normalize', () => {
  it('torchvision ImageNet: (v/255 − mean)/std per RGB channel, CHW', () => {
    const im = randomBytes(6, 4, 3, 12);
    const out = normalize(im, IMAGENET_TORCHVISION);
    const mean = [0.485, 0.456, 0.406];
    const std = [0.229, 0.224, 0.225];
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 4; y++)
        for (let x = 0; x < 6; x++) {
          const ref = (px(im, x, y, c) / 255 - mean[c]) / std[c];
          expect(Math.abs(fx(out, x, y, c) - ref)).toBeLessThan(1e-5);
        }
  });

  it('Caffe: BGR planes on 0–255 minus [103.939, 116.779, 123.68]', () => {
    const im = randomBytes(5, 5, 3, 13);
    const out = normalize(im, CAFFE_BGR);
    const mean = [103.939, 116.779, 123.68];
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 5; y++)
        for (let x = 0; x < 5; x++) {
          expect(Math.abs(fx(out, x, y, c) - (px(im, x, y, 2 - c) - mean[c]))).toBeLessThan(1e-4);
        }
  });

  it('asks for grayscaleToRgb on gray input and refuses floats', () => {
    const gray = randomBytes(3, 3, 1, 14);
    expect(() => normalize(gray, IMAGENET_TORCHVISION)).toThrow(/add grayscaleToRgb/);
    expect(() => normalize(toFloat(randomBytes(2, 2, 3, 1)), CAFFE_BGR)).toThrow(/expects a ByteImage/);
    const rgb = grayscaleToRgb(gray);
    for (let c = 0; c < 3; c++) expect(px(rgb, 2, 1, c)).toBe(px(gray, 2, 1, 0));
    const frgb = grayscaleToRgb(toFloat(gray));
    expect(fx(frgb, 1, 2, 2)).toBe(fx(frgb, 1, 2, 0));
  });

  it('toFloat and toBytes are inverse ToTensor steps', () => {
    const im = randomBytes(4, 3, 3, 15);
    const f = toFloat(im);
    expect(fx(f, 3, 2, 1)).toBeCloseTo(px(im, 3, 2, 1) / 255, 6);
    expect(toBytes(f)).toEqual(im);
  });
});

describe('compose', () => {
  it('chains steps with one generator; same seed, same output', () => {
    const im = randomBytes(40, 30, 3, 16);
    const t = compose(
      steps.resizeShorter(20),
      steps.randomCrop(16, 16, { padding: 2 }),
      steps.randomHorizontalFlip(),
      steps.normalize(IMAGENET_TORCHVISION),
    );
    const a = applyTransform(t, im, 5);
    expect(applyTransform(t, im, 5)).toEqual(a);
    expect([a.width, a.height, a.channels]).toEqual([16, 16, 3]);
    expect(a.data).toBeInstanceOf(Float32Array);
    const outputs = new Set(Array.from({ length: 8 }, (_, s) => applyTransform(t, im, s).data.join(',')));
    expect(outputs.size).toBeGreaterThan(4);
  });

  it('imagenetEval on a real photograph gives 3×224×224 in the expected range', () => {
    const dog = readImageFile('/usr/share/darknet/data/dog.jpg');
    const out = applyTransform(imagenetEval(IMAGENET_TORCHVISION), dog, 0);
    expect([out.channels, out.height, out.width]).toEqual([3, 224, 224]);
    expect(out.data).toBeInstanceOf(Float32Array);
    let [min, max] = [Infinity, -Infinity];
    for (const v of out.data) [min, max] = [Math.min(min, v), Math.max(max, v)];
    expect(min).toBeGreaterThanOrEqual(-0.485 / 0.229 - 1e-4);
    expect(max).toBeLessThanOrEqual((1 - 0.406) / 0.225 + 1e-4);
    expect(min).toBeLessThan(-1.5); // a photograph spans most of the range
    expect(max).toBeGreaterThan(1.5);
    // Equal to the steps done by hand.
    const byHand = normalize(centerCrop(resizeShorter(dog, 256), 224), IMAGENET_TORCHVISION);
    let same = 0;
    out.data.forEach((v, i) => (same += v === byHand.data[i] ? 1 : 0));
    expect(same).toBe(byHand.data.length);
  });
});
