// Browser benchmark (issue 10): in ONE Chromium page, WebGPU on SwiftShader (test/helpers/chromium.mjs),
// each row runs on onnx-graft, onnxruntime-web's WebGPU and WASM providers and (kernel rows) TF.js's
// WebGPU backend, on the same seeded input and weights. The ONNX models, inputs and reference outputs
// (onnxruntime-node's CPU provider) are made here in Node and served on 127.0.0.1 with the page
// (bench/browser-page.ts, bundled by esbuild) and onnxruntime-web's dist files. The server sends
// COOP/COEP headers, so the page is cross-origin isolated and ORT's WASM provider may use threads.
// Rows: GEMM 256³ and 512³, conv 3×3 64→64 @28 b1, dense 4096→1000 b1 (one-node ONNX models), and
// light SqueezeNet 1.0 and ResNet-50 (random weights) at a reduced input size (below: SwiftShader
// runs ResNet-50 at 224 for seconds per run per engine).
// Prints the checks, then a table (median wall ms; ratio = engine ms ÷ onnx-graft ms, above 1 means
// onnx-graft is faster); writes bench/results/browser-<ISO date>.json and bench/results/browser-latest.md.
//
// Usage: npm run bench -- browser [--quick] [--no-md]
//   --quick: GEMM 256³ and SqueezeNet at 64×64 only, one warm-up and three timed runs (no markdown).
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleForBrowser } from '../scripts/browser-bundle.mjs';
import type { Graph } from '../src/graph/ir.ts';
import { adaptToInputSize } from '../src/graph/surgery/index.ts';
import { CHROMIUM, launchWebGpuChromium } from '../test/helpers/chromium.mjs';
import { onnxBytesForOrt, randomizedLightModel, runOrt, type LightModel } from '../test/helpers/reference-models.ts';
import { randomFloat32Array } from '../test/helpers/random.ts';
import type { BenchManifest, BenchPageResult, BenchRowSpec, EngineName, EngineResult, TfjsOp } from './browser-page.ts';
import { writeResults } from './results-file.ts';
import { convModel, matmulModel, type ConvShape, type SingleNode } from './workloads.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ORT_DIST = path.join(ROOT, 'node_modules/onnxruntime-web/dist');
const MAX_REL_L2 = 1e-3;
/** The page's engines (bench/browser-page.ts is only type-imported here: importing it runs the page). */
const ENGINES: readonly EngineName[] = ['onnx-graft', 'ORT-web WebGPU', 'ORT-web WASM', 'TF.js WebGPU'];

const argv = process.argv.slice(2).filter((a) => a !== 'browser');
for (const a of argv)
  if (a !== '--quick' && a !== '--no-md') throw new Error(`bench browser: unknown argument '${a}' (--quick, --no-md)`);
const QUICK = argv.includes('--quick');
const WRITE_MD = !QUICK && !argv.includes('--no-md');
/** SwiftShader runs ResNet-50 at 224×224 in seconds per run; 112×112 is a quarter of the work. */
const RESNET_SIZE = 112;
const SQUEEZENET_SIZE = QUICK ? 64 : 224;
/** Timed runs per engine and row: up to maxRuns, fewer for slow ones (ORT-web WebGPU takes seconds a run here). */
const KERNEL_RUNS = QUICK
  ? { warmup: 1, minRuns: 3, maxRuns: 3, budgetMs: 0 }
  : { warmup: 3, minRuns: 3, maxRuns: 15, budgetMs: 6000 };
const MODEL_RUNS = QUICK
  ? { warmup: 1, minRuns: 3, maxRuns: 3, budgetMs: 0 }
  : { warmup: 2, minRuns: 3, maxRuns: 7, budgetMs: 6000 };
/** The whole page run; a hang fails here and closes the browser. */
const PAGE_TIMEOUT_MS = QUICK ? 120_000 : 420_000;

// ---- the rows, written into a served folder ----

class DataFolder {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'graft-bench-browser-'));
  rowCount = 0;
  write(file: string, data: Uint8Array | Float32Array): string {
    fs.writeFileSync(path.join(this.dir, file), new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return file;
  }
}

async function addRow(
  data: DataFolder,
  what: string,
  section: BenchRowSpec['section'],
  graph: Graph,
  input: { name: string; dims: number[]; data: Float32Array },
  tfjs: ((id: string) => TfjsOp) | undefined,
): Promise<BenchRowSpec> {
  const id = `row${data.rowCount++}`;
  const bytes = onnxBytesForOrt(graph);
  const outputName = graph.outputs[0].name;
  const reference = (await runOrt(bytes, { [input.name]: input }, 'cpu'))[outputName];
  if (!reference) throw new Error(`bench browser: ${what}: onnxruntime-node gave no output '${outputName}'`);
  return {
    what,
    section,
    model: data.write(`${id}.onnx`, bytes),
    input: { name: input.name, dims: input.dims, file: data.write(`${id}.input.f32`, input.data) },
    output: { name: outputName, dims: reference.dims, file: data.write(`${id}.output.f32`, reference.data) },
    tfjs: tfjs?.(id),
    ...(section === 'kernel' ? KERNEL_RUNS : MODEL_RUNS),
  };
}

const weightOf = (model: SingleNode, k: number) =>
  model.graph.initializers.get(model.graph.nodes[0].inputs[k])!.value.data as Float32Array;

function matmulRow(data: DataFolder, what: string, m: number, k: number, n: number): Promise<BenchRowSpec> {
  const model = matmulModel(m, k, n, m * 7 + n);
  return addRow(data, what, 'kernel', model.graph, model.input, (id) => ({
    op: 'matMul',
    m,
    k,
    n,
    weight: data.write(`${id}.weight.f32`, weightOf(model, 1)),
  }));
}

function convRow(data: DataFolder, s: ConvShape): Promise<BenchRowSpec> {
  const model = convModel(s, s.inChannels * 100 + s.size);
  const what = `conv ${s.kernel}×${s.kernel} ${s.inChannels}→${s.outChannels} @${s.size} b${s.images}`;
  return addRow(data, what, 'kernel', model.graph, model.input, (id) => ({
    op: 'conv2d',
    ...s,
    weight: data.write(`${id}.weight.f32`, weightOf(model, 1)),
    bias: data.write(`${id}.bias.f32`, weightOf(model, 2)),
  }));
}

function modelRow(data: DataFolder, name: LightModel, label: string, size: number, seed: number) {
  const { graph } = adaptToInputSize(randomizedLightModel(name, seed), size);
  const feed = graph.feedInputs[0];
  const dims = [1, 3, size, size];
  const input = { name: feed.name, dims, data: randomFloat32Array(3 * size * size, seed + 1) };
  return addRow(data, `${label} @${size} b1`, 'model', graph, input, undefined);
}

async function makeRows(data: DataFolder): Promise<BenchRowSpec[]> {
  const rows = [await matmulRow(data, 'GEMM 256³', 256, 256, 256)];
  if (!QUICK) {
    rows.push(await matmulRow(data, 'GEMM 512³', 512, 512, 512));
    rows.push(
      await convRow(data, { images: 1, inChannels: 64, outChannels: 64, size: 28, kernel: 3, stride: 1, pad: 1 }),
    );
    rows.push(await matmulRow(data, 'dense 4096→1000 b1', 1, 4096, 1000));
  }
  rows.push(await modelRow(data, 'squeezenet', 'SqueezeNet 1.0', SQUEEZENET_SIZE, 4040));
  if (!QUICK) rows.push(await modelRow(data, 'resnet50', 'ResNet-50', RESNET_SIZE, 5050));
  return rows;
}

// ---- the page, served ----

const PAGE = `<!doctype html><meta charset="utf-8"><title>onnx-graft browser benchmark</title>
<script type="importmap">{"imports":{"onnxruntime-web":"./ort/ort.all.min.mjs"}}</script>
<script type="module" src="bundle.js"></script>`;
const TYPES: Record<string, string> = {
  '.js': 'text/javascript',
  '.mjs': 'text/javascript',
  '.html': 'text/html',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
};

/** A file under `root` named by the rest of the URL path, or undefined (missing, or outside root). */
function fileUnder(root: string, rest: string): string | undefined {
  const file = path.resolve(root, decodeURIComponent(rest));
  return file.startsWith(root + path.sep) && fs.existsSync(file) ? file : undefined;
}

/** The page, the bundle, onnxruntime-web's dist (under ort/) and the rows (under data/), cross-origin isolated. */
function serve(bundle: Uint8Array, dataDir: string): Promise<http.Server> {
  const routes = [
    ['/ort/', ORT_DIST],
    ['/data/', dataDir],
  ] as const;
  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    const send = (status: number, body: Uint8Array | string, type = 'application/octet-stream') => {
      response.writeHead(status, {
        'content-type': type,
        'cross-origin-opener-policy': 'same-origin',
        'cross-origin-embedder-policy': 'require-corp',
      });
      response.end(body);
    };
    const p = url.pathname;
    if (p === '/' || p === '/index.html') return send(200, PAGE, TYPES['.html']);
    if (p === '/favicon.ico') return send(204, '');
    if (p === '/bundle.js') return send(200, bundle, TYPES['.js']);
    const route = routes.find(([prefix]) => p.startsWith(prefix));
    const file = route && fileUnder(route[1], p.slice(route[0].length));
    if (!file) return send(404, 'not found', 'text/plain');
    send(200, fs.readFileSync(file), TYPES[path.extname(file)]);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function runPage(rows: BenchRowSpec[], data: DataFolder): Promise<BenchPageResult & { browserVersion: string }> {
  const manifest: BenchManifest = { rows, maxRelL2: MAX_REL_L2 };
  fs.writeFileSync(path.join(data.dir, 'manifest.json'), JSON.stringify(manifest));
  const bundled = await bundleForBrowser(path.join(ROOT, 'bench/browser-page.ts'), { external: ['onnxruntime-web'] });
  const server = await serve(bundled, data.dir);
  const browser = await launchWebGpuChromium();
  try {
    const page = await browser.newPage();
    page.on('console', (message) => console.log(`  ${message.text()}`));
    page.on('pageerror', (error) => console.log(`  page error: ${error.message}`));
    const { port } = server.address() as { port: number };
    await page.goto(`http://127.0.0.1:${port}/`);
    const handle = await page.waitForFunction(() => window.browserBench, undefined, {
      timeout: PAGE_TIMEOUT_MS,
      polling: 500,
    });
    const result = (await handle.jsonValue()) as BenchPageResult | { error: string };
    if ('error' in result) throw new Error(`the page stopped: ${result.error}`);
    return { ...result, browserVersion: browser.version() };
  } finally {
    await browser.close();
    server.close();
  }
}

// ---- the table ----

const ratioOf = (r: EngineResult, graft: EngineResult | undefined) =>
  r.ms !== undefined && graft?.ms !== undefined ? r.ms / graft.ms : undefined;

function table(results: EngineResult[]): string {
  const lines = [
    '| row | engine | median ms | runs | ratio vs onnx-graft | rel L2 vs ORT-node CPU |',
    '|---|---|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    const graft = results.find((g) => g.what === r.what && g.engine === 'onnx-graft');
    const ratio = ratioOf(r, graft);
    const ms = r.ms !== undefined ? r.ms.toFixed(2) : `failed: ${r.error ?? '?'}`;
    const check = r.relL2 !== undefined ? `${r.relL2.toExponential(1)}${r.agrees ? '' : ' DISAGREES'}` : '—';
    lines.push(
      `| ${r.what} | ${r.engine} | ${ms} | ${r.timesMs?.length ?? 0} | ${ratio !== undefined ? ratio.toFixed(2) : '—'} | ${check} |`,
    );
  }
  return lines.join('\n');
}

async function main(): Promise<number> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`bench browser: ${CHROMIUM} is missing; install Debian's chromium`);
  const startedAt = new Date();
  const loadAtStart = os.loadavg();
  const started = performance.now();
  const data = new DataFolder();
  try {
    const rows = await makeRows(data);
    console.log(`rows made in Node: ${rows.map((r) => r.what).join(', ')}`);
    const page = await runPage(rows, data);
    const missing = rows.flatMap((row) =>
      ENGINES.filter(
        (e) => (e !== 'TF.js WebGPU' || row.tfjs) && !page.results.some((r) => r.what === row.what && r.engine === e),
      ).map((e: EngineName) => `${row.what} | ${e}`),
    );
    const md = table(page.results);
    const note = `ratio = engine median ÷ onnx-graft median (above 1: onnx-graft is faster); wall time from host input to host output, median of ${KERNEL_RUNS.minRuns}–${KERNEL_RUNS.maxRuns} timed runs per kernel row and ${MODEL_RUNS.minRuns}–${MODEL_RUNS.maxRuns} per model row (as many as fit in ${KERNEL_RUNS.budgetMs / 1000} s), after ${KERNEL_RUNS.warmup} and ${MODEL_RUNS.warmup} warm-up runs (the first one checked)`;
    console.log(
      `\n${page.adapter} in ${page.userAgent}; crossOriginIsolated ${page.crossOriginIsolated}, ORT WASM threads ${page.ortWasmThreads}`,
    );
    console.log(`${md}\n${note}`);
    const failed = page.results.filter((r) => r.error !== undefined || !r.agrees);
    writeResults(
      'browser',
      startedAt,
      {
        suite: 'browser',
        startedAt: startedAt.toISOString(),
        machine: {
          browser: `chromium ${page.browserVersion} (${CHROMIUM})`,
          adapter: page.adapter,
          userAgent: page.userAgent,
          crossOriginIsolated: page.crossOriginIsolated,
          ortWasmThreads: page.ortWasmThreads,
          cpus: os.cpus().length,
          cpuModel: os.cpus()[0]?.model,
          loadavg: { start: loadAtStart, end: os.loadavg() },
        },
        quick: QUICK,
        maxRelL2: MAX_REL_L2,
        rows: rows.map(({ what, section, input, warmup, minRuns, maxRuns, budgetMs }) => ({
          what,
          section,
          input: input.dims,
          warmup,
          minRuns,
          maxRuns,
          budgetMs,
        })),
        results: page.results.map((r) => ({
          ...r,
          ratioVsGraft: ratioOf(
            r,
            page.results.find((g) => g.what === r.what && g.engine === 'onnx-graft'),
          ),
        })),
        missing,
        totalS: (performance.now() - started) / 1000,
      },
      WRITE_MD
        ? `# Browser benchmark (latest run)\n\n${startedAt.toISOString()}, ${page.adapter}, ${page.userAgent}, ${os.cpus().length} CPUs (load ${loadAtStart[0].toFixed(1)} at start); cross-origin isolated: ${page.crossOriginIsolated}, ORT-web WASM threads: ${page.ortWasmThreads}\n\n${md}\n\n${note}\n`
        : undefined,
    );
    console.log(
      `checks: ${page.results.length - failed.length} agree, ${failed.length} failed or disagree; ${missing.length} missing`,
    );
    return failed.length || missing.length ? 1 : 0;
  } finally {
    fs.rmSync(data.dir, { recursive: true, force: true });
  }
}

process.exitCode = await main().catch((error: unknown) => {
  console.error(`bench browser: ${error instanceof Error ? error.message : String(error)}`);
  return 1;
});
