// IDX parsing on hand-built bytes, then on the real Fashion-MNIST files from Debian's
// dataset-fashion-mnist package (missing data fails with the install command, never skips).
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { parseIdx } from '../src/data/idx.ts';
import { fashionMnist, FASHION_MNIST_CLASSES, FASHION_MNIST_ROOT, readIdxFile } from '../src/data/node/index.ts';
import { mulberry32 } from './helpers/random.ts';

/** An IDX file written the long way: header bytes, then each value big-endian. */
function buildIdx(typeByte: number, dims: number[], values: number[], size: number): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + values.length * size);
  const view = new DataView(out.buffer);
  out[2] = typeByte;
  out[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  let o = 4 + 4 * dims.length;
  for (const v of values) {
    if (typeByte === 0x08) view.setUint8(o, v);
    else if (typeByte === 0x09) view.setInt8(o, v);
    else if (typeByte === 0x0b) view.setInt16(o, v, false);
    else if (typeByte === 0x0c) view.setInt32(o, v, false);
    else if (typeByte === 0x0d) view.setFloat32(o, v, false);
    else view.setFloat64(o, v, false);
    o += size;
  }
  return out;
}

describe('parseIdx on hand-built bytes', () => {
  const rng = mulberry32(7);

  it('reads uint8 images: magic, dims and every value', () => {
    const values = Array.from({ length: 3 * 4 * 5 }, () => Math.floor(rng() * 256));
    const bytes = buildIdx(0x08, [3, 4, 5], values, 1);
    // The header spelled out by hand as well: 00 00 08 03, then 3, 4, 5 as big-endian uint32.
    expect(Array.from(bytes.subarray(0, 16))).toEqual([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]);
    const idx = parseIdx(bytes);
    expect(idx.type).toBe('uint8');
    expect(idx.dims).toEqual([3, 4, 5]);
    expect(Array.from(idx.data)).toEqual(values);
  });

  it('reads the multi-byte types big-endian', () => {
    const ints = Array.from({ length: 6 }, () => Math.floor((rng() - 0.5) * 2 ** 31));
    expect(Array.from(parseIdx(buildIdx(0x0c, [2, 3], ints, 4)).data)).toEqual(ints);
    const shorts = Array.from({ length: 4 }, () => Math.floor((rng() - 0.5) * 60000));
    expect(Array.from(parseIdx(buildIdx(0x0b, [4], shorts, 2)).data)).toEqual(shorts);
    const bytes = Array.from({ length: 4 }, () => Math.floor((rng() - 0.5) * 250));
    expect(Array.from(parseIdx(buildIdx(0x09, [4], bytes, 1)).data)).toEqual(bytes);
    const floats = Array.from({ length: 5 }, () => Math.fround(rng() * 10 - 5));
    const f32 = parseIdx(buildIdx(0x0d, [5], floats, 4));
    expect(f32.type).toBe('float32');
    expect(Array.from(f32.data)).toEqual(floats);
    const doubles = Array.from({ length: 3 }, () => rng() - 0.5);
    expect(Array.from(parseIdx(buildIdx(0x0e, [1, 3], doubles, 8)).data)).toEqual(doubles);
  });

  it('reads from a view at a non-zero offset', () => {
    const inner = buildIdx(0x0c, [2], [-5, 70000], 4);
    const outer = new Uint8Array(inner.length + 3);
    outer.set(inner, 3);
    expect(Array.from(parseIdx(outer.subarray(3)).data)).toEqual([-5, 70000]);
  });

  it('rejects malformed input with messages that say what is wrong', () => {
    const good = buildIdx(0x08, [2, 2], [1, 2, 3, 4], 1);
    expect(() => parseIdx(gzipSync(good), 'x.gz')).toThrow(/x\.gz: is gzip-compressed/);
    expect(() => parseIdx(good.subarray(0, 3), 'f')).toThrow(/too short/);
    const badMagic = good.slice();
    badMagic[0] = 1;
    expect(() => parseIdx(badMagic, 'f')).toThrow(/not an IDX file: magic starts 0x01 0x00/);
    const badType = good.slice();
    badType[2] = 0x07;
    expect(() => parseIdx(badType, 'f')).toThrow(/unknown IDX type byte 0x07/);
    expect(() => parseIdx(good.subarray(0, 9), 'f')).toThrow(/truncated header/);
    expect(() => parseIdx(good.subarray(0, good.length - 1), 'f')).toThrow(
      /need 16 bytes, file has 15 \(truncated\?\)/,
    );
    const long = new Uint8Array(good.length + 2);
    long.set(good);
    expect(() => parseIdx(long, 'f')).toThrow(/trailing bytes/);
  });

  describe('readIdxFile', () => {
    const dir = mkdtempSync(join(tmpdir(), 'graft-idx-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('reads gzipped and plain files alike, and names the path in errors', () => {
      const bytes = buildIdx(0x08, [2, 3], [9, 8, 7, 6, 5, 4], 1);
      writeFileSync(join(dir, 'a.gz'), gzipSync(bytes));
      writeFileSync(join(dir, 'a'), bytes);
      expect(Array.from(readIdxFile(join(dir, 'a.gz')).data)).toEqual([9, 8, 7, 6, 5, 4]);
      expect(Array.from(readIdxFile(join(dir, 'a')).data)).toEqual([9, 8, 7, 6, 5, 4]);
      writeFileSync(join(dir, 'bad'), bytes.subarray(0, 14));
      expect(() => readIdxFile(join(dir, 'bad'))).toThrow(new RegExp(`${join(dir, 'bad')}: dims`));
    });
  });
});

describe('Fashion-MNIST (Debian dataset-fashion-mnist)', () => {
  it('a missing root names the apt package', () => {
    expect(() => fashionMnist('train', { root: '/nonexistent/fmnist' })).toThrow(
      /\/nonexistent\/fmnist\/train-images-idx3-ubyte\.gz not found.*apt-get install dataset-fashion-mnist/,
    );
  });

  if (!existsSync(join(FASHION_MNIST_ROOT, 'train-images-idx3-ubyte.gz'))) {
    it('is installed', () => {
      throw new Error(`${FASHION_MNIST_ROOT} is missing: sudo apt-get install -y dataset-fashion-mnist`);
    });
    return;
  }

  // Zalando documents 60,000 training and 10,000 test images, 28×28, ten balanced classes;
  // the counts below come from the files, so the parser and the data are checked together.
  for (const [split, n] of [
    ['train', 60000],
    ['test', 10000],
  ] as const) {
    it(`${split}: ${n} images of 28×28, ${n / 10} per class`, async () => {
      const ds = fashionMnist(split);
      expect(ds.length).toBe(n);
      expect(ds.classes).toEqual(FASHION_MNIST_CLASSES);
      expect(ds.pixels.length).toBe(n * 28 * 28);
      const histogram = new Array(10).fill(0);
      for (let i = 0; i < ds.length; i++) histogram[ds.labels[i]]++;
      expect(histogram).toEqual(new Array(10).fill(n / 10));

      const sample = await ds.get(n - 1);
      expect([sample.image.width, sample.image.height, sample.image.channels]).toEqual([28, 28, 1]);
      expect(sample.label).toBe(ds.labels[n - 1]);
      expect(Array.from(sample.image.data)).toEqual(Array.from(ds.pixels.subarray((n - 1) * 784, n * 784)));
      // Real photographs of clothes on black: dark borders, a bright centre somewhere.
      let mean = 0;
      for (const v of ds.pixels.subarray(0, 1000 * 784)) mean += v;
      mean /= 1000 * 784;
      expect(mean).toBeGreaterThan(40);
      expect(mean).toBeLessThan(110);
      expect(() => ds.get(n)).toThrow(/index 60000|index 10000/);
    });
  }

  it('the raw files agree with the dataset view', () => {
    const labels = readIdxFile(join(FASHION_MNIST_ROOT, 't10k-labels-idx1-ubyte.gz'));
    expect(labels.type).toBe('uint8');
    expect(labels.dims).toEqual([10000]);
    // The first four test labels, as the usual tutorials print them: Ankle boot, Pullover, Trouser, Trouser.
    expect(Array.from(labels.data.subarray(0, 4))).toEqual([9, 2, 1, 1]);
  });
});
