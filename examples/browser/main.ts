// The example page: open an ONNX classifier (or the shipped source network), pick a transfer case
// and classes, fine-tune on dropped images or the shipped Fashion-MNIST sample on this tab's WebGPU,
// predict, download the tuned .onnx. Uses the engine's browser-safe core only (no src/cli, no
// src/node); bundled by scripts/serve-example.mjs. Every failure ends in the error panel.
import { GpuContext } from '../../src/kernels/gpu-context.ts';
import type { Dim, Graph } from '../../src/graph/ir.ts';
import { loadModel } from '../../src/graph/load.ts';
import {
  preprocessPreset,
  readLabels,
  readPreprocess,
  writeLabels,
  writePreprocess,
  type PreprocessSpec,
} from '../../src/graph/model-metadata.ts';
import { summarizeGraph } from '../../src/graph/summary.ts';
import { cutPoints, defaultCutPoint, transfer, type CutPoint } from '../../src/graph/surgery/index.ts';
import { batches, inMemoryDataset, type Dataset } from '../../src/data/index.ts';
import { decodeImageAsync, sniffImageFormat } from '../../src/data/decode.ts';
import { parseIdx } from '../../src/data/idx.ts';
import { evalTransform } from '../../src/data/preprocess.ts';
import { byteImage, type ByteImage } from '../../src/data/tensor-image.ts';
import { Trainer, type EpochMetrics, type StepInfo } from '../../src/train/trainer.ts';

/** Larger models are refused before their bytes are read: the tab would hold them several times over (decoded graph, GPU copies). */
const MAX_MODEL_BYTES = 512 * 1024 * 1024;
const NO_WEBGPU =
  'This browser has no WebGPU (navigator.gpu is undefined), so the page cannot train or predict. ' +
  'Use a browser with WebGPU enabled: Chrome or Edge 113 or later, Safari 26, or Firefox 141 on Windows.';
const SOURCE_URL = 'models-onnx/source/source-net.onnx';
const SAMPLE_URL = 'models-onnx/samples/fashion-mnist/';
/** The sample's classes: the Fashion-MNIST labels the source network never saw. */
const SAMPLE_CLASSES: readonly { label: number; name: string }[] = [
  { label: 1, name: 'Trouser' },
  { label: 4, name: 'Coat' },
  { label: 6, name: 'Shirt' },
  { label: 7, name: 'Sneaker' },
  { label: 9, name: 'Ankle boot' },
];
/** Three classes that look unlike each other: a few images each are enough to tell them apart. */
const DEFAULT_SAMPLE_CLASSES = ['Trouser', 'Coat', 'Sneaker'];
const CASES: readonly { case: 1 | 2 | 3 | 4; text: string }[] = [
  { case: 1, text: 'similar data, few images: keep the whole body frozen, train one new dense layer' },
  {
    case: 2,
    text: 'different data, few images: keep the early layers (up to the selected cut point) frozen, train a new head',
  },
  { case: 3, text: 'similar data, many images: replace the last layer, train everything from the pretrained weights' },
  { case: 4, text: 'different data, many images: replace the last layer and train everything' },
];

interface LabelledImages {
  classes: string[];
  images: ByteImage[];
  labels: number[];
  /** Images not trained on, for "predict a held-out sample" (with their true class). */
  heldOut: { image: ByteImage; label: number }[];
  what: string;
}

const state: {
  graph?: Graph;
  modelName?: string;
  cuts: CutPoint[];
  cutAt?: string;
  data?: LabelledImages;
  gpu?: GpuContext;
  trainer?: Trainer;
  busy: boolean;
  downloadUrl?: string;
} = { cuts: [], busy: false };

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

// ─── messages ────────────────────────────────────────────────────────────────────────────

function showError(message: string): void {
  const panel = $('error');
  panel.textContent = message;
  panel.hidden = false;
  setStatus('Stopped: see the message above.');
}

function clearError(): void {
  $('error').hidden = true;
  $('error').textContent = '';
}

function setStatus(text: string): void {
  $('status').textContent = text;
}

function describe(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

/** Runs one user action: one at a time, its failure shown in the error panel, never thrown away. */
async function action(what: string, work: () => Promise<void>): Promise<void> {
  if (state.busy) {
    showError(`Still busy; ${what} waits until the current step finishes.`);
    return;
  }
  state.busy = true;
  refreshButtons();
  clearError();
  try {
    await work();
  } catch (error) {
    showError(`${what} failed: ${describe(error)}`);
  } finally {
    state.busy = false;
    refreshButtons();
  }
}

// ─── 1. the model ────────────────────────────────────────────────────────────────────────

async function openModelFile(file: File): Promise<void> {
  if (file.size > MAX_MODEL_BYTES)
    throw new Error(
      `${file.name}: ${(file.size / 2 ** 20).toFixed(0)} MiB is too large for this tab (at most ${MAX_MODEL_BYTES / 2 ** 20} MiB: the page holds the model several times over while training)`,
    );
  openModel(new Uint8Array(await file.arrayBuffer()), file.name);
}

async function openSourceNetwork(): Promise<void> {
  setStatus('Fetching the source network…');
  openModel(await fetchBytes(SOURCE_URL), 'source-net.onnx');
}

function openModel(bytes: Uint8Array, name: string): void {
  if (bytes.length > MAX_MODEL_BYTES)
    throw new Error(`${name}: ${(bytes.length / 2 ** 20).toFixed(0)} MiB is too large for this tab`);
  let graph: Graph;
  try {
    graph = loadModel(bytes, { file: name });
  } catch (error) {
    // The engine's message names the file; say also what the page expected.
    throw new Error(
      `${describe(error)}\n(${name} is not an ONNX model this page can open: expected an ONNX image classifier)`,
    );
  }
  if (graph.feedInputs.length !== 1)
    throw new Error(`${name}: expected one image input, found ${graph.feedInputs.length}`);
  disposeTraining();
  state.graph = graph;
  state.modelName = name;
  state.cuts = cutPoints(graph);
  state.cutAt = defaultCutPoint(graph, state.cuts)?.tensor;
  const summary = summarizeGraph(graph);
  const input = summary.inputs[0];
  $('model-info').textContent =
    `${name}: ${graph.nodes.length} layers, ${summary.parameters.toLocaleString('en-US')} parameters; ` +
    `input '${input.name}' [${showDims(input.shape)}]` +
    (readLabels(graph) ? `; labels ${readLabels(graph)!.join(', ')}` : '');
  fillTable(
    $<HTMLTableElement>('layers'),
    ['#', 'name', 'op', 'output shape', 'parameters'],
    summary.nodes.map((n, i) => [
      String(i),
      n.name || '(unnamed)',
      n.opType,
      n.outputShapes.map(showDims).join('; '),
      n.parameters ? n.parameters.toLocaleString('en-US') : '',
    ]),
  );
  $('layers-box').hidden = false;
  renderCuts();
  setStatus(`Opened ${name}. Choose a case and the images.`);
}

function renderCuts(): void {
  const table = $<HTMLTableElement>('cuts');
  table.replaceChildren();
  $('cuts-box').hidden = false;
  if (!state.cuts.length) {
    table.textContent =
      'No cut points found (no pooling, residual or module boundaries): cases 1, 3 and 4 still apply.';
    return;
  }
  const head = table.createTHead().insertRow();
  for (const h of ['cut', 'tensor', 'after node (op)', 'kind', 'output shape', 'layers kept'])
    head.appendChild(document.createElement('th')).textContent = h;
  const body = table.createTBody();
  for (const point of state.cuts) {
    const row = body.insertRow();
    row.classList.toggle('selected', point.tensor === state.cutAt);
    const radio = document.createElement('input');
    radio.type = 'radio';
    radio.name = 'cut';
    radio.value = point.tensor;
    radio.checked = point.tensor === state.cutAt;
    radio.addEventListener('change', () => {
      state.cutAt = point.tensor;
      for (const r of Array.from(body.rows)) r.classList.toggle('selected', r.contains(radio));
    });
    row.insertCell().appendChild(radio);
    for (const cell of [
      point.tensor,
      `${point.node || '(unnamed)'} (${point.opType})`,
      point.features ? 'features' : point.kind,
      showDims(point.shape),
      String(point.layers),
    ])
      row.insertCell().textContent = cell;
  }
}

// ─── 2. the case ─────────────────────────────────────────────────────────────────────────

function renderCases(): void {
  const box = $('cases');
  for (const c of CASES) {
    const label = document.createElement('label');
    const radio = document.createElement('input');
    radio.type = 'radio';
    radio.name = 'case';
    radio.value = String(c.case);
    radio.checked = c.case === 1;
    label.append(radio, ` Case ${c.case}: ${c.text}`);
    box.appendChild(label);
  }
}

function chosenCase(): 1 | 2 | 3 | 4 {
  const checked = document.querySelector<HTMLInputElement>('input[name="case"]:checked');
  return Number(checked?.value ?? 1) as 1 | 2 | 3 | 4;
}

// ─── 3. the data ─────────────────────────────────────────────────────────────────────────

function renderSampleClasses(): void {
  const box = $('sample-classes');
  box.append('Sample classes: ');
  SAMPLE_CLASSES.forEach((c) => {
    const label = document.createElement('label');
    const checkbox = document.createElement('input');
    checkbox.type = 'checkbox';
    checkbox.value = String(c.label);
    checkbox.dataset.name = c.name;
    checkbox.checked = DEFAULT_SAMPLE_CLASSES.includes(c.name);
    label.append(checkbox, ` ${c.name}`);
    box.appendChild(label);
  });
}

async function useSample(): Promise<void> {
  const chosen = Array.from(document.querySelectorAll<HTMLInputElement>('#sample-classes input:checked'));
  if (chosen.length < 2) throw new Error('choose at least two sample classes: a classifier needs two');
  const perClass = integerInput('per-class', 1, 300);
  setStatus('Fetching and unpacking the Fashion-MNIST sample…');
  const [trainImages, trainLabels, testImages, testLabels] = await Promise.all(
    [
      'train-images-idx3-ubyte.gz',
      'train-labels-idx1-ubyte.gz',
      't10k-images-idx3-ubyte.gz',
      't10k-labels-idx1-ubyte.gz',
    ].map(async (name) => parseIdx(await gunzip(await fetchBytes(SAMPLE_URL + name)), name)),
  );
  const classOf = new Map(chosen.map((c, i) => [Number(c.value), i]));
  const pick = (images: typeof trainImages, labels: typeof trainLabels, per: number) => {
    const [count, height, width] = images.dims;
    const taken = new Array<number>(chosen.length).fill(0);
    const out: { image: ByteImage; label: number }[] = [];
    for (let i = 0; i < count; i++) {
      const label = classOf.get(Number(labels.data[i]));
      if (label === undefined || taken[label] >= per) continue;
      taken[label]++;
      const pixels = (images.data as Uint8Array).slice(i * height * width, (i + 1) * height * width);
      out.push({ image: byteImage(width, height, 1, pixels), label });
    }
    return out;
  };
  const train = pick(trainImages, trainLabels, perClass);
  state.data = {
    classes: chosen.map((c) => c.dataset.name!),
    images: train.map((t) => t.image),
    labels: train.map((t) => t.label),
    heldOut: pick(testImages, testLabels, 20),
    what: 'the Fashion-MNIST sample',
  };
  showData();
}

async function useDroppedImages(files: File[]): Promise<void> {
  const byClass = new Map<string, ByteImage[]>();
  for (const file of files) {
    const match = /^(.+?)_[^/]*$/.exec(file.name);
    if (!match)
      throw new Error(
        `${file.name}: cannot tell its class; name labelled images <class>_<anything>.png (e.g. cat_01.png)`,
      );
    const image = await decodeFile(file);
    const list = byClass.get(match[1]) ?? [];
    list.push(image);
    byClass.set(match[1], list);
  }
  const classes = [...byClass.keys()].sort();
  if (classes.length < 2)
    throw new Error(
      `found ${classes.length} class (${classes.join(', ') || 'none'}) in the dropped names; a classifier needs two`,
    );
  const images: ByteImage[] = [];
  const labels: number[] = [];
  classes.forEach((name, label) => {
    for (const image of byClass.get(name)!) {
      images.push(image);
      labels.push(label);
    }
  });
  state.data = { classes, images, labels, heldOut: [], what: `${files.length} dropped images` };
  showData();
}

function showData(): void {
  const data = state.data!;
  const counts = data.classes.map((c, i) => `${c} ${data.labels.filter((l) => l === i).length}`);
  $('data-info').textContent = `${data.images.length} images from ${data.what}: ${counts.join(', ')}`;
  setStatus('Images ready. Train when you are.');
}

// ─── 4. training ─────────────────────────────────────────────────────────────────────────

async function fineTune(): Promise<void> {
  const graph = state.graph;
  const data = state.data;
  if (!graph) throw new Error('open a model first (step 1)');
  if (!data) throw new Error('choose the images first (step 3)');
  const epochs = integerInput('epochs', 1, 100);
  const batchSize = integerInput('batch', 1, 256);
  const lr = Number(($('lr') as HTMLInputElement).value);
  if (!(lr > 0))
    throw new Error(`learning rate: expected a positive number, got '${($('lr') as HTMLInputElement).value}'`);
  const transferCase = chosenCase();
  disposeTraining();

  const spec = preprocessOf(graph);
  const { graph: tuned, summary } = transfer(graph, {
    case: transferCase,
    classes: data.classes.length,
    cutAt: transferCase === 2 ? state.cutAt : undefined,
    seed: 0,
  });
  writeLabels(tuned, data.classes);
  writePreprocess(tuned, spec);

  setStatus('Starting WebGPU…');
  if (!navigator.gpu) throw new Error(NO_WEBGPU);
  state.gpu ??= await GpuContext.create({ gpu: navigator.gpu });
  state.trainer = await Trainer.create(state.gpu, tuned);
  const dataset = inMemoryDataset(data.images, data.labels, data.classes);
  const transform = evalTransform(spec);
  const heldOut = data.heldOut.length
    ? inMemoryDataset(
        data.heldOut.map((h) => h.image),
        data.heldOut.map((h) => h.label),
        data.classes,
      )
    : undefined;
  const source = (set: Dataset, shuffle: boolean) => (epoch: number) =>
    batches(set, { batchSize, shuffle, seed: 0, epoch, transform });
  const stepsPerEpoch = Math.ceil(data.images.length / batchSize);
  const chart = new Chart($<HTMLCanvasElement>('chart'), epochs * stepsPerEpoch);
  setStatus(
    `Training: case ${transferCase}, ${summary.trainableParameters.toLocaleString('en-US')} trainable parameters (the first steps compile the GPU programs)…`,
  );
  const result = await state.trainer.fit(source(dataset, true), {
    epochs,
    optimizer: { type: 'adam', lr },
    validation: heldOut ? source(heldOut, false) : undefined,
    stepsPerEpoch,
    callbacks: {
      onStep: (step: StepInfo) => {
        chart.add(step);
        $('progress').textContent =
          `epoch ${step.epoch + 1}/${epochs}, step ${step.stepInEpoch}/${stepsPerEpoch}: loss ${step.loss.toFixed(4)}, ` +
          `epoch accuracy ${(100 * step.epochTop1).toFixed(1)}%`;
      },
      // Feature caching runs the frozen body over every image before the first step: say so.
      onLog: (message) => ($('progress').textContent = message),
      onEpochEnd: (m) => {
        chart.addEpoch(m);
        $('progress').textContent =
          `epoch ${m.epoch}/${epochs} done: loss ${m.loss.toFixed(4)}, accuracy ${(100 * m.top1).toFixed(1)}%` +
          (m.valTop1 !== undefined
            ? `; held-out loss ${m.valLoss!.toFixed(4)}, accuracy ${(100 * m.valTop1).toFixed(1)}%`
            : '') +
          ` (${m.seconds.toFixed(1)} s)`;
      },
    },
  });
  const last = result.history.at(-1);
  const bytes = await state.trainer.exportModel();
  if (state.downloadUrl) URL.revokeObjectURL(state.downloadUrl);
  state.downloadUrl = URL.createObjectURL(
    new Blob([bytes as Uint8Array<ArrayBuffer>], { type: 'application/octet-stream' }),
  );
  const link = $<HTMLAnchorElement>('download');
  link.href = state.downloadUrl;
  link.download = `${(state.modelName ?? 'model').replace(/\.onnx$/i, '')}-tuned.onnx`;
  link.textContent = `download ${link.download} (${(bytes.length / 1024).toFixed(0)} KiB)`;
  link.setAttribute('aria-disabled', 'false');
  setStatus(
    `Trained ${result.history.length} epoch${result.history.length === 1 ? '' : 's'}` +
      (result.featureCache ? ' (frozen body run once per image, head trained on its features)' : '') +
      (last ? `: final loss ${last.loss.toFixed(4)}, accuracy ${(100 * last.top1).toFixed(1)}%` : '') +
      '. Predict or download.',
  );
}

/** The model's own preprocessing (metadata), else torchvision's at its input size. */
function preprocessOf(graph: Graph): PreprocessSpec {
  const own = readPreprocess(graph);
  if (own) return own;
  const size = graph.feedInputs[0].shape?.at(-1);
  if (typeof size !== 'number')
    throw new Error(`${state.modelName}: the input's size is not fixed and the model has no preprocessing metadata`);
  return preprocessPreset('torchvision', size);
}

function disposeTraining(): void {
  state.trainer?.dispose();
  state.trainer = undefined;
  const link = $<HTMLAnchorElement>('download');
  link.removeAttribute('href');
  link.setAttribute('aria-disabled', 'true');
}

/**
 * Per step: loss (left axis, blue) and the epoch's running accuracy (right axis 0–100%, green);
 * per epoch: held-out accuracy (orange dots) when there is a held-out set.
 */
class Chart {
  readonly #points: { loss: number; top1: number }[] = [];
  readonly #heldOut: { step: number; top1: number }[] = [];

  constructor(
    readonly canvas: HTMLCanvasElement,
    readonly totalSteps: number,
  ) {
    this.#draw();
  }

  add(step: StepInfo): void {
    this.#points.push({ loss: step.loss, top1: step.epochTop1 });
    this.#draw();
  }

  addEpoch(metrics: EpochMetrics): void {
    if (metrics.valTop1 === undefined) return;
    this.#heldOut.push({ step: this.#points.length - 1, top1: metrics.valTop1 });
    this.#draw();
  }

  #draw(): void {
    const g = this.canvas.getContext('2d');
    if (!g) return;
    const { width, height } = this.canvas;
    const left = 48;
    const right = 64;
    const top = 16;
    const bottom = 28;
    const w = width - left - right;
    const h = height - top - bottom;
    g.clearRect(0, 0, width, height);
    g.font = '11px system-ui, sans-serif';
    g.strokeStyle = '#c5ccd9';
    g.strokeRect(left, top, w, h);
    const maxLoss = Math.max(1e-6, ...this.#points.map((p) => p.loss));
    const x = (i: number) => left + (w * (i + 1)) / Math.max(1, this.totalSteps);
    const series = (color: string, y: (p: { loss: number; top1: number }) => number) => {
      g.strokeStyle = color;
      g.lineWidth = 2;
      g.beginPath();
      this.#points.forEach((p, i) => (i ? g.lineTo(x(i), y(p)) : g.moveTo(x(i), y(p))));
      g.stroke();
    };
    series('#3a66c4', (p) => top + h * (1 - p.loss / maxLoss));
    series('#2e9a55', (p) => top + h * (1 - p.top1));
    g.fillStyle = '#d9822b';
    for (const e of this.#heldOut) {
      g.beginPath();
      g.arc(x(e.step), top + h * (1 - e.top1), 4, 0, 2 * Math.PI);
      g.fill();
    }
    if (this.#heldOut.length) g.fillText('held-out', width - right + 4, top + 38);
    g.fillStyle = '#3a66c4';
    g.fillText(`loss (max ${maxLoss.toFixed(2)})`, 4, top + 10);
    g.fillStyle = '#2e9a55';
    g.fillText('accuracy', width - right + 4, top + 10);
    g.fillText('100%', width - right + 4, top + 24);
    g.fillText('0%', width - right + 4, top + h);
    g.fillStyle = '#555e70';
    g.fillText(`step ${this.#points.length} of ${this.totalSteps}`, left, height - 8);
  }
}

// ─── 5. prediction ───────────────────────────────────────────────────────────────────────

let heldOutNext = 0;

async function predictHeldOut(): Promise<void> {
  const data = state.data;
  if (!data?.heldOut.length)
    throw new Error('no held-out images: use the sample (step 3), or drop an image to predict');
  const { image, label } = data.heldOut[heldOutNext++ % data.heldOut.length];
  await predict(image, `held-out sample image, truly: ${data.classes[label]}`);
}

async function predictFile(file: File): Promise<void> {
  await predict(await decodeFile(file), file.name);
}

async function predict(image: ByteImage, what: string): Promise<void> {
  const trainer = state.trainer;
  if (!trainer) throw new Error('train first (step 4): there is no tuned model to predict with');
  const spec = preprocessOf(state.graph!);
  const input = evalTransform(spec)(image, Math.random);
  drawImage(image);
  const [result] = await trainer.classify(input.data, { topK: 3 });
  $('predict-truth').textContent = what;
  $('prediction').replaceChildren(
    ...result.top.map((t) => {
      const item = document.createElement('li');
      item.textContent = `${t.label}: ${(100 * t.probability).toFixed(1)}%`;
      return item;
    }),
  );
  setStatus(`Predicted: ${result.top[0].label}.`);
}

function drawImage(image: ByteImage): void {
  const canvas = $<HTMLCanvasElement>('predict-image');
  const scratch = document.createElement('canvas');
  scratch.width = image.width;
  scratch.height = image.height;
  const pixels = new ImageData(image.width, image.height);
  for (let i = 0; i < image.width * image.height; i++) {
    for (let c = 0; c < 3; c++)
      pixels.data[4 * i + c] = image.data[image.channels * i + (image.channels === 3 ? c : 0)];
    pixels.data[4 * i + 3] = 255;
  }
  scratch.getContext('2d')!.putImageData(pixels, 0, 0);
  const g = canvas.getContext('2d')!;
  g.imageSmoothingEnabled = false;
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.drawImage(scratch, 0, 0, canvas.width, canvas.height);
}

// ─── helpers ─────────────────────────────────────────────────────────────────────────────

async function fetchBytes(url: string): Promise<Uint8Array> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status} ${response.statusText}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function gunzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream('gzip'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function decodeFile(file: File): Promise<ByteImage> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  if (!sniffImageFormat(bytes))
    throw new Error(`${file.name} is not an image this page can read: expected a PNG or JPEG file`);
  return decodeImageAsync(bytes, { name: file.name });
}

function integerInput(id: string, min: number, max: number): number {
  const raw = ($(id) as HTMLInputElement).value;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new Error(`${id}: expected a whole number from ${min} to ${max}, got '${raw}'`);
  return value;
}

function showDims(shape: readonly Dim[] | undefined): string {
  return shape ? shape.map((d) => d ?? '?').join(' × ') : '?';
}

function fillTable(t: HTMLTableElement, header: string[], rows: string[][]): void {
  t.replaceChildren();
  const head = t.createTHead().insertRow();
  for (const h of header) head.appendChild(document.createElement('th')).textContent = h;
  const body = t.createTBody();
  for (const r of rows) {
    const row = body.insertRow();
    for (const cell of r) row.insertCell().textContent = cell;
  }
}

function refreshButtons(): void {
  ($('train') as HTMLButtonElement).disabled = state.busy || !state.graph || !state.data;
  ($('predict-sample') as HTMLButtonElement).disabled = state.busy || !state.trainer || !state.data?.heldOut.length;
}

/** A drop zone and its file input feed the same handler. */
function acceptFiles(zone: string, input: string, what: string, handle: (files: File[]) => Promise<void>): void {
  const element = $(zone);
  element.addEventListener('dragover', (e) => {
    e.preventDefault();
    element.classList.add('over');
  });
  element.addEventListener('dragleave', () => element.classList.remove('over'));
  element.addEventListener('drop', (e) => {
    e.preventDefault();
    element.classList.remove('over');
    const files = Array.from(e.dataTransfer?.files ?? []);
    if (files.length) void action(what, () => handle(files));
  });
  const picker = $<HTMLInputElement>(input);
  picker.addEventListener('change', () => {
    const files = Array.from(picker.files ?? []);
    picker.value = '';
    if (files.length) void action(what, () => handle(files));
  });
}

// ─── start ───────────────────────────────────────────────────────────────────────────────

function start(): void {
  renderCases();
  renderSampleClasses();
  // Dropping a file outside a zone would navigate away from the page (and lose the training).
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());
  acceptFiles('model-drop', 'model-file', 'Opening the model', async (files) => {
    if (files.length !== 1) throw new Error(`drop one .onnx file, not ${files.length}`);
    await openModelFile(files[0]);
  });
  acceptFiles('data-drop', 'data-files', 'Reading the images', useDroppedImages);
  acceptFiles('predict-drop', 'predict-file', 'Predicting', (files) => predictFile(files[0]));
  $('use-source').addEventListener('click', () => void action('Opening the source network', openSourceNetwork));
  $('use-sample').addEventListener('click', () => void action('Loading the sample', useSample));
  $('train').addEventListener('click', () => void action('Training', fineTune));
  $('predict-sample').addEventListener('click', () => void action('Predicting', predictHeldOut));
  refreshButtons();
  if (!navigator.gpu) {
    showError(NO_WEBGPU);
    return;
  }
  setStatus('Ready: open a model (step 1).');
}

window.addEventListener('error', (e) => showError(`Unexpected error: ${e.message}`));
window.addEventListener('unhandledrejection', (e) => showError(`Unexpected error: ${describe(e.reason)}`));
start();
