// torchvision's ImageFolder layout: root/<class>/**/<image>, labels by sorted class folder name.
// Files are listed up front and decoded on get() (see ./image-loader.ts for the worker-pool
// loader the CLI uses). Node-only.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { checkIndex, type Dataset, type Sample } from '../datasets.ts';
import { decodeImage } from '../decode.ts';
import { DataError } from '../errors.ts';
import type { ByteImage } from '../tensor-image.ts';
import { decodeImageFile, type JpegDecoder } from './decode-native.ts';

export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png'];

export interface ImageFolderDataset extends Omit<Dataset, 'classes'>, ImageFolderListing {
  readonly root: string;
}

export interface ImageFolderOptions {
  /** Lower-case, with the dot; default .jpg .jpeg .png. Other files are skipped. */
  readonly extensions?: readonly string[];
  /** JPEG decoder for get(): 'sharp' (libjpeg-turbo, Pillow's pixels; default) or 'jpeg-js'. */
  readonly jpeg?: JpegDecoder;
}

/**
 * Lists root/<class>/… (class folders sorted by code point, as Python's sorted(); files found
 * recursively, sorted; hidden entries skipped). Throws when root has no class folders or a
 * class folder holds no images; get(i) rejects naming the file when it does not decode.
 */
export function imageFolder(root: string, options: ImageFolderOptions = {}): ImageFolderDataset {
  const listing = listImageFolder(root, options, 'imageFolder');
  const { files, labels } = listing;
  return {
    root,
    ...listing,
    length: files.length,
    async get(index): Promise<Sample> {
      checkIndex(index, files.length, `imageFolder(${root})`);
      return { image: await decodeImageFile(files[index], { jpeg: options.jpeg }), label: labels[index] };
    },
  };
}

export interface ImageFolderListing {
  readonly classes: readonly string[];
  /** Every image path, in label-then-path order; files[i] is sample i. */
  readonly files: readonly string[];
  readonly labels: Uint32Array;
}

/**
 * The class folders and image files of root/<class>/… without decoding anything; throws a
 * DataError (prefixed with `caller`) for a missing root, a file, a folder with no class
 * folders, or a class folder with no images.
 */
export function listImageFolder(
  root: string,
  options: ImageFolderOptions = {},
  caller = 'image folder',
): ImageFolderListing {
  const extensions = new Set((options.extensions ?? IMAGE_EXTENSIONS).map((e) => e.toLowerCase()));
  let rootStat;
  try {
    rootStat = statSync(root);
  } catch {
    throw new DataError(`${caller}: ${root} does not exist; expected a folder of class folders (root/<class>/<image>)`);
  }
  if (!rootStat.isDirectory()) {
    throw new DataError(
      `${caller}: ${root} is not a folder; expected a folder of class folders (root/<class>/<image>)`,
    );
  }
  const entries = listEntries(root);
  const classes = entries.filter((e) => e.isDirectory).map((e) => e.name);
  if (classes.length === 0) {
    const found = entries.length === 0 ? 'it is empty' : `it holds ${entries.length} files and no folders`;
    throw new DataError(
      `${caller}: ${root} has no class folders; expected root/<class>/<image>, one folder per class (${found})`,
    );
  }
  const files: string[] = [];
  const labels: number[] = [];
  classes.forEach((cls, label) => {
    const dir = join(root, cls);
    const found: string[] = [];
    let skipped = 0;
    walk(dir, (path) => {
      if (extensions.has(extname(path).toLowerCase())) found.push(path);
      else skipped++;
    });
    if (found.length === 0) {
      throw new DataError(
        `${caller}: class folder ${dir} holds no images (${skipped} other files); accepted extensions: ${[...extensions].join(' ')}`,
      );
    }
    for (const f of found) {
      files.push(f);
      labels.push(label);
    }
  });
  return { classes, files, labels: Uint32Array.from(labels) };
}

/**
 * Reads and decodes one JPEG or PNG to RGB, synchronously, with the pure-JS JPEG decoder (its
 * pixels differ slightly from Pillow's); decodeImageFile is the libjpeg-turbo path. Errors name the path.
 */
export function readImageFile(path: string): ByteImage {
  return decodeImage(readFileSync(path), { name: path, inflate: (b) => inflateSync(b) });
}

interface Entry {
  name: string;
  isDirectory: boolean;
}

function listEntries(dir: string): Entry[] {
  return readdirSync(dir)
    .filter((name) => !name.startsWith('.'))
    .sort(byCodePoint)
    .map((name) => ({ name, isDirectory: statSync(join(dir, name)).isDirectory() }));
}

function walk(dir: string, visit: (path: string) => void): void {
  for (const e of listEntries(dir)) {
    const path = join(dir, e.name);
    if (e.isDirectory) walk(path, visit);
    else visit(path);
  }
}

function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
