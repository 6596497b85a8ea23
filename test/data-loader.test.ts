// The worker-pool image loader (openImageFolder, loadImageFiles) on a generated folder: every
// sample equals decoding + preprocessing on the main thread (both checked against Pillow and the
// float64 reference elsewhere), labels and indices line up, bad files are skipped with a warning
// naming them, bad folders and mismatched classes are refused naming what is wrong, and the
// pool never holds the process open.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataError, evalTransform, sampleRng, trainTransform, type Augment, type Batch } from '../src/data/index.ts';
import { decodeImageFile, loadImageFiles, openImageFolder, type ImageFolderSource } from '../src/data/node/index.ts';
import { preprocessPreset } from '../src/graph/model-metadata.ts';
import { mulberry32 } from './helpers/random.ts';

const DARKNET = '/usr/share/darknet/data';
const SPEC = preprocessPreset('torchvision', 64);
const root = mkdtempSync(join(tmpdir(), 'graft-loader-'));
const folder = join(root, 'folder');
const BAD = ['cat/corrupt.jpg', 'cat/truncated.jpg', 'dog/notes.png'];

/** Seeded noise as raw pixels, encoded by sharp (an encoder independent of our decoders). */
function noise(width: number, height: number, channels: 1 | 2 | 3 | 4, seed: number): Buffer {
  const rng = mulberry32(seed);
  return Buffer.from(Array.from({ length: width * height * channels }, () => Math.floor(rng() * 256)));
}

beforeAll(async () => {
  for (const dir of ['cat', 'dog/nested', '.hidden-class', 'empty-later'])
    mkdirSync(join(folder, dir), { recursive: true });
  rmSync(join(folder, 'empty-later'), { recursive: true });
  copyFileSync(join(DARKNET, 'dog.jpg'), join(folder, 'dog', 'dog.jpg'));
  copyFileSync(join(DARKNET, 'scream.jpg'), join(folder, 'cat', 'scream.jpg'));
  copyFileSync(join(DARKNET, 'kite.jpg'), join(folder, 'dog', 'nested', 'kite.JPG'));
  const raw = (w: number, h: number, c: 1 | 2 | 3 | 4, seed: number) =>
    sharp(noise(w, h, c, seed), { raw: { width: w, height: h, channels: c } });
  await raw(50, 37, 1, 1)
    .toColourspace('b-w')
    .png()
    .toFile(join(folder, 'cat', 'gray.png'));
  await raw(33, 71, 4, 2)
    .png()
    .toFile(join(folder, 'cat', 'rgba.png'));
  await raw(45, 45, 3, 3)
    .toColourspace('rgb16')
    .png()
    .toFile(join(folder, 'dog', 'deep16.png'));
  await raw(81, 40, 3, 4)
    .toColourspace('cmyk')
    .jpeg({ quality: 90 })
    .toFile(join(folder, 'dog', 'cmyk.jpg'));
  await raw(300, 20, 3, 5)
    .jpeg()
    .toFile(join(folder, 'cat', 'wide.jpeg'));
  const dog = readFileSync(join(DARKNET, 'dog.jpg'));
  writeFileSync(
    join(folder, 'cat', 'corrupt.jpg'),
    Buffer.concat([dog.subarray(0, 5000), Buffer.alloc(3000, 0x55), dog.subarray(8000)]),
  );
  writeFileSync(join(folder, 'cat', 'truncated.jpg'), dog.subarray(0, dog.length >> 1));
  writeFileSync(join(folder, 'dog', 'notes.png'), 'these are notes, not a picture\n');
  writeFileSync(join(folder, 'dog', 'readme.txt'), 'ignored: not an image extension');
  writeFileSync(join(folder, 'cat', '.DS_Store'), 'hidden');
  copyFileSync(join(DARKNET, 'eagle.jpg'), join(folder, '.hidden-class', 'eagle.jpg'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function collect(
  source: ImageFolderSource,
  epoch: number,
  options: Parameters<ImageFolderSource['batches']>[1],
): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of source.batches(epoch, options)) out.push(b);
  return out;
}

/** The sample a batch should hold, computed on the main thread. */
async function expected(path: string, augment?: Augment, rngSeed?: [number, number, number]): Promise<Float32Array> {
  const image = await decodeImageFile(path);
  if (!augment) return evalTransform(SPEC)(image, () => 0).data;
  return trainTransform(SPEC, augment)(image, sampleRng(...rngSeed!)).data;
}

describe('openImageFolder', () => {
  it('has the image kinds it means to test (sharp reads the generated headers back)', async () => {
    const meta = async (f: string) => sharp(join(folder, f)).metadata();
    expect((await meta('dog/cmyk.jpg')).space).toBe('cmyk');
    expect((await meta('dog/deep16.png')).depth).toBe('ushort');
    expect((await meta('cat/gray.png')).channels).toBe(1);
    expect((await meta('cat/rgba.png')).channels).toBe(4);
  });

  it('lists classes and files (hidden entries and non-image extensions ignored)', async () => {
    const source = await openImageFolder(folder, { preprocess: SPEC, workers: 2, onWarning: () => {} });
    try {
      expect(source.classes).toEqual(['cat', 'dog']);
      expect(source.files.map((f) => f.slice(folder.length + 1))).toEqual([
        'cat/corrupt.jpg',
        'cat/gray.png',
        'cat/rgba.png',
        'cat/scream.jpg',
        'cat/truncated.jpg',
        'cat/wide.jpeg',
        'dog/cmyk.jpg',
        'dog/deep16.png',
        'dog/dog.jpg',
        'dog/nested/kite.JPG',
        'dog/notes.png',
      ]);
      expect(Array.from(source.labels)).toEqual([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
      expect(source.length).toBe(11);
    } finally {
      await source.close();
    }
  });

  it('decodes every kind in workers exactly as the main thread does; bad files skipped once, with a warning naming each', async () => {
    const warnings: string[] = [];
    const source = await openImageFolder(folder, { preprocess: SPEC, workers: 2, onWarning: (m) => warnings.push(m) });
    try {
      const batches = await collect(source, 0, { batchSize: 4 });
      // 11 files in batches of 4, three of them bad (one in each batch).
      expect(batches.map((b) => b.size)).toEqual([3, 3, 2]);
      const seen: number[] = [];
      for (const b of batches) {
        expect([b.channels, b.height, b.width]).toEqual([3, 64, 64]);
        expect(b.images.length).toBe(b.size * 3 * 64 * 64);
        for (let n = 0; n < b.size; n++) {
          const index = b.indices[n];
          seen.push(index);
          expect(b.labels[n]).toBe(source.labels[index]);
          const want = await expected(source.files[index]);
          const got = b.images.subarray(n * want.length, (n + 1) * want.length);
          expect(Array.from(got), source.files[index]).toEqual(Array.from(want));
        }
      }
      const bad = BAD.map((f) => source.files.indexOf(join(folder, f)));
      expect(seen).toEqual([...Array(11).keys()].filter((i) => !bad.includes(i)));
      expect(source.skipped.map((s) => s.file).sort()).toEqual(BAD.map((f) => join(folder, f)).sort());
      expect(warnings.length).toBe(3);
      for (const f of BAD) expect(warnings.some((w) => w.includes(join(folder, f)))).toBe(true);
      const reason = (f: string) => source.skipped.find((s) => s.file === join(folder, f))!.reason;
      expect(reason('cat/truncated.jpg')).toMatch(/cannot decode JPEG: truncated\? \(no end-of-image marker\)/);
      expect(reason('cat/corrupt.jpg')).toMatch(/cannot decode JPEG/);
      expect(reason('dog/notes.png')).toMatch(/not a JPEG or PNG/);

      // The next epoch leaves the bad files out up front and warns no more.
      const again = await collect(source, 1, { batchSize: 4 });
      expect(again.map((b) => b.size)).toEqual([4, 4]);
      expect(warnings.length).toBe(3);
      expect(source.skipped.length).toBe(3);
    } finally {
      await source.close();
    }
  });

  it('shuffled, augmented epochs depend on (seed, epoch, index) only, not on the worker count', async () => {
    const augment: Augment = { flip: true, crop: 'resized' };
    const run = async (workers: number, epoch: number) => {
      const source = await openImageFolder(folder, { preprocess: SPEC, workers, onWarning: () => {} });
      try {
        return { source, batches: await collect(source, epoch, { batchSize: 3, shuffle: true, seed: 7, augment }) };
      } finally {
        await source.close();
      }
    };
    const one = await run(1, 2);
    const three = await run(3, 2);
    const other = await run(3, 3);
    const flat = (bs: Batch[]) => bs.flatMap((b) => Array.from(b.indices));
    expect(flat(three.batches)).toEqual(flat(one.batches));
    expect(flat(other.batches)).not.toEqual(flat(one.batches));
    expect(three.batches.map((b) => Array.from(b.images))).toEqual(one.batches.map((b) => Array.from(b.images)));
    // Each sample is the training transform with that sample's generator.
    const b = one.batches[0];
    const want = await expected(one.source.files[b.indices[0]], augment, [7, 2, b.indices[0]]);
    expect(Array.from(b.images.subarray(0, want.length))).toEqual(Array.from(want));
    expect(Array.from(want)).not.toEqual(Array.from(await expected(one.source.files[b.indices[0]])));
  });

  it('stopping an epoch early drops its prefetched work and leaves the source usable', async () => {
    const source = await openImageFolder(folder, { preprocess: SPEC, workers: 1, onWarning: () => {} });
    try {
      for await (const b of source.batches(0, { batchSize: 1, prefetch: 8 })) {
        expect(b.size).toBe(1);
        break;
      }
      const full = await collect(source, 0, { batchSize: 4 });
      expect(full.flatMap((b) => Array.from(b.indices))).toEqual([1, 2, 3, 5, 6, 7, 8, 9]);
      const want = await expected(source.files[1]);
      expect(Array.from(full[0].images.subarray(0, want.length))).toEqual(Array.from(want));
    } finally {
      await source.close();
    }
  });

  it('visits only the given indices (one side of a split), shuffled within them', async () => {
    const source = await openImageFolder(folder, { preprocess: SPEC, workers: 1, onWarning: () => {} });
    try {
      const pick = [9, 1, 6, 3, 2];
      const plain = await collect(source, 0, { batchSize: 2, indices: pick });
      expect(plain.flatMap((b) => Array.from(b.indices))).toEqual(pick);
      const shuffled = (await collect(source, 0, { batchSize: 2, indices: pick, shuffle: true, seed: 3 })).flatMap(
        (b) => Array.from(b.indices),
      );
      expect([...shuffled].sort()).toEqual([...pick].sort());
      await expect(collect(source, 0, { batchSize: 2, indices: [1, 11] })).rejects.toThrow(
        /indices\[1\] is 11; expected an integer in 0…10/,
      );
    } finally {
      await source.close();
    }
  });

  it("pixels: false gives the epoch's labels and indices without decoding anything; known-bad files stay out", async () => {
    const warnings: string[] = [];
    const source = await openImageFolder(folder, { preprocess: SPEC, workers: 1, onWarning: (m) => warnings.push(m) });
    try {
      const options = { batchSize: 3, shuffle: true, seed: 7 };
      const bare = await collect(source, 2, { ...options, pixels: false });
      expect(warnings).toEqual([]); // nothing was decoded, so the bad files were not met
      expect(source.skipped).toEqual([]);
      expect(bare.every((b) => b.images.length === 0)).toBe(true);
      // The same order as a decoded epoch, which also meets (and from then on leaves out) the bad files.
      const decoded = await collect(source, 2, options);
      const badIndices = new Set(source.skipped.map((s) => source.files.indexOf(s.file)));
      expect(badIndices.size).toBe(BAD.length);
      const order = bare.flatMap((b) => Array.from(b.indices));
      expect(order.filter((i) => !badIndices.has(i))).toEqual(decoded.flatMap((b) => Array.from(b.indices)));
      expect(bare.flatMap((b) => Array.from(b.labels))).toEqual(order.map((i) => source.labels[i]));
      const again = (await collect(source, 2, { ...options, pixels: false })).flatMap((b) => Array.from(b.indices));
      expect(again).toEqual(order.filter((i) => !badIndices.has(i)));
    } finally {
      await source.close();
    }
  });

  it('aligns labels to a model class list that contains the folder classes', async () => {
    const source = await openImageFolder(folder, { preprocess: SPEC, classes: ['bird', 'dog', 'cat'], workers: 1 });
    await source.close();
    expect(source.classes).toEqual(['bird', 'dog', 'cat']);
    expect(Array.from(source.labels)).toEqual([2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1]);
  });

  it('refuses classes that do not match the model, listing both', async () => {
    const attempt = openImageFolder(folder, { preprocess: SPEC, classes: ['cat', 'horse'] });
    await expect(attempt).rejects.toThrow(DataError);
    await expect(openImageFolder(folder, { preprocess: SPEC, classes: ['cat', 'horse'] })).rejects.toThrow(
      /class folders the model does not know \(dog\); folder classes: cat, dog; model classes: cat, horse/,
    );
  });

  it('refuses a missing root, a file, an empty folder and a class folder without images, naming them', async () => {
    const open = (path: string) => openImageFolder(path, { preprocess: SPEC });
    await expect(open(join(root, 'nope'))).rejects.toThrow(new RegExp(`${join(root, 'nope')} does not exist`));
    const file = join(root, 'file.jpg');
    copyFileSync(join(DARKNET, 'dog.jpg'), file);
    await expect(open(file)).rejects.toThrow(new RegExp(`${file} is not a folder`));
    const empty = join(root, 'empty');
    mkdirSync(empty);
    await expect(open(empty)).rejects.toThrow(/has no class folders; expected root\/<class>\/<image>.*\(it is empty\)/);
    const flat = join(root, 'flat');
    mkdirSync(flat);
    copyFileSync(join(DARKNET, 'dog.jpg'), join(flat, 'dog.jpg'));
    await expect(open(flat)).rejects.toThrow(/has no class folders.*\(it holds 1 files and no folders\)/);
    const noImages = join(root, 'no-images');
    mkdirSync(join(noImages, 'a'), { recursive: true });
    mkdirSync(join(noImages, 'b'));
    copyFileSync(join(DARKNET, 'dog.jpg'), join(noImages, 'a', 'x.jpg'));
    writeFileSync(join(noImages, 'b', 'list.csv'), '1,2');
    await expect(open(noImages)).rejects.toThrow(
      new RegExp(`class folder ${join(noImages, 'b')} holds no images \\(1 other files\\)`),
    );
  });

  it('refuses bad batch options and use after close', async () => {
    const source = await openImageFolder(folder, { preprocess: SPEC, workers: 1 });
    await expect(collect(source, 0, { batchSize: 0 })).rejects.toThrow(/batchSize must be a positive integer, got 0/);
    await source.close();
    await expect(collect(source, 0, { batchSize: 2 })).rejects.toThrow(/the image loader was closed/);
    await expect(openImageFolder(folder, { preprocess: SPEC, workers: 0 })).rejects.toThrow(
      /workers must be a positive integer, got 0/,
    );
    // Settings every image would fail on are refused once, up front, not skipped per file.
    await expect(openImageFolder(folder, { preprocess: { ...SPEC, crop: 500 } })).rejects.toThrow(/1 ≤ crop ≤ resize/);
    await expect(openImageFolder(folder, { preprocess: SPEC, jpeg: 'libjpeg' as never })).rejects.toThrow(
      /JPEG decoder 'libjpeg' is not known; accepted: sharp, jpeg-js/,
    );
    const open = await openImageFolder(folder, { preprocess: SPEC, workers: 1 });
    await expect(collect(open, 0, { batchSize: 2, augment: { crop: 'zoom' as never } })).rejects.toThrow(
      /augment crop 'zoom' is not known/,
    );
    await open.close();
  });
});

describe('loadImageFiles', () => {
  it('returns the loaded images in order and the skipped ones with reasons', async () => {
    const paths = [join(folder, 'dog', 'dog.jpg'), join(folder, 'dog', 'notes.png'), join(folder, 'cat', 'gray.png')];
    const warnings: string[] = [];
    const r = await loadImageFiles(paths, SPEC, { onWarning: (m) => warnings.push(m) });
    expect(r.loaded).toEqual([paths[0], paths[2]]);
    expect(r.skipped).toEqual([{ file: paths[1], reason: expect.stringMatching(/not a JPEG or PNG/) }]);
    expect(warnings).toEqual([expect.stringContaining(paths[1])]);
    const a = await expected(paths[0]);
    const c = await expected(paths[2]);
    expect(Array.from(r.images)).toEqual([...a, ...c]);
  });

  it('refuses an empty list', async () => {
    await expect(loadImageFiles([], SPEC)).rejects.toThrow(/no image files given/);
  });
});

describe('the pool and the process', () => {
  // Each child must exit by itself: a worker left referenced would keep it alive until the timeout.
  const child = (body: string) => {
    const script = `
      import { openImageFolder } from ${JSON.stringify(join(import.meta.dirname, '../src/data/node/index.ts'))};
      import { preprocessPreset } from ${JSON.stringify(join(import.meta.dirname, '../src/graph/model-metadata.ts'))};
      const source = await openImageFolder(${JSON.stringify(folder)}, { preprocess: preprocessPreset('torchvision', 32), workers: 2, onWarning: () => {} });
      ${body}
      console.log('done');`;
    const file = join(root, `child-${Math.random().toString(36).slice(2)}.mts`); // .mts: ESM outside the package
    writeFileSync(file, script);
    return spawnSync(process.execPath, ['--import', 'tsx', file], {
      encoding: 'utf8',
      timeout: 60_000,
      cwd: join(import.meta.dirname, '..'),
    });
  };

  it('exits after close(), after an early break, and when close() is forgotten', () => {
    for (const body of [
      `for await (const b of source.batches(0, { batchSize: 2 })) {} await source.close();`,
      `for await (const b of source.batches(0, { batchSize: 2 })) break; await source.close();`,
      `for await (const b of source.batches(0, { batchSize: 2 })) break;`,
    ]) {
      const r = child(body);
      expect(r.signal, `${body}\n${r.stderr}`).toBe(null);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout.trim()).toBe('done');
    }
  });

  it('a consumer that throws mid-epoch, then closes, leaves nothing running', () => {
    const r = child(
      `try { for await (const b of source.batches(0, { batchSize: 2 })) throw new Error('consumer failed'); } catch (e) { console.log(e.message); } finally { await source.close(); }`,
    );
    expect(r.signal, r.stderr).toBe(null);
    expect(r.stdout.trim().split('\n')).toEqual(['consumer failed', 'done']);
  });
});
