// The 1,797 8×8 handwritten digits (UCI "Optical Recognition of Handwritten Digits", test part)
// as scikit-learn ships them in sklearn/datasets/data/digits.csv.gz (BSD-3-Clause): one row per
// image, 64 pixel counts 0–16 (row-major), then the label 0–9. Node-only.

import { existsSync, readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { checkIndex, type Dataset } from '../datasets.ts';
import { DataError } from '../errors.ts';
import type { ByteImage } from '../tensor-image.ts';

/** Where Debian's python3-sklearn installs the file. */
export const SKLEARN_DIGITS_PATH = '/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz';
export const DIGITS_CLASSES: readonly string[] = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];
/** Each pixel counts the set bits of a 4×4 block of the original 32×32 bitmap: 0–16. */
export const DIGITS_LEVELS = 16;
const SIDE = 8;

/** A row or the file itself is not what digits.csv holds; names the file and the 1-based line. */
export class DigitsFormatError extends DataError {
  constructor(
    file: string,
    readonly line: number | undefined,
    message: string,
  ) {
    super(`${line !== undefined ? `line ${line}: ` : ''}${message}`, { file });
    this.name = 'DigitsFormatError';
  }
}

export interface DigitsDataset extends Dataset {
  /** N×8×8 gray bytes, pixel = round(count·255/16) so ink is 255 as in Fashion-MNIST. */
  readonly pixels: Uint8Array;
  readonly labels: Uint8Array;
}

/**
 * Reads digits.csv(.gz) into memory (gzip detected by its magic bytes). Pixel counts 0–16 are
 * scaled to 0–255 so the images go through the same byte preprocessing as any gray photo.
 */
export function readDigits(path: string = SKLEARN_DIGITS_PATH): DigitsDataset {
  if (!existsSync(path)) {
    throw new DigitsFormatError(
      path,
      undefined,
      'not found; install `python3-sklearn` (Debian/Ubuntu) or pass the path of a digits.csv[.gz] (64 pixel counts 0–16 then a label 0–9 per row)',
    );
  }
  let bytes: Uint8Array = readFileSync(path);
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = gunzipSync(bytes);
    } catch (e) {
      throw new DigitsFormatError(path, undefined, `corrupt gzip data: ${(e as Error).message}`);
    }
  }
  const lines = new TextDecoder().decode(bytes).split('\n');
  if (lines[lines.length - 1].trim() === '') lines.pop();
  const n = lines.length;
  if (n === 0) throw new DigitsFormatError(path, undefined, 'holds no rows');
  const pixels = new Uint8Array(n * SIDE * SIDE);
  const labels = new Uint8Array(n);
  const cells = SIDE * SIDE + 1;
  lines.forEach((text, row) => {
    const fields = text.trim().split(',');
    if (fields.length !== cells)
      throw new DigitsFormatError(
        path,
        row + 1,
        `${fields.length} values; expected ${cells} (64 pixel counts then the label)`,
      );
    for (let k = 0; k < cells; k++) {
      const v = Number(fields[k]);
      const max = k < SIDE * SIDE ? DIGITS_LEVELS : DIGITS_CLASSES.length - 1;
      if (!Number.isInteger(v) || v < 0 || v > max || fields[k].trim() === '') {
        throw new DigitsFormatError(
          path,
          row + 1,
          `value ${k + 1} is '${fields[k]}'; expected ${k < SIDE * SIDE ? 'a pixel count' : 'a label'}, an integer 0–${max}`,
        );
      }
      if (k < SIDE * SIDE) pixels[row * SIDE * SIDE + k] = Math.round((v * 255) / DIGITS_LEVELS);
      else labels[row] = v;
    }
  });
  const size = SIDE * SIDE;
  return {
    length: n,
    classes: DIGITS_CLASSES,
    pixels,
    labels,
    get(index) {
      checkIndex(index, n, path);
      const image: ByteImage = {
        width: SIDE,
        height: SIDE,
        channels: 1,
        data: pixels.subarray(index * size, (index + 1) * size),
      };
      return { image, label: labels[index] };
    },
  };
}
