// The digits reader on the copy shipped in models-onnx/samples/ (and Debian's python3-sklearn
// original, which it must equal byte for byte when installed), checked against the file
// decompressed by the gzip program and parsed here by a different route; then bad files.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { DigitsFormatError, readDigits, SKLEARN_DIGITS_PATH } from '../src/data/node/index.ts';
import { mulberry32 } from './helpers/random.ts';

const SHIPPED = 'models-onnx/samples/digits.csv.gz';

/** Rows of the file as the gzip program decompresses it, numbers matched by a regular expression. */
function referenceRows(path: string): number[][] {
  const text = execFileSync('gzip', ['-dc', path], { encoding: 'utf8', maxBuffer: 1 << 26 });
  return text
    .split(/\r?\n/)
    .filter((l) => /\d/.test(l))
    .map((l) => (l.match(/\d+/g) ?? []).map((s) => parseInt(s, 10)));
}

describe('readDigits', () => {
  it('reads the shipped digits.csv.gz: 1797 rows, labels 0–9, pixels as the gzip program sees them', () => {
    const data = readDigits(SHIPPED);
    const rows = referenceRows(SHIPPED);
    expect(rows.length).toBe(1797);
    expect(data.length).toBe(rows.length);
    expect(data.classes).toHaveLength(10);
    const labels = Array.from(data.labels);
    expect(Math.min(...labels)).toBe(0);
    expect(Math.max(...labels)).toBe(9);
    // Every class present with the counts the reference sees.
    for (let c = 0; c < 10; c++)
      expect(labels.filter((l) => l === c).length).toBe(rows.filter((r) => r[64] === c).length);
    const rng = mulberry32(91);
    for (let k = 0; k < 25; k++) {
      const i = Math.floor(rng() * rows.length);
      const sample = data.get(i) as {
        image: { width: number; height: number; channels: number; data: Uint8Array };
        label: number;
      };
      expect(sample.label).toBe(rows[i][64]);
      expect([sample.image.width, sample.image.height, sample.image.channels]).toEqual([8, 8, 1]);
      const want = rows[i].slice(0, 64).map((v) => Math.round((v / 16) * 255));
      expect(Array.from(sample.image.data)).toEqual(want);
    }
    // A few values spelled out from the file's first row (zcat … | head -1): 0,0,5,13,9,1,0,0,…, label 0.
    expect(Array.from(data.pixels.subarray(0, 6))).toEqual([0, 0, 80, 207, 143, 16]);
  });

  it('the shipped copy is the python3-sklearn file unchanged', () => {
    if (!existsSync(SKLEARN_DIGITS_PATH))
      throw new Error(
        `${SKLEARN_DIGITS_PATH} is missing: apt-get install python3-sklearn (the test compares the shipped copy with it)`,
      );
    expect(Buffer.compare(readFileSync(SHIPPED), readFileSync(SKLEARN_DIGITS_PATH))).toBe(0);
  });

  const dir = mkdtempSync(join(tmpdir(), 'digits-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const row = (label: number | string, pixel = '3') => [...Array(64).fill(pixel), label].join(',');

  it.each([
    ['short row', [row(1), '1,2,3'], /line 2: 3 values; expected 65/],
    ['label out of range', [row(1), row(1), row(10)], /line 3: value 65 is '10'; expected a label, an integer 0–9/],
    ['pixel above 16', [row(2, '17')], /line 1: value 1 is '17'; expected a pixel count, an integer 0–16/],
    ['not a number', [row('x')], /line 1: value 65 is 'x'/],
  ])('refuses a %s, naming the file and line', (_, lines, message) => {
    const file = join(dir, 'bad.csv.gz');
    writeFileSync(file, gzipSync(Buffer.from(lines.join('\n') + '\n')));
    expect(() => readDigits(file)).toThrow(DigitsFormatError);
    expect(() => readDigits(file)).toThrow(message);
    expect(() => readDigits(file)).toThrow(file);
  });

  it('refuses a missing file and corrupt gzip, naming the file', () => {
    expect(() => readDigits(join(dir, 'none.csv'))).toThrow(/none\.csv: not found; install `python3-sklearn`/);
    const corrupt = join(dir, 'corrupt.csv.gz');
    writeFileSync(corrupt, gzipSync(Buffer.from(row(3))).subarray(0, 12));
    expect(() => readDigits(corrupt)).toThrow(/corrupt\.csv\.gz: corrupt gzip data/);
  });

  it('reads plain (not gzipped) CSV too', () => {
    const file = join(dir, 'plain.csv');
    writeFileSync(file, `${row(4, '16')}\n${row(7, '0')}\n`);
    const d = readDigits(file);
    expect(Array.from(d.labels)).toEqual([4, 7]);
    expect(d.pixels[0]).toBe(255);
    expect(d.pixels[64]).toBe(0);
  });
});
