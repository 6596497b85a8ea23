// The example page (examples/browser, served by scripts/serve-example.mjs) end to end in Debian's
// Chromium on SwiftShader's WebGPU: the shipped source network, case 1 on the Fashion-MNIST sample
// for two epochs, a prediction, the download (decoded here as ONNX with the new head's classes),
// a screenshot; and bad input (a dropped file that is not ONNX, one that is not an image) shown in
// the page's error panel with the file's name.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import zlib from 'node:zlib';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseIdx } from '../src/data/idx.ts';
import { launchWebGpuChromium } from './helpers/chromium.mjs';
import type { Graph } from '../src/graph/ir.ts';
import { loadModel } from '../src/graph/load.ts';
import { readLabels } from '../src/graph/model-metadata.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** SwiftShader compiles every pipeline cold: training is kept tiny, the limit generous. */
const TRAIN_TIMEOUT_MS = 150_000;
/** The page's default sample classes, in its order. */
const SAMPLE_CLASSES = ['Trouser', 'Coat', 'Sneaker'];

let server: ChildProcess | undefined;
let browser: Browser | undefined;
let url: string;
let outDir: string;

/** Starts the example server on a free port and resolves with the URL it prints. */
function startServer(): Promise<string> {
  const child = spawn(process.execPath, [path.join(ROOT, 'scripts/serve-example.mjs'), '--port', '0'], { cwd: ROOT });
  server = child;
  return new Promise((resolve, reject) => {
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      const found = /http:\/\/127\.0\.0\.1:\d+\//.exec(output);
      if (found) resolve(found[0]);
    });
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.on('exit', (code) => reject(new Error(`serve-example exited (${code}) before printing its URL:\n${output}`)));
  });
}

/** Drops files on an element of the page the way a user's drag and drop does. */
async function dropFiles(page: Page, selector: string, files: { name: string; bytes: Uint8Array }[]): Promise<void> {
  const encoded = files.map((f) => ({ name: f.name, base64: Buffer.from(f.bytes).toString('base64') }));
  await page.evaluate(
    ({ selector, encoded }) => {
      const transfer = new DataTransfer();
      for (const f of encoded) {
        const bytes = Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0));
        transfer.items.add(new File([bytes], f.name, { type: 'application/octet-stream' }));
      }
      document.querySelector(selector)!.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true }));
    },
    { selector, encoded },
  );
}

const text = (name: string, content: string) => ({ name, bytes: new TextEncoder().encode(content) });

/** PNG files of the shipped sample's t10k images of two Fashion-MNIST labels, named <class>_<k>.png. */
async function samplePngs(
  classes: Record<string, number>,
  perClass: number,
): Promise<{ name: string; bytes: Uint8Array }[]> {
  const dir = path.join(ROOT, 'models-onnx/samples/fashion-mnist');
  const images = parseIdx(zlib.gunzipSync(fs.readFileSync(path.join(dir, 't10k-images-idx3-ubyte.gz'))));
  const labels = parseIdx(zlib.gunzipSync(fs.readFileSync(path.join(dir, 't10k-labels-idx1-ubyte.gz'))));
  const [count, height, width] = images.dims;
  const files: { name: string; bytes: Uint8Array }[] = [];
  for (const [name, label] of Object.entries(classes)) {
    // From the end of the file: images the page's own sample picks (from the start) do not reach.
    for (let i = count - 1, k = 0; i >= 0 && k < perClass; i--) {
      if (labels.data[i] !== label) continue;
      const pixels = (images.data as Uint8Array).slice(i * width * height, (i + 1) * width * height);
      const png = await sharp(pixels, { raw: { width, height, channels: 1 } })
        .png()
        .toBuffer();
      files.push({ name: `${name}_${k++}.png`, bytes: new Uint8Array(png) });
    }
  }
  return files;
}

/** Step 1 with the shipped source network; waits for its cut points. */
async function openSource(page: Page): Promise<void> {
  await page.click('#use-source');
  await page.waitForSelector('#cuts tbody tr');
}

/** Steps 2–4: the case, the images (the sample with `perClass` images per class, or dropped files), training. */
async function train(
  page: Page,
  o: {
    case: number;
    perClass?: number;
    files?: { name: string; bytes: Uint8Array }[];
    images: number;
    epochs: number;
    batch: number;
  },
): Promise<void> {
  await page.check(`input[name="case"][value="${o.case}"]`);
  if (o.files) await dropFiles(page, '#data-drop', o.files);
  else {
    await page.fill('#per-class', String(o.perClass));
    await page.click('#use-sample');
  }
  await page.waitForFunction(
    (images) => document.querySelector('#data-info')?.textContent?.startsWith(`${images} images`),
    o.images,
  );
  await page.fill('#epochs', String(o.epochs));
  await page.fill('#batch', String(o.batch));
  await page.click('#train');
  await page.waitForFunction(
    () =>
      document.querySelector('#download')?.getAttribute('aria-disabled') === 'false' ||
      !document.querySelector('#error')?.hasAttribute('hidden'),
    undefined,
    { timeout: TRAIN_TIMEOUT_MS, polling: 500 },
  );
  expect(await page.isHidden('#error'), (await page.textContent('#error')) ?? '').toBe(true);
}

/** Step 6: the download link's bytes, saved under outDir and decoded as ONNX. */
async function downloadModel(page: Page, prefix: string): Promise<Graph> {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  const saved = path.join(outDir, `${prefix}-${download.suggestedFilename()}`);
  await download.saveAs(saved);
  return loadModel(new Uint8Array(fs.readFileSync(saved)), { file: saved });
}

const classCount = (g: Graph) => g.values.get(g.outputs[0].name)?.shape?.at(-1);

async function errorPanel(page: Page): Promise<string> {
  await page.waitForSelector('#error:not([hidden])', { timeout: 10_000 });
  return (await page.textContent('#error')) ?? '';
}

beforeAll(async () => {
  outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'graft-example-page-'));
  url = await startServer();
  browser = await launchWebGpuChromium();
});

afterAll(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
  // The screenshot stays (its path is printed); the downloaded models go.
  for (const file of fs.readdirSync(outDir)) if (file.endsWith('.onnx')) fs.rmSync(path.join(outDir, file));
});

describe('example page in Chromium (SwiftShader WebGPU)', () => {
  it('serve-example --help describes the page and --port', () => {
    const help = spawn(process.execPath, [path.join(ROOT, 'scripts/serve-example.mjs'), '--help']);
    return new Promise<void>((resolve) => {
      let text = '';
      help.stdout.on('data', (c: Buffer) => (text += c.toString()));
      help.on('exit', (code) => {
        expect(code).toBe(0);
        expect(text).toContain('--port');
        resolve();
      });
    });
  });

  it(
    'grafts the source network, trains two epochs on the sample, predicts and downloads the tuned model',
    async () => {
      const context = await browser!.newContext({ acceptDownloads: true, viewport: { width: 1100, height: 1600 } });
      const page = await context.newPage();
      const pageErrors: string[] = [];
      page.on('pageerror', (e) => pageErrors.push(e.message));
      await page.goto(url);
      await page.waitForFunction(() => document.querySelector('#status')?.textContent?.startsWith('Ready'));

      // Bad input first: a file that is not ONNX, dropped on the model zone.
      await dropFiles(page, '#model-drop', [text('notes.txt', 'these are not the bytes of a model')]);
      const modelError = await errorPanel(page);
      expect(modelError).toContain('notes.txt');
      expect(modelError).toContain('not an ONNX model');
      // A model too large for the tab: refused by its size, before its bytes are read (File.size
      // made to say 3 GiB for this one name: the test need not hold 3 GiB).
      await page.evaluate(() => {
        const size = Object.getOwnPropertyDescriptor(Blob.prototype, 'size')!.get!;
        Object.defineProperty(File.prototype, 'size', {
          get(this: File) {
            return this.name === 'huge.onnx' ? 3 * 2 ** 30 : size.call(this);
          },
        });
      });
      await dropFiles(page, '#model-drop', [text('huge.onnx', 'small bytes, large size')]);
      await page.waitForFunction(() => document.querySelector('#error')?.textContent?.includes('huge.onnx'));
      expect(await page.textContent('#error')).toContain('huge.onnx: 3072 MiB is too large for this tab');

      // 1. the shipped source network: its layers and cut points.
      await openSource(page);
      expect(await page.isHidden('#error')).toBe(true);
      const cutRows = await page.$$eval('#cuts tbody tr', (rows) => rows.map((r) => r.textContent ?? ''));
      expect(cutRows.some((r) => r.includes('features'))).toBe(true);
      expect(await page.$$eval('#layers tbody tr', (rows) => rows.length)).toBeGreaterThan(100);

      // 2–4. case 1 on three sample classes, four images each, two epochs.
      await train(page, { case: 1, perClass: 4, images: 12, epochs: 2, batch: 4 });
      expect(await page.textContent('#status')).toContain('Trained 2 epochs');
      expect(await page.textContent('#progress')).toMatch(/epoch 2\/2 done: loss \d/);

      // 5. a held-out sample image: top-3 with probabilities.
      await page.click('#predict-sample');
      await page.waitForSelector('#prediction li:nth-child(3)');
      const top3 = await page.$$eval('#prediction li', (items) => items.map((i) => i.textContent ?? ''));
      expect(top3).toHaveLength(3);
      for (const line of top3) expect(line).toMatch(new RegExp(`^(${SAMPLE_CLASSES.join('|')}): \\d+\\.\\d%$`));
      const screenshot = path.join(outDir, 'example-page.png');
      await page.screenshot({ path: screenshot, fullPage: true });
      console.log(`example page screenshot: ${screenshot}`);

      // 6. the download decodes as ONNX with a three-class head and the sample's labels.
      const tuned = await downloadModel(page, 'case1');
      expect(classCount(tuned)).toBe(SAMPLE_CLASSES.length);
      expect(readLabels(tuned)).toEqual(SAMPLE_CLASSES);

      // Bad input after training: a dropped prediction file that is not an image.
      await dropFiles(page, '#predict-drop', [text('model.onnx.txt', 'plain text')]);
      const imageError = await errorPanel(page);
      expect(imageError).toContain('model.onnx.txt');
      expect(imageError).toContain('not an image');
      expect(pageErrors).toEqual([]);
      await context.close();
    },
    TRAIN_TIMEOUT_MS + 60_000,
  );

  it(
    'case 2 at a chosen cut point on dropped <class>_*.png files, then predicts a dropped PNG',
    async () => {
      const page = await browser!.newPage();
      const pageErrors: string[] = [];
      page.on('pageerror', (e) => pageErrors.push(e.message));
      await page.goto(url);
      await openSource(page);
      // The second cut point (after the first residual block), not the page's default.
      const cut = await page.$eval('#cuts tbody tr:nth-child(2) input', (i) => (i as HTMLInputElement).value);
      await page.check('#cuts tbody tr:nth-child(2) input');
      const files = await samplePngs({ trouser: 1, sneaker: 7 }, 4);
      const training = files.filter((f) => !f.name.endsWith('_3.png'));
      await train(page, { case: 2, files: training, images: 6, epochs: 1, batch: 3 });
      expect(await page.textContent('#data-info')).toContain('sneaker 3, trouser 3');
      expect(await page.textContent('#status')).toMatch(/^Trained 1 epoch[^s]/);

      // A dropped PNG (held back from training): two classes, so a top-2.
      await dropFiles(
        page,
        '#predict-drop',
        files.filter((f) => f.name === 'trouser_3.png'),
      );
      await page.waitForSelector('#prediction li:nth-child(2)');
      expect(await page.textContent('#predict-truth')).toBe('trouser_3.png');
      const top = await page.$$eval('#prediction li', (items) => items.map((i) => i.textContent ?? ''));
      expect(top).toHaveLength(2);
      for (const line of top) expect(line).toMatch(/^(sneaker|trouser): \d+\.\d%$/);
      const probabilities = top.map((line) => Number(/([\d.]+)%$/.exec(line)![1]));
      expect(probabilities[0] + probabilities[1]).toBeCloseTo(100, 0);

      // The downloaded model is cut where the page was told: a new head reads that tensor.
      const tuned = await downloadModel(page, 'case2');
      expect(classCount(tuned)).toBe(2);
      expect(tuned.nodes.some((n) => n.inputs.includes(cut))).toBe(true);
      // Nothing after it: not the next block (the page's default cut is further on).
      expect(cut).toBe('/layer1/layer1.0/relu_2/Relu_output_0');
      expect(tuned.nodes.some((n) => n.name.startsWith('/layer1/layer1.1/'))).toBe(false);
      expect(pageErrors).toEqual([]);
      await page.close();
    },
    TRAIN_TIMEOUT_MS + 60_000,
  );

  it(
    'case 3 trains every layer in the tab: the downloaded stem convolution moved from the source',
    async () => {
      const page = await browser!.newPage();
      await page.goto(url);
      await openSource(page);
      await train(page, { case: 3, perClass: 2, images: 6, epochs: 1, batch: 3 });
      const tuned = await downloadModel(page, 'case3');
      const source = loadModel(new Uint8Array(fs.readFileSync(path.join(ROOT, 'models-onnx/source/source-net.onnx'))));
      const stem = (g: Graph) => {
        const weight = g.nodes.find((n) => n.opType === 'Conv')!.inputs[1];
        return Array.from(g.initializers.get(weight)!.value.data as Float32Array);
      };
      const before = stem(source);
      const after = stem(tuned);
      expect(after).toHaveLength(before.length);
      const moved = after.filter((v, i) => v !== before[i]).length;
      expect(moved).toBeGreaterThan(before.length / 2);
      expect(classCount(tuned)).toBe(SAMPLE_CLASSES.length);
      await page.close();
    },
    TRAIN_TIMEOUT_MS + 60_000,
  );

  it('without WebGPU: the page says so on load, and training names the missing WebGPU', async () => {
    const page = await browser!.newPage();
    // A browser without WebGPU: navigator.gpu undefined before the page's script runs.
    await page.addInitScript(() => Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined }));
    await page.goto(url);
    expect(await errorPanel(page)).toContain('This browser has no WebGPU');
    await openSource(page);
    await page.fill('#per-class', '2');
    await page.click('#use-sample');
    await page.waitForFunction(() => document.querySelector('#data-info')?.textContent?.includes('6 images'));
    await page.click('#train');
    expect(await errorPanel(page)).toMatch(/^Training failed: This browser has no WebGPU/);
    await page.close();
  });
});
