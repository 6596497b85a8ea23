// `graft train`, `eval` and `predict` end to end, as a user runs them: a generated image folder
// (seeded PNG and JPEG images of three patterns, odd sizes, gray and RGBA, one corrupt file),
// train case 1 on the shipped source network, resume, eval, predict; the tuned model runs in
// onnxruntime-node at batch 1 and 8 and gives predict's probabilities; SIGINT leaves a
// checkpoint and no temporary file; bad input gets one line naming the folder or flag.
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadImageFiles } from '../src/data/node/image-loader.ts';
import { decodeModel } from '../src/graph/codec.ts';
import { readLabels, readPreprocess } from '../src/graph/model-metadata.ts';
import { mulberry32 } from './helpers/random.ts';
import { withHeader } from './helpers/safetensors.ts';

/** The source network's float32 weights as a safetensors file, as a PyTorch user would save them. */
function sourceWeightsFile(path: string): number {
  const graph = decodeModel(new Uint8Array(readFileSync(SOURCE)));
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const parts: Buffer[] = [];
  let offset = 0;
  for (const init of graph.initializers.values()) {
    if (init.value.dtype !== 'float32') continue;
    const data = init.value.data as Float32Array;
    header[init.name] = { dtype: 'F32', shape: init.value.dims, data_offsets: [offset, offset + data.byteLength] };
    parts.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    offset += data.byteLength;
  }
  writeFileSync(path, withHeader(header, Buffer.concat(parts)));
  return parts.length;
}

const REPO_ROOT = path.resolve(import.meta.dirname, '..');
const SOURCE = path.join(REPO_ROOT, 'models-onnx', 'source', 'source-net.onnx');
const CLASSES = ['bright', 'hstripes', 'vstripes'];
const sharp = createRequire(import.meta.url)('sharp') as (
  input: Buffer,
  options: object,
) => { png(): { toBuffer(): Promise<Buffer> }; jpeg(o: object): { toBuffer(): Promise<Buffer> } };
const ENV = { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? '/tmp/xdg' };

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function graft(...args: string[]): Run {
  const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'bin', 'graft.mjs'), ...args], {
    encoding: 'utf8',
    cwd: REPO_ROOT,
    env: ENV,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** stderr without Dawn's harmless adapter notes. */
function errorLines(r: Run): string[] {
  return r.stderr.split('\n').filter((l) => l.trim() && !/^Warning: maxDynamic/.test(l) && !/XDG_RUNTIME_DIR/.test(l));
}

/** A seeded image of class k: dark background (as Fashion-MNIST) with a bright pattern. */
function pattern(k: number, width: number, height: number, channels: number, rng: () => number): Buffer {
  const px = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const inside = x > width / 5 && x < (4 * width) / 5 && y > height / 5 && y < (4 * height) / 5;
      const on =
        inside && (k === 0 || (k === 1 && Math.floor(y / 3) % 2 === 0) || (k === 2 && Math.floor(x / 3) % 2 === 0));
      for (let c = 0; c < channels; c++) {
        px[(y * width + x) * channels + c] =
          c === 3 ? 255 : Math.max(0, Math.min(255, Math.round((on ? 200 : 20) + (rng() - 0.5) * 40)));
      }
    }
  }
  return px;
}

async function makeFolder(root: string, perClass: number, seed: number): Promise<string[]> {
  const rng = mulberry32(seed);
  const files: string[] = [];
  for (const [k, name] of CLASSES.entries()) {
    mkdirSync(path.join(root, name), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const width = 28 + Math.floor(rng() * 20);
      const height = 28 + Math.floor(rng() * 20);
      // Mostly RGB; one gray PNG and one RGBA PNG per class; every other file a JPEG.
      const channels = i === 2 ? 1 : i === 3 ? 4 : 3;
      const image = sharp(pattern(k, width, height, channels, rng), { raw: { width, height, channels } });
      const jpeg = i % 2 === 1 && channels === 3;
      const file = path.join(root, name, `img${i}.${jpeg ? 'jpg' : 'png'}`);
      writeFileSync(file, jpeg ? await image.jpeg({ quality: 90 }).toBuffer() : await image.png().toBuffer());
      files.push(file);
    }
  }
  return files;
}

function softmax(row: ArrayLike<number>): number[] {
  const m = Math.max(...Array.from(row));
  const e = Array.from(row, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

describe('graft train / eval / predict', () => {
  let dir: string;
  let data: string;
  let files: string[];
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'graft-cli-'));
    data = path.join(dir, 'data');
    files = await makeFolder(data, 8, 7);
    // A truncated JPEG: skipped with a warning naming it, counted in the summary.
    writeFileSync(path.join(data, 'bright', 'truncated.jpg'), readFileSync(files[1]).subarray(0, 40));
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('trains case 1, resumes, evaluates and predicts; the tuned model agrees with onnxruntime at batch 1 and 8', async () => {
    const out = path.join(dir, 'out');
    mkdirSync(out);
    const tuned = path.join(out, 'tuned.onnx');
    // The network's own weights, through a safetensors file: the run is the same, the path is tested.
    const initWeights = path.join(dir, 'source.safetensors');
    const weightCount = sourceWeightsFile(initWeights);
    const first = graft(
      'train',
      SOURCE,
      data,
      '--case',
      '1',
      '--out',
      tuned,
      '--epochs',
      '1',
      '--batch',
      '8',
      '--lr',
      '0.003',
      '--seed',
      '3',
      '--init-weights',
      initWeights,
    );
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toContain(`initial weights: ${weightCount} tensors from ${initWeights}`);
    expect(first.stdout).toMatch(/preprocessing from the model's metadata/);
    expect(first.stdout).toMatch(
      /data: .*: 25 images in 3 classes \(bright, hstripes, vstripes\); 19 for training, 6 for validation/,
    );
    expect(first.stdout).toMatch(/^epoch 1\/1 {2}loss \d/m); // not a terminal: one line per epoch
    expect(first.stdout).toMatch(/skipped files: 1 \(truncated\.jpg\)/);
    expect(first.stderr).toMatch(/warning: skipped .*truncated\.jpg/);

    const resumed = graft(
      'train',
      SOURCE,
      data,
      '--case',
      '1',
      '--out',
      tuned,
      '--epochs',
      '2',
      '--batch',
      '8',
      '--lr',
      '0.003',
      '--seed',
      '3',
      '--resume',
    );
    expect(resumed.status, resumed.stderr).toBe(0);
    expect(resumed.stdout).toMatch(/resuming from .*tuned\.ckpt \(epoch 1, step 3\)/);
    const history = JSON.parse(readFileSync(path.join(out, 'tuned.history.json'), 'utf8'));
    expect(history.epochs.map((e: { epoch: number }) => e.epoch)).toEqual([1, 2]);
    expect(history.classes).toEqual(CLASSES);
    expect(history.skipped.map((s: { file: string }) => path.basename(s.file))).toEqual(['truncated.jpg']);
    const svg = readFileSync(path.join(out, 'tuned.curves.svg'), 'utf8');
    expect(svg.match(/<polyline/g)).toHaveLength(4); // loss and accuracy, train and validation
    expect(readdirSync(out).sort()).toEqual(['tuned.ckpt', 'tuned.curves.svg', 'tuned.history.json', 'tuned.onnx']);

    const model = decodeModel(new Uint8Array(readFileSync(tuned)));
    expect(readLabels(model)).toEqual(CLASSES);
    const spec = readPreprocess(model)!;
    const size = decodeModel(new Uint8Array(readFileSync(SOURCE))).feedInputs[0].shape![2] as number;
    expect(spec.crop).toBe(size);
    // Case 1 trains the new classifier alone: 3 classes × (features + 1).
    const classifier = [...model.initializers.values()].filter((i) => i.trainable);
    const features = classifier.find((i) => i.value.dims.length === 2)!.value.dims[1];
    expect(classifier.reduce((a, i) => a + i.value.dims.reduce((x, y) => x * y, 1), 0)).toBe(3 * (features + 1));
    expect(first.stdout).toContain(`trainable parameters: ${(3 * (features + 1)).toLocaleString('en-US')} `);

    // predict --json on 8 images, against onnxruntime on the same preprocessed pixels.
    const some = [files[0], files[1], files[2], files[3], files[9], files[12], files[17], files[22]];
    const predicted = graft('predict', tuned, ...some, '--json', '--top', '3');
    expect(predicted.status, predicted.stderr).toBe(0);
    const json = JSON.parse(predicted.stdout) as {
      predictions: { file: string; top: { label: string; index: number; probability: number }[] }[];
    };
    expect(json.predictions.map((p) => p.file)).toEqual(some);
    const { images } = await loadImageFiles(some, spec, { workers: 1 });
    const session = await ort.InferenceSession.create(readFileSync(tuned), {
      executionProviders: ['cpu'],
      logSeverityLevel: 3,
    });
    const input = session.inputNames[0];
    const endsInSoftmax = model.producers().get(model.outputs[0].name)?.opType === 'Softmax';
    const per = 3 * size * size;
    for (const batch of [1, 8]) {
      const result = await session.run({
        [input]: new ort.Tensor('float32', images.slice(0, batch * per), [batch, 3, size, size]),
      });
      const outputs = result[session.outputNames[0]];
      expect(outputs.dims).toEqual([batch, 3]);
      for (let n = 0; n < batch; n++) {
        const row = Array.from((outputs.data as Float32Array).subarray(n * 3, (n + 1) * 3));
        const probs = endsInSoftmax ? row : softmax(row);
        const order = [0, 1, 2].sort((a, b) => probs[b] - probs[a]);
        expect(json.predictions[n].top.map((t) => t.label)).toEqual(order.map((i) => CLASSES[i]));
        json.predictions[n].top.forEach((t, i) => expect(Math.abs(t.probability - probs[order[i]])).toBeLessThan(1e-4));
      }
    }
    await session.release();
    // Text output; a file that does not decode is skipped with a warning and exit status 1.
    const truncated = path.join(data, 'bright', 'truncated.jpg');
    const text = graft('predict', tuned, files[0], truncated, '--top', '2');
    expect(text.status).toBe(1);
    expect(text.stdout).toContain(`${files[0]}\n  1. ${json.predictions[0].top[0].label}`);
    expect(text.stdout).toContain(`skipped 1 file(s): ${truncated}`);
    expect(errorLines(text)).toEqual([expect.stringMatching(/^warning: skipped .*truncated\.jpg: /)]);

    // eval: the printed accuracy is the confusion matrix's trace over its total.
    const plot = path.join(out, 'confusion.svg');
    const evaluated = graft('eval', tuned, data, '--plot', plot);
    expect(evaluated.status, evaluated.stderr).toBe(0);
    const rows = CLASSES.map((c, k) =>
      new RegExp(`^${k} ${c} +(\\d+) +(\\d+) +(\\d+)$`, 'm').exec(evaluated.stdout)!.slice(1).map(Number),
    );
    const total = rows.flat().reduce((a, b) => a + b, 0);
    expect(total).toBe(24);
    const top1 = Number(/top-1 ([\d.]+)%/.exec(evaluated.stdout)![1]);
    expect(top1).toBeCloseTo((100 * (rows[0][0] + rows[1][1] + rows[2][2])) / total, 1);
    expect(evaluated.stdout).toMatch(/24 images \(1 skipped\)/);
    expect(readFileSync(plot, 'utf8').match(/class="cell"/g)).toHaveLength(9);
  }, 240_000);

  it('SIGINT during training: stops after the step, saves a checkpoint, leaves no temporary file, exits 130', async () => {
    const out = path.join(dir, 'interrupted');
    mkdirSync(out);
    const ckpt = path.join(dir, 'checkpoints');
    mkdirSync(ckpt);
    const child = spawn(
      process.execPath,
      [
        path.join(REPO_ROOT, 'bin', 'graft.mjs'),
        'train',
        SOURCE,
        data,
        '--case',
        '1',
        '--out',
        path.join(out, 'm.onnx'),
        '--epochs',
        '200',
        '--batch',
        '8',
        '--checkpoint-dir',
        ckpt,
        '--val',
        data,
      ],
      { cwd: REPO_ROOT, env: ENV },
    );
    let stdout = '';
    let stderr = '';
    let sent = false;
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => {
      child.stdout.on('data', (d) => {
        stdout += d;
        // Interrupt once training is under way (an epoch finished).
        if (!sent && /^epoch 1\/200 .* val loss \d/m.test(stdout)) {
          sent = true;
          child.kill('SIGINT');
        }
      });
      child.on('exit', (c) => resolve(c));
    });
    expect(sent).toBe(true);
    expect(stdout).toMatch(/25 images in 3 classes .*; 25 for training, 25 for validation from /); // --val DIR
    expect(code, stderr).toBe(130);
    expect(stderr).toMatch(/SIGINT: stopping after the current step/);
    expect(stderr).toMatch(
      /graft train: interrupted; checkpoint saved to .*m\.ckpt; resume with: graft train .* --resume\n/,
    );
    expect(readdirSync(ckpt)).toEqual(['m.ckpt']);
    expect(readdirSync(out)).toEqual([]); // no model, no temporary file
  }, 180_000);

  it('SIGTERM before training is under way (model compiling): exit 130, nothing half-written', async () => {
    const out = path.join(dir, 'terminated');
    mkdirSync(out);
    const child = spawn(
      process.execPath,
      [
        path.join(REPO_ROOT, 'bin', 'graft.mjs'),
        'train',
        SOURCE,
        data,
        '--case',
        '3',
        '--out',
        path.join(out, 'm.onnx'),
        '--epochs',
        '50',
        '--batch',
        '8',
      ],
      { cwd: REPO_ROOT, env: ENV },
    );
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const code = await new Promise<number | null>((resolve) => {
      child.stdout.on('data', (d) => {
        const before = stdout;
        stdout += d;
        if (!/^case 3:/m.test(before) && /^case 3:/m.test(stdout)) child.kill('SIGTERM');
      });
      child.on('exit', (c) => resolve(c));
    });
    expect(code, stderr).toBe(130);
    expect(stderr).toMatch(/SIGTERM: stopping after the current step/);
    // Either it stopped before the first step or after it with a checkpoint; never a model or a temporary file.
    const last = errorLines({ status: code, stdout, stderr }).at(-1)!;
    expect(last).toMatch(
      /^graft train: interrupted( before training started; nothing was written|; checkpoint saved to .*m\.ckpt; resume with: .* --resume)$/,
    );
    expect(readdirSync(out).filter((f) => f !== 'm.ckpt')).toEqual([]);
  }, 180_000);

  it('bad input: one line naming the folder, file or flag, and a non-zero exit', () => {
    const empty = path.join(dir, 'empty');
    mkdirSync(empty);
    const noImages = path.join(dir, 'no-images');
    mkdirSync(path.join(noImages, 'a'), { recursive: true });
    mkdirSync(path.join(noImages, 'b'), { recursive: true });
    writeFileSync(path.join(noImages, 'a', 'x.png'), readFileSync(files[0]));
    writeFileSync(path.join(noImages, 'b', 'notes.txt'), 'not an image');
    const readOnly = path.join(dir, 'read-only');
    mkdirSync(readOnly);
    chmodSync(readOnly, 0o555);
    // Root writes through permission bits; a folder nobody can add files to stands in for it.
    const unwritable = process.getuid?.() === 0 ? '/proc' : readOnly;
    const out = path.join(dir, 'bad-out', 'm.onnx');
    const foreignWeights = path.join(dir, 'foreign.safetensors');
    writeFileSync(
      foreignWeights,
      withHeader({ 'encoder.weight': { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8)),
    );
    const cases: [string[], RegExp][] = [
      [
        ['train', SOURCE, empty, '--case', '1', '--out', path.join(dir, 'e.onnx')],
        new RegExp(`${empty} has no class folders.*it is empty`),
      ],
      [
        ['train', SOURCE, noImages, '--case', '1', '--out', path.join(dir, 'e.onnx')],
        /class folder .*no-images\/b holds no images/,
      ],
      [
        ['train', SOURCE, data, '--case', '1', '--out', out],
        new RegExp(`--out: folder ${path.dirname(out)} does not exist`),
      ],
      [
        ['train', SOURCE, data, '--case', '1', '--out', path.join(unwritable, 'm.onnx')],
        new RegExp(`--out: folder ${unwritable} is not writable`),
      ],
      [['train', SOURCE, data, '--out', path.join(dir, 'e.onnx')], /--case 1\|2\|3\|4 is required/],
      [
        ['train', SOURCE, data, '--case', '5', '--out', path.join(dir, 'e.onnx')],
        /--case must be an integer from 1 to 4, got '5'/,
      ],
      [
        ['train', SOURCE, data, '--case', '1', '--out', path.join(dir, 'e.onnx'), '--resume'],
        /--resume: no checkpoint at .*e\.ckpt/,
      ],
      [
        ['train', SOURCE, data, '--case', '1', '--out', path.join(dir, 'e.onnx'), '--preprocess', 'imagenet'],
        /--preprocess must be one of torchvision, caffe, inception, model, got 'imagenet'/,
      ],
      [
        ['train', SOURCE, data, '--case', '1', '--out', path.join(dir, 'e.onnx'), '--init-weights', 'none.safetensors'],
        /--init-weights: .*none\.safetensors does not exist; expected a \.safetensors file/,
      ],
      [
        ['train', SOURCE, data, '--case', '1', '--out', path.join(dir, 'e.onnx'), '--init-weights', foreignWeights],
        /weights file .*foreign\.safetensors: tensor 'encoder\.weight' is not an initializer of the model/,
      ],
      [['eval', SOURCE, noImages], /class folder .*no-images\/b holds no images/],
      [['predict', SOURCE, path.join(dir, 'missing.png')], /missing\.png does not exist; expected an image file/],
      [['predict', SOURCE, dir], new RegExp(`${dir} is a directory, expected an image file`)],
      [['predict', path.join(dir, 'missing.onnx'), files[0]], /missing\.onnx does not exist; expected an \.onnx file/],
      [['eval', dir, data], new RegExp(`${dir} is a directory, expected an \\.onnx file`)],
    ];
    for (const [args, message] of cases) {
      const r = graft(...args);
      expect(r.status, args.join(' ')).toBeGreaterThan(0);
      const lines = errorLines(r);
      expect(lines, `${args.join(' ')}: ${r.stderr}`).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^graft ${args[0]}: `));
      expect(lines[0]).toMatch(message);
      expect(r.stdout).not.toMatch(/^data:|^epoch/m); // refused before any training
    }
    // Refused before training also means nothing written.
    expect(existsSync(path.join(dir, 'e.onnx'))).toBe(false);
    chmodSync(readOnly, 0o755);
  }, 120_000);

  it("eval on a folder whose classes are not the model's labels lists both", () => {
    const other = path.join(dir, 'other');
    for (const c of ['bright', 'zebra']) {
      mkdirSync(path.join(other, c), { recursive: true });
      writeFileSync(path.join(other, c, 'a.png'), readFileSync(files[0]));
    }
    const r = graft('eval', SOURCE, other);
    expect(r.status).toBe(1);
    const lines = errorLines(r);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /class folders the model does not know \(bright, zebra\).*folder classes: bright, zebra; model classes: T-shirt\/top, Pullover, Dress, Sandal, Bag/,
    );
  }, 60_000);
});
