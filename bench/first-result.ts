// npm run bench -- first: what a user meets first. Each row is a fresh process that loads one
// model file and computes one output; it reports the time from its own start to that output and
// its peak RSS (VmHWM), then runs a few more times for its steady run. onnx-graft against
// onnxruntime-node's CPU and WebGPU providers, for each light model (seeded random weights, so
// the file holds real weights) and VGG-16 as `graft build vgg16` writes it, with Mesa's shader
// cache warm and cold (MESA_SHADER_CACHE_DISABLE=true in the child's environment).
//
// The children run an esbuild bundle of this file (as an installed package would run compiled
// JavaScript), not tsx, so no row pays for transpiling TypeScript; each engine's child loads only
// that engine.
//
// Usage: npm run bench -- first [--models resnet50,squeezenet,vgg16] [--skip-ort-webgpu]
//   [--skip-vgg16] [--repeats N] [--steady-runs N] [--caches warm,cold] [--child-timeout S] [--no-md]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

type Engine = 'onnx-graft' | 'ort-cpu' | 'ort-webgpu';
type Cache = 'warm' | 'cold';

/** What a child prints, on one line after CHILD_TAG. */
interface ChildReport {
  engine: Engine;
  /** Seconds from process start: modules loaded, model read (onnx-graft: decoded and prepared),
   * session created, first output read back. */
  importedS: number;
  loadedS: number;
  /** onnx-graft: the GPU context made (onnxruntime makes its device inside create). */
  gpuReadyS?: number;
  createdS: number;
  firstS: number;
  /** Wall time of each run after the first, ms. */
  steadyMs: number[];
  /** VmHWM: the most resident memory the process had at any point. */
  peakRssBytes: number;
}

const CHILD_TAG = 'FIRST_RESULT_CHILD ';
const DIMS = [1, 3, 224, 224];
const INPUT_SEED = 4242;

if (process.argv.includes('--child')) await child();
else await parent();

// ---- the child: one engine, one model, one output ----

async function child(): Promise<void> {
  const argv = process.argv;
  const arg = (name: string) => argv[argv.indexOf(name) + 1];
  const engine = arg('--engine') as Engine;
  const file = arg('--file');
  const steadyRuns = Number(arg('--steady-runs'));
  const outFile = arg('--output');
  const input = seededInput(
    DIMS.reduce((a, b) => a * b, 1),
    INPUT_SEED,
  );
  const seconds = () => performance.now() / 1000; // performance.now() counts from process start
  let run: () => Promise<Float32Array>;
  let importedS: number;
  let loadedS: number;
  let gpuReadyS: number | undefined;
  let createdS: number;
  if (engine === 'onnx-graft') {
    const { createNodeGpuContext, loadModelFile } = await import('../src/node/index.ts');
    const { Session } = await import('../src/runtime/session.ts');
    importedS = seconds();
    // Lean loading: tensors stay in the file until the session packs and uploads them.
    const graph = loadModelFile(file, { leaveTensorsInFile: true });
    loadedS = seconds();
    const gpu = await createNodeGpuContext();
    gpuReadyS = seconds();
    const session = await Session.create(graph, { gpu });
    createdS = seconds();
    const name = session.inputNames[0];
    run = async () => (await session.run({ [name]: { dims: DIMS, data: input } }))[session.outputNames[0]].data;
  } else {
    const ort = await import('onnxruntime-node');
    importedS = seconds();
    const bytes = fs.readFileSync(file);
    loadedS = seconds();
    const session = await ort.InferenceSession.create(bytes, {
      executionProviders: [engine === 'ort-cpu' ? 'cpu' : 'webgpu'],
      logSeverityLevel: 3,
    });
    createdS = seconds();
    const feed = new ort.Tensor('float32', input, DIMS);
    run = async () => {
      const out = await session.run({ [session.inputNames[0]]: feed });
      return new Float32Array(out[session.outputNames[0]].data as Float32Array);
    };
  }
  const output = await run();
  const firstS = seconds();
  fs.writeFileSync(outFile, new Uint8Array(output.buffer, output.byteOffset, output.byteLength));
  const steadyMs: number[] = [];
  for (let k = 0; k < steadyRuns; k++) {
    const t = performance.now();
    await run();
    steadyMs.push(performance.now() - t);
  }
  const report: ChildReport = {
    engine,
    importedS,
    loadedS,
    gpuReadyS,
    createdS,
    firstS,
    steadyMs,
    peakRssBytes: peakRss(),
  };
  process.stdout.write(`${CHILD_TAG}${JSON.stringify(report)}\n`);
  // onnxruntime's threads and dawn.node's instance may keep the process alive.
  process.exit(0);
}

/** VmHWM from /proc/self/status, in bytes. */
function peakRss(): number {
  const line = fs
    .readFileSync('/proc/self/status', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmHWM:'));
  const kb = line ? Number(/(\d+)/.exec(line)?.[1]) : NaN;
  return kb * 1024;
}

/** Uniform in [-1, 1) from a 32-bit xorshift: the same input for every engine and row. */
function seededInput(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (s >>> 0) / 2 ** 31 - 1;
  }
  return out;
}

// ---- the parent: model files, one child per row, the table ----

interface Row {
  model: string;
  fileBytes: number;
  cache: Cache;
  engine: Engine;
  /** One report per repeat (failed children are in `errors`). */
  reports: ChildReport[];
  errors: string[];
  /** Relative L2 distance of the first output from onnxruntime CPU's (same cache state). */
  relErrVsOrtCpu?: number;
}

async function parent(): Promise<void> {
  const startedAt = new Date();
  const loadAtStart = os.loadavg();
  const argv = process.argv.slice(2).filter((a) => a !== 'first');
  const flag = (name: string) => argv.includes(name);
  const option = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const { LIGHT_MODELS, onnxBytesForOrt, randomizedLightModel } = await import('../test/helpers/reference-models.ts');
  const known = [...LIGHT_MODELS, 'vgg16'];
  const models = option('--models')?.split(',') ?? (flag('--skip-vgg16') ? [...LIGHT_MODELS] : known);
  for (const m of models)
    if (!known.includes(m)) throw new Error(`--models: unknown model '${m}' (accepted: ${known.join(', ')})`);
  const repeats = positiveInteger(option('--repeats') ?? '1', '--repeats');
  const steadyRuns = positiveInteger(option('--steady-runs') ?? '3', '--steady-runs');
  const childTimeoutS = positiveInteger(option('--child-timeout') ?? '600', '--child-timeout');
  const caches = (option('--caches')?.split(',') ?? ['cold', 'warm']) as Cache[];
  for (const c of caches)
    if (c !== 'warm' && c !== 'cold') throw new Error(`--caches: unknown '${c}' (accepted: warm, cold)`);
  const engines: Engine[] = flag('--skip-ort-webgpu')
    ? ['onnx-graft', 'ort-cpu']
    : ['onnx-graft', 'ort-cpu', 'ort-webgpu'];

  const here = path.dirname(fileURLToPath(import.meta.url));
  const repo = path.resolve(here, '..');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'graft-first-'));
  const bundleDir = path.join(repo, '.cache', 'bench-first');
  const bundle = path.join(bundleDir, 'first-result.mjs');
  const esbuild = await import('esbuild');
  // Packages stay external, resolved from the repository's node_modules as an installed
  // package's would be; splitting keeps each dynamic import (and the packages it pulls in:
  // onnxruntime-node, webgpu) in its own chunk, loaded only by the child that needs it.
  fs.rmSync(bundleDir, { recursive: true, force: true });
  await esbuild.build({
    entryPoints: [path.join(here, 'first-result.ts')],
    outdir: bundleDir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    logLevel: 'warning',
  });

  const { machineRecord, writeResults } = await import('./results-file.ts');
  const { createNodeGpuContext } = await import('../src/node/index.ts');
  const gpu = await createNodeGpuContext();
  const machine = machineRecord(gpu, loadAtStart);
  gpu.dispose();
  console.log(
    `adapter: ${String(machine.adapter)}; ${os.cpus().length} CPUs; load ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}`,
  );

  const rows: Row[] = [];
  try {
    for (const model of models) {
      const file = path.join(work, `${model}.onnx`);
      try {
        if (model === 'vgg16') {
          await runProcess(
            process.execPath,
            ['--import', 'tsx', path.join(repo, 'src/cli/main.ts'), 'build', 'vgg16', '--out', file],
            {},
            childTimeoutS,
          );
        } else {
          const graph = randomizedLightModel(model as (typeof LIGHT_MODELS)[number], 42);
          fs.writeFileSync(file, onnxBytesForOrt(graph)); // IR ≥ 8, inputs without initializers: both engines load it
        }
      } catch (e) {
        for (const cache of caches)
          for (const engine of engines)
            rows.push({
              model,
              fileBytes: NaN,
              cache,
              engine,
              reports: [],
              errors: [`preparing the model failed: ${errText(e)}`],
            });
        continue;
      }
      const fileBytes = fs.statSync(file).size;
      console.log(`${model}: ${(fileBytes / 2 ** 20).toFixed(1)} MiB`);
      for (const cache of caches) {
        const env: Record<string, string> = cache === 'cold' ? { MESA_SHADER_CACHE_DISABLE: 'true' } : {};
        // A warm cache is one this model's pipelines were just compiled into: an untimed child first.
        if (cache === 'warm')
          for (const engine of engines.filter((e) => e !== 'ort-cpu'))
            await childRun(engine, file, env, 0, path.join(work, 'warmup.bin')).catch(() => undefined);
        const outputs = new Map<Engine, Float32Array>();
        for (const engine of engines) {
          const row: Row = { model, fileBytes, cache, engine, reports: [], errors: [] };
          rows.push(row);
          for (let k = 0; k < repeats; k++) {
            const out = path.join(work, `${model}-${cache}-${engine}-${k}.bin`);
            try {
              row.reports.push(await childRun(engine, file, env, steadyRuns, out));
              if (k === 0) outputs.set(engine, new Float32Array(new Uint8Array(fs.readFileSync(out)).buffer));
            } catch (e) {
              row.errors.push(errText(e));
            }
          }
          const r = summary(row);
          console.log(
            `  ${cache} ${engine}: ${r ? `first ${r.firstS.toFixed(2)} s (create done ${r.createdS.toFixed(2)} s), steady ${r.steadyMs.toFixed(0)} ms, peak RSS ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MiB` : row.errors.join('; ')}`,
          );
        }
        const reference = outputs.get('ort-cpu');
        for (const row of rows.filter((r) => r.model === model && r.cache === cache)) {
          const got = outputs.get(row.engine);
          if (reference && got && row.engine !== 'ort-cpu') row.relErrVsOrtCpu = relL2(got, reference);
        }
      }
      fs.rmSync(file, { force: true });
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }

  const command = `npm run bench -- first${argv.length ? ` ${argv.join(' ')}` : ''}`;
  const totalS = (Date.now() - startedAt.getTime()) / 1000;
  const tableText = table(rows);
  const header = [
    '# First-result benchmark (latest run)',
    '',
    `- command: \`${command}\``,
    `- date: ${startedAt.toISOString()}; total runtime ${(totalS / 60).toFixed(1)} min`,
    `- adapter: ${String(machine.adapter)}; ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'CPU'}; load average at start ${loadAtStart.map((l) => l.toFixed(2)).join(' ')}, at end ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
    `- repeats: ${repeats} fresh process(es) per row (medians); steady run: median of ${steadyRuns} runs after the first in the same process`,
  ];
  const legend = [
    '',
    'How to read it:',
    '- **first result s**: from the process start (node boot included) to the first output read back on the host: import, read the file, create the session (onnx-graft: GPU context, decode, lowering, weight upload, pipelines), one run. onnx-graft loads with `loadModelFile(file, { leaveTensorsInFile: true })` (lean loading: each weight read from the file as the session packs and uploads it). The children run an esbuild bundle of bench/first-result.ts, not tsx.',
    '- **create done s**: the same clock when the session was created, before the first run.',
    '- **peak RSS MiB**: VmHWM of the child at its end (on lavapipe GPU buffers are host memory, so they count); **RSS ÷ file**: that over the model file size.',
    "- **÷ steady**: first result (from process start) ÷ the row's own steady run (median of the runs after the first, same process).",
    '- **first run ÷ steady**: the first run() alone (first output − create done) ÷ the steady run: what the first call costs beyond a warm one (pipelines not ready, memory first touched). Target: ≤ 1.5 with the shader cache warm; read from process start, no engine can meet it where the steady run is shorter than Node starting.',
    "- **× vs onnx-graft**: the row's first result ÷ onnx-graft's in the same cache state: above 1, onnx-graft is first.",
    '- **cold**: `MESA_SHADER_CACHE_DISABLE=true` in the child (lavapipe compiles each pipeline at its first dispatch); **warm**: an untimed child of that engine and model ran just before. onnxruntime CPU does not use the GPU; it is run in both states for like-for-like ratios.',
    "- **rel.err**: relative L2 distance of the row's first output from onnxruntime CPU's on the same seeded input.",
    '- Light models: the zoo topologies with seeded random weights (test/helpers/reference-models.ts), written with IR ≥ 8; VGG-16: `graft build vgg16`.',
  ];
  const phases = phasesTable(rows);
  const goals = targets(rows);
  const md = [
    ...header,
    '',
    tableText,
    ...legend,
    '',
    'Targets (issue 12):',
    ...goals,
    '',
    'Phases (s from process start, first repeat):',
    '',
    phases,
    '',
  ].join('\n');
  console.log(
    `\n${tableText}\n\nTargets:\n${goals.join('\n')}\n\n${phases}\n\ntotal runtime ${(totalS / 60).toFixed(1)} min`,
  );
  writeResults(
    'first',
    startedAt,
    { date: startedAt.toISOString(), command, totalS, ...machine, repeats, steadyRuns, rows },
    flag('--no-md') ? undefined : md,
  );

  /** Runs one child and parses its report; rejects with its stderr tail when it fails. */
  async function childRun(
    engine: Engine,
    file: string,
    env: Record<string, string>,
    steady: number,
    out: string,
  ): Promise<ChildReport> {
    const args = [
      bundle,
      '--child',
      '--engine',
      engine,
      '--file',
      file,
      '--steady-runs',
      String(steady),
      '--output',
      out,
    ];
    const stdout = await runProcess(process.execPath, args, env, childTimeoutS);
    const line = stdout.split('\n').find((l) => l.startsWith(CHILD_TAG));
    if (!line) throw new Error(`the child printed no report; its output ends: ${stdout.slice(-500)}`);
    return JSON.parse(line.slice(CHILD_TAG.length)) as ChildReport;
  }
}

/** Runs a process to its end; resolves with its stdout, rejects with its exit and stderr tail. */
function runProcess(command: string, args: string[], env: Record<string, string>, timeoutS: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const proc = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutS * 1000);
    proc.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else {
        const tail = stderr
          .split('\n')
          .filter((l) => l.trim() && !l.includes('artificially reduced'))
          .slice(-4)
          .join(' | ');
        reject(
          new Error(
            `${path.basename(args[0] ?? command)} exited ${signal ?? code}${signal === 'SIGKILL' ? ` (over ${timeoutS} s?)` : ''}: ${tail}`,
          ),
        );
      }
    });
  });
}

interface RowSummary {
  firstS: number;
  createdS: number;
  /** The first run() alone: first output − session created. */
  firstRunS: number;
  steadyMs: number;
  peakRssBytes: number;
}

/** Medians over a row's repeats. */
function summary(row: Row): RowSummary | undefined {
  if (row.reports.length === 0) return undefined;
  return {
    firstS: median(row.reports.map((r) => r.firstS)),
    createdS: median(row.reports.map((r) => r.createdS)),
    firstRunS: median(row.reports.map((r) => r.firstS - r.createdS)),
    steadyMs: median(row.reports.flatMap((r) => r.steadyMs)),
    peakRssBytes: median(row.reports.map((r) => r.peakRssBytes)),
  };
}

function table(rows: Row[]): string {
  const head = [
    'model',
    'cache',
    'engine',
    'first result s',
    'create done s',
    'steady run ms',
    '÷ steady',
    'first run ÷ steady',
    'peak RSS MiB',
    'RSS ÷ file',
    '× vs onnx-graft',
    'rel.err',
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i >= 3 ? '---:' : '---')).join('|')}|`];
  for (const row of rows) {
    const r = summary(row);
    const mine = summary(
      rows.find((x) => x.model === row.model && x.cache === row.cache && x.engine === 'onnx-graft')!,
    );
    if (!r) {
      lines.push(
        `| ${row.model} | ${row.cache} | ${row.engine} | failed: ${row.errors[0]?.replace(/\|/g, '/') ?? '?'} |`,
      );
      continue;
    }
    lines.push(
      `| ${[
        row.model,
        row.cache,
        row.engine,
        r.firstS.toFixed(2),
        r.createdS.toFixed(2),
        r.steadyMs.toFixed(0),
        (r.firstS / (r.steadyMs / 1000)).toFixed(1),
        (r.firstRunS / (r.steadyMs / 1000)).toFixed(2),
        (r.peakRssBytes / 2 ** 20).toFixed(0),
        (r.peakRssBytes / row.fileBytes).toFixed(2),
        mine ? (r.firstS / mine.firstS).toFixed(2) : '—',
        row.relErrVsOrtCpu !== undefined ? row.relErrVsOrtCpu.toExponential(1) : '—',
      ].join(' | ')} |`,
    );
  }
  return lines.join('\n');
}

/** The issue's targets (issue 12), met or missed, from the table's medians. */
function targets(rows: Row[]): string[] {
  const out: string[] = [];
  const find = (model: string, cache: Cache, engine: Engine) =>
    summary(
      rows.find((r) => r.model === model && r.cache === cache && r.engine === engine) ?? ({ reports: [] } as never),
    );
  for (const row of rows.filter((r) => r.engine === 'onnx-graft')) {
    const mine = summary(row);
    if (!mine) continue;
    const rival = find(row.model, row.cache, 'ort-webgpu');
    if (rival)
      out.push(
        `- ${row.model} ${row.cache}: ahead of onnxruntime WebGPU — ${mine.firstS < rival.firstS ? 'met' : 'MISSED'} (${mine.firstS.toFixed(2)} s vs ${rival.firstS.toFixed(2)} s)`,
      );
    const cpu = find(row.model, row.cache, 'ort-cpu');
    if (row.model === 'vgg16' && cpu) {
      out.push(
        `- vgg16 ${row.cache}: within 1.25× of onnxruntime CPU — ${mine.firstS <= 1.25 * cpu.firstS ? 'met' : 'MISSED'} (${(mine.firstS / cpu.firstS).toFixed(2)}×)`,
      );
      // The floor no loading work can lower: one steady run of the compute on this adapter.
      out.push(
        `  - onnx-graft's steady run alone is ${(mine.steadyMs / 1000).toFixed(2)} s, ${(mine.steadyMs / 1000 / cpu.firstS).toFixed(2)}× onnxruntime CPU's whole first result (process start, load, create and run: ${cpu.firstS.toFixed(2)} s)`,
      );
    }
  }
  for (const row of rows.filter((r) => r.cache === 'warm')) {
    const r = summary(row);
    if (!r || !(r.steadyMs > 0)) continue;
    const ratio = r.firstS / (r.steadyMs / 1000);
    const runRatio = r.firstRunS / (r.steadyMs / 1000);
    out.push(
      `- ${row.model} warm ${row.engine}: first run() within 1.5× of its steady run — ${runRatio <= 1.5 ? 'met' : 'MISSED'} (${runRatio.toFixed(2)}×); from process start ${ratio.toFixed(1)}×`,
    );
  }
  return out;
}

/** Where each row's first result went: seconds from process start at each phase's end (first repeat). */
function phasesTable(rows: Row[]): string {
  const head = [
    'model',
    'cache',
    'engine',
    'modules loaded',
    'model read',
    'GPU context',
    'session created',
    'first output',
  ];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i >= 3 ? '---:' : '---')).join('|')}|`];
  for (const row of rows) {
    const r = row.reports[0];
    if (!r) continue;
    const cells = [r.importedS, r.loadedS, r.gpuReadyS, r.createdS, r.firstS].map((x) =>
      x === undefined ? '—' : x.toFixed(2),
    );
    lines.push(`| ${[row.model, row.cache, row.engine, ...cells].join(' | ')} |`);
  }
  return lines.join('\n');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function relL2(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return NaN;
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}

function positiveInteger(text: string, name: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} expects a non-negative integer, got '${text}'`);
  return n;
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
