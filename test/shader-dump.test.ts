// GRAFT_DUMP_WGSL and the lazy shader text: with the variable set, createNodeGpuContext installs
// a shader observer that writes every generated shader to the folder, one file per pipeline key
// with the key in its header; each file compiles as WGSL on its own. A second plan over the same
// graph generates no text at all (the pipeline cache is keyed by the program's key).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.ts';
import { Graph } from '../src/graph/ir.ts';
import type { GeneratedShader, GpuContext } from '../src/kernels/gpu-context.ts';
import { elementProgram, pipelineFor } from '../src/kernels/program.ts';
import { createNodeGpuContext } from '../src/node/index.ts';
import { Session } from '../src/runtime/session.ts';
import { randomFloat32Array } from './helpers/random.ts';

/** x [2,3,8,8] → Conv 3×3 → Relu → MaxPool → GlobalAveragePool → Flatten → Gemm → Softmax */
function smallModel(): Graph {
  const g = new Graph();
  g.opsetImports = [{ domain: '', version: 17 }];
  g.inputs = [{ name: 'x', dtype: 'float32', shape: [2, 3, 8, 8] }];
  g.values.set('x', { ...g.inputs[0] });
  const b = new GraphBuilder(g, 7);
  const c = b.op('Conv', ['x', b.weight('w', [4, 3, 3, 3], 'he'), b.weight('b', [4], 'glorot')], {
    kernel_shape: [3, 3],
    pads: [1, 1, 1, 1],
  });
  const r = b.op('Relu', [c]);
  const m = b.op('MaxPool', [r], { kernel_shape: [2, 2], strides: [2, 2] });
  const p = b.op('GlobalAveragePool', [m]);
  const f = b.op('Flatten', [p], { axis: 1 });
  const logits = b.op('Gemm', [f, b.weight('fc', [5, 4], 'glorot'), b.weight('fcb', [5], 'glorot')], { transB: 1 });
  const prob = b.node('Softmax', [logits], { axis: 1 }, { outputs: ['prob'] })[0];
  g.outputs = [{ name: prob, dtype: 'float32' }];
  return g;
}

describe('GRAFT_DUMP_WGSL', () => {
  let gpu: GpuContext;
  let dir: string;
  const previous = process.env.GRAFT_DUMP_WGSL;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'graft-wgsl-'));
    process.env.GRAFT_DUMP_WGSL = dir;
    try {
      gpu = await createNodeGpuContext();
    } finally {
      if (previous === undefined) delete process.env.GRAFT_DUMP_WGSL;
      else process.env.GRAFT_DUMP_WGSL = previous;
    }
  });
  afterAll(() => {
    gpu?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes each generated shader once, named by its pipeline key, and each compiles on its own', async () => {
    const graph = smallModel();
    const session = await Session.create(graph, { gpu });
    const out = await session.run({ x: { dims: [2, 3, 8, 8], data: randomFloat32Array(2 * 3 * 8 * 8, 3) } });
    session.dispose();
    expect(out.prob.data.length).toBe(10);

    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.wgsl'));
    // Conv (GEMM core), MaxPool, GlobalAveragePool, Gemm, Softmax: one shader per key at least.
    expect(files.length).toBeGreaterThanOrEqual(4);
    const keys: string[] = [];
    for (const file of files) {
      const text = fs.readFileSync(path.join(dir, file), 'utf8');
      const key = /^\/\/ pipeline key: (.*)$/m.exec(text)?.[1];
      expect(key, file).toBeDefined();
      keys.push(key!);
      // The name starts with the key's readable characters.
      expect(file.startsWith(key!.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 100)), file).toBe(true);
      await expect(gpu.createComputePipeline(`dumped ${file}`, text)).resolves.toBeDefined();
    }
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys.some((k) => k.startsWith('conv|gemm|'))).toBe(true);
    expect(keys.some((k) => k.startsWith('pool2d|max'))).toBe(true);
    expect(keys).toContain('softmax');

    // Another plan over the same graph hits the pipeline cache: no shader text is generated.
    const seen: GeneratedShader[] = [];
    const writer = gpu.shaderObserver;
    gpu.setShaderObserver((s) => seen.push(s));
    try {
      const again = await Session.create(graph, { gpu });
      again.dispose();
      expect(seen).toEqual([]);
      // A key not compiled before is generated once, however often it is asked for.
      const program = elementProgram({ label: 'negate 7', key: 'test-negate', total: 7, body: '  y[idx] = -x[idx];' });
      await Promise.all([pipelineFor(gpu, program), pipelineFor(gpu, program)]);
      expect(seen.map((s) => s.key)).toEqual(['test-negate']);
      expect(seen[0].wgsl).toContain('y[idx] = -x[idx];');
    } finally {
      gpu.setShaderObserver(writer);
    }
  });
});
