// Decoding: a real JPEG from Debian's darknet package against an independent decoder when the
// machine has one (PIL, else gdk-pixbuf's libjpeg-turbo), PNG against an encoder written here,
// and the image-folder dataset over generated files.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 as zlibCrc32, deflateSync, inflateSync } from 'node:zlib';
import jpeg from 'jpeg-js';
import { afterAll, describe, expect, it } from 'vitest';
import { DataError, decodeImage, decodeImageAsync, decodePngAsync, type ByteImage } from '../src/data/index.ts';
import { imageFolder, readImageFile } from '../src/data/node/index.ts';
import { mulberry32 } from './helpers/random.ts';

const DARKNET = '/usr/share/darknet/data';
const DOG = join(DARKNET, 'dog.jpg');

describe('JPEG (Debian darknet photographs)', () => {
  if (!existsSync(DOG)) {
    it('is installed', () => {
      throw new Error(`${DOG} is missing: sudo apt-get install -y darknet`);
    });
    return;
  }

  it('dog.jpg decodes to 768×576 RGB with plausible statistics', () => {
    const im = readImageFile(DOG);
    expect([im.width, im.height, im.channels]).toEqual([768, 576, 3]);
    const mean = [0, 0, 0];
    const sq = [0, 0, 0];
    const n = im.width * im.height;
    for (let p = 0; p < n; p++)
      for (let c = 0; c < 3; c++) {
        const v = im.data[3 * p + c];
        mean[c] += v;
        sq[c] += v * v;
      }
    for (let c = 0; c < 3; c++) {
      mean[c] /= n;
      const std = Math.sqrt(sq[c] / n - mean[c] ** 2);
      expect(mean[c]).toBeGreaterThan(60); // a daylight photograph, neither black nor blown out
      expect(mean[c]).toBeLessThan(190);
      expect(std).toBeGreaterThan(30);
    }
  });

  it('every darknet photograph decodes', () => {
    for (const name of ['eagle', 'giraffe', 'horses', 'kite', 'person', 'scream']) {
      const im = readImageFile(join(DARKNET, `${name}.jpg`));
      expect(im.data.length).toBe(im.width * im.height * 3);
      expect(im.width).toBeGreaterThan(100);
    }
  });

  it('dog.jpg matches an independent decoder', () => {
    const reference = independentDecode(DOG);
    // scripts/setup-system.sh installs gdk-pixbuf (libjpeg-turbo), so a missing decoder is a
    // set-up fault to report, not a case to skip.
    if (typeof reference === 'string') throw new Error(`${reference}: run \`sudo bash scripts/setup-system.sh\``);
    const ours = readImageFile(DOG);
    expect([reference.image.width, reference.image.height]).toEqual([768, 576]);
    // Decoders may differ in IDCT rounding and chroma upsampling (libjpeg's "fancy" triangle
    // filter), which shows at colour edges; pixels and 8×8 block means must still agree.
    const diffs = new Uint32Array(256);
    let total = 0;
    for (let i = 0; i < ours.data.length; i++) {
      const d = Math.abs(ours.data[i] - reference.image.data[i]);
      diffs[d]++;
      total += d;
    }
    const within = (k: number) => diffs.subarray(0, k + 1).reduce((a, b) => a + b, 0) / ours.data.length;
    console.log(
      `JPEG vs ${reference.by}: mean |Δ| ${(total / ours.data.length).toFixed(3)}, ≤3: ${(within(3) * 100).toFixed(2)}%, ≤10: ${(within(10) * 100).toFixed(2)}%`,
    );
    expect(total / ours.data.length).toBeLessThan(1.5);
    expect(within(3)).toBeGreaterThan(0.95);
    expect(within(10)).toBeGreaterThan(0.99);
    let worstBlock = 0;
    for (let by = 0; by < 576; by += 8)
      for (let bx = 0; bx < 768; bx += 8)
        for (let c = 0; c < 3; c++) {
          let d = 0;
          for (let y = by; y < by + 8; y++)
            for (let x = bx; x < bx + 8; x++) {
              const i = (y * 768 + x) * 3 + c;
              d += ours.data[i] - reference.image.data[i];
            }
          worstBlock = Math.max(worstBlock, Math.abs(d / 64));
        }
    console.log(`worst 8×8 block mean |Δ| ${worstBlock.toFixed(2)}`);
    expect(worstBlock).toBeLessThan(4);
  });

  it('errors name the file and say what failed', () => {
    const bytes = readFileSync(DOG);
    expect(() => decodeImage(bytes.subarray(0, 50000), { name: 'cut.jpg' })).toThrow(/^cut\.jpg: cannot decode JPEG: /);
    expect(() => decodeImage(new Uint8Array([1, 2, 3]), { name: 'x.bin' })).toThrow(
      /x\.bin: not a JPEG or PNG \(first bytes: 01 02 03\)/,
    );
    expect(() => decodeImage(new Uint8Array(0), { name: 'e' })).toThrow(/the file is empty/);
  });
});

/** PIL if importable, else gdk-pixbuf-csource; a string says why neither ran. */
function independentDecode(path: string): { image: ByteImage; by: string } | string {
  const pil = spawnSync(
    'python3',
    [
      '-c',
      'import sys; from PIL import Image; im = Image.open(sys.argv[1]).convert("RGB"); sys.stdout.buffer.write(im.tobytes())',
      path,
    ],
    { maxBuffer: 1 << 26 },
  );
  if (pil.status === 0)
    return { image: { width: 768, height: 576, channels: 3, data: new Uint8Array(pil.stdout) }, by: 'PIL' };
  const gdk = spawnSync('gdk-pixbuf-csource', ['--raw', '--stream', path], { maxBuffer: 1 << 27 });
  if (gdk.status === 0)
    return { image: parseGdkPixdata(gdk.stdout.toString('latin1')), by: 'gdk-pixbuf (libjpeg-turbo)' };
  return 'neither python3 with PIL (python3-pil) nor gdk-pixbuf-csource (libgdk-pixbuf2.0-bin) is installed';
}

/** gdk-pixbuf-csource --raw --stream prints a GdkPixdata blob as C string literals. */
function parseGdkPixdata(source: string): ByteImage {
  const bytes: number[] = [];
  const escapes: Record<string, number> = {
    n: 10,
    t: 9,
    r: 13,
    a: 7,
    b: 8,
    f: 12,
    v: 11,
    '"': 34,
    '\\': 92,
    '?': 63,
    "'": 39,
  };
  const literal = /"((?:[^"\\]|\\.)*)"/g;
  const body = source.slice(source.indexOf('{'));
  for (let m = literal.exec(body); m; m = literal.exec(body)) {
    const s = m[1];
    for (let i = 0; i < s.length; i++) {
      if (s[i] !== '\\') {
        bytes.push(s.charCodeAt(i));
        continue;
      }
      const octal = /^[0-7]{1,3}/.exec(s.slice(i + 1));
      if (octal) {
        bytes.push(parseInt(octal[0], 8));
        i += octal[0].length;
      } else {
        bytes.push(escapes[s[i + 1]] ?? s.charCodeAt(i + 1));
        i++;
      }
    }
  }
  const blob = Uint8Array.from(bytes);
  const view = new DataView(blob.buffer);
  if (String.fromCharCode(...blob.subarray(0, 4)) !== 'GdkP')
    throw new Error('gdk-pixbuf-csource output has no GdkP magic');
  const [type, stride, width, height] = [view.getUint32(8), view.getUint32(12), view.getUint32(16), view.getUint32(20)];
  if (type !== 0x01010001) throw new Error(`unexpected GdkPixdata type 0x${type.toString(16)} (want raw 8-bit RGB)`);
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) data.set(blob.subarray(24 + y * stride, 24 + y * stride + width * 3), y * width * 3);
  return { width, height, channels: 3, data };
}

// ---- PNG -------------------------------------------------------------------------------------

interface PngSpec {
  width: number;
  height: number;
  colorType: 0 | 2 | 3 | 4 | 6;
  bitDepth: 1 | 2 | 4 | 8 | 16;
  interlace: boolean;
}

const SAMPLES = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 } as const;

/**
 * A PNG encoder for the test: random samples, each row given filter type (row mod 5) so all five
 * filters are exercised, Adam7 when asked. Returns the file and the RGB a decoder must produce.
 */
function encodePng(spec: PngSpec, seed: number): { file: Uint8Array; rgb: Uint8Array } {
  const rng = mulberry32(seed);
  const { width, height, colorType, bitDepth } = spec;
  const samples = SAMPLES[colorType];
  const maxSample = 2 ** bitDepth - 1;
  const paletteSize = colorType === 3 ? 2 ** bitDepth : 0;
  const palette = Uint8Array.from({ length: paletteSize * 3 }, () => Math.floor(rng() * 256));
  const pixels = Array.from({ length: width * height }, () =>
    Array.from({ length: samples }, () => Math.floor(rng() * (colorType === 3 ? paletteSize : maxSample + 1))),
  );
  const rgb = new Uint8Array(width * height * 3);
  pixels.forEach((s, p) => {
    const to8 = (v: number) => (bitDepth === 16 ? v >> 8 : bitDepth === 8 ? v : Math.round((v * 255) / maxSample));
    const colour =
      colorType === 3
        ? [palette[3 * s[0]], palette[3 * s[0] + 1], palette[3 * s[0] + 2]]
        : colorType === 0 || colorType === 4
          ? [to8(s[0]), to8(s[0]), to8(s[0])]
          : [to8(s[0]), to8(s[1]), to8(s[2])];
    rgb.set(colour, 3 * p);
  });

  const passes = spec.interlace
    ? [
        [0, 0, 8, 8],
        [4, 0, 8, 8],
        [0, 4, 4, 8],
        [2, 0, 4, 4],
        [0, 2, 2, 4],
        [1, 0, 2, 2],
        [0, 1, 1, 2],
      ]
    : [[0, 0, 1, 1]];
  const raw: number[] = [];
  const bpp = Math.max(1, (samples * bitDepth) / 8);
  let rowNumber = 0;
  for (const [x0, y0, dx, dy] of passes) {
    const pw = Math.ceil((width - x0) / dx);
    const ph = Math.ceil((height - y0) / dy);
    if (pw <= 0 || ph <= 0) continue;
    let prev: number[] | undefined;
    for (let y = y0; y < height; y += dy) {
      // Pack the row's samples MSB-first.
      const bits: number[] = [];
      for (let x = x0; x < width; x += dx)
        for (const v of pixels[y * width + x]) {
          for (let b = bitDepth - 1; b >= 0; b--) bits.push((v >> b) & 1);
        }
      while (bits.length % 8) bits.push(0);
      const row = Array.from({ length: bits.length / 8 }, (_, i) =>
        bits.slice(8 * i, 8 * i + 8).reduce((a, b) => a * 2 + b, 0),
      );
      const filter = rowNumber++ % 5;
      raw.push(filter);
      row.forEach((x, i) => {
        const a = i >= bpp ? row[i - bpp] : 0;
        const b = prev ? prev[i] : 0;
        const c = prev && i >= bpp ? prev[i - bpp] : 0;
        const p = a + b - c;
        const pred = [
          0,
          a,
          b,
          (a + b) >> 1,
          Math.abs(p - a) <= Math.abs(p - b) && Math.abs(p - a) <= Math.abs(p - c)
            ? a
            : Math.abs(p - b) <= Math.abs(p - c)
              ? b
              : c,
        ][filter];
        raw.push((x - pred) & 0xff);
      });
      prev = row;
    }
  }
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  ihdr.set([bitDepth, colorType, 0, 0, spec.interlace ? 1 : 0], 8);
  const chunks = [chunk('IHDR', ihdr)];
  if (colorType === 3) chunks.push(chunk('PLTE', palette));
  chunks.push(chunk('tEXt', new TextEncoder().encode('Comment\0made by data-decode.test.ts')));
  // Split the zlib stream over two IDATs, as encoders may.
  const z = deflateSync(Uint8Array.from(raw));
  const half = Math.floor(z.length / 2);
  chunks.push(chunk('IDAT', z.subarray(0, half)), chunk('IDAT', z.subarray(half)), chunk('IEND', new Uint8Array(0)));
  const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  return { file: Uint8Array.from([...signature, ...chunks.flatMap((c) => Array.from(c))]), rgb };
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, data.length);
  const typeBytes = new TextEncoder().encode(type);
  out.set(typeBytes, 4);
  out.set(data, 8);
  v.setUint32(8 + data.length, zlibCrc32(out.subarray(4, 8 + data.length)));
  return out;
}

const inflate = (b: Uint8Array) => inflateSync(b);

describe('PNG', () => {
  const specs: Omit<PngSpec, 'interlace' | 'width' | 'height'>[] = [
    { colorType: 0, bitDepth: 1 },
    { colorType: 0, bitDepth: 2 },
    { colorType: 0, bitDepth: 4 },
    { colorType: 0, bitDepth: 8 },
    { colorType: 0, bitDepth: 16 },
    { colorType: 2, bitDepth: 8 },
    { colorType: 2, bitDepth: 16 },
    { colorType: 3, bitDepth: 1 },
    { colorType: 3, bitDepth: 2 },
    { colorType: 3, bitDepth: 4 },
    { colorType: 3, bitDepth: 8 },
    { colorType: 4, bitDepth: 8 },
    { colorType: 4, bitDepth: 16 },
    { colorType: 6, bitDepth: 8 },
    { colorType: 6, bitDepth: 16 },
  ];
  for (const s of specs) {
    it(`colour type ${s.colorType}, ${s.bitDepth}-bit, plain and Adam7, decodes to the encoded RGB`, async () => {
      for (const interlace of [false, true]) {
        for (const [width, height] of [
          [11, 7],
          [3, 2],
          [1, 1],
        ]) {
          const { file, rgb } = encodePng({ ...s, width, height, interlace }, s.colorType * 100 + s.bitDepth + width);
          const im = decodeImage(file, { inflate, name: 't.png' });
          expect([im.width, im.height, im.channels]).toEqual([width, height, 3]);
          expect(Array.from(im.data)).toEqual(Array.from(rgb));
          // The platform's DecompressionStream gives the same pixels.
          const viaPlatform = await decodeImageAsync(file, { name: 't.png' });
          expect([viaPlatform.width, viaPlatform.height]).toEqual([width, height]);
          expect(Buffer.from(viaPlatform.data).equals(Buffer.from(rgb))).toBe(true);
        }
      }
    });
  }

  it('corrupt files fail naming the file and the problem', () => {
    const { file } = encodePng({ width: 5, height: 4, colorType: 2, bitDepth: 8, interlace: false }, 1);
    expect(() => decodeImage(file, { name: 'a.png' })).toThrow(
      /a\.png: PNG needs an inflate function.*decodeImageAsync/,
    );
    const flipped = file.slice();
    flipped[40] ^= 0xff;
    expect(() => decodeImage(flipped, { inflate, name: 'b.png' })).toThrow(/b\.png: corrupt PNG: CRC mismatch/);
    expect(() => decodeImage(file.subarray(0, file.length - 20), { inflate, name: 'c.png' })).toThrow(
      /c\.png: truncated PNG/,
    );
  });
  it('corrupt image data gives the same typed error through zlib and through DecompressionStream', async () => {
    const { file } = encodePng({ width: 9, height: 6, colorType: 2, bitDepth: 8, interlace: false }, 3);
    // Rebuild the file with IDATs whose CRCs are right but whose zlib stream is not.
    const idatAt = file.findIndex((_, i) => String.fromCharCode(...file.subarray(i, i + 4)) === 'IDAT') - 4;
    const head = file.subarray(0, idatAt);
    const iend = chunk('IEND', new Uint8Array(0));
    const z = deflateSync(new Uint8Array(6 * (9 * 3 + 1)).map((_, i) => (i * 31) & 0xff));
    const garbled = z.slice();
    garbled[4] ^= 0xff;
    garbled[5] ^= 0x5a;
    const cases: [string, Uint8Array][] = [
      ['garbled', garbled],
      ['cut short', z.subarray(0, z.length - 6)],
      ['not zlib', Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8])],
    ];
    for (const [what, idat] of cases) {
      const bad = Uint8Array.from([...head, ...chunk('IDAT', idat), ...iend]);
      const sync = (() => {
        try {
          decodeImage(bad, { inflate, name: 'bad.png' });
        } catch (e) {
          return e;
        }
      })();
      const async = await decodePngAsync(bad, 'bad.png').then(
        () => undefined,
        (e: unknown) => e,
      );
      for (const [path, e] of [
        ['zlib', sync],
        ['DecompressionStream', async],
      ] as const) {
        expect(e, `${what} via ${path}`).toBeInstanceOf(DataError);
        expect((e as DataError).file).toBe('bad.png');
        expect((e as Error).message, `${what} via ${path}`).toMatch(
          /^bad\.png: corrupt PNG: image data does not inflate \(.+\)$/,
        );
      }
      // In Node both inflate with zlib underneath: the whole message is the same.
      expect((async as Error).message, what).toBe((sync as Error).message);
    }
  });
});

// ---- image folders ---------------------------------------------------------------------------

describe('imageFolder', () => {
  const root = mkdtempSync(join(tmpdir(), 'graft-folder-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  /** A random RGB image written as JPEG (quality 95) through jpeg-js's encoder. */
  function writeJpeg(path: string, width: number, height: number, seed: number): ByteImage {
    const rng = mulberry32(seed);
    // Smooth content (JPEG's home ground): a gradient plus a little noise.
    const rgba = new Uint8Array(width * height * 4);
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++)
        for (let c = 0; c < 4; c++) {
          rgba[(y * width + x) * 4 + c] =
            c === 3
              ? 255
              : Math.min(255, Math.floor(((x + y * c) * 200) / (width + height * 2)) + Math.floor(rng() * 8));
        }
    writeFileSync(path, jpeg.encode({ width, height, data: rgba }, 95).data);
    const rgb = new Uint8Array(width * height * 3);
    for (let p = 0; p < width * height; p++) rgb.set(rgba.subarray(4 * p, 4 * p + 3), 3 * p);
    return { width, height, channels: 3, data: rgb };
  }

  it('labels by code-point-sorted class folders, recursing and skipping other files', async () => {
    const dir = join(root, 'ok');
    // 'B' < 'a' < 'cat' by code point (a locale sort would put 'a' first).
    for (const d of ['a', 'B', 'cat/nested', '.hidden']) mkdirSync(join(dir, d), { recursive: true });
    const jpg = writeJpeg(join(dir, 'a', 'x.JPG'), 16, 8, 1);
    writeJpeg(join(dir, 'B', 'z.jpeg'), 9, 9, 2);
    writeJpeg(join(dir, 'B', 'y.jpg'), 4, 4, 3);
    const { file, rgb } = encodePng({ width: 6, height: 5, colorType: 6, bitDepth: 8, interlace: true }, 4);
    writeFileSync(join(dir, 'cat', 'nested', 'p.png'), file);
    writeFileSync(join(dir, 'cat', 'notes.txt'), 'not an image');
    writeJpeg(join(dir, '.hidden', 'h.jpg'), 4, 4, 5);

    const ds = imageFolder(dir);
    expect(ds.classes).toEqual(['B', 'a', 'cat']);
    expect(ds.files.map((f) => f.slice(dir.length + 1))).toEqual([
      'B/y.jpg',
      'B/z.jpeg',
      'a/x.JPG',
      'cat/nested/p.png',
    ]);
    expect(Array.from(ds.labels)).toEqual([0, 0, 1, 2]);
    expect(ds.length).toBe(4);
    const png = await ds.get(3);
    expect(png.label).toBe(2);
    expect(Array.from(png.image.data)).toEqual(Array.from(rgb));
    const x = await ds.get(2);
    expect([x.image.width, x.image.height, x.label]).toEqual([16, 8, 1]);
    let err = 0;
    x.image.data.forEach((v, i) => (err += Math.abs(v - jpg.data[i])));
    expect(err / jpg.data.length).toBeLessThan(4); // quality-95 JPEG of what was written
  });

  it('an empty class folder, a missing root and an undecodable file are errors that name the path', async () => {
    const dir = join(root, 'bad');
    mkdirSync(join(dir, 'good'), { recursive: true });
    mkdirSync(join(dir, 'empty'), { recursive: true });
    writeFileSync(join(dir, 'empty', 'readme.md'), '#');
    writeJpeg(join(dir, 'good', 'ok.jpg'), 4, 4, 6);
    expect(() => imageFolder(dir)).toThrow(
      new RegExp(
        `class folder ${join(dir, 'empty')} holds no images \\(1 other files\\); accepted extensions: .jpg .jpeg .png`,
      ),
    );
    rmSync(join(dir, 'empty'), { recursive: true });
    writeFileSync(join(dir, 'good', 'broken.jpg'), new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0, 16, 1, 2]));
    writeFileSync(join(dir, 'good', 'text.png'), 'hello');
    const ds = imageFolder(dir);
    expect(ds.files.map((f) => f.slice(dir.length + 1))).toEqual(['good/broken.jpg', 'good/ok.jpg', 'good/text.png']);
    await expect(ds.get(0)).rejects.toThrow(new RegExp(`^${join(dir, 'good', 'broken.jpg')}: cannot decode JPEG`));
    await expect(ds.get(2)).rejects.toThrow(new RegExp(`^${join(dir, 'good', 'text.png')}: not a JPEG or PNG`));
    expect((await ds.get(1)).image.width).toBe(4);
    expect(() => imageFolder(join(root, 'nope'))).toThrow(/does not exist; expected a folder of class folders/);
    mkdirSync(join(root, 'flat'));
    writeJpeg(join(root, 'flat', 'a.jpg'), 4, 4, 7);
    expect(() => imageFolder(join(root, 'flat'))).toThrow(/has no class folders; expected root\/<class>\/<image>/);
  });
});
