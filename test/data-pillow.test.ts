// Decoded pixels against Pillow's (PIL.Image.open(f).convert('RGB'), what torchvision's
// ImageFolder loader does): Debian darknet's photographs and images of every kind generated here
// by Pillow (gray, CMYK, progressive, each chroma subsampling, EXIF-rotated, with an ICC profile;
// PNG 8/16-bit, gray, gray+alpha, RGBA, palette, 1-bit). sharp (libjpeg-turbo) must equal Pillow
// byte for byte; jpeg-js (the pure-JS fallback) is reported and held to the bounds measured
// here. Then the whole decode + torchvision preprocessing against Pillow's resize/crop and a
// float64 normalise, within 1e-5.
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeImageAsync, evalTransform, grayscaleToRgb, type ByteImage } from '../src/data/index.ts';
import { decodeImageFile } from '../src/data/node/index.ts';
import { preprocessPreset, type PreprocessSpec } from '../src/graph/model-metadata.ts';
import { findPillowPython, runPython } from './helpers/pillow.ts';

const DARKNET = '/usr/share/darknet/data';

// Writes the generated images into argv[1], then for every image named in argv[2:] (and the
// generated ones) Pillow's RGB bytes as <name>.rgb; prints a JSON manifest.
const PILLOW_SCRIPT = String.raw`
import sys, os, json, random, struct, zlib
from PIL import Image, ImageCms
out = sys.argv[1]
random.seed(20261206)

def textured(w, h):
    # A photograph crop plus seeded noise: edges and smooth areas, like real data.
    base = Image.open('/usr/share/darknet/data/dog.jpg').convert('RGB').resize((w, h), Image.BILINEAR)
    px = bytearray(base.tobytes())
    for i in range(0, len(px), 7):
        px[i] = max(0, min(255, px[i] + random.randint(-40, 40)))
    return Image.frombytes('RGB', (w, h), bytes(px))

def png16(path, w, h, channels, colour_type):
    # Pillow cannot write 16-bit colour PNGs: a minimal writer (filter 0 rows).
    raw = b''.join(b'\x00' + b''.join(struct.pack('>H', random.randint(0, 65535)) for _ in range(w * channels)) for _ in range(h))
    def chunk(t, d):
        return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    ihdr = struct.pack('>IIBBBBB', w, h, 16, colour_type, 0, 0, 0)
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))

im = textured(203, 151)
made = {}
def save(name, image, **kw):
    image.save(os.path.join(out, name), **kw)
    made[name] = os.path.join(out, name)

save('rgb420_q90.jpg', im, quality=90)
save('rgb444_q95.jpg', im, quality=95, subsampling=0)
save('rgb422_q75.jpg', im, quality=75, subsampling=1)
save('rgb_q100.jpg', textured(97, 61), quality=100)
save('progressive.jpg', im, quality=85, progressive=True)
save('gray.jpg', im.convert('L'), quality=90)
save('cmyk.jpg', im.convert('CMYK'), quality=90)
exif = Image.Exif(); exif[0x0112] = 6
save('exif_rotate90.jpg', im, quality=90, exif=exif.tobytes())
save('icc_lab.jpg', im, quality=90, icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile('LAB')).tobytes())
save('rgb8.png', im)
save('rgba8.png', im.convert('RGBA'))
alpha = im.convert('RGBA'); alpha.putalpha(im.convert('L'))
save('rgba8_alpha.png', alpha)
save('gray8.png', im.convert('L'))
save('graya8.png', im.convert('LA'))
save('palette.png', im.convert('P', palette=Image.ADAPTIVE, colors=200))
save('palette_trns.png', im.convert('P', palette=Image.ADAPTIVE, colors=16), transparency=3)
save('bilevel.png', im.convert('1'))
for name, ch, ct in [('rgb16.png', 3, 2), ('rgba16.png', 4, 6), ('graya16.png', 2, 4)]:
    png16(os.path.join(out, name), 37, 23, ch, ct); made[name] = os.path.join(out, name)
gray16 = Image.frombytes('I;16', (41, 19), bytes(random.randint(0, 255) for _ in range(41 * 19 * 2)))
save('gray16.png', gray16)

manifest = []
for path in list(made.values()) + sys.argv[2:]:
    name = os.path.basename(path)
    src = Image.open(path)
    mode = src.mode
    if mode in ('I', 'I;16', 'I;16B'):
        # Pillow's convert('RGB') clips 16-bit gray at 255 (so nearly every pixel is white); the
        # sample's meaning, and what Pillow does for 16-bit RGB, is the high byte.
        rgb = Image.frombytes('L', src.size, bytes(v >> 8 for v in src.getdata())).convert('RGB')
    else:
        rgb = src.convert('RGB')
    with open(os.path.join(out, name + '.rgb'), 'wb') as f:
        f.write(rgb.tobytes())
    manifest.append({'name': name, 'path': path, 'mode': mode, 'width': rgb.width, 'height': rgb.height})
print(json.dumps(manifest))
`;

// torchvision's eval pipeline on Pillow: Resize(shorter side, BILINEAR), CenterCrop, [Grayscale],
// ToTensor + Normalize in float64; writes CHW doubles to argv[2].
const PILLOW_PREPROCESS = String.raw`
import sys, json
from array import array
from PIL import Image
path, dst, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
im = Image.open(path).convert('RGB')
w, h = im.size
size = spec['resize']
ow, oh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
im = im.resize((ow, oh), Image.BILINEAR)
c = spec['crop']
top, left = int(round((oh - c) / 2.0)), int(round((ow - c) / 2.0))
im = im.crop((left, top, left + c, top + c))
if spec.get('grayscale'):
    im = im.convert('L').convert('RGB')
px = im.tobytes()
out = array('d')
for ch in range(3):
    src = 2 - ch if spec['channelOrder'] == 'bgr' else ch
    for p in range(c * c):
        out.append((px[3 * p + src] * spec['scale'] - spec['mean'][ch]) / spec['std'][ch])
with open(dst, 'wb') as f:
    out.tofile(f)
`;

interface Entry {
  name: string;
  path: string;
  mode: string;
  width: number;
  height: number;
}

// Measured here (2026-12-06, jpeg-js 0.4.4 vs Pillow 9.4 / libjpeg-turbo 2.1.5); see the
// console report. jpeg-js upsamples chroma without libjpeg's "fancy" filter and rounds its IDCT
// differently, so most bytes differ a little and colour edges more.
const JPEG_JS_BOUNDS = { meanAbs: 2.5, maxAbs: 40, cmykMaxAbs: 1 };

const found = findPillowPython();
const dir = mkdtempSync(join(tmpdir(), 'graft-pillow-'));
let manifest: Entry[] = [];

beforeAll(() => {
  if ('problem' in found) return;
  const photos = readdirSync(DARKNET)
    .filter((f) => f.endsWith('.jpg'))
    .map((f) => join(DARKNET, f));
  manifest = JSON.parse(runPython(found.python, PILLOW_SCRIPT, [dir, ...photos])) as Entry[];
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Every test fails with the install command when Pillow is missing (never a silent skip). */
function requirePillow(): string {
  if ('problem' in found) throw new Error(found.problem);
  return found.python;
}

function pillowBytes(e: Entry): Uint8Array {
  return new Uint8Array(readFileSync(join(dir, `${e.name}.rgb`)));
}

function compare(ours: ByteImage, e: Entry): { differ: number; total: number; maxAbs: number; meanAbs: number } {
  const rgb = grayscaleToRgb(ours);
  expect([rgb.width, rgb.height], `${e.name} size`).toEqual([e.width, e.height]);
  const ref = pillowBytes(e);
  expect(rgb.data.length).toBe(ref.length);
  let differ = 0;
  let maxAbs = 0;
  let sum = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(rgb.data[i] - ref[i]);
    if (d) differ++;
    maxAbs = Math.max(maxAbs, d);
    sum += d;
  }
  return { differ, total: ref.length, maxAbs, meanAbs: sum / ref.length };
}

function report(decoder: string, e: Entry, r: ReturnType<typeof compare>): void {
  console.log(
    `${decoder.padEnd(7)} ${e.name.padEnd(20)} ${e.mode.padEnd(5)} ${e.width}×${e.height}: ` +
      `${r.differ} of ${r.total} bytes differ from Pillow (${((100 * r.differ) / r.total).toFixed(1)}%), ` +
      `max |Δ| ${r.maxAbs}, mean |Δ| ${r.meanAbs.toFixed(3)}`,
  );
}

describe('decoding against Pillow', () => {
  it('has python3 with Pillow (python3-pil)', () => {
    requirePillow();
    expect(manifest.filter((e) => e.path.startsWith(DARKNET)).length).toBe(7);
    expect(manifest.length).toBeGreaterThan(25);
  });

  it('sharp (libjpeg-turbo) equals Pillow byte for byte on every JPEG', async () => {
    requirePillow();
    const jpegs = manifest.filter((e) => e.name.endsWith('.jpg'));
    expect(jpegs.length).toBe(16);
    for (const e of jpegs) {
      const r = compare(await decodeImageFile(e.path, { jpeg: 'sharp' }), e);
      report('sharp', e, r);
      expect(r.differ, `${e.name}: bytes differing from Pillow`).toBe(0);
    }
  });

  it('jpeg-js stays within its measured bounds (CMYK within 1 level)', async () => {
    requirePillow();
    const jpegs = manifest.filter((e) => e.name.endsWith('.jpg'));
    let worstMean = 0;
    for (const e of jpegs) {
      const r = compare(await decodeImageFile(e.path, { jpeg: 'jpeg-js' }), e);
      report('jpeg-js', e, r);
      worstMean = Math.max(worstMean, r.meanAbs);
      expect(r.maxAbs, e.name).toBeLessThanOrEqual(
        e.mode === 'CMYK' ? JPEG_JS_BOUNDS.cmykMaxAbs : JPEG_JS_BOUNDS.maxAbs,
      );
      expect(r.meanAbs, e.name).toBeLessThanOrEqual(JPEG_JS_BOUNDS.meanAbs);
    }
    // The report means something only if the fallback really differs: it is a different decoder.
    expect(worstMean).toBeGreaterThan(0.1);
  });

  it('PNG of every kind equals Pillow (16-bit: the high byte)', async () => {
    requirePillow();
    const pngs = manifest.filter((e) => e.name.endsWith('.png'));
    // Pillow's modes: 16-bit RGB opens as RGB, 16-bit gray+alpha as RGBA, 16-bit gray as I.
    expect(pngs.map((e) => e.mode).sort()).toEqual(
      ['1', 'I', 'L', 'LA', 'P', 'P', 'RGB', 'RGB', 'RGBA', 'RGBA', 'RGBA', 'RGBA'].sort(),
    );
    for (const e of pngs) {
      const r = compare(await decodeImageFile(e.path), e);
      report('png.ts', e, r);
      expect(r.differ, `${e.name}: bytes differing from Pillow`).toBe(0);
      // Inflated by the platform's DecompressionStream (the browser path): the same bytes.
      const viaPlatform = compare(await decodeImageAsync(new Uint8Array(readFileSync(e.path)), { name: e.path }), e);
      expect(viaPlatform.differ, `${e.name} via DecompressionStream: bytes differing from Pillow`).toBe(0);
    }
  });

  it('EXIF orientation is ignored, as by Pillow (no rotation)', async () => {
    requirePillow();
    const im = await decodeImageFile(join(dir, 'exif_rotate90.jpg'));
    expect([im.width, im.height]).toEqual([203, 151]);
  });
});

describe('decode + preprocessing against Pillow resize/crop and a float64 normalise', () => {
  const cases: [string, PreprocessSpec][] = [
    [join(DARKNET, 'dog.jpg'), preprocessPreset('torchvision', 224)],
    [join(DARKNET, 'scream.jpg'), preprocessPreset('caffe', 227)],
    [join(DARKNET, 'kite.jpg'), preprocessPreset('inception', 299)],
    ['cmyk.jpg', { ...preprocessPreset('torchvision', 112), grayscale: true }],
    ['palette.png', preprocessPreset('torchvision', 160)], // enlarges 151 → 183
    ['gray8.png', preprocessPreset('caffe', 64)],
  ];
  for (const [file, spec] of cases) {
    it(`${file.split('/').pop()} with ${spec.name}${spec.grayscale ? ' (gray)' : ''} at ${spec.crop}`, async () => {
      const python = requirePillow();
      const path = file.includes('/') ? file : join(dir, file);
      const dst = join(dir, `pre-${spec.name}-${spec.crop}.f64`);
      runPython(python, PILLOW_PREPROCESS, [path, dst, JSON.stringify(spec)]);
      const buf = readFileSync(dst);
      const ref = new Float64Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
      const ours = evalTransform(spec)(await decodeImageFile(path), () => 0);
      expect(ours.data.length).toBe(ref.length);
      let worst = 0;
      for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(ours.data[i] - ref[i]));
      expect(worst).toBeLessThan(1e-5);
    });
  }
});
