// Zalando's Fashion-MNIST (github.com/zalandoresearch/fashion-mnist) from the files Debian's
// dataset-fashion-mnist package installs. Node-only.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { checkIndex, type Dataset } from '../datasets.ts';
import type { ByteImage } from '../tensor-image.ts';
import { readIdxFile } from './idx-files.ts';

export const FASHION_MNIST_ROOT = '/usr/share/datasets/fashion-mnist';

/** Label order as Zalando documents it. */
export const FASHION_MNIST_CLASSES: readonly string[] = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

export interface IdxImageDataset extends Dataset {
  /** All pixels, N×H×W bytes; get(i) returns views into it. */
  readonly pixels: Uint8Array;
  readonly labels: Uint8Array;
}

/**
 * The 60,000 training or 10,000 test images, 28×28 gray (channels 1: add grayscaleToRgb for an
 * ImageNet network). `root` holds {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz].
 */
export function fashionMnist(split: 'train' | 'test', options: { root?: string } = {}): IdxImageDataset {
  const root = options.root ?? FASHION_MNIST_ROOT;
  const prefix = split === 'train' ? 'train' : 't10k';
  if (split !== 'train' && split !== 'test')
    throw new RangeError(`fashionMnist: split is 'train' or 'test', got '${split}'`);
  const images = findFile(root, `${prefix}-images-idx3-ubyte`);
  const labels = findFile(root, `${prefix}-labels-idx1-ubyte`);
  return idxImageDataset(images, labels, FASHION_MNIST_CLASSES);
}

/** Any MNIST-layout pair of files: images [N, H, W] uint8 and labels [N] uint8. */
export function idxImageDataset(
  imagesPath: string,
  labelsPath: string,
  classes: readonly string[] | number,
): IdxImageDataset {
  const images = readIdxFile(imagesPath);
  const labels = readIdxFile(labelsPath);
  if (images.type !== 'uint8' || images.dims.length !== 3) {
    throw new Error(`${imagesPath}: expected uint8 images [N, H, W], got ${images.type} [${images.dims.join(', ')}]`);
  }
  if (labels.type !== 'uint8' || labels.dims.length !== 1) {
    throw new Error(`${labelsPath}: expected uint8 labels [N], got ${labels.type} [${labels.dims.join(', ')}]`);
  }
  const [n, height, width] = images.dims;
  if (labels.dims[0] !== n)
    throw new Error(`${labelsPath}: ${labels.dims[0]} labels for the ${n} images in ${imagesPath}`);
  const count = typeof classes === 'number' ? classes : classes.length;
  const labelData = labels.data as Uint8Array;
  const bad = labelData.findIndex((l) => l >= count);
  if (bad >= 0) throw new Error(`${labelsPath}: label ${bad} is ${labelData[bad]}, but there are ${count} classes`);
  const pixels = images.data as Uint8Array;
  const size = height * width;
  return {
    length: n,
    classes,
    pixels,
    labels: labelData,
    get(index) {
      checkIndex(index, n, imagesPath);
      const image: ByteImage = { width, height, channels: 1, data: pixels.subarray(index * size, (index + 1) * size) };
      return { image, label: labelData[index] };
    },
  };
}

function findFile(root: string, base: string): string {
  for (const name of [`${base}.gz`, base]) {
    const path = join(root, name);
    if (existsSync(path)) return path;
  }
  throw new Error(
    `Fashion-MNIST: ${join(root, `${base}.gz`)} not found. Install the data with ` +
      '`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass { root } naming a folder that holds ' +
      '{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz',
  );
}
