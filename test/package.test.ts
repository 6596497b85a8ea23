// The package as users get it: `npm pack` (its prepack builds dist/), the tarball installed into
// an empty folder outside the repository, then `npx graft --help` and a script importing
// 'onnx-graft' and 'onnx-graft/node' run with plain node: no tsx, no TypeScript, no sources.
// The script builds a one-Gemm model, runs it on the GPU and checks it against a float64
// reference computed in the script.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const REPO_ROOT = path.resolve(import.meta.dirname, '..');

function run(command: string, args: string[], cwd: string): SpawnSyncReturns<string> {
  return spawnSync(command, args, {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, npm_config_update_notifier: 'false' },
  });
}

function ok(result: SpawnSyncReturns<string>, what: string): string {
  expect(result.error, what).toBeUndefined();
  expect(result.status, `${what}\n${result.stdout}\n${result.stderr}`).toBe(0);
  return result.stdout;
}

// Seeded inputs and weights, a Gemm (transB) and a Relu, on the GPU; the reference in float64.
const CONSUMER_SCRIPT = `
import { Graph, GraphBuilder, Session, SUPPORTED_OPS } from 'onnx-graft';
import { createNodeGpuContext } from 'onnx-graft/node';

let state = 12345;
const random = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
const [N, K, M] = [3, 5, 4];
const x = Float32Array.from({ length: N * K }, random);
const w = Float32Array.from({ length: M * K }, random);
const b = Float32Array.from({ length: M }, random);

const graph = new Graph();
graph.inputs.push({ name: 'x', dtype: 'float32', shape: [N, K] });
graph.values.set('x', { name: 'x', dtype: 'float32', shape: [N, K] });
graph.setInitializer('w', { dtype: 'float32', dims: [M, K], data: w });
graph.setInitializer('b', { dtype: 'float32', dims: [M], data: b });
const builder = new GraphBuilder(graph);
builder.node('Gemm', ['x', 'w', 'b'], { transB: 1 }, { outputs: ['h'] });
builder.node('Relu', ['h'], {}, { outputs: ['y'] });
graph.outputs.push({ name: 'y', dtype: 'float32', shape: [N, M] });

const gpu = await createNodeGpuContext();
const session = await Session.create(graph, { gpu });
const { y } = await session.run({ x: { dims: [N, K], data: x } });
let worst = 0;
for (let n = 0; n < N; n++)
  for (let m = 0; m < M; m++) {
    let sum = b[m];
    for (let k = 0; k < K; k++) sum += x[n * K + k] * w[m * K + k];
    worst = Math.max(worst, Math.abs(Math.max(sum, 0) - y.data[n * M + m]));
  }
session.dispose();
gpu.dispose();
console.log(JSON.stringify({ ops: SUPPORTED_OPS.length, dims: y.dims, worst }));
`;

// A TypeScript user's view of the same API: the shipped .d.ts files type-check under Node's own
// module resolution, with no skipLibCheck (WebGPU's types come from @webgpu/types, which webgpu brings).
const CONSUMER_TYPES = `
import { Graph, Session, type Tensor } from 'onnx-graft';
import { createNodeGpuContext, type NodeGpuContextOptions } from 'onnx-graft/node';
const options: NodeGpuContextOptions = { dawnWarnings: 'hide' };
export async function outputRank(graph: Graph, x: Tensor): Promise<number> {
  const gpu = await createNodeGpuContext(options);
  const session = await Session.create(graph, { gpu });
  const outputs: Record<string, Tensor> = await session.run({ x });
  const device: GPUDevice = gpu.device;
  return Object.values(outputs)[0].dims.length + device.limits.maxBindGroups * 0;
}
`;

describe('the packed package, installed into an empty folder', () => {
  let root: string;
  let app: string;

  beforeAll(() => {
    root = mkdtempSync(path.join(tmpdir(), 'graft-package-'));
    app = path.join(root, 'app');
    mkdirSync(app);
    ok(run('npm', ['pack', '--silent', '--pack-destination', root], REPO_ROOT), 'npm pack');
    const tarball = readdirSync(root).find((f) => f.endsWith('.tgz'));
    expect(tarball, 'npm pack wrote no tarball').toBeDefined();
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    const install = (mode: string) =>
      run('npm', ['install', mode, '--no-audit', '--no-fund', path.join(root, tarball!)], app);
    // The dependencies come from npm's cache (CI's `npm ci` filled it); where the cache lacks
    // one's registry document, npm may ask the registry for that document only.
    let installed = install('--offline');
    if (installed.status !== 0 && /ENOTCACHED/.test(installed.stderr)) installed = install('--prefer-offline');
    ok(installed, 'npm install <tarball>');
  }, 240_000);

  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('ships dist, the CLI and the sample data; no TypeScript sources, no tsx at run time', () => {
    const pkg = path.join(app, 'node_modules', 'onnx-graft');
    expect(readdirSync(pkg).sort()).toEqual(['README.md', 'bin', 'dist', 'models-onnx', 'package.json', 'scripts']);
    expect(readdirSync(path.join(pkg, 'models-onnx')).sort()).toEqual(['samples', 'source']);
    expect(readdirSync(path.join(app, 'node_modules'))).not.toContain('tsx');
    expect(readdirSync(path.join(pkg, 'dist', 'graph', 'onnx')).sort()).toEqual(['onnx-pb.d.ts', 'onnx-pb.js']);
    expect(readdirSync(path.join(pkg, 'dist', 'browser'))).toEqual(['onnx-graft.js']);
    const ts = run('find', [pkg, '-name', '*.ts', '-not', '-name', '*.d.ts'], app).stdout.trim();
    expect(ts, 'TypeScript sources shipped').toBe('');
  });

  it('`npx graft --help` runs the built CLI with plain node, from a subfolder of the project', () => {
    const sub = path.join(app, 'deeper', 'still');
    mkdirSync(sub, { recursive: true });
    const help = run('npx', ['--no-install', 'graft', '--help'], sub);
    expect(help.status, help.stderr).toBe(0);
    expect(help.stderr).toMatch(/^usage:\n {2}graft inspect <model\.onnx>/);
    for (const command of ['build', 'rewrite', 'train', 'eval', 'predict', 'demo']) {
      expect(help.stderr).toContain(`graft ${command} `);
    }
  });

  it("a script importing 'onnx-graft' builds a model and runs it on the GPU with plain node", () => {
    const script = path.join(app, 'consumer.mjs');
    writeFileSync(script, CONSUMER_SCRIPT);
    const out = ok(run(process.execPath, [script], app), 'node consumer.mjs');
    const result = JSON.parse(out.trim().split('\n').at(-1)!) as { ops: number; dims: number[]; worst: number };
    expect(result.ops).toBeGreaterThan(30);
    expect(result.dims).toEqual([3, 4]);
    expect(result.worst).toBeLessThan(1e-5);
  });

  it('its .d.ts files type-check in a TypeScript project (module nodenext, skipLibCheck off)', () => {
    writeFileSync(path.join(app, 'consumer.ts'), CONSUMER_TYPES);
    // With it, a file that misuses a type: the one error expected, reported from the shipped declarations.
    writeFileSync(path.join(app, 'wrong.ts'), "import { Session } from 'onnx-graft';\nexport const s: Session = 1;\n");
    const tsc = path.join(REPO_ROOT, 'node_modules/typescript/bin/tsc');
    const flags = ['--noEmit', '--strict', '--module', 'nodenext', '--target', 'es2022', '--types', 'node'];
    const checked = run(process.execPath, [tsc, ...flags, '--skipLibCheck', 'false', 'consumer.ts', 'wrong.ts'], app);
    expect(checked.stdout.trim().split('\n')).toEqual([
      "wrong.ts(2,14): error TS2322: Type 'number' is not assignable to type 'Session'.",
    ]);
  }, 120_000);
});
